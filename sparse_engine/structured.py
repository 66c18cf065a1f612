"""Structured pruning: keep whole hidden units (MLP) or channels (CNN) by group saliency.

A unit's group is its incoming weights (a row of a linear layer, a C_in×3×3 block of a
conv). Its saliency is the sum of the per-weight saliency of the group (Taylor |g·w| or
OBD summed; Molchanov et al. 2017 rank channels by summed Taylor terms), or the group's
L2 norm for magnitude (Li et al. 2017, "Pruning filters for efficient ConvNets"; Liu et al.
2019, "Rethinking the value of network pruning", compare such structured methods). Each hidden layer
keeps the top ``density`` fraction of its units; a removed unit loses its row in its own
layer and its column (for a conv, its H×W columns) in the next layer, so the task's
subnetwork is a smaller dense net that ``plan.compile_task`` compacts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .backbone import BackboneSpec, LayerSpec
from .saliency import keep_count, top_mask


def group_scores(score: Tensor, magnitude: bool) -> Tensor:
    """One score per output row of a layer's per-weight ``score``: the sum, or the L2 norm
    when the per-weight score is |w| (magnitude)."""
    flat = score.reshape(score.shape[0], -1)
    return flat.pow(2).sum(1).sqrt() if magnitude else flat.sum(1)


def keep_units(scores: Tensor, candidates: Tensor, density: float) -> Tensor:
    """The top ``density`` fraction (at least one) of a layer's units among ``candidates``."""
    return top_mask(scores, candidates, keep_count(density, scores.numel()))


def input_columns(spec: BackboneSpec, index: int, units: Sequence[Tensor]) -> Tensor:
    """Per-input flags of layer ``index``: which of its inputs come from kept units.

    Shaped to broadcast against the layer's weight with the row flags: (1, C_in, 1, 1) for
    a conv, (1, fan_in) for a linear layer (a conv input's channel flag covers its H×W)."""
    layer = spec.layers[index]
    if index == 0:
        ones = torch.ones(layer.weight_shape[1], dtype=torch.bool, device=units[0].device)
        return ones.reshape(1, -1, 1, 1) if layer.kind == "conv" else ones.reshape(1, -1)
    previous = units[index - 1]
    if layer.kind == "conv":
        return previous.reshape(1, -1, 1, 1)
    return previous.repeat_interleave(layer.fan_in // previous.numel()).reshape(1, -1)


def block_masks(spec: BackboneSpec, units: Sequence[Tensor]) -> list[Tensor]:
    """Per layer, the kept rows × the kept input columns, as a bool mask of the weight."""
    masks = []
    for i, (layer, rows) in enumerate(zip(spec.layers, units, strict=True)):
        shape = (-1, 1, 1, 1) if layer.kind == "conv" else (-1, 1)
        block = rows.reshape(shape) & input_columns(spec, i, units)
        masks.append(block.expand(layer.weight_shape).clone())
    return masks


def row_units(layer: LayerSpec) -> int:
    """k-WTA units per row of a layer: 1 for a linear layer, H×W for a conv channel."""
    return layer.units // layer.weight_shape[0]


def structured_masks(
    spec: BackboneSpec,
    scores: Sequence[Tensor],
    candidates: Sequence[Tensor],
    units: Sequence[Tensor],
    density: float,
    magnitude: bool,
) -> tuple[list[Tensor], list[Tensor]]:
    """Prune whole units: per layer, keep the ``density`` fraction of the ``units`` still
    kept with the highest group saliency. Returns (kept rows per layer, the new masks:
    ``candidates`` ∩ kept rows × kept input columns)."""
    kept = [
        keep_units(group_scores(torch.where(c, s, torch.zeros_like(s)), magnitude), u, density)
        for s, c, u in zip(scores, candidates, units, strict=True)
    ]
    masks = [c & b for c, b in zip(candidates, block_masks(spec, kept), strict=True)]
    return kept, masks
