"""Random committed tasks, to test and benchmark the inference engine without training."""

from __future__ import annotations

import torch

from .backbone import Backbone, BackboneSpec
from .config import TaskConfig
from .kwta import KWinnersState
from .task import Task, TaskRecord


def synthetic_task(
    backbone: Backbone,
    name: str,
    weight_density: float,
    k: int | float,
    classes: int = 10,
    boost_strength: float = 1.0,
    seed: int = 0,
) -> Task:
    """A task with random masks at ``weight_density`` per layer, random biases, duty cycles
    and head, and k-WTA of ``k`` winners (a count, or a fraction of each layer's units)."""
    spec: BackboneSpec = backbone.spec
    g = torch.Generator().manual_seed(seed)
    masks, biases, states = [], [], []
    for layer in spec.layers:
        masks.append(torch.rand(layer.weight_shape, generator=g) < weight_density)
        biases.append(0.1 * torch.randn(layer.weight_shape[0], generator=g))
        count = k if isinstance(k, int) else max(1, round(k * layer.units))
        duty = torch.rand(layer.units, generator=g) * 2 * count / layer.units
        states.append(KWinnersState(min(count, layer.units), boost_strength, duty))
    features = spec.features
    head_weight = torch.randn(classes, features, generator=g) / features**0.5
    head_bias = 0.1 * torch.randn(classes, generator=g)
    record = TaskRecord(
        id=seed + 1,
        name=name,
        classes=tuple(range(classes)),
        density=tuple(int(m.sum()) / m.numel() for m in masks),
        weights_owned=0,
        weights_read=sum(int(m.sum()) for m in masks),
        val_accuracy=0.0,
        free_capacity=tuple(1.0 for _ in masks),
        seconds=0.0,
    )
    return Task(
        record,
        TaskConfig(density=max(weight_density, 1e-6), k=k),
        tuple(masks),
        tuple(torch.zeros(0) for _ in masks),  # owns nothing: reads the weights it is given
        tuple(biases),
        tuple(states),
        head_weight,
        head_bias,
    )
