"""Analyses of a committed task from the pruning literature: why does its subnetwork work?

- ``weight_agnostic`` (Gaier & Ha 2019): every kept backbone weight set to one shared
  value w (optionally times the sign of its trained value), over a sweep of w;
- ``layer_robustness`` (Zhang, Bengio & Singer 2019, "Are all layers created equal?"): one
  layer at a time re-initialised to its initial values, or re-randomised;
- ``noise_robustness`` (Ahmad & Scheinkman 2019, "How can we be so dense?"): accuracy under
  additive white Gaussian input noise, beside a dense network of the same shape trained on
  the same data for the same epochs.

Every analysis works on its own copy of the task's network (``TaskNet`` clones what it
reads), so the model, its backbone and its tasks are never written: a task's logits stay
bit-identical. Only the kept weights of the task are replaced; the task's biases, k-WTA
state and head stay as trained unless the analysis says otherwise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import Backbone, forward_layers, init_head, init_weight
from .data import TaskData
from .errors import InvalidInputError, SparseCLError
from .model import SparseCL, free_pool_generator
from .task import Task, TaskNet
from .trainer import accuracy, make_optimizer

ANALYSES: tuple[str, ...] = ("weight-agnostic", "layer-robustness", "noise")
# Gaier & Ha sweep ±{0.5, 1, 2}; smaller values are added because a kept weight here is
# ~0.03..0.1 (Kaiming scale for fan-in 784 or 1000) and k-WTA is not scale-free with biases.
DEFAULT_WEIGHTS: tuple[float, ...] = (-2.0, -1.0, -0.5, -0.1, -0.03, 0.03, 0.1, 0.5, 1.0, 2.0)
DEFAULT_NOISE: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
MAX_SWEEP = 64  # values in a weight sweep or noise-level list
MAX_DRAWS = 32
MAX_EPOCHS = 100
MAX_NOISE = 10.0  # noise std, in units of the inputs' std
MAX_WEIGHT = 1e3  # |shared weight| of the weight-agnostic sweep


Stop = Callable[[], bool]  # polled between steps: True = give up (the caller went away)


class AnalysisStoppedError(SparseCLError):
    """The analysis was stopped by its caller before it finished; nothing was changed."""


def _poll(stop: Stop | None) -> None:
    if stop is not None and stop():
        raise AnalysisStoppedError("the analysis was stopped before it finished")


@dataclass(frozen=True)
class AnalysisTable:
    """A result as a table (rows labelled, one value per column) plus summary numbers:
    what the API returns, the CLI prints and MLflow logs."""

    analysis: str
    task: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, tuple[float, ...]], ...]
    summary: tuple[tuple[str, float], ...]
    examples: int


@dataclass(frozen=True)
class WeightAgnosticResult:
    """Accuracy of the task's mask with one shared weight value w, per w of the sweep."""

    task: str
    keep_sign: bool  # w times the sign of each trained weight, or w for every weight
    weights: tuple[float, ...]
    accuracies: tuple[float, ...]
    best_weight: float
    best_accuracy: float
    trained_accuracy: float  # the task as committed
    random_accuracy: float  # mean over ``draws`` random (initial-distribution) weights
    draws: int
    examples: int

    def table(self) -> AnalysisTable:
        """Rows: one per shared weight w."""
        return AnalysisTable(
            "weight-agnostic",
            self.task,
            ("shared_weight", "accuracy"),
            tuple((f"w={w:g}", (w, a)) for w, a in zip(self.weights, self.accuracies, strict=True)),
            (
                ("best_weight", self.best_weight),
                ("best_accuracy", self.best_accuracy),
                ("trained_accuracy", self.trained_accuracy),
                ("random_accuracy", self.random_accuracy),
                ("keep_sign", float(self.keep_sign)),
            ),
            self.examples,
        )


@dataclass(frozen=True)
class LayerRobustnessResult:
    """Accuracy with one layer re-initialised (initial values) or re-randomised, per layer."""

    task: str
    layers: tuple[str, ...]  # layer0, layer1, ..., head
    baseline_accuracy: float
    reinit_accuracy: tuple[float, ...]
    rerandom_accuracy: tuple[float, ...]
    examples: int

    @property
    def reinit_drop(self) -> tuple[float, ...]:
        return tuple(self.baseline_accuracy - a for a in self.reinit_accuracy)

    @property
    def rerandom_drop(self) -> tuple[float, ...]:
        return tuple(self.baseline_accuracy - a for a in self.rerandom_accuracy)

    def table(self) -> AnalysisTable:
        """Rows: one per layer, with accuracies and drops from the trained task."""
        rows = tuple(
            (name, (ri, self.baseline_accuracy - ri, rr, self.baseline_accuracy - rr))
            for name, ri, rr in zip(
                self.layers, self.reinit_accuracy, self.rerandom_accuracy, strict=True
            )
        )
        return AnalysisTable(
            "layer-robustness",
            self.task,
            ("reinit_accuracy", "reinit_drop", "rerandom_accuracy", "rerandom_drop"),
            rows,
            (("baseline_accuracy", self.baseline_accuracy),),
            self.examples,
        )


