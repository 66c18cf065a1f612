"""Ways of finding a task's subnetwork, side by side on real Split-MNIST (issue 6, part A).

One row per mode: the pruning recipe with each retrain mode (finetune, rewind, late_rewind,
reinit, sign_constant), iterative magnitude pruning (imp: lottery ticket, 3 rounds with
rewinding), a supermask over the untrained backbone (head trained, and head frozen), and
RigL dynamic sparse training, and structured pruning (whole hidden units kept by group
Taylor saliency, ``structure="units"``). Every mode learns the same Split-MNIST tasks one after the
other through ``SparseCL.learn_task`` and is scored on the official MNIST test split after
each task, so BWT comes from the accuracy matrix (it must be 0.00: zero forgetting).
A last row measures a supermask alone on one 10-class MNIST task (Zhou et al. 2019, abstract:
supermasks on untrained weights reach "86% on MNIST", far better than chance).

    python benchmarks/research_modes.py          # full run (about 10 minutes on 2 cores)
    python benchmarks/research_modes.py --quick  # under 2 minutes: small backbone, fewer examples

Rows (benchmarks/results/research_modes.json): mode, stream, accuracy (mean test accuracy
over the tasks after the last one), density (mean mask density), seconds (training time,
all tasks), bwt, first_task_accuracy, config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from sparse_engine.config import TaskConfig  # noqa: E402
from sparse_engine.data import from_numpy  # noqa: E402
from sparse_engine.metrics import AccuracyMatrix  # noqa: E402
from sparse_engine.mnist import Mnist, StreamTask, load_mnist, normalize, split_mnist  # noqa: E402
from sparse_engine.model import SparseCL  # noqa: E402


@dataclass(frozen=True)
class Settings:
    """What every mode shares."""

    backbone: str
    tasks: int
    train_limit: int | None
    base: TaskConfig


def settings(quick: bool) -> Settings:
    """The full or the quick run's backbone, stream and shared hyper-parameters.

    Two epochs of dense training in both, so that late rewinding (to the iterate after
    epoch 1) differs from fine-tuning (which starts from the iterate after epoch 2)."""
    if quick:
        base = TaskConfig(
            density=0.1, k=0.1, epochs=2, retrain_epochs=1, batch_size=128, lr=1e-3, reuse="all"
        )
        return Settings("mlp:784-300-300", tasks=2, train_limit=800, base=base)
    base = TaskConfig(
        density=0.1, k=0.1, epochs=2, retrain_epochs=2, batch_size=128, lr=1e-3, reuse="all"
    )
    return Settings("mlp:784-500-500", tasks=3, train_limit=2000, base=base)


def warm_up(backbone: str, task: StreamTask) -> None:
    """One tiny learn and evaluation first, so one-off start-up costs (thread pools, JIT
    of the inference engine) are not charged to the first mode."""
    model = SparseCL(backbone)
    small = TaskConfig(density=0.1, k=0.1, epochs=1, retrain_epochs=0, lr=1e-3, reuse="all")
    train = task.train.split(0.9, seed=0)[0]
    model.learn_task("warm-up", train, task.val, small)
    model.accuracy("warm-up", task.test)


def modes(base: TaskConfig, steps_per_epoch: int) -> dict[str, TaskConfig]:
    """Each mode's TaskConfig, all from the same base."""
    replace = dataclasses.replace
    rigl_interval = max(1, steps_per_epoch // 4)
    return {
        "finetune": base,
        "rewind": replace(base, retrain="rewind"),
        "late_rewind": replace(base, retrain="late_rewind", rewind_epoch=1),
        "reinit": replace(base, retrain="reinit"),
        "sign_constant": replace(base, retrain="sign_constant"),
        "imp": replace(base, saliency="magnitude", prune_rounds=3, retrain="rewind"),
        "supermask": replace(
            base, method="supermask", epochs=base.epochs + base.retrain_epochs, lr=1e-2
        ),
        "supermask_frozen_head": replace(
            base,
            method="supermask",
            epochs=base.epochs + base.retrain_epochs,
            lr=1e-2,
            supermask_train_head=False,
        ),
        "rigl": replace(base, method="rigl", rigl_interval=rigl_interval),
        # whole units: density = units kept per layer (30 %: weight density 30 % then
        # 0.3² = 9 %), k = 30 % of the kept units, so ~9 % of each layer is active as in base
        "structured": replace(base, structure="units", density=0.3, k=0.3),
    }


def run_stream(
    backbone: str, stream: list[StreamTask], config: TaskConfig
) -> tuple[AccuracyMatrix, list[float], float]:
    """Learn the stream in order; R[i][j] on the test split. Returns R, densities, seconds."""
    model = SparseCL(backbone)
    matrix = AccuracyMatrix(len(stream))
    densities: list[float] = []
    seconds = 0.0
    for i, task in enumerate(stream):
        record = model.learn_task(task.name, task.train, task.val, config)
        seconds += record.seconds
        densities.append(sum(record.density) / len(record.density))
        for j in range(i + 1):
            matrix.record(i, j, model.accuracy(stream[j].name, stream[j].test))
    return matrix, densities, seconds


def mnist10(mnist: Mnist, train_limit: int | None) -> StreamTask:
    """All ten digits as one task (train limited, validation 10 %, full test split)."""
    x, y = mnist.x_train, mnist.y_train
    if train_limit is not None:
        x, y = x[: 3 * train_limit], y[: 3 * train_limit]
    train, val = normalize(from_numpy(x, y)).split(0.1, seed=0)
    test = normalize(from_numpy(mnist.x_test, mnist.y_test))
    return StreamTask("digits-0-9", train, val, test)


def run_modes(quick: bool) -> list[dict[str, Any]]:
    """One row per mode (see the module docstring); rows are also printed as they finish."""
    torch.manual_seed(0)
    setup = settings(quick)
    mnist = load_mnist()
    stream = split_mnist(mnist, tasks=5, train_limit=setup.train_limit)[: setup.tasks]
    steps = -(-len(stream[0].train) // setup.base.batch_size)
    rows: list[dict[str, Any]] = []
    configs = modes(setup.base, steps)
    runs = [("split-mnist", name, config, stream) for name, config in configs.items()]
    ten = mnist10(mnist, setup.train_limit)
    runs.append(("mnist-10", "supermask_mnist10", configs["supermask"], [ten]))
    warm_up(setup.backbone, stream[0])
    for stream_name, name, config, tasks in runs:
        started = time.perf_counter()
        matrix, densities, seconds = run_stream(setup.backbone, tasks, config)
        row: dict[str, Any] = {
            "mode": name,
            "stream": f"{stream_name} ({len(tasks)} task{'s' if len(tasks) > 1 else ''})",
            "accuracy": matrix.acc(),
            "density": sum(densities) / len(densities),
            "seconds": seconds,
            "bwt": matrix.bwt(),
            "first_task_accuracy": float(matrix.r[0, 0]),
            "matrix": matrix.r.tolist(),
            "wall_seconds": time.perf_counter() - started,
            "backbone": setup.backbone,
            "train_limit": setup.train_limit,
            "quick": quick,
            "config": dataclasses.asdict(config),
        }
        rows.append(row)
        print(
            f"{name:>22} {row['stream']:>24}  acc {100 * row['accuracy']:6.2f} %  "
            f"bwt {100 * row['bwt']:+.2f}  {seconds:6.1f} s",
            file=sys.stderr,
            flush=True,
        )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| mode | stream | ACC % | BWT % | density % | training s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['stream']} | {100 * r['accuracy']:.2f} | "
            f"{100 * r['bwt']:.2f} | {100 * r['density']:.1f} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="under 2 minutes")
    parser.add_argument(
        "--out", type=Path, default=RESULTS / "research_modes.json", help="JSON rows"
    )
    args = parser.parse_args()
    started = time.time()
    rows = run_modes(args.quick)
    table = markdown(rows)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": f"{platform.processor() or platform.machine()}, "
                f"{torch.get_num_threads()} threads, torch {torch.__version__}",
                "date": time.strftime("%Y-%m-%d", time.gmtime(started)),
                "wall_seconds": time.time() - started,
                "rows": rows,
            },
            indent=1,
        )
    )
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
