"""Hyper-parameters of learning one task, and the progress events it reports.

``SETTINGS`` is the one table of the hyper-parameters: one ``Setting`` per field of
``TaskConfig`` (its type, default, choices, range and a line of help). The server's
conversion of the ``HyperParameters`` message, the client's ``add_task`` and the CLI's
add-task flags all read it, and a test checks that the message has the same fields.
Torch-free on purpose: the CLI imports it for every command.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypeVar, get_args, get_origin, get_type_hints

from .errors import InvalidInputError

Saliency = Literal["magnitude", "obd", "taylor"]
Retrain = Literal["finetune", "rewind", "late_rewind", "reinit", "sign_constant"]
Method = Literal["prune", "supermask", "rigl"]
Structure = Literal["weights", "units"]
Optimizer = Literal["sgd", "adam", "adamw"]
# which earlier tasks' weights a new task's mask may read, per hidden layer (reuse.py):
# all (PackNet: every earlier and retired weight), none (free weights only), similar
# (those of the earlier tasks whose features a probe on the new task's data finds useful)
# or auto (none while the layer's free weights hold the task's budget, all once they do
# not: reading is the fallback, never NoFreeCapacityError)
Reuse = Literal["all", "none", "similar", "auto"]
ReuseValue = Reuse | tuple[Reuse, ...]  # one choice for every hidden layer, or one per layer
# tune: one (density, k) trial of a tuned task (tune.py), before the chosen one's phases
Phase = Literal["tune", "train", "prune", "retrain", "commit"]
# an epoch count, or "auto": train until the validation accuracy has not improved for
# ``patience`` periods, at most ``max_epochs`` periods, and keep the best epoch's iterate
Epochs = int | Literal["auto"]
AUTO: Literal["auto"] = "auto"
# k of one k-WTA layer: a count, a fraction of its units, or "auto" (kwta.auto_k: about
# 4·√units winners, measured across widths and data sets in benchmarks/sizes.py)
KSize = int | float | Literal["auto"]
KValue = KSize | tuple[KSize, ...]  # k of every hidden layer, or one per layer
# why a training phase stopped: its fixed count ran out, or (auto) a plateau or max_epochs
# (periods: see PERIOD_STEPS)
Stopped = Literal["fixed", "plateau", "max_epochs"]
# the inference engine's backends (engine.py): auto = the native kernel, else torch.sparse
Backend = Literal["auto", "native", "torch"]
# where tasks are trained (device.py): auto = a CUDA GPU when torch sees one, else the CPU
Device = Literal["auto", "cpu", "cuda"]

SALIENCIES: tuple[str, ...] = get_args(Saliency)
RETRAINS: tuple[str, ...] = get_args(Retrain)
# retrain modes that reset the kept values before retraining (they need retrain_epochs >= 1)
RESETS: tuple[str, ...] = tuple(r for r in RETRAINS if r != "finetune")
METHODS: tuple[str, ...] = get_args(Method)
STRUCTURES: tuple[str, ...] = get_args(Structure)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
REUSES: tuple[Reuse, ...] = get_args(Reuse)
BACKENDS: tuple[Backend, ...] = get_args(Backend)
DEVICES: tuple[Device, ...] = get_args(Device)
DEFAULT_BACKBONE = "mlp:784-1000-1000"  # an MLP for 28×28 inputs (MNIST-sized)
# fraction of the training examples held out for validation when none is given (a seeded,
# deterministic split: TaskConfig.seed); auto epochs stop on this validation accuracy
HOLD_OUT = 0.1
# auto epochs count ``patience`` and ``max_epochs`` in periods: a period is one epoch, or, when
# an epoch makes fewer optimizer steps than this (a small data set), the fewest whole epochs
# that make this many; counted in epochs, a 540-image task at batch 128 stopped after a few
# dozen steps (benchmarks/RESULTS.md, "Defaults on five data sets")
PERIOD_STEPS = 50


class Range(NamedTuple):
    """An interval of allowed values; ``ends`` tells whether each end is closed, '[' ']', or
    open, '(' ')'."""

    low: float
    high: float
    ends: str = "[]"

    def holds(self, value: float) -> bool:
        """Whether ``value`` lies inside (NaN never does)."""
        above = value > self.low if self.ends[0] == "(" else value >= self.low
        below = value < self.high if self.ends[1] == ")" else value <= self.high
        return above and below

    @property
    def text(self) -> str:
        """The interval as text, e.g. '[1e-08, 1]' or '(0, 1]'."""
        low, high = (f"{v}" if isinstance(v, int) else f"{v:g}" for v in (self.low, self.high))
        return f"{self.ends[0]}{low}, {high}{self.ends[1]}"


# The sensible range of each numeric hyper-parameter. Beyond these a task cannot learn (a
# learning rate of 10 diverges) or holds the one trainer for ever; the CLI's --help shows them.
RANGES: dict[str, Range] = {
    "density": Range(0.0, 1.0, "(]"),
    "epochs": Range(0, 1000),
    "retrain_epochs": Range(0, 1000),
    "patience": Range(1, 1000),
    "max_epochs": Range(1, 1000),
    "batch_size": Range(1, 65536),
    "lr": Range(1e-8, 1.0),
    "momentum": Range(0.0, 0.999),
    "weight_decay": Range(0.0, 1.0),
    "prune_rounds": Range(1, 100),
    "rewind_epoch": Range(0, 1000),
    "rigl_interval": Range(1, 1_000_000),
    "rigl_drop_fraction": Range(0.0, 1.0, "()"),
    "saliency_batches": Range(1, 10_000),
    "boost_strength": Range(0.0, 10.0),
    "boost_strength_factor": Range(0.0, 1.0),
    "duty_cycle_period": Range(1, 1_000_000),
    "seed": Range(0, 2**63 - 1),
}


# One line of help per hyper-parameter (the CLI's --help, the client's docs).
HELP: dict[str, str] = {
    "density": "fraction of each layer's weights the task keeps (with structure units: of units)",
    "k": "k-WTA winners per hidden layer: a count (20), a fraction (0.1), auto (about "
    "4·√units: 32 of 64, 40 of 100, 126 of 1000) or one per layer",
    "epochs": "epochs of the first phase: dense training (prune, rigl) or of the supermask; "
    "auto = until validation accuracy plateaus (patience, max_epochs), keeping the best epoch",
    "retrain_epochs": "epochs of retraining after each pruning round (rigl: with the mask "
    "fixed); auto = until validation accuracy plateaus, the lr cut 10x at each plateau, "
    "keeping the best epoch",
    "patience": "auto epochs: periods without a better validation accuracy that end a phase (or "
    f"cut retraining's lr); a period is an epoch, or enough epochs to make {PERIOD_STEPS} "
    "optimizer steps on small data; validation = the val split, else "
    f"{HOLD_OUT:.0%} of train held out (seeded)",
    "max_epochs": "auto epochs: the most periods one phase may run (a period: see patience)",
    "batch_size": "examples per optimizer step",
    "lr": "learning rate",
    "optimizer": "the optimizer (it never touches weights owned by earlier tasks)",
    "momentum": "sgd's momentum",
    "weight_decay": "weight decay of the task's own weights",
    "saliency": "how weights are ranked for pruning: |w|, OBD's ½·h·w², or |gradient × w|",
    "prune_rounds": "prune in this many rounds, the mask shrinking geometrically to density",
    "retrain": "after pruning: fine-tune, or reset the kept weights first (method prune)",
    "rewind_epoch": "late_rewind: epochs of dense training whose values are rewound to",
    "method": "how the subnetwork is found: prune a trained net, learn a supermask over "
    "untrained weights, or RigL dynamic sparse training",
    "structure": "prune single weights, or whole hidden units / conv channels by group saliency",
    "supermask_train_head": "supermask: train the task's head with the scores, or keep it random",
    "rigl_interval": "rigl: optimizer steps between two mask updates",
    "rigl_drop_fraction": "rigl: fraction dropped at the first mask update (cosine-decayed)",
    "saliency_batches": "batches that estimate the saliency",
    "boost_strength": "k-WTA boosting of rarely active units while training",
    "boost_strength_factor": "boost_strength's decay per epoch",
    "duty_cycle_period": "k-WTA duty cycle's averaging period, in examples",
    "seed": "seed of the task's initialisation, shuffling and held-out split",
    "reuse": "which earlier tasks' weights the mask may read: all, none (free weights only), "
    "similar (tasks whose features a probe on this task's data finds useful) or auto (none while "
    "the layer's free weights hold the budget, else all); one per layer (none,all)",
}


@dataclass(frozen=True)
class Setting:
    """One hyper-parameter: a field of ``TaskConfig`` as the API, the client and the CLI see it.

    ``kind`` is bool, int, float or str (then ``choices`` lists its values); ``k``'s and
    ``reuse``'s are tuple: one value, or one per hidden layer (``reuse``'s among
    ``choices``)."""

    name: str
    kind: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    range: Range | None = None
    auto: bool = False  # an int that may also be "auto" (epochs, retrain_epochs)

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed, or None when it is (k is checked per layer)."""
        if self.auto and value == AUTO:
            return None
        if self.kind is tuple and self.choices:  # one choice, or one per layer
            per_layer = value if isinstance(value, tuple) else (value,)
            bad = [v for v in per_layer if v not in self.choices]
            if bad or not per_layer:
                return (
                    f"{self.name} must be one of {self.choices}, or one per hidden layer, "
                    f"got {value!r}"
                )
            return None
        if self.kind is str:
            allowed = value in self.choices
            want = f"one of {self.choices}"
        elif self.kind is bool:
            allowed, want = isinstance(value, bool), "true or false"
        elif self.kind is int:
            allowed, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif self.kind is float:
            allowed = isinstance(value, int | float) and not isinstance(value, bool)
            want = "a number"
        else:
            return None
        if not allowed:
            want = f"{want} or {AUTO!r}" if self.auto else want
            return f"{self.name} must be {want}, got {value!r}"
        if self.range is not None and not self.range.holds(value):
            return f"{self.name} must lie in {self.range.text}, got {value}"
        return None