@dataclass(frozen=True)
class NoiseRobustnessResult:
    """Accuracy of the sparse task and of a dense net of the same shape, per noise level."""

    task: str
    levels: tuple[float, ...]  # noise std in units of the evaluation inputs' std
    input_std: float
    sparse_accuracy: tuple[float, ...]
    dense_accuracy: tuple[float, ...]
    dense_epochs: int
    dense_seconds: float
    examples: int
    train_examples: int

    def table(self) -> AnalysisTable:
        """Rows: one per noise level."""
        rows = tuple(
            (f"noise={lv:g}", (lv, s, d))
            for lv, s, d in zip(self.levels, self.sparse_accuracy, self.dense_accuracy, strict=True)
        )
        return AnalysisTable(
            "noise",
            self.task,
            ("noise_std", "sparse_accuracy", "dense_accuracy"),
            rows,
            (
                ("input_std", self.input_std),
                ("sparse_mean_accuracy", sum(self.sparse_accuracy) / len(self.levels)),
                ("dense_mean_accuracy", sum(self.dense_accuracy) / len(self.levels)),
                ("dense_epochs", float(self.dense_epochs)),
                ("dense_seconds", self.dense_seconds),
                ("train_examples", float(self.train_examples)),
            ),
            self.examples,
        )


AnalysisResult = WeightAgnosticResult | LayerRobustnessResult | NoiseRobustnessResult


# ---- shared helpers ------------------------------------------------------------------------
def task_examples(
    model: SparseCL, task: Task, data: TaskData, what: str
) -> tuple[TaskData, Tensor]:
    """The examples of ``data`` whose labels belong to ``task`` and their class indices;
    InvalidInputError when the inputs do not fit or none belongs to the task."""
    model.check_inputs(data.x)
    classes = torch.tensor(task.classes, dtype=torch.int64)
    keep = torch.isin(data.y, classes)
    if not bool(keep.any()):
        raise InvalidInputError(
            f"no {what} example's label belongs to task {task.name!r} "
            f"(classes {list(task.classes)})"
        )
    kept = data.subset(keep) if not bool(keep.all()) else data
    targets = torch.searchsorted(classes, kept.y)
    return kept, targets


def _floats(values: Sequence[float], what: str, low: float, high: float) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)
    if not 1 <= len(out) <= MAX_SWEEP:
        raise InvalidInputError(f"{what} needs 1..{MAX_SWEEP} values, got {len(out)}")
    bad = [v for v in out if not (math.isfinite(v) and low <= v <= high)]
    if bad:
        raise InvalidInputError(f"{what} must be finite values in [{low:g}, {high:g}], got {bad}")
    return out


def dense_epochs(task: Task) -> int:
    """The noise analysis's default epochs for its dense network: those the task trained
    (auto epochs stop on their own), else its config's count."""
    return task.record.epochs_run or task.config.total_epochs


