"""The task-posterior temperature of task-free inference, measured on held-out data.

Confidence = p(task | x) × p(label | x, task), p(task | x) = softmax(scores / T) over the
tasks' identity-model log-likelihoods (``sparse_engine.taskfree.TEMPERATURE``). A single T
divides every task's score alike, so the inferred task (the argmax) never depends on it;
only the confidence does. Per stream (Permuted MNIST, Split-MNIST class-incremental) and
backbone, the tasks are learned once; then, on the same scores and labels, the confidence's
ECE (15 bins) on the test split for a grid of T, and for these choices of T:

- ``--constants`` (default 30 and 45) and ``library``, the constant ``TEMPERATURE``;
- ``val_pooled``: the T of least ECE on every task's validation split together (what
  ``benchmarks/taskfree.py`` reports as ``ece_optimal``; not available at learn time, when
  only the new task's data is at hand);
- ``learn_time``: a per-model choice computable when each task is learned: task t's T of
  least ECE on its own validation split, against the identity models of tasks 1..t (the
  ones stored, then), the model's T the mean over tasks 2..n (the first has no rival).

    python benchmarks/taskfree_temperature.py --quick   # 6 000 / 2 000 training examples
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.continual import machine  # noqa: E402
from benchmarks.taskfree import concat, learn, run_config, run_parser, write_rows  # noqa: E402
from sparse_engine import SparseCL  # noqa: E402
from sparse_engine.mnist import StreamTask, load_mnist, permuted_mnist, split_mnist  # noqa: E402
from sparse_engine.taskfree import TEMPERATURE, expected_calibration_error  # noqa: E402

GRID = tuple(float(t) for t in np.round(np.exp(np.linspace(math.log(5), math.log(200), 33)), 2))


def scored(model: SparseCL, x: torch.Tensor, y: torch.Tensor, tasks: int) -> dict[str, Any]:
    """With the first ``tasks`` tasks served: the identity scores, each example's inferred
    task, its label's probability under that task's head, and whether the label is right."""
    served = sorted(model.tasks.values(), key=lambda t: t.record.id)[:tasks]
    inputs = model.check_inputs(x)
    scores = model.identity_bank(served).scores(inputs)
    picked = scores.argmax(1)
    p_label = torch.zeros(len(x), dtype=torch.float64)
    correct = torch.zeros(len(x), dtype=torch.bool)
    for i, task in enumerate(served):
        rows = (picked == i).nonzero().reshape(-1)
        if len(rows):
            probs = model.logits(task.name, inputs[rows]).softmax(1).double()
            best, index = probs.max(1)
            p_label[rows] = best
            labels = torch.tensor(task.classes, dtype=torch.int64)[index]
            correct[rows] = labels == y[rows]
    return {"scores": scores, "picked": picked, "p_label": p_label, "correct": correct}


def posterior(s: dict[str, Any], t: float) -> torch.Tensor:
    """p(task | x) at temperature ``t``, in float32 as ``SparseCL.infer_task`` gives it."""
    return (s["scores"] / t).softmax(1).float()


def ece(s: dict[str, Any], t: float) -> float:
    """The confidence's ECE at temperature ``t``."""
    rows = torch.arange(len(s["picked"]))
    p_task = posterior(s, t)[rows, s["picked"]]
    return expected_calibration_error(p_task * s["p_label"].float(), s["correct"])


def moved(s: dict[str, Any], t: float) -> int:
    """How many examples' inferred task (the argmax of p(task | x)) differs at ``t``
    from the argmax of the scores (0: the temperature changes no task)."""
    return int((posterior(s, t).argmax(1) != s["picked"]).sum())


def best(s: dict[str, Any]) -> float:
    """The T of the grid with the least ECE."""
    return GRID[int(np.argmin([ece(s, t) for t in GRID]))]


def learn_time(model: SparseCL, stream: list[StreamTask]) -> tuple[float, list[float]]:
    """Each task's T on its own validation split against tasks 1..t, and their mean."""
    per_task = [best(scored(model, s.val.x, s.val.y, t + 1)) for t, s in enumerate(stream)][1:]
    return float(np.mean(per_task)), per_task


def row(name: str, stream: list[StreamTask], backbone: str, args: argparse.Namespace) -> dict:
    model, seconds = learn(stream, backbone, run_config(args))
    tasks = len(stream)
    test = scored(model, *concat(stream, "test", None)[:2], tasks)
    val = scored(model, *concat(stream, "val", None)[:2], tasks)
    mean_t, per_task = learn_time(model, stream)
    choices = {f"T={t:g}": t for t in args.constants}
    choices |= {"library": TEMPERATURE, "val_pooled": best(val), "learn_time": mean_t}
    result = {
        "stream": name,
        "backbone": backbone,
        "train_seconds": seconds,
        "task_inference": float((test["picked"] == concat(stream, "test", None)[2]).float().mean()),
        "accuracy": float(test["correct"].float().mean()),
        "choices": {
            k: {"T": v, "test_ece": ece(test, v), "val_ece": ece(val, v), "moved": moved(test, v)}
            for k, v in choices.items()
        },
        "learn_time_per_task": per_task,
        "test_ece_optimal_T": best(test),
        "test_ece_by_T": {str(t): ece(test, t) for t in GRID},
    }
    print(json.dumps({k: v for k, v in result.items() if k != "test_ece_by_T"}), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = run_parser(__doc__)
    parser.add_argument("--backbones", default="mlp:784-300-300,mlp:784-1000-1000")
    parser.add_argument("--streams", default="permuted-mnist,split-mnist-class-incremental")
    parser.add_argument(
        "--constants", type=lambda s: [float(t) for t in s.split(",")], default=[30.0, 45.0]
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    mnist = load_mnist()
    streams = {
        "permuted-mnist": lambda: permuted_mnist(
            mnist, tasks=10, train_limit=6000 if args.quick else None, seed=args.seed
        ),
        "split-mnist-class-incremental": lambda: split_mnist(
            mnist, train_limit=2000 if args.quick else None, seed=args.seed
        ),
    }
    print(f"machine: {machine()}", flush=True)
    started = time.perf_counter()
    rows = [
        row(name, streams[name](), backbone, args)
        for backbone in args.backbones.split(",")
        for name in args.streams.split(",")
    ]
    out = args.json or ROOT / "benchmarks" / "results" / (
        "taskfree-temperature-quick.json" if args.quick else "taskfree-temperature.json"
    )
    write_rows(out, args, started, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
