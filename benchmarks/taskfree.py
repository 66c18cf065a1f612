"""Task-free inference benchmark: task inference and accuracy without the task's name.

Two streams, real MNIST (normalized, 10 % of train held out for validation), one
784-1000-1000 body, 2 + 2 epochs per task (as benchmarks/continual.py):
- Permuted MNIST, 10 tasks: sparsecl learns each permutation as a task, then every test
  example of every task is sent without its task; we report task-inference accuracy, the
  accuracy of the returned label, the task-aware accuracy (task given) for reference, and
  the same for the lowest-entropy rule (the tasks' identity models removed).
- Split-MNIST class-incremental: 5 tasks of two digits; the label returned without a
  task must be the right digit among all ten. Side by side, in the same run, on the same
  data and the same dense body with one 10-way head: Avalanche's Naive, Replay (1 000
  examples), GDumb (1 000, 30 epochs on its memory) and DER (1 000), trained
class-incrementally (one task label).

Calibration: expected calibration error (15 bins) of the confidence on the test split,
and the task-posterior temperature that minimises the negative log-likelihood of the
right task on the validation split (the library's TEMPERATURE was chosen that way).

Identity-model storage: side by side on the same learned tasks, the identity models
refitted at each ``--identities`` precision and number of directions (``float32:20``,
``float16:20``, ``float16:10``): task inference, accuracy, ECE and bytes per task.

    python benchmarks/taskfree.py          # full training sets (~15-25 min on 2 cores)
    python benchmarks/taskfree.py --quick  # 6 000 / 2 000 training examples per task
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.continual import body, machine  # noqa: E402
from sparse_engine import SparseCL, TaskConfig  # noqa: E402
from sparse_engine.backbone import BackboneSpec  # noqa: E402
from sparse_engine.mnist import StreamTask, load_mnist, permuted_mnist, split_mnist  # noqa: E402
from sparse_engine.taskfree import (  # noqa: E402
    COMPONENTS,
    PRECISION,
    TEMPERATURE,
    expected_calibration_error,
    fit_identity,
)

BASELINES = ("naive", "replay", "gdumb", "der")
IDENTITIES = ("float32:20", "float16:20", "float16:10")  # precision:directions
GDUMB_EPOCHS = 30


def learn(stream: list[StreamTask], backbone: str, config: TaskConfig) -> tuple[SparseCL, float]:
    model = SparseCL(backbone, seed=config.seed)
    start = time.perf_counter()
    for task in stream:
        model.learn_task(task.name, task.train, task.val, config)
    return model, time.perf_counter() - start


def concat(stream: list[StreamTask], split: str, limit: int | None) -> tuple[Any, Any, Any]:
    """Inputs, labels and true task index of every task's ``split``, first ``limit`` each."""
    parts = [getattr(t, split) for t in stream]
    x = torch.cat([p.x[:limit] for p in parts])
    y = torch.cat([p.y[:limit] for p in parts])
    tid = torch.cat([torch.full((len(p.y[:limit]),), i) for i, p in enumerate(parts)])
    return x, y, tid


def temperatures(model: SparseCL, x: torch.Tensor, y: torch.Tensor, tid: torch.Tensor) -> dict:
    """On validation data: the task-posterior temperature that minimises the right task's
    NLL, and the one that minimises the confidence's ECE (the library's TEMPERATURE)."""
    tasks = sorted(model.tasks.values(), key=lambda t: t.record.id)
    scores = model.identity_bank(tasks).scores(model.check_inputs(x))
    result = model.infer_task(x)
    rows = torch.arange(len(tid))
    p_label = result.confidence / result.task_probs[rows, result.task_index]
    correct = result.labels == y
    grid = np.exp(np.linspace(math.log(1.0), math.log(1000), 61))
    nll, ece = [], []
    for t in grid:
        posterior = (scores / t).softmax(1)
        nll.append(float(-posterior[rows, tid].log().mean()))
        confidence = posterior[rows, result.task_index].float() * p_label
        ece.append(expected_calibration_error(confidence, correct))
    return {
        "nll_optimal": float(grid[int(np.argmin(nll))]),
        "ece_optimal": float(grid[int(np.argmin(ece))]),
        "val_ece_at_library_temperature": expected_calibration_error(result.confidence, correct),
    }