def _count(value: int, what: str, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise InvalidInputError(f"{what} must be an integer in 1..{high}, got {value!r}")
    return value


def check_options(
    analysis: str,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    levels: Sequence[float] = DEFAULT_NOISE,
    draws: int = 3,
    epochs: int | None = None,
) -> None:
    """Every parameter check the analyses make, without running one (InvalidInputError)."""
    if analysis not in ANALYSES:
        raise InvalidInputError(f"analysis must be one of {ANALYSES}, got {analysis!r}")
    _floats(weights, "weights", -MAX_WEIGHT, MAX_WEIGHT)
    _floats(levels, "noise levels", 0.0, MAX_NOISE)
    _count(draws, "draws", MAX_DRAWS)
    if epochs is not None:
        _count(epochs, "epochs", MAX_EPOCHS)


def _net(model: SparseCL, task: Task) -> TaskNet:
    """A private copy of the task's reference network (nothing of the model is shared)."""
    return TaskNet(model.spec, model.backbone.weights, task)


@torch.no_grad()
def _set_layer(net: TaskNet, i: int, values: Tensor, mask: Tensor) -> None:
    getattr(net, f"weight{i}").copy_(torch.where(mask, values, torch.zeros(())))


def initial_weights(model: SparseCL, task_id: int) -> list[Tensor]:
    """The backbone's free weights at the start of learning task ``task_id``, regenerated
    from the seed: the backbone's initialisation for task 1, else the free pool's
    re-initialisation after task ``task_id - 1``'s commit (see ``SparseCL.commit_task``)."""
    if task_id == 1:
        return [w.clone() for w in Backbone(model.spec, model.seed).weights]
    generator = free_pool_generator(model.seed, task_id - 1)
    return [init_weight(layer.weight_shape, generator) for layer in model.spec.layers]


def task_initial_weights(model: SparseCL, task: Task) -> list[Tensor]:
    """Per layer, each kept weight's value before it was ever trained: the initial value it
    had when the task owning it started (the task itself, or the earlier task it reads)."""
    out = []
    cache: dict[int, list[Tensor]] = {}
    for i, mask in enumerate(task.masks):
        owners = model.owners.maps[i]
        values = torch.zeros(mask.shape)
        for owner in torch.unique(owners[mask]).tolist():
            if owner not in cache:
                cache[owner] = initial_weights(model, int(owner))
            where = mask & (owners == owner)
            values[where] = cache[owner][i][where]
        out.append(values)
    return out


def initial_head(task: Task, features: int) -> tuple[Tensor, Tensor]:
    """The head's values before training, regenerated from the task's seed as
    ``trainer.TaskTrainer`` draws them (weight, then bias, uniform in ±1/sqrt(features))."""
    generator = torch.Generator().manual_seed(task.config.seed)
    head = init_head(nn.Linear(features, task.head_weight.shape[0]), generator)
    return head.weight.detach(), head.bias.detach()


# ---- weight-agnostic -----------------------------------------------------------------------
@torch.no_grad()
def weight_agnostic(
    model: SparseCL,
    name: str,
    data: TaskData,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    keep_sign: bool = True,
    draws: int = 3,
    seed: int = 0,
    stop: Stop | None = None,
) -> WeightAgnosticResult:
    """Accuracy of task ``name``'s mask when every kept weight is one shared value w
    (times its trained sign when ``keep_sign``), per w; beside the trained weights and
    random weights on the same mask. Biases, k-WTA state and head stay as trained."""
    task = model.task(name)
    sweep = _floats(weights, "weights", -MAX_WEIGHT, MAX_WEIGHT)
    draws = _count(draws, "draws", MAX_DRAWS)
    data, targets = task_examples(model, task, data, "evaluation")
    net = _net(model, task)
    trained = [getattr(net, f"weight{i}").clone() for i in range(len(task.masks))]
    trained_accuracy = accuracy(net, data, targets)
    accuracies = []
    for w in sweep:
        _poll(stop)
        for i, (t, m) in enumerate(zip(trained, task.masks, strict=True)):
            shared = torch.sign(t) * w if keep_sign else torch.full_like(t, w)
            _set_layer(net, i, shared, m)
        accuracies.append(accuracy(net, data, targets))
    generator = torch.Generator().manual_seed(seed)
    randoms = []
    for _ in range(draws):
        _poll(stop)
        for i, (layer, m) in enumerate(zip(model.spec.layers, task.masks, strict=True)):
            _set_layer(net, i, init_weight(layer.weight_shape, generator), m)
        randoms.append(accuracy(net, data, targets))
    best = max(range(len(sweep)), key=lambda j: accuracies[j])
    return WeightAgnosticResult(
        task=name,
        keep_sign=keep_sign,
        weights=sweep,
        accuracies=tuple(accuracies),
        best_weight=sweep[best],
        best_accuracy=accuracies[best],
        trained_accuracy=trained_accuracy,
        random_accuracy=sum(randoms) / draws,
        draws=draws,
        examples=len(data),
    )


# ---- layer robustness ----------------------------------------------------------------------
@torch.no_grad()
def layer_robustness(
    model: SparseCL,
    name: str,
    data: TaskData,
    draws: int = 3,
    seed: int = 0,
    stop: Stop | None = None,
) -> LayerRobustnessResult:
    """Per layer (backbone layers, then the head), accuracy when that layer alone is reset:
    to its initial values (re-initialisation) or to fresh draws of the initial distribution
    (re-randomisation, mean over ``draws``). A backbone layer's biases go back to their
    initial zeros as well."""
    task = model.task(name)
    draws = _count(draws, "draws", MAX_DRAWS)
    data, targets = task_examples(model, task, data, "evaluation")
    net = _net(model, task)
    baseline = accuracy(net, data, targets)
    initial = task_initial_weights(model, task)
    generator = torch.Generator().manual_seed(seed)
    names, reinit, rerandom = [], [], []
    for i, (layer, m) in enumerate(zip(model.spec.layers, task.masks, strict=True)):
        _poll(stop)
        names.append(f"layer{i}")
        weight, bias = getattr(net, f"weight{i}"), getattr(net, f"bias{i}")
        saved_w, saved_b = weight.clone(), bias.clone()
        bias.zero_()
        _set_layer(net, i, initial[i], m)
        reinit.append(accuracy(net, data, targets))
        total = 0.0
        for _ in range(draws):
            _set_layer(net, i, init_weight(layer.weight_shape, generator), m)
            total += accuracy(net, data, targets)
        rerandom.append(total / draws)
        weight.copy_(saved_w)
        bias.copy_(saved_b)
    names.append("head")
    head_w, head_b = net.head.weight.clone(), net.head.bias.clone()
    init_w, init_b = initial_head(task, model.spec.features)
    net.head.weight.copy_(init_w)
    net.head.bias.copy_(init_b)
    reinit.append(accuracy(net, data, targets))
    total = 0.0
    for _ in range(draws):
        init_head(net.head, generator)
        total += accuracy(net, data, targets)
    rerandom.append(total / draws)
    net.head.weight.copy_(head_w)
    net.head.bias.copy_(head_b)
    return LayerRobustnessResult(
        task=name,
        layers=tuple(names),
        baseline_accuracy=baseline,
        reinit_accuracy=tuple(reinit),
        rerandom_accuracy=tuple(rerandom),
        examples=len(data),
    )


# ---- noise robustness ----------------------------------------------------------------------
class DenseNet(nn.Module):
    """A dense network of the backbone's shape (ReLU, biases, a head): the comparison."""

    def __init__(self, model: SparseCL, classes: int, generator: torch.Generator) -> None:
        super().__init__()
        spec = model.spec
        self.spec = spec
        self.weights = nn.ParameterList(
            nn.Parameter(init_weight(layer.weight_shape, generator)) for layer in spec.layers
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.zeros(layer.out_shape[0])) for layer in spec.layers
        )
        self.activations = nn.ModuleList(nn.ReLU() for _ in spec.layers)
        self.head = init_head(nn.Linear(spec.features, classes), generator)

    def forward(self, x: Tensor) -> Tensor:
        hidden = forward_layers(
            self.spec, x, list(self.weights), list(self.biases), self.activations
        )
        return self.head(hidden)


