"""Defaults on five data sets (issue 17): before the issue, after it, and a dense net per task.

Each data set is a stream of tasks (task id given), learned in-process one task after
another on one backbone (``SparseCL.learn_task``, ``SparseCL.accuracy``), three ways:

- ``before``: the defaults before issue 17: 2 + 2 epochs, k-WTA k 10 %, density 10 %, lr 1e-3,
  reuse all;
- ``after``: ``TaskConfig()`` as it is now (auto epochs, k auto, density 10 %, lr 1e-2, reuse
  auto); rows of earlier defaults stay under their own column (``ARCHIVED``:
  ``after-epochs``, ``after-lr1e-3``, ``after-reuse-all``) and are shown beside it;
- ``reuse-none`` (``CANDIDATES``): ``TaskConfig()`` with one setting changed, a candidate
  default measured beside ``after`` (no earlier task's weight read; on these streams of at
  most 5 tasks at density 10 % the same as ``after``'s reuse auto, bit for bit);
- ``dense``: a dense network of the backbone's shape (``analysis.DenseNet``: ReLU, biases,
  a head) trained per task from scratch to convergence: Adam at ``DENSE_LR`` (1e-3; rows at
  1e-2 are stored as ``dense-lr1e-2``) and the same batch until
  the validation accuracy plateaus (``patience`` periods), the lr cut 10× at each plateau
  twice (the rule of auto retraining), at most ``max_epochs`` periods, keeping its best
  epoch; rows of the dense net under patience counted in epochs: ``dense-epochs``.

Every column trains on the same training split, stops on the same validation split and is
scored on the same test split. R[i][j] and BWT come from ``sparse_engine.metrics``.

Data sets (``DATASETS``; sizes in their ``about``): ``digits`` (scikit-learn's 8×8 digits,
flat, small), ``digits-cnn`` (the same tasks, image-shaped 1×8×8, on a CNN backbone),
``permuted-mnist`` and ``split-mnist`` (real MNIST from ../shared/data, flat, large) and
``split-mnist-cnn`` (Split-MNIST's images, 1×28×28, fewer of them, on a CNN backbone).

    python benchmarks/datasets.py            # every data set -> benchmarks/results/datasets.json
    python benchmarks/datasets.py --quick    # minutes: 2 small tasks each, small backbones
    python benchmarks/datasets.py --summary  # the table of RESULTS.md, from the stored rows

Rows are written after every (data set, column, seed) (a cut-off run keeps its rows, a rerun
skips them): per task its test accuracy after the last task and right after it was learned,
validation accuracy, seconds to learn it (test evaluations excluded) and epochs run; BWT.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from benchmarks.auto_epochs import digits_stream  # noqa: E402
from benchmarks.continual import chosen_device, device_option  # noqa: E402
from benchmarks.sizes import load, machine, save  # noqa: E402
from sparse_engine.analysis import DenseNet  # noqa: E402
from sparse_engine.config import AUTO, TaskConfig  # noqa: E402
from sparse_engine.data import TaskData  # noqa: E402
from sparse_engine.errors import UnsoundTaskError  # noqa: E402
from sparse_engine.kwta import resolve_k  # noqa: E402
from sparse_engine.metrics import AccuracyMatrix  # noqa: E402
from sparse_engine.mnist import StreamTask, load_mnist, permuted_mnist, split_mnist  # noqa: E402
from sparse_engine.model import SparseCL  # noqa: E402
from sparse_engine.recipe import LR_CUT, LR_CUTS  # noqa: E402
from sparse_engine.trainer import accuracy, make_optimizer  # noqa: E402

# candidate defaults, runnable beside ``after``: TaskConfig() with these settings changed
CANDIDATES: dict[str, dict[str, Any]] = {
    "reuse-none": {"reuse": "none"},  # issue 17: read no earlier weight (5 tasks fit at 10 %)
}
COLUMNS = ("before", "after", "dense", *CANDIDATES)
# columns of earlier defaults, kept as stored rows (no longer runnable), shown beside the rest
ARCHIVED = {
    "after-epochs": "TaskConfig() until 2026-12-01 noon: auto epochs' patience and max_epochs "
    "counted in epochs (now in periods of at least PERIOD_STEPS optimizer steps)",
    "dense-epochs": "the dense column until 2026-12-01 noon: patience and max_epochs in epochs",
    "after-lr1e-3": "TaskConfig() until 2026-12-01 13:00, with lr 1e-3 (now 1e-2)",
    "after-reuse-all": "TaskConfig() until 2026-12-01 16:00, with reuse all (now auto: no "
    "earlier task's weight read while a layer has room for the budget)",
    "reuse-trial": "reuse auto as first built (commit 9ed0885): each task learned twice, "
    "reading earlier weights (all) and not (none), the higher validation accuracy kept",
    "dense-lr1e-2": "the dense column trained at lr 1e-2 instead of DENSE_LR (a stricter "
    "reference where it is better)",
}
SHOWN = (
    "before",
    "after-epochs",
    "after-lr1e-3",
    "after-reuse-all",
    "after",
    *CANDIDATES,
    "reuse-trial",
    "dense-epochs",
    "dense",
    "dense-lr1e-2",
)  # the tables' order
# the defaults before issue 17 (fixed counts); "after" is TaskConfig() as it is
BEFORE: dict[str, Any] = {
    "epochs": 2,
    "retrain_epochs": 2,
    "k": 0.1,
    "density": 0.1,
    "lr": 1e-3,
    "reuse": "all",
}
# the dense reference's lr: Adam's usual 1e-3 (at 1e-2, stored as dense-lr1e-2, it is no
# better on validation on three of the five data sets)
DENSE_LR = 1e-3
# scikit-learn's digits: two tasks of five digits, 60 % train, 20 % validation, 20 % test
DIGIT_GROUPS = ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))
DIGIT_SPLITS = (0.6, 0.8)


def digits(seed: int, quick: bool) -> list[StreamTask]:
    """scikit-learn's 8×8 digits in two 5-digit tasks (the split drawn from ``seed``)."""
    return digits_stream(DIGIT_GROUPS, DIGIT_SPLITS, seed)


