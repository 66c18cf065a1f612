"""Capacity that never runs out (issue 18): many Permuted-MNIST tasks in one backbone.

Tasks are learned one after another in one ``SparseCL`` (task id given). Once a layer's
free weights cannot cover a task's budget, the task is learned over the frozen weights of
earlier tasks (``sparse_engine/capacity.py``: "mix" while some free weight is left, then
"supermask", which writes no weight). At each checkpoint every task learned so far is
evaluated on its test split: average accuracy, BWT (exactly 0.00 when nothing is forgotten)
and what a task costs in storage. Tasks are built one at a time (100 tasks of full Permuted
MNIST would not fit in memory at once); a task's test split is rebuilt from its permutation.

    python benchmarks/capacity.py                    # 100 tasks, 784-1000-1000 (hours on CPU)
    python benchmarks/capacity.py --quick            # a minute: 12 tasks, a small backbone
    python benchmarks/capacity.py --tasks 30 --train-limit 6000 --checkpoints 10 20 30

Rows (one per checkpoint) go to benchmarks/results/capacity.json under ``--label``:
``tasks``, ``acc`` and ``bwt`` (%), ``bytes_per_task`` (mean stored bytes of a task: the
store's blob, masks bit-packed and zlib-compressed), ``bytes_per_task_packed`` (the same
with masks bit-packed only, the format before), ``identity_bytes_per_task`` (the
task-free identity model inside it), ``owned_bytes_per_task`` (its owned weights' values),
``supermask_tasks`` and ``mix_tasks`` (learned over frozen weights so far), the free
capacity and the seconds so far. Each label also keeps every task's accuracy right after
it was learned, how it was learned, and ``falls_from``: the first task from which five
tasks in a row are each more than one point below the first ten's mean accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from benchmarks.sizes import machine as cpu_name  # noqa: E402
from sparse_engine.config import (  # noqa: E402
    AUTO,
    DEVICES,
    REUSES,
    Device,
    Epochs,
    KValue,
    Reuse,
    TaskConfig,
)
from sparse_engine.data import TaskData  # noqa: E402
from sparse_engine.mnist import (  # noqa: E402
    Mnist,
    load_mnist,
    permutations,
    permuted_task,
    permuted_test,
)
from sparse_engine.model import SparseCL  # noqa: E402
from sparse_engine.state import compress_mask, dumps, pack_mask  # noqa: E402
from sparse_engine.task import Task  # noqa: E402

ANCHORS = {  # average accuracy (%) after 10 / 50 / 100 Permuted-MNIST tasks
    "Active Dendrites (Iyer et al. 2022)": {10: 94.6, 50: 87.0, 100: 81.4},
    "XdG + SI (Masse et al. 2018)": {10: 98.0, 50: 96.2, 100: 95.5},
}
FALL_WINDOW, FALL_POINTS = 5, 1.0  # falls_from: 5 tasks in a row, each 1 point below 1-10


@dataclass(frozen=True)
class Settings:
    """One run: the stream, the backbone, how each task is learned, where rows go."""

    tasks: int = 100
    checkpoints: tuple[int, ...] = (10, 50, 100)
    backbone: str = "mlp:784-1000-1000"
    train_limit: int | None = None  # training images per task (None: all 60,000)
    test_limit: int | None = None  # test images per task (None: all 10,000)
    density: float = 0.1
    k: KValue = AUTO
    epochs: Epochs = 2
    retrain_epochs: Epochs = 2
    lr: float = 1e-3
    seed: int = 0
    device: Device = "cpu"  # where tasks train (auto: a CUDA GPU when torch sees one)
    reuse: Reuse = "auto"  # TaskConfig.reuse; the rows of 2026-12-01 morning used "all"
    label: str = "full"


QUICK = Settings(
    tasks=12,
    checkpoints=(4, 8, 12),
    backbone="mlp:784-64-64",
    train_limit=3000,
    test_limit=2000,
    density=0.25,
    epochs=2,
    retrain_epochs=1,
    lr=3e-3,
    label="quick",
)


def config(s: Settings) -> TaskConfig:
    """Every task's hyper-parameters."""
    return TaskConfig(
        density=s.density,
        k=s.k,
        epochs=s.epochs,
        retrain_epochs=s.retrain_epochs,
        lr=s.lr,
        seed=s.seed,
        reuse=s.reuse,
    )


def test_split(mnist: Mnist, perm: np.ndarray, s: Settings) -> TaskData:
    """A task's test split (its first ``test_limit`` images)."""
    return permuted_test(mnist, perm, s.test_limit)


