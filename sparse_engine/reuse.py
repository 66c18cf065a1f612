"""Forward transfer made explicit: which earlier tasks' weights a new task may read
(``TaskConfig.reuse``, per hidden layer), and what its mask ended up reading.

- ``all``: every weight, free or owned (PackNet; retired weights of deleted tasks too).
- ``none``: free weights only: the task reads no earlier task's weight in that layer.
- ``similar``: free weights and those of the earlier tasks whose features help on the new
  task's data. Measured by a probe: a closed-form ridge classifier fitted on each served
  task's last hidden features (its dense masked forward pass, ``TaskNet.features``) on half
  of up to ``PROBE_EXAMPLES`` training examples of the new task (a seeded draw) and scored
  on the other half, against the same probe on a random subnetwork of the backbone's size
  at the new task's density and k (untrained features). A task is chosen when its probe's
  accuracy beats the baseline's by at least ``MARGIN``. Retired weights are never read.
- ``auto``: ``none`` while the layer's free weights hold the task's budget, ``all`` once
  they do not (``resolve``): a task reads no earlier weight while it has room of its own
  and never fails for lack of it (benchmarks/RESULTS.md, "Defaults on five data sets":
  reading earlier tasks' weights cost up to 2 points on Permuted MNIST and helped on none
  of the five data sets).

The trainer's mask starts as the candidates (``candidates``) and only shrinks, so no
method (prune, supermask, rigl, whole units) can choose or read a weight outside them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .backbone import BackboneSpec, forward_layers, init_weight
from .config import Reuse, TaskConfig
from .data import TaskData
from .errors import NoFreeCapacityError
from .kwta import KWinners
from .owners import OwnerMap
from .saliency import keep_count, top_mask
from .task import ReuseReport, Task, TaskNet

PROBE_EXAMPLES = 4000  # training examples the probe sees: half to fit, half to score
MARGIN = 0.01  # probe accuracy over the random-features baseline that makes a task similar
RIDGE = 1e-3  # ridge penalty, relative to the mean diagonal of the features' Gram matrix


@torch.no_grad()
def probe_accuracy(train_f: Tensor, train_y: Tensor, val_f: Tensor, val_y: Tensor) -> float:
    """Accuracy on (``val_f``, ``val_y``) of a ridge classifier (one-hot targets, a bias
    column) fitted in closed form on (``train_f``, ``train_y``); labels are class indices."""

    def design(f: Tensor) -> Tensor:
        return torch.cat([f.double(), torch.ones(len(f), 1, dtype=torch.float64)], 1)

    a = design(train_f)
    classes = int(max(int(train_y.max()), int(val_y.max()))) + 1
    targets = torch.nn.functional.one_hot(train_y, classes).double()
    gram = a.T @ a
    penalty = RIDGE * float(gram.diagonal().mean()) + 1e-12
    weights = torch.linalg.solve(
        gram + penalty * torch.eye(len(gram), dtype=gram.dtype), a.T @ targets
    )
    predicted = (design(val_f) @ weights).argmax(1)
    return float((predicted == val_y).double().mean())


@torch.no_grad()
def random_features(spec: BackboneSpec, config: TaskConfig, x: Tensor) -> Tensor:
    """Last hidden features of a random subnetwork: fresh backbone values (seeded by
    ``config.seed``) under a random mask at ``config.density``, zero biases, k-WTA of
    ``config.k``: what an untrained network of the new task's size sees."""
    generator = torch.Generator().manual_seed(config.seed)
    weights, biases, layers = [], [], []
    for layer, k in zip(spec.layers, config.k_per_layer(len(spec.layers)), strict=True):
        w = init_weight(layer.weight_shape, generator)
        keep = keep_count(config.density, w.numel())
        everywhere = torch.ones(layer.weight_shape, dtype=torch.bool)
        mask = top_mask(torch.rand(layer.weight_shape, generator=generator), everywhere, keep)
        weights.append(torch.where(mask, w, torch.zeros(())))
        biases.append(torch.zeros(layer.out_shape[0]))
        layers.append(KWinners(layer.units, k, boost_strength=0.0).eval())
    return forward_layers(spec, x, weights, biases, layers)