@dataclass(frozen=True)
class TaskConfig:
    """How one task is learned: train, prune to ``density``, retrain, commit.

    ``k`` is the k-WTA size of every hidden layer (a count, a fraction, or "auto": about
    4·√units winners, ``kwta.auto_k``), or one value per layer. ``prune_rounds`` > 1
    prunes iteratively, shrinking the mask geometrically from 1 to ``density`` with
    ``retrain_epochs`` of retraining after each round.

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

    Each field's type, range, choices and help are in ``SETTINGS``.
    """

    density: float = 0.1
    # auto by default: a fixed fraction fits one width only (10 % of 100 units is too few)
    k: KValue = AUTO
    # auto by default: MNIST-tuned fixed counts (2 + 2) undertrain other data sets
    epochs: Epochs = AUTO
    retrain_epochs: Epochs = AUTO
    patience: int = 3
    max_epochs: int = 30
    batch_size: int = 128
    # 1e-2 by default: at 1e-3 the sparse net stayed 5-6 points below a dense one on the 8×8
    # digits; 1e-2 brings four of five data sets within 1 point and is better on validation
    # on four (benchmarks/RESULTS.md, "Defaults on five data sets", 2026-12-01)
    lr: float = 1e-2
    optimizer: Optimizer = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    # taylor by default: magnitude ranks frozen earlier-task weights (already retrained
    # sparse, hence large) above freshly trained free ones, so late tasks reuse too much
    saliency: Saliency = "taylor"
    prune_rounds: int = 1
    retrain: Retrain = "finetune"
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
    # auto by default: a task reads no earlier task's weight while a layer's free weights
    # hold its budget, all of them once they do not; reading every earlier weight (all,
    # PackNet's, the default until 2026-12-01) cost Permuted MNIST's later tasks up to 2
    # points and helped on none of five data sets (benchmarks/RESULTS.md, issue 17)
    reuse: ReuseValue = "auto"

    def __post_init__(self) -> None:
        problems = [p for s in SETTINGS.values() if (p := s.problem(getattr(self, s.name)))]
        if problems:  # the rules between fields need each field valid
            raise InvalidInputError("; ".join(problems))
        if self.bound(self.epochs) + self.bound(self.retrain_epochs) < 1:
            problems.append("epochs + retrain_epochs must be at least 1")
        if self.retrain in RESETS and self.bound(self.retrain_epochs) < 1:
            problems.append(f"retrain {self.retrain!r} needs retrain_epochs >= 1")
        if self.retrain == "late_rewind" and self.rewind_epoch > self.bound(self.epochs):
            problems.append(
                f"rewind_epoch {self.rewind_epoch} lies beyond the {self.bound(self.epochs)} "
                "epoch(s) of dense training; it must be <= epochs (max_epochs when auto)"
            )
        if self.method != "prune":
            if self.bound(self.epochs) < 1:
                problems.append(f"method {self.method!r} needs epochs >= 1")
            if self.retrain != "finetune":
                problems.append(
                    f"retrain {self.retrain!r} applies to method 'prune' only, not {self.method!r}"
                )
            if self.prune_rounds != 1:
                problems.append(f"prune_rounds applies to method 'prune' only, not {self.method!r}")
            if self.structure == "units":
                problems.append(
                    f"structure 'units' applies to method 'prune' only, not {self.method!r}"
                )
        if problems:
            raise InvalidInputError("; ".join(problems))

    def epochs_per_period(self, steps_per_epoch: int = PERIOD_STEPS) -> int:
        """Auto epochs' period on data of ``steps_per_epoch`` batches: one epoch, or the
        fewest whole epochs that make ``PERIOD_STEPS`` optimizer steps."""
        return max(1, -(-PERIOD_STEPS // steps_per_epoch))

    def bound(self, epochs: Epochs, steps_per_epoch: int = PERIOD_STEPS) -> int:
        """The most epochs a phase of ``epochs`` runs on data of ``steps_per_epoch`` batches:
        the count, or ``max_epochs`` periods for auto (the default: periods of one epoch)."""
        if epochs != AUTO:
            return int(epochs)
        return self.max_epochs * self.epochs_per_period(steps_per_epoch)

    def most_epochs(self, steps_per_epoch: int = PERIOD_STEPS) -> int:
        """Epochs the learner runs (at most, with auto phases) on data of ``steps_per_epoch``
        batches: supermask trains only ``epochs``; rigl adds one block of
        ``retrain_epochs``; prune retrains after each of its ``prune_rounds``."""
        epochs = self.bound(self.epochs, steps_per_epoch)
        retrain = self.bound(self.retrain_epochs, steps_per_epoch)
        if self.method == "supermask":
            return epochs
        if self.method == "rigl":
            return epochs + retrain
        return epochs + retrain * self.prune_rounds

    @property
    def total_epochs(self) -> int:
        """``most_epochs`` in periods (epochs on data of ``PERIOD_STEPS`` batches or more): an
        auto phase counts as ``max_epochs``."""
        return self.most_epochs()

    def k_per_layer(self, layers: int) -> tuple[KSize, ...]:
        """k for each of ``layers`` hidden layers."""
        return _per_layer("k", self.k, layers)

    def reuse_per_layer(self, layers: int) -> tuple[Reuse, ...]:
        """The reuse choice for each of ``layers`` hidden layers."""
        return _per_layer("reuse", self.reuse, layers)


T = TypeVar("T")


def _per_layer(name: str, value: T | tuple[T, ...], layers: int) -> tuple[T, ...]:
    """``value`` for each of ``layers`` hidden layers: repeated, or as given one per layer
    (InvalidInputError when the count differs)."""
    if not isinstance(value, tuple):
        return (value,) * layers
    if len(value) != layers:
        raise InvalidInputError(
            f"{name} gives {len(value)} values for a backbone of {layers} hidden layers"
        )
    return value


def _per_layer_choices(hint: Any) -> tuple[str, ...]:
    """The choices of a per-layer hint made of one Literal and a tuple of it (reuse), else ()."""
    members = get_args(hint)
    literals = [m for m in members if get_origin(m) is Literal]
    tuples = [get_args(m) for m in members if get_origin(m) is tuple]
    if len(literals) == 1 and len(members) == 2 and tuples == [(literals[0], ...)]:
        return get_args(literals[0])
    return ()


def _settings() -> dict[str, Setting]:
    """The table, from TaskConfig's fields (name, type, default), RANGES and HELP."""
    hints = get_type_hints(TaskConfig)
    table = {}
    for f in dataclasses.fields(TaskConfig):
        hint = hints[f.name]
        auto = hint == Epochs
        choices = get_args(hint) if get_origin(hint) is Literal else _per_layer_choices(hint)
        if auto:
            kind: type = int
        elif get_origin(hint) is Literal:
            kind = str
        elif hint in (bool, int, float):
            kind = hint
        else:  # k, reuse: one value or one per hidden layer
            kind = tuple
        table[f.name] = Setting(
            f.name, kind, f.default, HELP[f.name], choices, RANGES.get(f.name), auto
        )
    return table


SETTINGS: dict[str, Setting] = _settings()


@dataclass(frozen=True)
class Trial:
    """One (density, k) pair tried: k as asked and as resolved per layer, its validation
    accuracy (a fraction), the seconds it took, and why it may not be chosen ("" = it may:
    else the soundness check's message, as for a task that diverged or stayed at chance)."""

    density: float
    k: KValue
    k_units: tuple[int, ...]
    val_accuracy: float
    seconds: float
    error: str = ""


@dataclass(frozen=True)
class TuneReport:
    """A tuned task's search (tune.py), as its progress events carry it: every trial, the
    index of the chosen one (-1 while it runs), the tolerance, and its cost: ``seconds`` in
    all (the chosen trial's task is the one kept)."""

    trials: tuple[Trial, ...]
    chosen: int
    tolerance: float
    seconds: float

    @property
    def choice(self) -> Trial:
        """The chosen trial."""
        return self.trials[self.chosen]

    def to_json(self) -> str:
        """The report as JSON (MLflow's ``tune.json``)."""
        return json.dumps(dataclasses.asdict(self), indent=2)


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
    # on the event of a train/retrain phase's last epoch: why the phase stopped; its extra
    # then holds the epochs it ran ("epochs"), the epoch whose iterate it kept ("kept_epoch",
    # 1-based within the phase) with that epoch's validation accuracy ("kept_accuracy"), and
    # auto epochs' period ("period_epochs": epochs per period of patience and max_epochs)
    stopped: Stopped | None = None
    # phase tune: the search so far (its chosen index is -1 until the last trial's event)
    tune: TuneReport | None = None


ProgressCallback = Callable[[ProgressEvent], None]
