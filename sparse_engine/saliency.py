"""Saliency scores that decide which weights a task keeps, and the top-k selection.

- magnitude: |w| (Han et al. 2015).
- obd: ½·h_ii·w², Optimal Brain Damage (LeCun et al. 1990); h_ii is the diagonal of the
  loss Hessian, estimated with Hutchinson's method (E[z ⊙ Hz] for Rademacher z).
- taylor: |g ⊙ w| averaged over batches, the first-order Taylor estimate of the loss
  change (Molchanov et al. 2017).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

# loss of the network run with the given per-layer weights on one batch
LossFn = Callable[[Sequence[Tensor], Tensor, Tensor], Tensor]
Batches = Iterable[tuple[Tensor, Tensor]]


def _leaves(weights: Sequence[Tensor]) -> list[Tensor]:
    return [w.detach().clone().requires_grad_(True) for w in weights]


def magnitude(weights: Sequence[Tensor]) -> list[Tensor]:
    """|w| per weight."""
    return [w.detach().abs() for w in weights]


def taylor(loss_fn: LossFn, weights: Sequence[Tensor], batches: Batches) -> list[Tensor]:
    """|g ⊙ w| per weight, g the loss gradient, averaged over the batches."""
    leaves = _leaves(weights)
    scores = [torch.zeros_like(w) for w in leaves]
    n = 0
    for x, y in batches:
        grads = torch.autograd.grad(loss_fn(leaves, x, y), leaves)
        for s, g, w in zip(scores, grads, leaves, strict=True):
            s += (g * w.detach()).abs()
        n += 1
    return [s / max(n, 1) for s in scores]


def hessian_diagonal(
    loss_fn: LossFn, weights: Sequence[Tensor], batches: Batches, generator: torch.Generator
) -> list[Tensor]:
    """Hutchinson's estimate of diag(H), one Rademacher probe per batch, averaged."""
    leaves = _leaves(weights)
    diag = [torch.zeros_like(w) for w in leaves]
    n = 0
    for x, y in batches:
        grads = torch.autograd.grad(loss_fn(leaves, x, y), leaves, create_graph=True)
        probes = [
            torch.randint(0, 2, w.shape, generator=generator).to(w.device, w.dtype).mul_(2).sub_(1)
            for w in leaves
        ]
        dot = torch.stack([(g * z).sum() for g, z in zip(grads, probes, strict=True)]).sum()
        hz = torch.autograd.grad(dot, leaves, allow_unused=True)
        for d, z, h in zip(diag, probes, hz, strict=True):
            if h is not None:
                d += z * h
        n += 1
    return [d / max(n, 1) for d in diag]


def obd(
    loss_fn: LossFn, weights: Sequence[Tensor], batches: Batches, generator: torch.Generator
) -> list[Tensor]:
    """½·h_ii·w² per weight (Optimal Brain Damage)."""
    diag = hessian_diagonal(loss_fn, weights, batches, generator)
    return [0.5 * h * w.detach() ** 2 for h, w in zip(diag, weights, strict=True)]


def keep_count(density: float, numel: int) -> int:
    """How many of ``numel`` weights a layer keeps at ``density`` (at least one)."""
    return max(1, min(numel, round(density * numel)))


def top_mask(score: Tensor, candidates: Tensor, keep: int) -> Tensor:
    """The ``keep`` highest-scoring weights among ``candidates``, as a bool mask."""
    available = int(candidates.sum())
    if keep > available:
        raise ValueError(f"cannot keep {keep} weights out of {available} candidates")
    masked = torch.where(candidates, score, score.new_full((), float("-inf")))
    flat = masked.flatten()
    # stable ordering: ties broken by position, so masks are reproducible
    order = torch.argsort(flat, descending=True, stable=True)[:keep]
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[order] = True
    return mask.reshape(score.shape)


def density_schedule(density: float, rounds: int) -> list[float]:
    """Densities after each of ``rounds`` prunings, geometric from 1 down to ``density``."""
    return [density ** ((r + 1) / rounds) for r in range(rounds)]
