"""WSN's own code in its Table-1 setting, to measure the capacity its best row uses (issue 17).

Kang et al. (ICML 2022) report WSN's accuracy on Permuted MNIST (784-100-100, 10 tasks) at
c = 0.3 but the capacity that row uses (the union of the 10 task masks over fc1 and fc2,
``global_sparsity`` in its code) could not be read from any source here. This script runs
the official implementation (github.com/ihaeyong/WSN, ``main_wsn_pmnist.py`` with the
arguments of its ``scripts/wsn/wsn_pmnist.sh``: Adam 1e-3, batch 10, 5 epochs, 10 % held
out) from a checkout the user provides, and records per task the capacity and test
accuracy it prints. Its loader downloads MNIST through torchvision; here the cache it
would build (``data/binary_pmnist20``) is written from ``../shared/data/mnist.npz`` with
the same pixel permutations (``sklearn.utils.shuffle`` with ``random_state = r * 100 + i``,
one permutation per task, applied to every image) and the same normalisation, so it runs
offline. WSN's code is not part of sparsecl; it runs in a copy of the checkout, one per seed.

    python benchmarks/wsn_reference.py --wsn /path/to/WSN --seeds 0
    # --python: an interpreter with WSN's imports (torch, torchvision, scikit-learn,
    # pandas, seaborn, matplotlib, ipdb)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.utils import shuffle

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.continual import machine  # noqa: E402
from sparse_engine.mnist import MEAN, STD, mnist_path  # noqa: E402

TASKS = 10
# scripts/wsn/wsn_pmnist.sh of the official code, but the seed and c
ARGS = (
    *("--optim", "adam", "--lr", "1e-3", "--lr_min", "1e-6", "--lr_patience", "6"),
    *("--lr_factor", "2", "--batch_size_train", "10", "--batch_size_test", "10"),
    *("--n_hidden", "100", "--pc_valid", "0.1"),
)


def write_cache(workdir: Path, seed: int, limit: int | None = None) -> None:
    """WSN's ``dataloader/pmnist.py`` cache for ``seed``, as its first run would write it
    (the first ``limit`` images of each split only, when given)."""
    out = workdir / "data" / "binary_pmnist20"
    out.mkdir(parents=True, exist_ok=True)
    with np.load(mnist_path()) as d:
        splits = {
            name: (d[f"x_{name}"][:limit], d[f"y_{name}"][:limit]) for name in ("train", "test")
        }
    order = shuffle(np.arange(TASKS), random_state=seed)
    for i, r in enumerate(order):
        perm = torch.from_numpy(shuffle(np.arange(784), random_state=int(r) * 100 + i))
        for name, (x, y) in splits.items():
            # torchvision's ToTensor then Normalize, in float32 as there
            plain = torch.from_numpy(x.reshape(-1, 784)).float().div(255)
            plain = plain.sub(MEAN).div(STD)
            shape = (-1, 1, 28, 28)
            torch.save(plain[:, perm].reshape(shape).clone(), out / f"data{r}{name}x.bin")
            torch.save(plain.reshape(shape).clone(), out / f"data{r}{name}xi.bin")
            torch.save(torch.from_numpy(y.astype(np.int64)), out / f"data{r}{name}y.bin")


def parse(log: str) -> dict[str, object]:
    """Per task the capacity (``Global Sparsity``) and test accuracy WSN printed, its final
    average accuracy and backward transfer (percent)."""

    def floats(pattern: str) -> list[float]:
        return [float(m) for m in re.findall(pattern, log)]

    final = floats(r"Final Avg accuracy:\s*([\d.]+)%")
    bwt = floats(r"Backward transfer:\s*(-?[\d.]+)%")
    return {
        "capacity": floats(r"Global Sparsity: ([\d.]+)"),
        "test_acc": floats(r"Test: loss=[\d.]+ , acc=\s*([\d.]+)%"),
        "acc": final[-1] if final else None,
        "bwt": bwt[-1] if bwt else None,
    }


def run(wsn: Path, seed: int, c: float, python: str, log_dir: Path) -> dict[str, object]:
    """One seed of WSN at capacity ``c`` in a scratch copy of the checkout."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "wsn"
        shutil.copytree(wsn, workdir, ignore=shutil.ignore_patterns(".git", "data", "results2"))
        write_cache(workdir, seed)
        command = [python, "main_wsn_pmnist.py", "--seed", str(seed), "--gpu", ""]
        command += [*ARGS, "--sparsity", str(c)]
        start = time.monotonic()
        done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, check=False)
        seconds = time.monotonic() - start
    log = done.stdout + done.stderr
    (log_dir / f"wsn-reference-c{c}-seed{seed}.log").write_text(log)
    if done.returncode != 0:
        raise SystemExit(f"WSN exited with {done.returncode}; its log: {log[-2000:]}")
    return {"seed": seed, "c": c, "seconds": round(seconds, 1), **parse(log)}  # incl. start-up


def save(out: Path, row: dict[str, object]) -> None:
    """Add ``row`` to the rows in ``out``, replacing an earlier row of its seed and c."""
    rows = json.loads(out.read_text()) if out.is_file() else []
    rows = [r for r in rows if (r["seed"], r["c"]) != (row["seed"], row["c"])]
    out.write_text(json.dumps([*rows, row], indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wsn", type=Path, required=True, help="a checkout of ihaeyong/WSN")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--c", type=float, default=0.3, help="WSN's per-task capacity")
    parser.add_argument("--python", default=sys.executable, help="interpreter for WSN's code")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "wsn-reference.json"
    )
    args = parser.parse_args(argv)
    if not (args.wsn / "main_wsn_pmnist.py").is_file():
        parser.error(f"{args.wsn} holds no main_wsn_pmnist.py: give a checkout of ihaeyong/WSN")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    for seed in (int(s) for s in args.seeds.split(",")):
        row = run(args.wsn, seed, args.c, args.python, args.json.parent)
        print(json.dumps(row), flush=True)
        threads = os.environ.get("OMP_NUM_THREADS", "torch's default")
        save(args.json, {**row, "machine": machine(), "omp_num_threads": threads})
    print(f"rows written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