def storage(task: Task) -> dict[str, int]:
    """What the task costs in the store: its blob (masks compressed), the blob as it was
    with masks bit-packed only, the identity model and the weights it owns in it."""
    stored = len(dumps(task))
    packed = sum(pack_mask(m).numel() - compress_mask(m).numel() for m in task.masks)
    identity = task.identity
    identity_bytes = 0 if identity is None else identity.nbytes
    owned = sum(v.nbytes for v in task.own_values)
    return {"stored": stored, "packed": stored + packed, "identity": identity_bytes, "owned": owned}


def falls_from(accuracies: list[float]) -> int | None:
    """The first task (1-based, after the tenth) from which ``FALL_WINDOW`` tasks in a row
    are each more than ``FALL_POINTS`` below the mean of tasks 1-10; None if none is."""
    if len(accuracies) < 10 + FALL_WINDOW:
        return None
    floor = float(np.mean(accuracies[:10])) - FALL_POINTS
    for start in range(10, len(accuracies) - FALL_WINDOW + 1):
        if all(a < floor for a in accuracies[start : start + FALL_WINDOW]):
            return start + 1
    return None


def run(
    s: Settings,
    mnist: Mnist,
    log: Any = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Learn ``s.tasks`` tasks; rows at each checkpoint (and after the last task), each
    also handed to ``on_checkpoint`` with the result so far (a cut-off run keeps them)."""
    torch.manual_seed(s.seed)
    model = SparseCL(s.backbone, seed=s.seed, device=s.device)
    cfg = config(s)
    perms = list(permutations(s.tasks, s.seed))
    first: list[float] = []  # each task's test accuracy right after it was learned
    how: list[str] = []
    costs: list[dict[str, int]] = []
    rows: list[dict[str, Any]] = []
    marks = sorted({c for c in s.checkpoints if c <= s.tasks} | {s.tasks})
    start = time.perf_counter()
    for t, perm in enumerate(perms, 1):
        task = permuted_task(mnist, perm, t, train_limit=s.train_limit, seed=s.seed)
        began = time.perf_counter()
        record = model.learn_task(task.name, task.train, task.val, cfg)
        seconds = time.perf_counter() - began
        test = test_split(mnist, perm, s)
        first.append(100 * model.accuracy(task.name, test))
        how.append(record.learned_as)
        costs.append(storage(model.task(task.name)))
        if log is not None:
            print(
                f"task {t}: {record.learned_as}, test {first[-1]:.2f} %, owns "
                f"{record.weights_owned}, free {model.spec.overall(model.free_capacity()):.4f}, "
                f"{seconds:.1f} s",
                file=log,
                flush=True,
            )
        if t in marks:
            final = [
                100 * model.accuracy(f"permuted-{j}", test_split(mnist, perms[j - 1], s))
                for j in range(1, t + 1)
            ]
            rows.append(checkpoint(model, final, first, how, costs, time.perf_counter() - start))
            if log is not None:
                print(json.dumps(rows[-1]), file=log, flush=True)
            if on_checkpoint is not None:
                on_checkpoint(result(s, rows, first, how, time.perf_counter() - start))
    return result(s, rows, first, how, time.perf_counter() - start)


def checkpoint(
    model: SparseCL,
    final: list[float],
    first: list[float],
    how: list[str],
    costs: list[dict[str, int]],
    seconds: float,
) -> dict[str, Any]:
    """One checkpoint's row: ``final`` = every task's accuracy now, ``first`` = right after
    each was learned (BWT: their mean difference over all but the last task)."""

    def mean(values: list[float] | list[int]) -> float:
        return float(np.mean(values)) if values else 0.0

    return {
        "tasks": len(final),
        "acc": round(mean(final), 4),
        "bwt": round(mean([f - a for f, a in zip(final[:-1], first, strict=False)]), 4),
        "bytes_per_task": round(mean([c["stored"] for c in costs])),
        "bytes_per_task_packed": round(mean([c["packed"] for c in costs])),
        "identity_bytes_per_task": round(mean([c["identity"] for c in costs])),
        "owned_bytes_per_task": round(mean([c["owned"] for c in costs])),
        "supermask_tasks": how.count("supermask"),
        "mix_tasks": how.count("mix"),
        "free_capacity": round(model.spec.overall(model.free_capacity()), 6),
        "seconds": round(seconds, 1),
    }


def result(
    s: Settings, rows: list[dict[str, Any]], first: list[float], how: list[str], seconds: float
) -> dict[str, Any]:
    """The run as stored: its settings, rows, each task's accuracy and how it was learned."""
    return {
        "label": s.label,
        "settings": asdict(s),
        "rows": list(rows),
        "task_acc": [round(a, 4) for a in first],
        "learned_as": list(how),
        "falls_from": falls_from(first),
        "seconds_per_task": round(seconds / len(first), 2),
    }


def machine() -> dict[str, str]:
    """Where and when the run was made."""
    return {
        "cpu": cpu_name(),
        "torch_threads": str(torch.get_num_threads()),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
    }


def save(out: Path, result: dict[str, Any]) -> None:
    """Store ``result`` under its label in ``out`` (other labels are kept)."""
    data = json.loads(out.read_text()) if out.is_file() else {"anchors": ANCHORS, "runs": {}}
    data["anchors"] = {k: {str(n): v for n, v in a.items()} for k, a in ANCHORS.items()}
    data["runs"][result["label"]] = result
    out.write_text(json.dumps(data, indent=1) + "\n")


def table(result: dict[str, Any]) -> str:
    """The run's checkpoints as a markdown table."""
    lines = [
        "| tasks | ACC % | BWT % | KB stored per task (masks only bit-packed) | identity KB "
        "| owned KB | mix / supermask tasks | free capacity |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['tasks']} | {r['acc']:.2f} | {r['bwt']:.2f} | {r['bytes_per_task'] / 1e3:.0f} "
            f"({r['bytes_per_task_packed'] / 1e3:.0f}) | "
            f"{r['identity_bytes_per_task'] / 1e3:.0f} | {r['owned_bytes_per_task'] / 1e3:.0f} | "
            f"{r['mix_tasks']} / {r['supermask_tasks']} | {100 * r['free_capacity']:.2f} % |"
        )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> Path:
    """Each run's per-task test accuracy right after learning (marked by how the task was
    learned) and ACC at its checkpoints, with the anchors' points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    markers = {"free": ".", "mix": "x", "supermask": "^"}
    for i, r in enumerate(results):
        color = f"C{i}"
        for how, marker in markers.items():
            points = [
                (t, a)
                for t, (a, h) in enumerate(zip(r["task_acc"], r["learned_as"], strict=True), 1)
                if h == how
            ]
            if points:
                ax.scatter(
                    [t for t, _ in points],
                    [a for _, a in points],
                    s=12,
                    marker=marker,
                    color=color,
                    alpha=0.6,
                    label=f"{r['label']}: task ({how})",
                )
        rows = r["rows"]
        ax.plot(
            [x["tasks"] for x in rows],
            [x["acc"] for x in rows],
            color=color,
            label=f"{r['label']}: ACC",
        )
    for j, (name, points) in enumerate(ANCHORS.items()):
        ax.plot(list(points), list(points.values()), "k--" if j else "k:", marker="s", label=name)
    ax.set_xlabel("task")
    ax.set_ylabel("test accuracy %")
    ax.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def parse(argv: list[str] | None = None) -> tuple[Settings, Path]:
    """The command line as ``Settings`` and the output file."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="a minute: 12 tasks, mlp:784-64-64, 3,000 images each"
    )
    p.add_argument("--tasks", type=int)
    p.add_argument("--checkpoints", type=int, nargs="+")
    p.add_argument("--backbone")
    p.add_argument("--train-limit", type=int, help="training images per task")
    p.add_argument("--test-limit", type=int, help="test images per task")
    p.add_argument("--density", type=float)
    p.add_argument("--epochs", help="dense epochs per task (or auto)")
    p.add_argument("--retrain-epochs", help="retraining epochs per task (or auto)")
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=DEVICES, help="where tasks train (default cpu)")
    p.add_argument(
        "--reuse", choices=REUSES, help="which earlier weights a task reads (default auto)"
    )
    p.add_argument("--label", help="the run's key in the results file")
    p.add_argument("--out", type=Path, default=RESULTS / "capacity.json")
    args = p.parse_args(argv)
    s = QUICK if args.quick else Settings()
    given: dict[str, Any] = {}
    for name in (
        "tasks",
        "backbone",
        "train_limit",
        "test_limit",
        "density",
        "lr",
        "seed",
        "device",
        "reuse",
    ):
        if getattr(args, name) is not None:
            given[name] = getattr(args, name)
    for name in ("epochs", "retrain_epochs"):
        value = getattr(args, name)
        if value is not None:
            given[name] = value if value == AUTO else int(value)
    if args.checkpoints:
        given["checkpoints"] = tuple(args.checkpoints)
    s = replace(s, **given)
    if args.label:
        s = replace(s, label=args.label)
    if s.tasks < 1:
        p.error("--tasks must be at least 1")
    return s, args.out


def main(argv: list[str] | None = None) -> int:
    s, out = parse(argv)
    where = machine()
    done = run(s, load_mnist(), sys.stderr, lambda partial: save(out, partial | where))
    save(out, done | where)
    runs = json.loads(out.read_text())["runs"]
    print(f"plot: {plot(list(runs.values()), out.with_suffix('.png'))}")
    print(table(done))
    print(f"falls_from: {done['falls_from']}, seconds per task: {done['seconds_per_task']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
