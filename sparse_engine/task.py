"""A task: its mask over the backbone, the values of the weights it owns, its biases, k-WTA
state and head; what the learner returns, the model commits and runs, and storage keeps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from .backbone import BackboneSpec, forward_layers
from .config import TaskConfig
from .kwta import KWinners, KWinnersState
from .taskfree import TaskIdentity

# How a task was learned (capacity.py): "free" = as configured, with the free weights its
# budget needs; "mix" = the free weights left plus a supermask over earlier tasks' frozen
# weights; "supermask" = a supermask over frozen weights only (it owns and writes nothing).
LearnedAs = Literal["free", "mix", "supermask"]
LEARNED_AS: tuple[LearnedAs, ...] = get_args(LearnedAs)


@dataclass(frozen=True)
class ReuseReport:
    """What a task could read of earlier tasks and what it read (reuse.py): the choice per
    hidden layer; under ``similar`` the ids chosen, the probe's accuracy on random features
    (``baseline``), per served task (id, the probe's accuracy on its features) and the
    margin; and per layer (owner id, weights) of its mask by owner at its commit, 0 = the
    free weights it claimed."""

    choice: tuple[str, ...]
    chosen: tuple[int, ...] = ()
    baseline: float | None = None
    scores: tuple[tuple[int, float], ...] = ()
    margin: float | None = None
    owners: tuple[tuple[tuple[int, int], ...], ...] = ()

    def by_owner(self) -> dict[int, tuple[int, ...]]:
        """Per owner id of the mask's weights (0 = the free ones it claimed), how many per
        layer, by id."""
        ids = sorted({i for layer in self.owners for i, _ in layer})
        return {i: tuple(dict(layer).get(i, 0) for layer in self.owners) for i in ids}

    def read_from(self) -> dict[int, int]:
        """Weights of the mask owned by each earlier task id, over all layers."""
        return {i: sum(counts) for i, counts in self.by_owner().items() if i}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReuseReport:
        """Back from ``dataclasses.asdict`` after a JSON round trip (lists to tuples)."""
        return cls(
            choice=tuple(str(c) for c in data["choice"]),
            chosen=tuple(int(i) for i in data.get("chosen", ())),
            baseline=None if data.get("baseline") is None else float(data["baseline"]),
            scores=tuple((int(i), float(s)) for i, s in data.get("scores", ())),
            margin=None if data.get("margin") is None else float(data["margin"]),
            owners=tuple(
                tuple((int(i), int(c)) for i, c in layer) for layer in data.get("owners", ())
            ),
        )


@dataclass(frozen=True)
class TaskRecord:
    """What a user sees of a committed task."""

    id: int
    name: str
    classes: tuple[int, ...]
    density: tuple[float, ...]  # per layer: mask size / layer size
    weights_owned: int  # free weights this task claimed, now frozen as its own
    weights_read: int  # earlier tasks' weights its mask reads
    val_accuracy: float
    free_capacity: tuple[float, ...]  # per layer, after the commit
    seconds: float
    history: tuple[dict[str, float | int | str], ...] = field(default=(), repr=False)
    # which earlier tasks it could read and did; None for a task stored before reuse choices
    reuse: ReuseReport | None = None
    learned_as: LearnedAs = "free"  # tasks stored before capacity.py were all "free"

    @property
    def epochs_run(self) -> int | None:
        """Epochs the task trained, summed over its phases' ends in the history (auto epochs
        stop on their own); None for a task stored before phases recorded their end."""
        ends = [int(h["epochs"]) for h in self.history if "stopped" in h]
        return sum(ends) if ends else None


@dataclass(frozen=True)
class TaskDeletion:
    """What deleting a task did to the backbone, per layer."""

    id: int
    name: str
    freed: tuple[int, ...]  # weights back in the free pool (of this or earlier deleted tasks)
    retired: tuple[int, ...]  # weights it owns that remaining tasks read: frozen, kept
    free_capacity: tuple[float, ...]  # after the delete


@dataclass(frozen=True)
class Task:
    """A learned task: everything that it adds to the backbone. ``own_values`` are the
    values of the free weights its mask claimed at commit (row-major), which the backbone
    holds from then on; the weights of earlier tasks that it reads are never part of it."""

    record: TaskRecord
    config: TaskConfig
    masks: tuple[Tensor, ...]  # bool, one per backbone layer
    own_values: tuple[Tensor, ...]  # float32, 1-D: values at mask ∩ free-at-commit
    biases: tuple[Tensor, ...]
    kwta: tuple[KWinnersState, ...]
    head_weight: Tensor
    head_bias: Tensor
    # what task-free inference scores it by; None for a task stored before identity models
    identity: TaskIdentity | None = None

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def classes(self) -> tuple[int, ...]:
        return self.record.classes

    @property
    def units(self) -> tuple[Tensor | None, ...]:
        """Per layer, the kept rows (units or channels) of a task pruned by whole units
        (``structure="units"``), or None where every unit is kept; kept in the k-WTA state."""
        return tuple(s.units for s in self.kwta)


class TaskNet(nn.Module):
    """The dense masked forward pass of one committed task: the reference for inference."""

    def __init__(self, spec: BackboneSpec, weights: Sequence[Tensor], task: Task) -> None:
        super().__init__()
        self.spec = spec
        for i, (w, m) in enumerate(zip(weights, task.masks, strict=True)):
            self.register_buffer(f"weight{i}", torch.where(m, w, torch.zeros((), dtype=w.dtype)))
            self.register_buffer(f"bias{i}", task.biases[i].clone())
        self.kwta = nn.ModuleList(KWinners.from_state(s) for s in task.kwta)
        self.head = nn.Linear(task.head_weight.shape[1], task.head_weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(task.head_weight)
            self.head.bias.copy_(task.head_bias)
        self.requires_grad_(False)
        self.eval()

    def features(self, x: Tensor) -> Tensor:
        """The last hidden layer's outputs (N × features), what the head reads."""
        n = len(self.spec.layers)
        weights = [getattr(self, f"weight{i}") for i in range(n)]
        biases = [getattr(self, f"bias{i}") for i in range(n)]
        return forward_layers(self.spec, x, weights, biases, self.kwta)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
