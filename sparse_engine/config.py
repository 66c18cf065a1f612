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
DEFAULT_BACKBONE = "mlp:784-1000-1000"  # an MLP for 28×28 inputs (MNIST-sized)

# The sensible range of each numeric hyper-parameter, inclusive (density and the fractions
# with open ends are checked below). Beyond these a task cannot learn (a learning rate of
# 10 diverges) or holds the one trainer for ever; the CLI's --help shows them.
RANGES: dict[str, tuple[float, float]] = {
    "epochs": (0, 1000),
    "retrain_epochs": (0, 1000),
    "batch_size": (1, 65536),
    "lr": (1e-8, 1.0),
    "momentum": (0.0, 0.999),
    "weight_decay": (0.0, 1.0),
    "prune_rounds": (1, 100),
    "rewind_epoch": (0, 1000),
    "rigl_interval": (1, 1_000_000),
    "saliency_batches": (1, 10_000),
    "boost_strength": (0.0, 10.0),
    "boost_strength_factor": (0.0, 1.0),
    "duty_cycle_period": (1, 1_000_000),
    "seed": (0, 2**63 - 1),
}


def range_text(name: str) -> str:
    """A hyper-parameter's allowed range as text, e.g. '[1e-08, 1]'."""
    return "[{}, {}]".format(*(f"{v}" if isinstance(v, int) else f"{v:g}" for v in RANGES[name]))


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
        for name, (lo, hi) in RANGES.items():
            value = getattr(self, name)
            whole = isinstance(getattr(TaskConfig, name), int)  # from the field's default
            if isinstance(value, bool) or not isinstance(value, int if whole else int | float):
                problems.append(
                    f"{name} must be {'an integer' if whole else 'a number'}, got {value!r}"
                )
            elif not (math.isfinite(value) and lo <= value <= hi):
                problems.append(f"{name} must lie in {range_text(name)}, got {value}")
        if self.epochs + self.retrain_epochs < 1:
            problems.append("epochs + retrain_epochs must be at least 1")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.saliency not in SALIENCIES:
            problems.append(f"saliency must be one of {SALIENCIES}, got {self.saliency!r}")
        if self.retrain not in RETRAINS:
            problems.append(f"retrain must be one of {RETRAINS}, got {self.retrain!r}")
        if self.retrain in RESETS and self.retrain_epochs < 1:
            problems.append(f"retrain {self.retrain!r} needs retrain_epochs >= 1")
        if self.retrain == "late_rewind" and self.rewind_epoch > self.epochs:
            problems.append(
                f"rewind_epoch {self.rewind_epoch} lies beyond the {self.epochs} epoch(s) "
                "of dense training; it must be <= epochs"
            )
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
        if not (math.isfinite(self.rigl_drop_fraction) and 0.0 < self.rigl_drop_fraction < 1.0):
            problems.append(f"rigl_drop_fraction must lie in (0, 1), got {self.rigl_drop_fraction}")
        if problems:
            raise InvalidInputError("; ".join(problems))

    @property
    def total_epochs(self) -> int:
        """Epochs the learner runs: supermask trains only ``epochs``; rigl adds one block of
        ``retrain_epochs``; prune retrains after each of its ``prune_rounds``."""
        if self.method == "supermask":
            return self.epochs
        if self.method == "rigl":
            return self.epochs + self.retrain_epochs
        return self.epochs + self.retrain_epochs * self.prune_rounds

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