def permuted(seed: int, quick: bool) -> list[StreamTask]:
    """Permuted MNIST: 5 tasks of the first 20,000 training images (quick: 2 of 1,000), 10 %
    held out for validation; the whole test split."""
    return permuted_mnist(
        load_mnist(), tasks=2 if quick else 5, train_limit=1000 if quick else 20000, seed=seed
    )


def split(seed: int, quick: bool) -> list[StreamTask]:
    """Split-MNIST: 5 two-digit tasks on the whole training split (quick: 2 tasks of 500
    images), 10 % held out for validation; the whole test split."""
    stream = split_mnist(load_mnist(), train_limit=500 if quick else None, seed=seed)
    return stream[:2] if quick else stream


def split_images(seed: int, quick: bool) -> list[StreamTask]:
    """Split-MNIST as 1×28×28 images for a CNN: 5 two-digit tasks of the first 2,000 training
    images of each (quick: 2 tasks of 500), 10 % held out for validation; the whole test split."""
    stream = split_mnist(load_mnist(), train_limit=500 if quick else 2000, seed=seed)
    return stream[:2] if quick else stream


@dataclass(frozen=True)
class Dataset:
    """A data set as a stream of tasks, the backbone it is learned on, and its sizes in words."""

    make: Callable[[int, bool], list[StreamTask]]  # (seed, quick) -> its tasks
    backbone: str
    quick_backbone: str
    seeds: str  # the seeds run unless --seeds says otherwise
    about: str


DATASETS: dict[str, Dataset] = {
    "digits": Dataset(
        digits,
        "mlp:64-256-256",
        "mlp:64-64-64",
        "0,1,2",
        "flat, small: 2 tasks of 5 digits, ~540 train / 180 val / 180 test images each",
    ),
    "digits-cnn": Dataset(
        digits,
        "cnn:1x8x8-c32-c64-128",
        "cnn:1x8x8-c8-c16-64",
        "0,1,2",
        "image-shaped 1×8×8, small: the digits tasks on a CNN (two 3×3 convs, each pooled)",
    ),
    "permuted-mnist": Dataset(
        permuted,
        "mlp:784-100-100",
        "mlp:784-32-32",
        "0,1,2",
        "flat, large: 5 tasks of 10 classes, 18,000 train / 2,000 val / 10,000 test each",
    ),
    "split-mnist": Dataset(
        split,
        "mlp:784-1000-1000",
        "mlp:784-64-64",
        "0",
        "flat, large: 5 tasks of 2 digits, 10,100-11,400 train / 1,100-1,300 val / ~2,000 test",
    ),
    "split-mnist-cnn": Dataset(
        split_images,
        "cnn:1x28x28-c16-c32-128",
        "cnn:1x28x28-c4-c8-16",
        "0,1,2",
        "image-shaped 1×28×28: 5 tasks of 2 digits, 1,800 train / 200 val / ~2,000 test each",
    ),
}


