"""Capacity that never runs out: how a task is learned once the free weights cannot cover
its budget, instead of failing.

The rule, per layer: the task's budget is ``keep_count(density, layer size)``, the weights
its mask holds there. When every layer has at least its budget of free weights, the task is
learned as configured (``learned_as="free"``). When some layer has fewer, the whole task is
learned by edge-popup scores (supermask.py; Zhou et al. 2019, Ramanujan et al. 2020) over
the backbone as it stands:

- a layer short of free weights holds every free weight it has left plus the
  (budget - free) frozen weights of earlier tasks with the largest |score|;
- a layer that still has enough holds the budget's largest |score| among all its weights.

The free weights in the mask are trained with the scores, biases and head (the task then
owns them, as any task owns the free weights its mask claims); frozen ones are only read,
at their values: they enter the forward pass as constants, so no gradient, momentum or
weight decay reaches them. ``learned_as="mix"`` while some layer has a free weight left,
``"supermask"`` once none has: the task then owns nothing and its commit writes no backbone
weight (the free pool it re-initialises is empty); it adds only its mask, biases, k-WTA
state, head and identity model. Either way the owner map and every earlier task stay as
they were, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .backbone import Backbone
from .config import TaskConfig
from .recipe import Run
from .saliency import keep_count
from .supermask import SupermaskTrainer, straight_through
from .task import LearnedAs


def budgets(density: float, sizes: Sequence[int]) -> list[int]:
    """Per layer, the weights a task's mask holds at ``density`` (its budget)."""
    return [keep_count(density, n) for n in sizes]


def learned_as(density: float, free_counts: Sequence[int], sizes: Sequence[int]) -> LearnedAs:
    """How a task of ``density`` is learned with ``free_counts`` free weights per layer of
    ``sizes`` weights (see the module's rule)."""
    if len(free_counts) != len(sizes):
        raise ValueError(f"{len(free_counts)} free counts for {len(sizes)} layers")
    short = [f < b for f, b in zip(free_counts, budgets(density, sizes), strict=True)]
    if not any(short):
        return "free"
    return "mix" if any(free_counts) else "supermask"


class CapacityTrainer(SupermaskTrainer):
    """Edge-popup scores over the backbone as it stands, plus the free weights left (each
    layer short of free weights holds all of its own), trained with biases and head."""

    def __init__(
        self,
        backbone: Backbone,
        owned: Sequence[Tensor],
        classes: int,
        config: TaskConfig,
        generator: torch.Generator,
        device: torch.device | None = None,
        candidates: Sequence[Tensor] | None = None,
    ) -> None:
        super().__init__(backbone, owned, classes, config, generator, device, candidates)
        self.free_at = [~o for o in self.owned]
        for p in self.free:
            p.requires_grad_(True)
        for b in self.biases:
            b.requires_grad_(True)
        self.head.requires_grad_(True)

    def budgets(self, density: float) -> tuple[list[Tensor | None], list[int]]:
        """A layer short of free weights holds all of them and scores the rest of its
        budget among the frozen ones; any other layer scores its whole budget."""
        forced: list[Tensor | None] = []
        keep: list[int] = []
        for o, budget in zip(
            self.owned, budgets(density, [o.numel() for o in self.owned]), strict=True
        ):
            free = ~o
            count = int(free.sum())
            short = count < budget
            forced.append(free if short else None)
            keep.append(budget - count if short else budget)
        return forced, keep

    def weights(self) -> list[Tensor]:
        """(own trained values where free, frozen backbone values elsewhere) times the
        straight-through mask; a frozen value is a constant, never a parameter."""
        return [
            torch.where(free, p, c) * straight_through(s, k, f, a)
            for free, p, c, s, k, f, a in zip(
                self.free_at,
                self.free,
                self.constants,
                self.scores,
                self.keep,
                self.forced,
                self.allowed_per_layer(),
                strict=True,
            )
        ]


def learn_capacity(run: Run) -> None:
    """Learn a capacity task's scores, free weights, biases and head for ``epochs`` (for a
    config of no dense epochs, ``retrain_epochs``); its mask is the top of the last scores."""
    trainer = run.trainer
    if not isinstance(trainer, CapacityTrainer):
        raise TypeError("learn_capacity needs a run created with CapacityTrainer")
    config = run.config
    epochs = config.epochs if config.bound(config.epochs) >= 1 else config.retrain_epochs
    run.fit("train", epochs, after_epoch=lambda _: trainer.update_masks())
    trainer.update_masks()