def class_indices(y: Tensor, classes: Sequence[int]) -> Tensor:
    """Labels as indices into ``classes``."""
    lookup = {c: i for i, c in enumerate(classes)}
    return torch.tensor([lookup[int(c)] for c in y.tolist()], dtype=torch.int64)


@torch.no_grad()
def similarity(
    spec: BackboneSpec,
    weights: Sequence[Tensor],
    tasks: Sequence[Task],
    train: TaskData,
    config: TaskConfig,
) -> tuple[float, tuple[tuple[int, float], ...]]:
    """The probe's accuracy on random features (the baseline) and, per task of ``tasks``
    (id, accuracy), on that task's features: fitted on half of at most ``PROBE_EXAMPLES``
    training examples (drawn by ``config.seed``), scored on the other half."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed))
    order = order[:PROBE_EXAMPLES]
    half = len(order) // 2
    fit, held = train.subset(order[:half]), train.subset(order[half:])
    classes = train.classes
    fit_y, held_y = class_indices(fit.y, classes), class_indices(held.y, classes)

    def score(fit_f: Tensor, held_f: Tensor) -> float:
        return probe_accuracy(fit_f, fit_y, held_f, held_y)

    baseline = score(random_features(spec, config, fit.x), random_features(spec, config, held.x))
    scores = []
    for task in tasks:
        net = TaskNet(spec, weights, task)
        scores.append((task.record.id, score(net.features(fit.x), net.features(held.x))))
    return baseline, tuple(scores)


def candidates(
    owners: OwnerMap, choices: Sequence[Reuse], readable: Sequence[int]
) -> list[Tensor] | None:
    """Per layer, the weights a new task's mask may cover: every one under ``all``; the
    free ones under ``none``; the free ones and those owned by a task id in ``readable``
    under ``similar``. None when every layer is ``all`` (the trainer's default)."""
    if all(c == "all" for c in choices):
        return None
    ids = torch.tensor(sorted(set(readable)), dtype=owners.maps[0].dtype)
    out = []
    for m, choice in zip(owners.maps, choices, strict=True):
        if choice == "all":
            out.append(torch.ones_like(m, dtype=torch.bool))
        elif choice == "none":
            out.append(m == 0)
        else:
            out.append((m == 0) | torch.isin(m, ids))
    return out


def choose(
    spec: BackboneSpec,
    weights: Sequence[Tensor],
    owners: OwnerMap,
    tasks: Sequence[Task],
    train: TaskData,
    config: TaskConfig,
) -> tuple[ReuseReport, list[Tensor] | None]:
    """The reuse of a task about to be learned with ``config`` among the served ``tasks``:
    its report (the choice per layer, ``auto`` resolved; what ``similar`` measured and
    chose; the mask's owners come at the end) and the candidates the trainer keeps its mask
    in."""
    choices = resolve(spec, owners, config)
    baseline: float | None = None
    scores: tuple[tuple[int, float], ...] = ()
    if "similar" in choices and tasks:
        baseline, scores = similarity(spec, weights, tasks, train, config)
        chosen = tuple(i for i, s in scores if s >= baseline + MARGIN)
    else:
        chosen = ()
    report = ReuseReport(
        choices, chosen, baseline, scores, MARGIN if baseline is not None else None
    )
    return report, candidates(owners, choices, chosen)


def mask_owners(
    owners: OwnerMap, masks: Sequence[Tensor]
) -> tuple[tuple[tuple[int, int], ...], ...]:
    """Per layer, (owner id, weights) of the mask's weights by the owner they have before the
    commit, by id; owner 0 = free weights the task claims as its own."""
    out = []
    for m, mask in zip(owners.maps, masks, strict=True):
        ids, counts = torch.unique(m[mask], return_counts=True)
        out.append(
            tuple((int(i), int(c)) for i, c in zip(ids.tolist(), counts.tolist(), strict=True))
        )
    return tuple(out)


def short(spec: BackboneSpec, owners: OwnerMap, config: TaskConfig) -> tuple[bool, ...]:
    """Per layer, whether its free weights are fewer than the task's budget there."""
    return tuple(
        free < keep_count(config.density, layer.numel)
        for layer, free in zip(spec.layers, owners.free_count(), strict=True)
    )


def check_room(spec: BackboneSpec, owners: OwnerMap, config: TaskConfig) -> None:
    """InvalidInputError when ``config.reuse`` does not give one choice or one per hidden
    layer; NoFreeCapacityError when a layer that reads no earlier weight (``none``, and
    ``similar``, which may choose no task) has fewer free weights than the task's budget
    (``auto`` reads there instead: ``resolve``); never for ``structure="units"``, whose
    budget is whole units."""
    choices = config.reuse_per_layer(len(spec.layers))
    for i, (choice, lacks) in enumerate(zip(choices, short(spec, owners, config), strict=True)):
        if choice not in ("all", "auto") and lacks and config.structure == "weights":
            budget = keep_count(config.density, spec.layers[i].numel)
            raise NoFreeCapacityError(
                f"layer {i} has {owners.free_count()[i]} free weights but reuse {choice!r} "
                f"needs the task's budget of {budget} (density {config.density}) among them: "
                "use reuse 'all' or 'auto' there, a lower density, or a larger backbone"
            )


def resolve(spec: BackboneSpec, owners: OwnerMap, config: TaskConfig) -> tuple[Reuse, ...]:
    """The choice per layer a task of ``config`` is learned with: ``auto`` becomes ``none``
    where the layer's free weights hold the task's budget and ``all`` where they do not;
    every other choice stays as given."""
    return tuple(
        ("all" if lacks else "none") if c == "auto" else c
        for c, lacks in zip(
            config.reuse_per_layer(len(spec.layers)), short(spec, owners, config), strict=True
        )
    )


def counts_after(owners: OwnerMap, task: Task) -> list[dict[int, int]]:
    """Per layer, owner id → weights once ``task`` (learned, not yet committed) commits: the
    free weights its mask claims become its own."""
    counts = owners.counts()
    claimed = [int((m & f).sum()) for m, f in zip(task.masks, owners.free(), strict=True)]
    for layer, n in zip(counts, claimed, strict=True):
        if n:
            layer[0] -= n
            layer[task.record.id] = n
            if not layer[0]:
                del layer[0]
    return counts


def table(
    task: Task, names: Mapping[int, str], after: Sequence[Mapping[int, int]]
) -> dict[str, Any]:
    """A task's reuse as a JSON table (MLflow's owners.json): the choice, what similar
    measured, per owner of its mask (the task itself = claimed) the weights and fraction of
    the mask per layer, and the owner map after its commit (owner id → weights per layer)."""
    report = task.record.reuse
    if report is None:
        raise ValueError(f"task {task.name!r} has no reuse report")
    sizes = [int(m.sum()) for m in task.masks]
    rows = [
        {
            "owner": owner or task.record.id,
            "task": names.get(owner, "(deleted)") if owner else task.name,
            "claimed": owner == 0,
            "weights": list(counts),
            "fraction": [c / s if s else 0.0 for c, s in zip(counts, sizes, strict=True)],
        }
        for owner, counts in report.by_owner().items()
    ]
    return {
        "task": task.name,
        "id": task.record.id,
        "reuse": list(report.choice),
        "chosen": [{"id": i, "task": names.get(i, "(deleted)")} for i in report.chosen],
        "baseline": report.baseline,
        "margin": report.margin,
        "scores": [
            {"id": i, "task": names.get(i, "(deleted)"), "accuracy": a} for i, a in report.scores
        ],
        "mask_size": sizes,
        "mask_by_owner": rows,
        "owner_map_after_commit": [{str(k): v for k, v in layer.items()} for layer in after],
    }