def task_free(model: SparseCL, x: torch.Tensor, y: torch.Tensor, tid: torch.Tensor) -> dict:
    """Task inference and label accuracy, calibration, and the time of one batched call."""
    start = time.perf_counter()
    result = model.infer_task(x)
    seconds = time.perf_counter() - start
    right_task = result.task_index == tid
    correct = result.labels == y
    return {
        "rule": result.rule,
        "task_inference": float(right_task.float().mean()),
        "accuracy": float(correct.float().mean()),
        "ece": expected_calibration_error(result.confidence, correct),
        "confidence_right": float(result.confidence[correct].mean()),
        "confidence_wrong": float(result.confidence[~correct].mean()) if (~correct).any() else None,
        "examples": len(y),
        "ms_per_example": 1000 * seconds / len(y),
    }


def without_identity(model: SparseCL) -> SparseCL:
    """The same model with its tasks' identity models removed (the entropy rule)."""
    other = SparseCL(model.spec, seed=model.seed)
    other.backbone, other.owners, other.last_id = model.backbone, model.owners, model.last_id
    other.tasks = {n: dataclasses.replace(t, identity=None) for n, t in model.tasks.items()}
    return other


def refitted(model: SparseCL, stream: list[StreamTask], variant: str) -> SparseCL:
    """The same model with its tasks' identity models refitted at ``variant``
    (``precision:directions``, e.g. ``float16:20``); the model itself at the library's."""
    precision, components = getattr(torch, variant.split(":")[0]), int(variant.split(":")[1])
    if (precision, components) == (PRECISION, COMPONENTS):
        return model
    other = SparseCL(model.spec, seed=model.seed)
    other.backbone, other.owners, other.last_id = model.backbone, model.owners, model.last_id
    trains = {t.name: t.train for t in stream}
    other.tasks = {
        n: dataclasses.replace(
            t, identity=fit_identity(trains[n].x, trains[n].y, components, precision)
        )
        for n, t in model.tasks.items()
    }
    return other


def identity_bytes(model: SparseCL) -> float:
    """The mean bytes of a task's identity model (as stored: the same tensors)."""
    sizes = [t.identity.nbytes for t in model.tasks.values() if t.identity is not None]
    return sum(sizes) / len(sizes)


def task_aware(model: SparseCL, stream: list[StreamTask], limit: int | None) -> float:
    correct = sum(
        int((model.predict(t.name, t.test.x[:limit]) == t.test.y[:limit]).sum()) for t in stream
    )
    return correct / sum(len(t.test.y[:limit]) for t in stream)


def run_config(args: argparse.Namespace, **overrides: Any) -> TaskConfig:
    """The task settings of both task-free benchmarks (10 % density and k, fixed epochs from
    ``run_parser``'s options), with ``overrides``."""
    return TaskConfig(
        density=0.1,
        k=0.1,
        epochs=args.epochs,
        retrain_epochs=args.retrain_epochs,
        batch_size=128,
        lr=1e-3,
        seed=args.seed,
        **overrides,
    )


def sparsecl_rows(
    stream_name: str, stream: list[StreamTask], args: argparse.Namespace
) -> dict[str, Any]:
    # reuse all: the default its rows were measured with (now auto)
    model, seconds = learn(stream, args.backbone, run_config(args, reuse="all"))
    x, y, tid = concat(stream, "test", args.test_limit)
    vx, vy, vtid = concat(stream, "val", args.test_limit)
    row = {
        "stream": stream_name,
        "method": "sparsecl",
        "train_seconds": seconds,
        "identity": task_free(model, x, y, tid),
        "entropy": task_free(without_identity(model), x, y, tid),
        "task_aware_accuracy": task_aware(model, stream, args.test_limit),
        "identities": {
            variant: {
                **task_free((other := refitted(model, stream, variant)), x, y, tid),
                "identity_bytes_per_task": identity_bytes(other),
            }
            for variant in args.identities.split(",")
            if variant
        },
        "temperature": TEMPERATURE,
        "temperature_on_val": temperatures(model, vx, vy, vtid),
    }
    print(json.dumps(row), flush=True)
    return row


