"""Sizes that adapt (issue 17): the best k-WTA k and mask density across widths and data sets.

One task per point, learned on a fresh ``mlp:<inputs>-<width>-<width>`` backbone and scored
on its validation split (no test data is used to choose anything). Two sweeps per width:
k (fractions of the width, and "auto", ``kwta.auto_k``) at density 10 %, and density at
k "auto". Data sets: ``mnist`` (one Permuted-MNIST task, 10 classes, 784 inputs) and
``digits`` (scikit-learn's 8×8 digits, 10 classes, 64 inputs; one seed = one split).

    python benchmarks/sizes.py          # writes benchmarks/results/sizes.json
    python benchmarks/sizes.py --quick  # a minute: two widths, two k, digits only
    python benchmarks/sizes.py --summary  # the tables, from the stored rows

Rows are written after every point (a cut-off run keeps its rows, a rerun skips them; runs
side by side share the file): data set, width, seed, density, k as asked, k per layer as
resolved, validation accuracy (%), seconds. ``--summary`` prints the tables of RESULTS.md.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import platform
import statistics
import subprocess
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
# k "auto" as first measured (3.5·√units; the rule now is kwta.auto_k, 4·√units): its rows
# are kept under this name, and the density sweep ran at it
EARLIER = "auto@3.5"
# data set -> (its one task for a seed, input features, its fixed training settings)
DATASETS: dict[str, tuple[Callable[[int], StreamTask], int, dict[str, Any]]] = {
    # 12,000 training images, 20 % held out: 9,600 to train, 2,400 to validate
    "mnist": (
        lambda seed: permuted_mnist(tasks=1, train_limit=12000, val_fraction=0.2, seed=seed)[0],
        784,
        {"epochs": 2, "retrain_epochs": 2, "lr": 1e-3},
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
        "seconds": round(time.perf_counter() - start, 3),
    }


def parse_k(text: str) -> KSize:
    """'auto' or a fraction."""
    return AUTO if text == AUTO else float(text)


def key(row: dict[str, Any]) -> tuple[Any, ...]:
    """What one point is: data set, width, seed, density, k."""
    return (row["dataset"], row["width"], row["seed"], row["density"], row["k"])


def load(path: Path) -> list[dict[str, Any]]:
    """The rows stored so far (none without the file)."""
    return json.loads(path.read_text())["rows"] if path.exists() else []


def save(
    path: Path,
    meta: dict[str, Any],
    row: dict[str, Any],
    key: Callable[[dict[str, Any]], tuple[Any, ...]] = key,
) -> None:
    """Add ``row`` to the file under a lock, replacing the row of the same ``key``, so that
    runs side by side (one per data set) share it; the meta of each command is kept."""
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.exists() else {"runs": [], "rows": []}
        if meta not in data["runs"]:
            data["runs"].append(meta)
        data["rows"] = [r for r in data["rows"] if key(r) != key(row)] + [row]
        path.write_text(json.dumps(data, indent=1) + "\n")


def summary(rows: list[dict[str, Any]]) -> str:
    """Markdown tables: per data set and width, validation accuracy (mean over seeds) for each
    k at density 10 % and for each density at k auto, the best k, and auto's gap to it."""
    out = []
    for name in sorted({r["dataset"] for r in rows}):
        mine = [r for r in rows if r["dataset"] == name]
        ks = sorted(
            {r["k"] for r in mine if r["density"] == 0.1},
            key=lambda k: (isinstance(k, str), k if isinstance(k, str) else f"{k:08.4f}"),
        )
        densities = sorted({r["density"] for r in mine if r["k"] == EARLIER} - {0.1})
        head = [f"k {k}" if isinstance(k, str) else f"k {k:.0%}" for k in ks]
        head += [f"density {d:.0%} (k {EARLIER})" for d in densities]
        out.append(f"\n{name} (validation %, mean over seeds; seeds per width in brackets)\n")
        out.append("| width | " + " | ".join(head) + " | best k | auto − best |")
        out.append("|---:|" + "---:|" * (len(head) + 2))
        for width in sorted({r["width"] for r in mine}):

            def mean(
                density: float, k: KSize, width: int = width, mine: list[dict[str, Any]] = mine
            ) -> float | None:
                vals = [
                    r["val"]
                    for r in mine
                    if (r["width"], r["density"], r["k"]) == (width, density, k)
                ]
                return statistics.fmean(vals) if vals else None

            by_k = {k: mean(0.1, k) for k in ks}
            cells = [f"{v:.2f}" if v is not None else "" for v in by_k.values()]
            cells += [f"{v:.2f}" if (v := mean(d, EARLIER)) is not None else "" for d in densities]
            fixed = {k: v for k, v in by_k.items() if not isinstance(k, str) and v is not None}
            best = max(fixed, key=lambda k: fixed[k]) if fixed else None
            auto = by_k.get(AUTO)
            gap = f"{auto - fixed[best]:+.2f}" if best is not None and auto is not None else ""
            seeds = len({r["seed"] for r in mine if r["width"] == width})
            best_text = f"{best:.0%} ({resolve_k(best, width)})" if best is not None else ""
            out.append(
                f"| {width} [{seeds}] (auto {resolve_k(AUTO, width)}) | "
                + " | ".join(cells)
                + f" | {best_text} | {gap} |"
            )
    return "\n".join(out)


def machine() -> str:
    """The CPU's model name (lscpu), else the platform's."""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if "Model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


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
    parser.add_argument("--summary", action="store_true", help="only print the tables of --out")
    args = parser.parse_args()
    if args.summary:
        print(summary(load(args.out)))
        return
    if args.quick:
        args.datasets, args.widths, args.ks, args.densities = "digits", "64,300", "0.1,auto", ""
    torch.set_num_threads(args.threads)
    grid = [(0.1, parse_k(k)) for k in args.ks.split(",") if k]
    grid += [(float(d), AUTO) for d in args.densities.split(",") if d]
    meta = {
        "command": "python benchmarks/sizes.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "threads": args.threads,
        "torch": torch.__version__,
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    done = {key(r) for r in load(args.out)}  # resume: points already measured are kept
    for name in args.datasets.split(","):
        make, inputs, fixed = DATASETS[name]
        for seed in (int(s) for s in args.seeds.split(",")):
            task = make(seed)
            for width in (int(w) for w in args.widths.split(",")):
                for density, k in grid:
                    row = {"dataset": name, "width": width, "seed": seed, "density": density}
                    row |= {"k": k, "k_units": resolve_k(k, width)}
                    if key(row) in done:
                        continue
                    config = TaskConfig(density=density, k=k, seed=seed, **fixed)
                    row |= point(task, inputs, width, config)
                    print(json.dumps(row), flush=True)
                    save(args.out, meta, row)
    print(summary(load(args.out)))


if __name__ == "__main__":
    main()
