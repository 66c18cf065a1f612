"""Inference speed of the k-WTA sparse engine against dense PyTorch, side by side in one process.

For each MLP 784-W-W-W (3 hidden layers) with weight density d_w and k-WTA density d_a,
times on the same inputs: (a) dense nn.Linear on the full weights, (b) the dense masked
forward (the reference, TaskNet), (c) torch.sparse CSR weights, (d) the engine. All four
apply the task's k-WTA and head. Prints medians, the ratio to (a) and the ideal ratio
1/(d_w·d_a); ``--json`` prints one JSON object per grid point. Inputs are N(0, 1) noise
(dense, the default) or, with ``--inputs mnist``, real MNIST test images scaled to [0, 1]
(about 19 % of their pixels are non-zero). The quick grid has one plan whose layers are
stored dense (d_w = 40 %, above plan.DENSE_FROM).

``--compare-with OLD`` times another checkout's engine against this one: the script runs
in subprocesses, importing OLD's sparse_engine and this one's in turn (``--rounds``
rounds, the order alternating), and prints each point's median engine time over the
rounds side by side. It uses only the engine's public API, which OLD must have too.

    python benchmarks/engine.py --quick --json     # reduced grid, under two minutes
    python benchmarks/engine.py                    # full grid (3 widths × 3 × 3 × 3 batches)
    python benchmarks/engine.py --quick --inputs mnist
    python benchmarks/engine.py --quick --compare-with ../old --rounds 4
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

# after PYTHONPATH, which --compare-with points at the checkout to time
sys.path.append(str(Path(__file__).resolve().parent.parent))

from sparse_engine.backbone import Backbone, BackboneSpec
from sparse_engine.engine import BACKENDS, EngineSettings, InferenceEngine, plan_paths
from sparse_engine.kwta import KWinners
from sparse_engine.mnist import load_mnist, mnist_path
from sparse_engine.synthetic import synthetic_task
from sparse_engine.task import Task, TaskNet

ROOT = Path(__file__).resolve().parent.parent
WIDTHS = (1024, 2048, 4096)
DENSITIES = (0.05, 0.10, 0.20)
BATCHES = (1, 16, 256)
LAYERS = 3
INPUTS = 784
SETTLE_S = 0.005  # pause before each function's calls in warm timing (OpenMP spin-down)
MAX_REPS = 200  # fast points get many reps: their medians move most with the machine


@dataclass(frozen=True)
class Point:
    """One grid point's timings (milliseconds, medians) and the engine's error and plan."""

    width: int
    layers: int
    d_w: float
    d_a: float
    batch: int
    dense_ms: float
    masked_ms: float
    csr_ms: float
    engine_ms: float
    speedup: float
    masked_speedup: float
    csr_speedup: float
    ideal: float
    max_abs_err: float
    labels_equal: bool
    paths: str
    plan_bytes: int
    plan_bound_bytes: int
    reps: int


Forward = Callable[[Tensor], Tensor]


def dense_forward(spec: BackboneSpec, weights: list[Tensor], task: Task) -> Forward:
    """(a): nn.Linear on the full (unmasked) weights, with the task's k-WTA and head."""
    linears = []
    for w, b in zip(weights, task.biases, strict=True):
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        linears.append(lin.requires_grad_(False))
    acts = [KWinners.from_state(s) for s in task.kwta]
    head = TaskNet(spec, weights, task).head

    def forward(x: Tensor) -> Tensor:
        h = x
        for lin, act in zip(linears, acts, strict=True):
            h = act(lin(h))
        return head(h)

    return forward


