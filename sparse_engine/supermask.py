"""Supermasks: find a task's subnetwork by learning a score per weight, training no weight.

Zhou et al. 2019 ("Deconstructing lottery tickets") and Ramanujan et al. 2020 ("What's
hidden in a randomly weighted neural network?", edge-popup): every backbone weight gets a
score; the forward pass uses the top ``density`` of each layer by |score| with the weight
values as they stand (earlier tasks' owned values, free ones at their initial values), and
the gradient reaches the scores straight through the top-k (edge-popup). Biases stay zero;
the head is trained with the scores when ``supermask_train_head`` (else it keeps its random
values). The committed task owns its kept free weights at their unchanged values.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .backbone import Backbone, init_weight
from .config import TaskConfig
from .recipe import Run
from .saliency import keep_count
from .trainer import TaskTrainer


def top_k_mask(score: Tensor, keep: int) -> Tensor:
    """The ``keep`` largest entries of ``score`` as a bool mask (torch.topk: run on every
    forward pass, it is about 5× faster than a full sort on a 784×1000 layer)."""
    top = torch.topk(score.flatten(), keep, sorted=False).indices
    mask = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    mask[top] = True
    return mask.reshape(score.shape)


def scored_mask(
    score: Tensor, keep: int, forced: Tensor | None = None, candidates: Tensor | None = None
) -> Tensor:
    """The ``forced`` positions (None: none) plus the ``keep`` largest |score| among the
    other ``candidates`` (None: every position), as a bool mask."""
    rank = score.abs()
    if candidates is not None:  # |score| >= 0: a non-candidate (-1) never outranks one
        rank = torch.where(candidates, rank, rank.new_full((), -1.0))
    if forced is None:
        return top_k_mask(rank, keep)
    # a forced position (ranked -2) is never among the top ``keep`` others
    return forced | top_k_mask(rank.masked_fill(forced, -2.0), keep)


def straight_through(
    score: Tensor, keep: int, forced: Tensor | None = None, candidates: Tensor | None = None
) -> Tensor:
    """``scored_mask`` as 0/1 floats whose gradient flows to the scores as if the mask were
    |score| (edge-popup); the value is exactly the 0/1 mask."""
    magnitude = score.abs()
    hard = scored_mask(score.detach(), keep, forced, candidates).to(score.dtype)
    return hard + (magnitude - magnitude.detach())


class SupermaskTrainer(TaskTrainer):
    """A task trainer whose only trainable parts are the scores (and maybe the head)."""

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
        for p in self.free:
            p.requires_grad_(False)
        for b in self.biases:
            b.requires_grad_(False)
        self.head.requires_grad_(config.supermask_train_head)
        # edge-popup initialises the scores like the weights (Kaiming uniform)
        self.scores = nn.ParameterList(
            nn.Parameter(init_weight(w.shape, generator).to(w.device)) for w in self.constants
        )
        self.forced, self.keep = self.budgets(config.density)
        # reuse restricted: a weight outside the candidates never enters the top-k (its
        # |score| is ranked below every candidate's) and its value is never read
        self.allowed = list(self.candidates) if candidates is not None else None
        if self.allowed is not None:
            self.constants = [
                torch.where(c, w, torch.zeros((), device=w.device))
                for c, w in zip(self.allowed, self.constants, strict=True)
            ]
        self.update_masks()

    def allowed_per_layer(self) -> list[Tensor | None]:
        """Per layer, the weights the mask may cover (None: every one)."""
        return list(self.allowed) if self.allowed is not None else [None] * len(self.scores)

    def budgets(self, density: float) -> tuple[list[Tensor | None], list[int]]:
        """Per layer, the positions every mask holds (None: none) and how many more the
        scores pick: here none, and ``density`` of the layer."""
        return [None] * len(self.constants), [
            keep_count(density, w.numel()) for w in self.constants
        ]

    @torch.no_grad()
    def update_masks(self) -> None:
        """Set the mask (what ``density`` and the committed task see) to the current top-k."""
        self.set_masks(
            [
                scored_mask(s, k, f, a)
                for s, k, f, a in zip(
                    self.scores, self.keep, self.forced, self.allowed_per_layer(), strict=True
                )
            ]
        )

    def weights(self) -> list[Tensor]:
        """Backbone values (never trained) times the straight-through top-k mask."""
        return [
            c * straight_through(s, k, f, a)
            for c, s, k, f, a in zip(
                self.constants,
                self.scores,
                self.keep,
                self.forced,
                self.allowed_per_layer(),
                strict=True,
            )
        ]


def learn_supermask(run: Run) -> None:
    """Learn the scores for ``epochs``; the final mask is the top-k of the last scores."""
    trainer = run.trainer
    if not isinstance(trainer, SupermaskTrainer):
        raise TypeError("learn_supermask needs a run created with method='supermask'")
    run.fit("train", run.config.epochs, after_epoch=lambda _: trainer.update_masks())
    trainer.update_masks()