@dataclass(frozen=True)
class Row:
    """One data set learned one way with one seed; accuracies in %, seconds per task."""

    dataset: str
    column: str  # before | after | dense | a CANDIDATES one, or an ARCHIVED one
    seed: int
    backbone: str
    tasks: list[str]
    # None: the task was not committed (no better than chance or diverged: see failed)
    test: list[float | None]  # per task, after the last task was learned
    test_at_learn: list[float | None]  # per task, right after it was learned (R[j][j])
    val: list[float | None]
    seconds: list[float]  # learning each task, test evaluations excluded
    epochs: list[int | None]  # epochs run per task, all phases together
    bwt: float | None  # over the committed tasks; None for dense (one network per task)
    k_units: list[int] | None  # k-WTA winners per hidden layer (None for dense)
    examples: list[int]  # the first task's train, validation and test examples
    config: dict[str, Any]
    failed: list[str]  # why each task not committed was refused (UnsoundTaskError)

    @property
    def acc(self) -> float | None:
        """Mean test accuracy over the committed tasks after the last one (None: none)."""
        kept = [v for v in self.test if v is not None]
        return statistics.fmean(kept) if kept else None


def key(row: dict[str, Any]) -> tuple[Any, ...]:
    """What one row is: data set, column, seed, backbone."""
    return (row["dataset"], row["column"], row["seed"], row["backbone"])


def targets(data: TaskData, classes: tuple[int, ...]) -> torch.Tensor:
    """``data``'s labels as indices into the task's sorted ``classes``."""
    return torch.searchsorted(torch.tensor(classes), data.y)


