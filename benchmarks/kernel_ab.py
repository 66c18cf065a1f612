"""Two builds of the native kernel timed in one process, call by call on the same plans.

Subprocess runs (``engine.py --compare-with``) carry a few percent of noise from one
process to the next; here both builds run the same plan header on the same inputs,
alternating, so a ratio of medians resolves about 1 %. The builds must read the same
plan header (sparse_engine/native.py). Example, a checkout of the code before a change:

    python benchmarks/kernel_ab.py OLD/sparse_engine/_native*.so sparse_engine/_native_x86_64_v4*.so
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time

import numpy as np
import torch

from sparse_engine import native
from sparse_engine.backbone import Backbone, BackboneSpec
from sparse_engine.mnist import load_mnist
from sparse_engine.plan import compile_task
from sparse_engine.synthetic import synthetic_task

BLOCKS = 7


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("builds", nargs=2, help="the first build (the base) and the second")
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--pairs", nargs="*", type=float, default=[0.05, 0.05, 0.1, 0.1, 0.2, 0.2])
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 16, 256])
    parser.add_argument("--depth", type=int, default=3, help="hidden layers of --width units")
    parser.add_argument(
        "--inputs", choices=("randn", "mnist"), default="randn", help="MNIST: test images"
    )
    args = parser.parse_args()
    libs = [ctypes.CDLL(path) for path in args.builds]
    for lib in libs:
        for name in ("sparsecl_forward", "sparsecl_forward_rows"):
            getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int64] * 4
    spec = BackboneSpec.parse("mlp:784" + f"-{args.width}" * args.depth)
    images = None
    if args.inputs == "mnist":  # as the library converts uint8 images: scaled by 1/255
        images = load_mnist().x_test.reshape(-1, 784).astype(np.float32) / np.float32(255)
    backbone = Backbone(spec, seed=0)
    for d_w, d_a in zip(args.pairs[::2], args.pairs[1::2], strict=True):
        plan = compile_task(spec, backbone.weights, synthetic_task(backbone, "ab", d_w, d_a, 1))
        header = native.header(plan)[1]
        for n in args.batches:
            x = (
                torch.randn(n, 784, generator=torch.Generator().manual_seed(0)).numpy()
                if images is None
                else np.ascontiguousarray(images[:n])
            )
            outs = [np.empty((n, plan.head_bias.shape[0]), np.float32) for _ in libs]
            name = "sparsecl_forward_rows" if n < 3 else "sparsecl_forward"
            calls = 100 if n < 256 else 10
            ratios, base = [], []
            for _ in range(BLOCKS):
                times: list[list[float]] = [[], []]
                for i in range(calls):
                    for k in (0, 1) if i % 2 else (1, 0):
                        run = getattr(libs[k], name)
                        start = time.perf_counter()
                        run(header, x.ctypes.data, 784, outs[k].ctypes.data, 0, n)
                        times[k].append(time.perf_counter() - start)
                medians = [statistics.median(t) for t in times]
                base.append(medians[0])
                ratios.append(medians[1] / medians[0])
            print(
                f"d_w {d_w:.2f} d_a {d_a:.2f} batch {n:>3}: "
                f"base {1e3 * statistics.median(base):.3f} ms, "
                f"second/base {statistics.median(ratios):.3f} "
                f"[{min(ratios):.3f}-{max(ratios):.3f}], same bits {np.array_equal(*outs)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
