"""Hyper-parameters of learning one task, and the progress events it reports."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from .errors import InvalidInputError

Saliency = Literal["magnitude", "obd", "taylor"]
Retrain = Literal["finetune", "rewind", "late_rewind", "reinit", "sign_constant"]
Method = Literal["prune", "supermask", "rigl"]
Structure = Literal["weights", "units"]
Optimizer = Literal["sgd", "adam", "adamw"]
Phase = Literal["train", "prune", "retrain", "commit"]

SALIENCIES: tuple[str, ...] = ("magnitude", "obd", "taylor")
RETRAINS: tuple[str, ...] = ("finetune", "rewind", "late_rewind", "reinit", "sign_constant")
# retrain modes that reset the kept values before retraining (they need retrain_epochs >= 1)
RESETS: tuple[str, ...] = ("rewind", "late_rewind", "reinit", "sign_constant")
METHODS: tuple[str, ...] = ("prune", "supermask", "rigl")
STRUCTURES: tuple[str, ...] = ("weights", "units")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class TaskConfig:
    """How one task is learned: train, prune to ``density``, retrain, commit.

    ``k`` is the k-WTA size of every hidden layer (a count or a fraction), or one value
    per layer. ``prune_rounds`` > 1 prunes iteratively, shrinking the mask geometrically
    from 1 to ``density`` with ``retrain_epochs`` of retraining after each round.

    ``method`` picks how the subnetwork is found: ``prune`` (the recipe above, with
    ``retrain`` = finetune | rewind | late_rewind | reinit | sign_constant), ``supermask``
    (``epochs`` of learning one score per weight over the untouched backbone values, plus
    the head when ``supermask_train_head``; no weight is trained) or ``rigl`` (sparse from
    the start: ``epochs`` of training with a drop/regrow mask update every
    ``rigl_interval`` steps, then ``retrain_epochs`` with the mask fixed).

    ``structure`` (method ``prune`` only): ``weights`` prunes single weights; ``units``
    prunes whole hidden units (MLP) or channels (CNN) by group saliency (structured.py):
    ``density`` is then the fraction of each hidden layer's units kept, the task's mask is
    the kept units' rows × the previous layer's kept columns, and a fractional ``k`` is a
    fraction of the kept units (a count must not exceed them).
    """

    density: float = 0.1
    k: int | float | tuple[int | float, ...] = 0.1
    epochs: int = 2
    retrain_epochs: int = 2
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: Optimizer = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    # taylor by default: magnitude ranks frozen earlier-task weights (already retrained
    # sparse, hence large) above freshly trained free ones, so late tasks reuse too much
    saliency: Saliency = "taylor"
    prune_rounds: int = 1
    retrain: Retrain = "finetune"
    # late_rewind: epochs of the dense phase after which the rewind point is taken
    rewind_epoch: int = 1
    method: Method = "prune"
    structure: Structure = "weights"
    supermask_train_head: bool = True
    rigl_interval: int = 50  # optimizer steps between two RigL mask updates (ΔT)
    rigl_drop_fraction: float = 0.3  # fraction dropped at the first update, cosine-decayed
    saliency_batches: int = 16
    boost_strength: float = 1.0
    boost_strength_factor: float = 0.9
    duty_cycle_period: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.density, float | int) and 0.0 < self.density <= 1.0):
            problems.append(f"density must lie in (0, 1], got {self.density}")
        for name in ("epochs", "retrain_epochs"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.epochs + self.retrain_epochs < 1:
            problems.append("epochs + retrain_epochs must be at least 1")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            problems.append(f"lr must be a positive number, got {self.lr}")
        if not 0.0 <= self.momentum < 1.0:
            problems.append(f"momentum must lie in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.saliency not in SALIENCIES:
            problems.append(f"saliency must be one of {SALIENCIES}, got {self.saliency!r}")
        if self.retrain not in RETRAINS:
            problems.append(f"retrain must be one of {RETRAINS}, got {self.retrain!r}")
        if self.retrain in RESETS and self.retrain_epochs < 1:
            problems.append(f"retrain {self.retrain!r} needs retrain_epochs >= 1")
        if not (isinstance(self.rewind_epoch, int) and self.rewind_epoch >= 0):
            problems.append(f"rewind_epoch must be an integer >= 0, got {self.rewind_epoch!r}")
        elif self.retrain == "late_rewind" and self.rewind_epoch > self.epochs:
            problems.append(
                f"rewind_epoch {self.rewind_epoch} lies beyond the {self.epochs} epoch(s) "
                "of dense training; it must be <= epochs"
            )
        if self.prune_rounds < 1:
            problems.append(f"prune_rounds must be >= 1, got {self.prune_rounds}")
        if self.method not in METHODS:
            problems.append(f"method must be one of {METHODS}, got {self.method!r}")
        elif self.method != "prune":
            if self.epochs < 1:
                problems.append(f"method {self.method!r} needs epochs >= 1")
            if self.retrain != "finetune":
                problems.append(
                    f"retrain {self.retrain!r} applies to method 'prune' only, not {self.method!r}"
                )
            if self.prune_rounds != 1:
                problems.append(f"prune_rounds applies to method 'prune' only, not {self.method!r}")
        if self.structure not in STRUCTURES:
            problems.append(f"structure must be one of {STRUCTURES}, got {self.structure!r}")
        elif self.structure == "units" and self.method != "prune":
            problems.append(
                f"structure 'units' applies to method 'prune' only, not {self.method!r}"
            )
        if not isinstance(self.supermask_train_head, bool):
            problems.append(
                f"supermask_train_head must be true or false, got {self.supermask_train_head!r}"
            )
        if self.rigl_interval < 1:
            problems.append(f"rigl_interval must be >= 1, got {self.rigl_interval}")
        if not (math.isfinite(self.rigl_drop_fraction) and 0.0 < self.rigl_drop_fraction < 1.0):
            problems.append(f"rigl_drop_fraction must lie in (0, 1), got {self.rigl_drop_fraction}")
        if self.saliency_batches < 1:
            problems.append(f"saliency_batches must be >= 1, got {self.saliency_batches}")
        if not (math.isfinite(self.boost_strength) and self.boost_strength >= 0):
            problems.append(f"boost_strength must be finite and >= 0, got {self.boost_strength}")
        if not 0.0 <= self.boost_strength_factor <= 1.0:
            problems.append(
                f"boost_strength_factor must lie in [0, 1], got {self.boost_strength_factor}"
            )
        if self.duty_cycle_period < 1:
            problems.append(f"duty_cycle_period must be >= 1, got {self.duty_cycle_period}")
        if problems:
            raise InvalidInputError("; ".join(problems))

    def k_per_layer(self, layers: int) -> tuple[int | float, ...]:
        """k for each of ``layers`` hidden layers."""
        if isinstance(self.k, tuple):
            if len(self.k) != layers:
                raise InvalidInputError(
                    f"k gives {len(self.k)} values for a backbone of {layers} hidden layers"
                )
            return self.k
        return (self.k,) * layers


@dataclass(frozen=True)
class ProgressEvent:
    """One step of learning a task, as the server streams it to clients."""

    phase: Phase
    epoch: int
    step: int
    loss: float
    accuracy: float
    density: float
    free_capacity: float
    extra: dict[str, float] = field(default_factory=dict)


ProgressCallback = Callable[[ProgressEvent], None]
