"""Forward transfer with and without reuse: what reading earlier tasks' weights buys a task.

On two short streams (Split-MNIST, 5 tasks, and Permuted MNIST, 5 tasks, task id given,
subsampled), for each reuse choice (TaskConfig.reuse: all, none, similar, and none,all =
layer 1 reads nothing, layer 2 everything), learns the stream in one backbone and records
the accuracy matrix on each task's test split; each task is also learned alone by the same
recipe on a fresh backbone (the reference). FWT (metrics.AccuracyMatrix.fwt) = mean over
tasks 2..T of (accuracy learned in the stream - accuracy learned alone); BWT stays 0.

    python benchmarks/transfer.py           # writes benchmarks/results/transfer.json
    python benchmarks/transfer.py --quick   # a minute: fewer examples, epochs and seeds

Rows: stream, reuse, seed, acc, bwt, fwt, per-task transfer, weights read per task, and
(similar) the earlier tasks each one chose.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from benchmarks.continual import machine  # noqa: E402
from sparse_engine.config import ReuseValue, TaskConfig  # noqa: E402
from sparse_engine.metrics import AccuracyMatrix  # noqa: E402
from sparse_engine.mnist import StreamTask, load_mnist, permuted_mnist, split_mnist  # noqa: E402
from sparse_engine.model import SparseCL  # noqa: E402

STREAMS = ("split-mnist", "permuted-mnist")
REUSES: dict[str, ReuseValue] = {
    "all": "all",
    "none": "none",
    "similar": "similar",
    "none,all": ("none", "all"),
}
BACKBONE = "mlp:784-100-100"
TASKS = 5


def stream(name: str, train_limit: int, test_limit: int, seed: int) -> list[StreamTask]:
    """The stream's first ``TASKS`` tasks, ``train_limit`` training (of which 10 % held out
    for validation) and ``test_limit`` test examples each."""
    mnist = load_mnist()
    build = split_mnist if name == "split-mnist" else permuted_mnist
    tasks = build(mnist, tasks=TASKS, train_limit=train_limit, seed=seed)[:TASKS]
    return [dataclasses.replace(t, test=t.test.subset(slice(0, test_limit))) for t in tasks]


def learn(model: SparseCL, task: StreamTask, config: TaskConfig) -> tuple[float, dict[str, Any]]:
    """Learn one task; its test accuracy and what it read."""
    record = model.learn_task(task.name, task.train, task.val, config)
    report = record.reuse
    info = {
        "weights_read": record.weights_read,
        "chosen": list(report.chosen) if report else [],
        "scores": [list(s) for s in report.scores] if report else [],
        "baseline": report.baseline if report else None,
    }
    return model.accuracy(task.name, task.test), info


def alone(tasks: list[StreamTask], config: TaskConfig, seed: int) -> list[float]:
    """Each task learned by itself on a fresh backbone: the FWT reference."""
    return [learn(SparseCL(BACKBONE, seed=seed, device="cpu"), t, config)[0] for t in tasks]


def run_stream(
    name: str, tasks: list[StreamTask], config: TaskConfig, reference: list[float], seed: int
) -> list[dict[str, Any]]:
    """One row per reuse choice: the stream learned in one backbone with that choice."""
    rows = []
    for label, choice in REUSES.items():
        start = time.perf_counter()
        model = SparseCL(BACKBONE, seed=seed, device="cpu")
        matrix = AccuracyMatrix(len(tasks))
        infos = []
        for i, task in enumerate(tasks):
            _, info = learn(model, task, dataclasses.replace(config, reuse=choice))
            infos.append(info)
            for j in range(i + 1):
                matrix.record(i, j, model.accuracy(tasks[j].name, tasks[j].test))
        rows.append(
            {
                "stream": name,
                "reuse": label,
                "seed": seed,
                "acc": matrix.acc(),
                "bwt": matrix.bwt(),
                "fwt": matrix.fwt(reference),
                "transfer": matrix.transfer(reference).tolist(),
                "diagonal": np.diag(matrix.r).tolist(),
                "reference": reference,
                "tasks": infos,
                "seconds": time.perf_counter() - start,
            }
        )
        print(
            f"{name:15s} {label:9s} seed {seed}: acc {100 * rows[-1]['acc']:.2f} "
            f"bwt {100 * rows[-1]['bwt']:+.2f} fwt {100 * rows[-1]['fwt']:+.2f} "
            f"read {[t['weights_read'] for t in infos]} chosen {[t['chosen'] for t in infos]} "
            f"({rows[-1]['seconds']:.0f} s)",
            flush=True,
        )
    return rows


def summary(rows: list[dict[str, Any]]) -> str:
    """Mean ± std over seeds per (stream, reuse), as a markdown table."""
    lines = ["| stream | reuse | acc % | BWT | FWT (points) | seeds |", "|---|---|---|---|---|---|"]
    for name in STREAMS:
        for label in REUSES:
            got = [r for r in rows if r["stream"] == name and r["reuse"] == label]
            if not got:
                continue
            acc = 100 * np.array([r["acc"] for r in got])
            bwt = 100 * np.array([r["bwt"] for r in got])
            fwt = 100 * np.array([r["fwt"] for r in got])
            lines.append(
                f"| {name} | {label} | {acc.mean():.2f} ± {acc.std():.2f} | "
                f"{bwt.mean():+.2f} | {fwt.mean():+.2f} ± {fwt.std():.2f} | {len(got)} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer examples, epochs, seeds")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default 3, quick 1)")
    parser.add_argument(
        "--train-limit", type=int, default=None, help="training examples per task (2000)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="epochs and retrain epochs (2)")
    parser.add_argument("--out", type=Path, default=RESULTS / "transfer.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seeds = args.seeds or (1 if args.quick else 3)
    train_limit, test_limit = (600, 500) if args.quick else (2000, 2000)
    train_limit = args.train_limit or train_limit
    epochs = args.epochs or (1 if args.quick else 2)
    config = TaskConfig(density=0.1, epochs=epochs, retrain_epochs=epochs, batch_size=64, lr=1e-3)
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for seed in range(seeds):
        for name in STREAMS:
            tasks = stream(name, train_limit, test_limit, seed)
            reference = alone(tasks, dataclasses.replace(config, seed=seed), seed)
            rows += run_stream(name, tasks, dataclasses.replace(config, seed=seed), reference, seed)
    text = summary(rows)
    print(text)
    out = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python benchmarks/transfer.py " + " ".join(argv or sys.argv[1:]),
        "backbone": BACKBONE,
        "config": dataclasses.asdict(config),
        "train_limit": train_limit,
        "test_limit": test_limit,
        "seconds": time.perf_counter() - start,
        "rows": rows,
        "summary": text,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out} ({out['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