def train_dense(
    model: SparseCL, task: StreamTask, config: TaskConfig
) -> tuple[DenseNet, int, float]:
    """A DenseNet of the model's shape trained on ``task`` to convergence on its validation
    split (see the module's docstring); the net at its best epoch, epochs run, val accuracy."""
    generator = torch.Generator().manual_seed(config.seed)
    classes = task.train.classes
    net = DenseNet(model, len(classes), generator).to(model.device)
    optimizer = make_optimizer(list(net.parameters()), config)
    train = TaskData(task.train.x, targets(task.train, classes))
    val_targets = targets(task.val, classes)
    best, kept = -1.0, {k: v.clone() for k, v in net.state_dict().items()}
    per_epoch = -(-len(train) // config.batch_size)
    periods = config.epochs_per_period(per_epoch)  # auto epochs' period, as the sparse net's
    waited = cuts = done = 0
    while done < config.bound(AUTO, per_epoch):
        done += 1
        net.train()
        for x, y in train.batches(config.batch_size, generator):
            loss = F.cross_entropy(net(x.to(model.device)), y.to(model.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        acc = accuracy(net, task.val, val_targets)
        waited = 0 if acc > best else waited + 1
        if acc >= best:
            best, kept = acc, {k: v.clone() for k, v in net.state_dict().items()}
        if waited >= config.patience * periods:
            if cuts == LR_CUTS:
                break
            cuts, waited = cuts + 1, 0
            for group in optimizer.param_groups:
                group["lr"] *= LR_CUT
    net.load_state_dict(kept)
    net.eval()
    return net, done, best


def run(dataset: str, column: str, seed: int, quick: bool, device: str = "auto") -> Row:
    """Learn ``dataset``'s stream the ``column`` way with ``seed``; its row."""
    spec = DATASETS[dataset]
    backbone = spec.quick_backbone if quick else spec.backbone
    stream = spec.make(seed, quick)
    fixed = {"before": BEFORE, "dense": {"lr": DENSE_LR}, **CANDIDATES}.get(column, {})
    config = TaskConfig(seed=seed, **fixed)
    model = SparseCL(backbone, seed=seed, device=device)
    matrix = AccuracyMatrix(len(stream))  # NaN where a task was not committed
    val: list[float | None] = []
    seconds: list[float] = []
    epochs: list[int | None] = []
    failed: list[str] = []
    for i, task in enumerate(stream):
        start = time.perf_counter()
        ran: int | None = None
        val_acc: float | None = None
        if column == "dense":
            net, ran, val_acc = train_dense(model, task, config)
            seconds.append(time.perf_counter() - start)
            classes = task.train.classes
            matrix.r[i:, i] = accuracy(net, task.test, targets(task.test, classes))
        else:
            try:
                record = model.learn_task(task.name, task.train, task.val, config)
                ran, val_acc = record.epochs_run or config.total_epochs, record.val_accuracy
            except UnsoundTaskError as e:  # the library refused to commit it: say so
                failed.append(f"{task.name}: {e}")
            seconds.append(time.perf_counter() - start)
            for j in range(i + 1):
                if stream[j].name in model.tasks:
                    matrix.record(i, j, model.accuracy(stream[j].name, stream[j].test))
        val.append(None if val_acc is None else round(100 * val_acc, 2))
        epochs.append(ran)
        print(
            f"{dataset} {column} seed {seed} {task.name}: test {100 * matrix.r[i, i]:.2f} "
            f"val {val[-1]} {ran} epochs {seconds[-1]:.1f}s",
            flush=True,
        )
    kept = [j for j in range(len(stream)) if not math.isnan(matrix.r[j, j])]
    committed = AccuracyMatrix.from_rows(matrix.r[np.ix_(kept, kept)].tolist()) if kept else None
    layers = [layer.units for layer in model.spec.layers]
    first = stream[0]
    return Row(
        dataset=dataset,
        column=column,
        seed=seed,
        backbone=backbone,
        tasks=[t.name for t in stream],
        test=[percent(v) for v in matrix.r[-1]],
        test_at_learn=[percent(matrix.r[j, j]) for j in range(len(stream))],
        val=val,
        seconds=[round(s, 2) for s in seconds],
        epochs=epochs,
        bwt=None if column == "dense" or committed is None else round(100 * committed.bwt(), 4),
        k_units=None
        if column == "dense"
        else [
            resolve_k(k, u) for k, u in zip(config.k_per_layer(len(layers)), layers, strict=True)
        ],
        examples=[len(first.train), len(first.val), len(first.test)],
        config=asdict(config),
        failed=failed,
    )


def percent(value: float) -> float | None:
    """A fraction as % to 2 decimals; None for NaN (not measured)."""
    return None if math.isnan(value) else round(100 * value, 2)


def as_row(data: dict[str, Any]) -> Row:
    """A stored row back as a Row (fields it lacks make it fail loudly)."""
    return Row(**{f.name: data[f.name] for f in fields(Row)})


def shown(rows: list[Row]) -> list[str]:
    """The columns the tables show: before, after and dense, and candidate and archived ones
    that have rows."""
    present = {r.column for r in rows}
    return [c for c in SHOWN if c in ("before", "after", "dense") or c in present]


def summary(rows: list[Row]) -> str:
    """The markdown table: per data set, mean test accuracy over tasks (mean over seeds) of
    each column, each sparse column's worst task gap to dense, BWT and seconds per task."""
    columns = shown(rows)
    sparse = [c for c in columns if not c.startswith("dense")]
    head = (
        "| data set (backbone) | seeds | "
        + " | ".join(f"{c} %" for c in columns)
        + " | "
        + " | ".join(f"worst task: {c} − dense" for c in sparse)
        + f" | BWT {' / '.join(sparse)} | s/task {' / '.join(columns)} | epochs/task "
        + f"{' / '.join(columns)} |"
    )
    out = [head, "|---|---:|" + "---:|" * (len(columns) + len(sparse)) + "---|---|---|"]
    for name, backbone in sorted({(r.dataset, r.backbone) for r in rows}, key=order):
        mine = [r for r in rows if (r.dataset, r.backbone) == (name, backbone)]
        by = {c: [r for r in mine if r.column == c] for c in columns}

        def mean(
            column: str, value: Callable[[Row], float | None], by: dict[str, list[Row]] = by
        ) -> str:
            vals = [v for r in by[column] if (v := value(r)) is not None]
            if not vals:  # not run, or (accuracy) no task of it committed
                return "none" if by[column] else ""
            return f"{statistics.fmean(vals):.2f}"

        def worst(column: str, by: dict[str, list[Row]] = by) -> str:
            """The task whose mean gap (over the seeds both columns ran) is lowest."""
            dense = {r.seed: r for r in by["dense"]}
            pairs = [(r, dense[r.seed]) for r in by[column] if r.seed in dense]
            if not pairs:
                return ""
            names = pairs[0][0].tasks
            lost = [names[j] for r, _ in pairs for j, v in enumerate(r.test) if v is None]
            if lost:  # a task not committed is the worst there is
                return f"not committed ({', '.join(sorted(set(lost)))})"
            gaps = [
                statistics.fmean(r.test[j] - d.test[j] for r, d in pairs)  # type: ignore[operator]
                for j in range(len(names))
            ]
            j = min(range(len(gaps)), key=lambda j: gaps[j])
            return f"{gaps[j]:+.2f} ({names[j]})"

        seeds = len({r.seed for r in mine})
        out.append(
            f"| {name} ({backbone}) | {seeds} | "
            + " | ".join(mean(c, lambda r: r.acc) for c in columns)
            + " | "
            + " | ".join(worst(c) for c in sparse)
            + " | "
            + " / ".join(mean(c, lambda r: r.bwt) for c in sparse)
            + " | "
            + " / ".join(mean(c, lambda r: statistics.fmean(r.seconds)) for c in columns)
            + " | "
            + " / ".join(mean(c, lambda r: mean_of(r.epochs)) for c in columns)
            + " |"
        )
    for r in rows:
        out += [f"\n{r.dataset} {r.column} seed {r.seed}: not committed: {f}" for f in r.failed]
    return "\n".join(out)


def per_task(rows: list[Row]) -> str:
    """A markdown table of each task's test accuracy (mean over seeds) in each column, and
    each column of the defaults (after, archived ones) − dense ("" where a column lacks the
    task or never committed it)."""
    columns = shown(rows)
    gaps = [c for c in columns if c != "before" and not c.startswith("dense")]
    out = [
        "| data set (backbone) | task | "
        + " | ".join(f"{c} %" for c in columns)
        + " | "
        + " | ".join(f"{c} − dense" for c in gaps)
        + " |"
    ]
    out.append("|---|---|" + "---:|" * (len(columns) + len(gaps)))
    for name, backbone in sorted({(r.dataset, r.backbone) for r in rows}, key=order):
        mine = [r for r in rows if (r.dataset, r.backbone) == (name, backbone)]
        for j, task in enumerate(mine[0].tasks):
            means = {c: mean_of([r.test[j] for r in mine if r.column == c]) for c in columns}
            cells = [f"{v:.2f}" if v is not None else "" for v in means.values()]
            dense = means["dense"]
            cells += [
                f"{v - dense:+.2f}" if (v := means[c]) is not None and dense is not None else ""
                for c in gaps
            ]
            out.append(f"| {name} ({backbone}) | {task} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def order(dataset_backbone: tuple[str, str]) -> tuple[int, str, str]:
    """Data sets in DATASETS' order (unknown ones last), then by name and backbone."""
    names = list(DATASETS)
    name = dataset_backbone[0]
    return (names.index(name) if name in names else len(names), *dataset_backbone)


def mean_of(values: Sequence[float | None]) -> float | None:
    """The mean of the values that are there (None: none is)."""
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--columns", default=",".join(COLUMNS))
    parser.add_argument(
        "--seeds", default="", help="seeds for every data set (default: each data set's own)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 tasks each (MNIST: 500-1,000 images a task), small backbones, seed 0",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    device_option(parser)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="rows file (default benchmarks/results/datasets.json; --quick: datasets-quick.json)",
    )
    parser.add_argument("--summary", action="store_true", help="only print the table of --out")
    args = parser.parse_args(argv)
    out = args.out or RESULTS / ("datasets-quick.json" if args.quick else "datasets.json")
    if args.summary:
        rows = [as_row(r) for r in load(out)]
        print(summary(rows) + "\n\n" + per_task(rows))
        return 0
    unknown = set(args.datasets.split(",")) - set(DATASETS)
    if unknown or set(args.columns.split(",")) - set(COLUMNS):
        parser.error(f"data sets are {sorted(DATASETS)}, columns {COLUMNS}")
    device = chosen_device(parser, args.device)  # fail early without the GPU asked for
    torch.set_num_threads(args.threads)
    meta = {
        "command": "python benchmarks/datasets.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "threads": args.threads,
        "device": device.type,
        "torch": torch.__version__,
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    done = {key(r) for r in load(out)}
    for name in args.datasets.split(","):
        spec = DATASETS[name]
        seeds = "0" if args.quick else args.seeds or spec.seeds
        backbone = spec.quick_backbone if args.quick else spec.backbone
        for seed in (int(s) for s in seeds.split(",")):
            for column in args.columns.split(","):
                if (name, column, seed, backbone) in done:
                    continue
                row = run(name, column, seed, args.quick, args.device)
                save(out, meta, asdict(row), key)
    print(summary([as_row(r) for r in load(out)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
