"""Sizes that adapt (issue 17): the best k-WTA k and mask density across widths and data sets.

One task per point, learned on a fresh ``mlp:<inputs>-<width>-<width>`` backbone and scored
on its validation split (no test data is used to choose anything). Two sweeps per width:
k (fractions of the width, and "auto", ``kwta.auto_k``) at density 10 %, and density at
k "auto". Data sets: ``mnist`` (one Permuted-MNIST task, 10 classes, 784 inputs) and
``digits`` (scikit-learn's 8×8 digits, 10 classes, 64 inputs; one seed = one split).

    python benchmarks/sizes.py          # writes benchmarks/results/sizes.json
    python benchmarks/sizes.py --quick  # a minute: two widths, two k, digits only

Rows are written after every point (a cut-off run keeps its rows): data set, width, seed,
density, k as asked, k per layer as resolved, validation accuracy, seconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from benchmarks.auto_epochs import digits_stream  # noqa: E402
from sparse_engine.config import AUTO, KSize, TaskConfig  # noqa: E402
from sparse_engine.kwta import resolve_k  # noqa: E402
from sparse_engine.mnist import StreamTask, permuted_mnist  # noqa: E402
from sparse_engine.model import SparseCL  # noqa: E402

ALL_DIGITS = (tuple(range(10)),)
# data set -> (its one task for a seed, input features, its fixed training settings)
DATASETS: dict[str, tuple[Callable[[int], StreamTask], int, dict[str, Any]]] = {
    # 12,000 training images, 20 % held out: 9,600 to train, 2,400 to validate
    "mnist": (
        lambda seed: permuted_mnist(tasks=1, train_limit=12000, val_fraction=0.2, seed=seed)[0],
        784,
        {"epochs": 2, "retrain_epochs": 2},
    ),
    # 1,797 images: 60 % train, 30 % validation (539 images), 10 % test (unused)
    # (10 steps an epoch at batch 128: lr 1e-3 leaves it far from converged)
    "digits": (
        lambda seed: digits_stream(ALL_DIGITS, (0.6, 0.9), seed)[0],
        64,
        {"epochs": 15, "retrain_epochs": 10, "lr": 1e-2},
    ),
}


def point(task: StreamTask, inputs: int, width: int, config: TaskConfig) -> dict[str, Any]:
    """Learn ``task`` once on a fresh backbone of ``width``; its validation accuracy and time."""
    model = SparseCL(f"mlp:{inputs}-{width}-{width}", device="cpu")
    start = time.perf_counter()
    record = model.learn_task(task.name, task.train, task.val, config)
    return {
        "val": round(100 * record.val_accuracy, 2),
        "seconds": round(time.perf_counter() - start, 1),
    }


def parse_k(text: str) -> KSize:
    """'auto' or a fraction."""
    return AUTO if text == AUTO else float(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits,mnist")
    parser.add_argument("--widths", default="64,100,300,1000")
    parser.add_argument("--ks", default="0.05,0.1,0.2,0.3,0.5,auto", help="k sweep (density 10 %%)")
    parser.add_argument("--densities", default="0.05,0.2,0.3", help="density sweep (k auto)")
    parser.add_argument("--seeds", default="0", help="seeds (digits: also its split)")
    parser.add_argument(
        "--quick", action="store_true", help="digits, widths 64 and 300, k 10 %% and auto"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "sizes.json")
    args = parser.parse_args()
    if args.quick:
        args.datasets, args.widths, args.ks, args.densities = "digits", "64,300", "0.1,auto", ""
    torch.set_num_threads(args.threads)
    grid = [(0.1, parse_k(k)) for k in args.ks.split(",") if k]
    grid += [(float(d), AUTO) for d in args.densities.split(",") if d]
    rows: list[dict[str, Any]] = []
    if args.out.exists():  # resume: keep the rows of earlier runs with other keys
        rows = json.loads(args.out.read_text())["rows"]
    done = {(r["dataset"], r["width"], r["seed"], r["density"], r["k"]) for r in rows}
    meta = {
        "command": "python benchmarks/sizes.py " + " ".join(sys.argv[1:]),
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "torch": torch.__version__,
    }
    for name in args.datasets.split(","):
        make, inputs, fixed = DATASETS[name]
        for seed in (int(s) for s in args.seeds.split(",")):
            task = make(seed)
            for width in (int(w) for w in args.widths.split(",")):
                for density, k in grid:
                    if (name, width, seed, density, k) in done:
                        continue
                    config = TaskConfig(density=density, k=k, seed=seed, **fixed)
                    row = {"dataset": name, "width": width, "seed": seed, "density": density}
                    row |= {"k": k, "k_units": resolve_k(k, width)}
                    row |= point(task, inputs, width, config)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