def train_dense(
    model: SparseCL,
    task: Task,
    train: TaskData,
    targets: Tensor,
    epochs: int,
    seed: int,
    stop: Stop | None = None,
) -> DenseNet:
    """A DenseNet trained on ``train`` for ``epochs`` with the task's optimizer, lr and batch,
    on the model's device (drawn on the CPU, so the seed gives the same start anywhere)."""
    generator = torch.Generator().manual_seed(seed)
    net = DenseNet(model, len(task.classes), generator).to(model.device)
    optimizer = make_optimizer(list(net.parameters()), task.config)
    data = TaskData(train.x, targets)
    net.train()
    for _ in range(epochs):
        for x, y in data.batches(task.config.batch_size, generator):
            _poll(stop)
            loss = F.cross_entropy(net(x.to(model.device)), y.to(model.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    net.eval()
    return net


def noise_robustness(
    model: SparseCL,
    name: str,
    data: TaskData,
    train: TaskData,
    levels: Sequence[float] = DEFAULT_NOISE,
    epochs: int | None = None,
    seed: int = 0,
    stop: Stop | None = None,
) -> NoiseRobustnessResult:
    """Accuracy of task ``name`` on ``data`` plus Gaussian noise of std level × std(data.x),
    per level, beside a dense net trained on ``train`` for ``epochs`` (default: the task's
    own epochs). Each level sees the same noise draw, scaled."""
    task = model.task(name)
    levels = _floats(levels, "noise levels", 0.0, MAX_NOISE)
    epochs = _count(dense_epochs(task) if epochs is None else epochs, "epochs", MAX_EPOCHS)
    data, targets = task_examples(model, task, data, "evaluation")
    train, train_targets = task_examples(model, task, train, "training")
    if len(train.classes) < 2:
        raise InvalidInputError(
            f"the training examples hold only class(es) {list(train.classes)}: "
            "the dense comparison needs at least 2 of the task's classes"
        )
    start = time.perf_counter()
    dense = train_dense(model, task, train, train_targets, epochs, seed, stop)
    dense_seconds = time.perf_counter() - start
    sparse = _net(model, task)
    flat = data.x.reshape(len(data), -1)
    std = float(flat.std())
    noise = torch.randn(flat.shape, generator=torch.Generator().manual_seed(seed + 1))
    sparse_acc, dense_acc = [], []
    with torch.no_grad():
        for level in levels:
            _poll(stop)
            noisy = TaskData((flat + noise * (level * std)).reshape(data.x.shape), data.y)
            sparse_acc.append(accuracy(sparse, noisy, targets))
            dense_acc.append(accuracy(dense, noisy, targets))
    return NoiseRobustnessResult(
        task=name,
        levels=levels,
        input_std=std,
        sparse_accuracy=tuple(sparse_acc),
        dense_accuracy=tuple(dense_acc),
        dense_epochs=epochs,
        dense_seconds=dense_seconds,
        examples=len(data),
        train_examples=len(train),
    )