def csr_forward(spec: BackboneSpec, weights: list[Tensor], task: Task) -> Forward:
    """(c): torch.sparse CSR masked weights, with the task's k-WTA and head."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        csr = [
            torch.where(m, w, 0.0).to_sparse_csr() for w, m in zip(weights, task.masks, strict=True)
        ]
    acts = [KWinners.from_state(s) for s in task.kwta]
    head = TaskNet(spec, weights, task).head

    def forward(x: Tensor) -> Tensor:
        h = x
        for w, b, act in zip(csr, task.biases, acts, strict=True):
            h = act(torch.sparse.mm(w, h.t()).t() + b)
        return head(h)

    return forward


def time_side_by_side(
    fns: list[Forward], x: Tensor, budget_s: float, cold: bool = False
) -> tuple[list[float], int]:
    """Median ms of each function, called in turn on the same input (interleaved reps).

    By default each timed call follows an untimed call of the same function, so each is
    timed warm, as a server answering a stream of requests for one task runs it, and each
    function's pair of calls starts after a short pause, so that PyTorch's OpenMP threads
    have stopped spinning after the previous function's parallel work (spinning threads on
    a 2-vCPU machine slowed the next single-threaded call by up to 2×); with ``cold`` the
    functions run strictly in turn and each finds the others' data in cache.
    """
    for f in fns:  # first calls (a JIT compiling, caches filling) are not timed
        f(x)
    start = time.perf_counter()
    for f in fns:
        f(x)
    warm = time.perf_counter() - start
    reps = int(max(3, min(MAX_REPS, budget_s / max(warm, 1e-6) / (1 if cold else 2))))
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for f, t in zip(fns, times, strict=True):
            if not cold:
                time.sleep(SETTLE_S)
                f(x)
            t0 = time.perf_counter()
            f(x)
            t.append(time.perf_counter() - t0)
    return [1e3 * statistics.median(t) for t in times], reps


@torch.no_grad()
def run_point(
    width: int,
    d_w: float,
    d_a: float,
    batches: tuple[int, ...],
    threads: int,
    budget_s: float,
    cold: bool = False,
    backend: str = "auto",
    inputs: str = "randn",
) -> list[Point]:
    spec = BackboneSpec.parse(f"mlp:{INPUTS}-" + "-".join([str(width)] * LAYERS))
    backbone = Backbone(spec, seed=0)
    task = synthetic_task(backbone, "bench", d_w, d_a, seed=1)
    weights = backbone.weights
    reference = TaskNet(spec, weights, task)
    engine = InferenceEngine(spec, EngineSettings(threads=threads, backend=backend))  # type: ignore[arg-type]
    plan = engine.plan(task, weights)

    def engine_forward(x: Tensor) -> Tensor:
        return engine.logits(task, weights, x)

    fns: list[Forward] = [
        dense_forward(spec, weights, task),
        reference,
        csr_forward(spec, weights, task),
        engine_forward,
    ]
    points = []
    g = torch.Generator().manual_seed(width)
    images = load_mnist().x_test.reshape(-1, INPUTS) if inputs == "mnist" else None
    for batch in batches:
        if images is None:
            x = torch.randn(batch, INPUTS, generator=g)
        else:
            x = torch.from_numpy(images[:batch].astype("float32") / 255)
        (dense, masked, csr, eng), reps = time_side_by_side(fns, x, budget_s, cold)
        got, want = engine_forward(x), reference(x)
        points.append(
            Point(
                width=width,
                layers=LAYERS,
                d_w=d_w,
                d_a=d_a,
                batch=batch,
                dense_ms=round(dense, 4),
                masked_ms=round(masked, 4),
                csr_ms=round(csr, 4),
                engine_ms=round(eng, 4),
                speedup=round(dense / eng, 2),
                masked_speedup=round(dense / masked, 2),
                csr_speedup=round(dense / csr, 2),
                ideal=round(1 / (d_w * d_a), 1),
                max_abs_err=float((got - want).abs().max()),
                labels_equal=bool((got.argmax(1) == want.argmax(1)).all()),
                paths=engine.backend
                + ":"
                + "/".join(plan_paths(plan, batch, engine.backend == "native")),
                plan_bytes=plan.memory.total_bytes,
                plan_bound_bytes=plan.memory.bound_bytes,
                reps=reps,
            )
        )
    engine.close()
    return points


def markdown(points: list[Point]) -> str:
    """The results as a markdown table."""
    lines = [
        "| width | d_w | d_a | batch | (a) dense ms | (b) masked ms | (c) CSR ms | (d) engine ms "
        "| (a)/(d) | (a)/(c) | ideal | max abs err | engine paths |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p in points:
        lines.append(
            f"| {p.width} | {p.d_w:.0%} | {p.d_a:.0%} | {p.batch} | {p.dense_ms:.3f} "
            f"| {p.masked_ms:.3f} | {p.csr_ms:.3f} | {p.engine_ms:.3f} | **{p.speedup:.1f}×** "
            f"| {p.csr_speedup:.1f}× | {p.ideal:.0f}× | {p.max_abs_err:.1e} | {p.paths} |"
        )
    return "\n".join(lines)


def compare(old: Path, rounds: int, args: list[str]) -> None:
    """Run this script with ``args`` on OLD's sparse_engine and on this checkout's in turn,
    ``rounds`` times (the order alternating), and print each point's engine times."""
    env = {**os.environ, "SPARSECL_MNIST": str(mnist_path())}  # OLD may sit elsewhere
    roots = {"old": old.resolve(), "new": ROOT}
    runs: dict[str, list[dict[str, object]]] = {"old": [], "new": []}
    for label, root in roots.items():  # each child imports the package it is meant to
        where = subprocess.run(
            [sys.executable, "-c", "import sparse_engine; print(sparse_engine.__file__)"],
            env={**env, "PYTHONPATH": str(root)},
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert Path(where).is_relative_to(root), f"{label}: imported {where}, not {root}"
    for r in range(rounds):
        for label in ("old", "new") if r % 2 == 0 else ("new", "old"):
            print(f"round {r + 1}/{rounds}: {label}", file=sys.stderr, flush=True)
            child = subprocess.run(
                [sys.executable, __file__, "--json", *args],
                env={**env, "PYTHONPATH": str(roots[label])},
                cwd=roots[label],
                capture_output=True,
                text=True,
                check=True,
            )
            runs[label] += [json.loads(line) for line in child.stdout.splitlines()]

    def per_point(label: str, field: str) -> dict[tuple[object, ...], list[float]]:
        by_point: dict[tuple[object, ...], list[float]] = {}
        for p in runs[label]:
            key = (p["width"], p["d_w"], p["d_a"], p["batch"])
            by_point.setdefault(key, []).append(float(p[field]))  # type: ignore[arg-type]
        return by_point

    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"

    old_ms, new_ms = per_point("old", "engine_ms"), per_point("new", "engine_ms")
    old_dense, new_dense = per_point("old", "dense_ms"), per_point("new", "dense_ms")
    paths = {(p["width"], p["d_w"], p["d_a"], p["batch"], label): p["paths"]
             for label in runs for p in runs[label]}  # fmt: skip
    print(f"ms over {rounds} rounds of each: median (min-max); (a), dense, shows the machine")
    print("| width | d_w | d_a | batch | old engine | new engine | new/old | (a) old run | "
          "(a) new run | old paths | new paths |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for key in sorted(old_ms):
        w, d_w, d_a, batch = key
        ratio = statistics.median(new_ms[key]) / statistics.median(old_ms[key])
        print(
            f"| {w} | {d_w:.0%} | {d_a:.0%} | {batch} | {spread(old_ms[key])} "
            f"| {spread(new_ms[key])} | **{ratio:.2f}** | {spread(old_dense[key])} "
            f"| {spread(new_dense[key])} | {paths[(*key, 'old')]} | {paths[(*key, 'new')]} |"
        )


def main(argv: list[str] | None = None) -> None:
    side_by_side = argparse.ArgumentParser(add_help=False)
    side_by_side.add_argument(
        "--compare-with", type=Path, default=None, help="another checkout to time side by side"
    )
    side_by_side.add_argument("--rounds", type=int, default=3, help="runs of each to compare")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[side_by_side])
    parser.add_argument("--quick", action="store_true", help="reduced grid, under two minutes")
    parser.add_argument("--json", action="store_true", help="one JSON object per grid point")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=None, help="seconds of timing per point")
    parser.add_argument(
        "--cold", action="store_true", help="time each call right after the other methods' calls"
    )
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument(
        "--inputs", default="randn", choices=("randn", "mnist"), help="N(0,1) or MNIST test images"
    )
    parser.add_argument("--widths", type=int, nargs="*", default=None)
    parser.add_argument(
        "--pairs", type=float, nargs="*", default=None, help="d_w d_a d_w d_a ... (fractions)"
    )
    args = parser.parse_args(argv)
    if args.compare_with is not None:
        forwarded = side_by_side.parse_known_args(argv)[1]
        compare(args.compare_with, args.rounds, [a for a in forwarded if a != "--json"])
        return
    torch.set_num_threads(args.threads)
    if args.quick:
        widths: tuple[int, ...] = (2048,)
        pairs = [(0.05, 0.05), (0.10, 0.10), (0.20, 0.20), (0.40, 0.10)]
        budget = args.budget or 1.5
    else:
        widths = WIDTHS
        pairs = list(itertools.product(DENSITIES, DENSITIES))
        budget = args.budget or 3.0
    if args.widths:
        widths = tuple(args.widths)
    if args.pairs:
        pairs = list(zip(args.pairs[::2], args.pairs[1::2], strict=True))
    points: list[Point] = []
    for width, (d_w, d_a) in itertools.product(widths, pairs):
        for p in run_point(
            width, d_w, d_a, BATCHES, args.threads, budget, args.cold, args.backend, args.inputs
        ):
            points.append(p)
            if args.json:
                print(json.dumps(asdict(p)), flush=True)
            else:
                print(
                    f"width {p.width} d_w {p.d_w:.2f} d_a {p.d_a:.2f} batch {p.batch:>3}: "
                    f"dense {p.dense_ms:8.3f} ms  masked {p.masked_ms:8.3f}  csr {p.csr_ms:8.3f}"
                    f"  engine {p.engine_ms:8.3f}  speedup {p.speedup:6.1f}× (ideal "
                    f"{p.ideal:.0f}×)  err {p.max_abs_err:.1e}",
                    flush=True,
                )
    if not args.json:
        print()
        print(markdown(points))


if __name__ == "__main__":
    main()
