"""A task on its own: its stored state plus the backbone weights its mask reads.

A task's mask also reads weights that earlier tasks own, so its own state (``state.py``)
cannot answer without the backbone. ``read_values`` takes, per layer, the backbone's
values at the task's mask positions (row-major; the weights it claims at its commit take
its own values, so this works before and after ``commit_task``); ``dumps_weights`` stores
them as one safetensors blob. ``StandaloneTask`` rebuilds an inference-only model from the
two blobs: the engine compiles its plan from the weights at the mask positions only
(``plan.compile_task``), so it answers bit for bit what ``SparseCL.logits`` answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from .backbone import BackboneSpec
from .engine import InferenceEngine
from .model import SparseCL, check_inputs, finite_scores
from .state import loads, metadata
from .task import Task

FORMAT = "sparsecl.weights/1"


@torch.no_grad()
def read_values(model: SparseCL, task: Task) -> tuple[Tensor, ...]:
    """Per layer, the values of the weights ``task``'s mask covers (row-major): the
    backbone's, and the task's own values where its mask claims free weights (a task not
    yet committed); a committed task's own weights are already in the backbone."""
    out = []
    for w, mask, free, own in zip(
        model.backbone.weights, task.masks, model.owners.free(), task.own_values, strict=True
    ):
        values = w[mask].clone()
        claimed = (mask & free)[mask]
        if bool(claimed.any()):
            values[claimed] = own
        out.append(values.to(torch.float32).contiguous())
    return tuple(out)


def dumps_weights(spec: BackboneSpec, values: Sequence[Tensor]) -> bytes:
    """The values ``read_values`` gives, with the backbone spec, as safetensors bytes."""
    tensors = {f"read.{i}": v.contiguous() for i, v in enumerate(values)}
    meta = {"format": FORMAT, "backbone": str(spec)}
    return st_save(tensors, metadata=meta)


class StandaloneTask:
    """An inference-only model of one task: its state and the weights its mask reads."""

    def __init__(self, state: bytes, weights: bytes) -> None:
        self.task = loads(state)
        meta = metadata(weights)
        if meta.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} blob (format {meta.get('format')!r})")
        self.spec = BackboneSpec.parse(meta["backbone"])
        tensors = st_load(weights)
        self.weights: list[Tensor] = []
        for i, (layer, mask) in enumerate(zip(self.spec.layers, self.task.masks, strict=True)):
            w = torch.zeros(layer.weight_shape, dtype=torch.float32)
            w[mask] = tensors[f"read.{i}"]  # never read outside the mask (compile_task)
            self.weights.append(w)
        self.engine = InferenceEngine(self.spec)
        self.engine.plan(self.task, self.weights)  # compiled now, not by the first call

    @property
    def classes(self) -> tuple[int, ...]:
        return self.task.classes

    @torch.no_grad()
    def logits(self, x: Any) -> Tensor:
        """Per-class scores for inputs ``x`` (N × backbone input; numpy or torch, uint8
        scaled by 1/255, floats as float32)."""
        inputs = check_inputs(self.spec, x)
        return finite_scores(self.engine.logits(self.task, self.weights, inputs))

    def predict(self, x: Any) -> Tensor:
        """Predicted labels, in the task's own label values."""
        classes = torch.tensor(self.classes, dtype=torch.int64)
        return classes[self.logits(x).argmax(1)]


__all__ = ["StandaloneTask", "dumps_weights", "read_values"]