def baseline_row(method: str, stream: list[StreamTask], args: argparse.Namespace) -> dict[str, Any]:
    """One Avalanche strategy trained class-incrementally (one 10-way head, task label 0)."""
    from avalanche.benchmarks import tensors_benchmark
    from avalanche.training import DER, GDumb, Naive, Replay
    from avalanche.training.plugins import EvaluationPlugin

    torch.manual_seed(args.seed)
    spec = BackboneSpec.parse(args.backbone)
    model = nn.Sequential(body(spec), nn.Linear(spec.layers[-1].weight_shape[0], 10))
    bench = tensors_benchmark(
        train_tensors=[(t.train.x, t.train.y) for t in stream],
        test_tensors=[(t.test.x, t.test.y) for t in stream],
        task_labels=[0] * len(stream),
    )
    common: dict[str, Any] = {
        "model": model,
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
        "criterion": nn.CrossEntropyLoss(),
        "train_mb_size": 128,
        "train_epochs": args.epochs + args.retrain_epochs,
        "eval_mb_size": 1024,
        "evaluator": EvaluationPlugin(loggers=[]),
    }
    strategies = {
        "naive": lambda: Naive(**common),
        "replay": lambda: Replay(mem_size=1000, **common),
        # GDumb retrains from scratch on its 1 000 examples after each experience: a few
        # epochs of them are a few dozen steps, so it gets GDUMB_EPOCHS (as in its paper)
        "gdumb": lambda: GDumb(mem_size=1000, **{**common, "train_epochs": GDUMB_EPOCHS}),
        "der": lambda: DER(mem_size=1000, alpha=0.1, beta=0.5, **common),
    }
    strategy = strategies[method]()
    start = time.perf_counter()
    for experience in bench.train_stream:
        strategy.train(experience)
    seconds = time.perf_counter() - start
    x, y, _ = concat(stream, "test", args.test_limit)
    model = strategy.model  # GDumb trains a fresh copy of the initial model per experience
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(x[i : i + 1024]).argmax(1) for i in range(0, len(x), 1024)])
    row = {
        "stream": "split-mnist-class-incremental",
        "method": method,
        "accuracy": float((predicted == y).float().mean()),
        "train_seconds": seconds,
    }
    print(json.dumps(row), flush=True)
    return row


def run_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options both task-free benchmarks take: ``--quick``, the epochs and the seed."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer training examples")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--retrain-epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = run_parser(__doc__)
    parser.add_argument("--backbone", default="mlp:784-1000-1000")
    parser.add_argument("--test-limit", type=int, default=None, help="test examples per task")
    parser.add_argument("--baselines", default=",".join(BASELINES))
    parser.add_argument(
        "--identities", default=",".join(IDENTITIES), help="precision:directions, side by side"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    mnist = load_mnist()
    pmnist = permuted_mnist(mnist, tasks=10, train_limit=6000 if args.quick else None)
    split = split_mnist(mnist, train_limit=2000 if args.quick else None)
    print(f"machine: {machine()}", flush=True)
    started = time.perf_counter()
    rows = [
        sparsecl_rows("permuted-mnist", pmnist, args),
        sparsecl_rows("split-mnist-class-incremental", split, args),
    ]
    rows += [baseline_row(m, split, args) for m in args.baselines.split(",") if m]
    out = args.json or ROOT / "benchmarks" / "results" / (
        "taskfree-quick.json" if args.quick else "taskfree.json"
    )
    write_rows(out, args, started, rows)
    return 0


def write_rows(out: Path, args: argparse.Namespace, started: float, rows: list[Any]) -> None:
    """Write a run's rows to ``out`` with its date, machine, settings and seconds."""
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "seconds": time.perf_counter() - started,
        "rows": rows,
    }
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out} ({result['seconds']:.0f}s)")


if __name__ == "__main__":
    raise SystemExit(main())
