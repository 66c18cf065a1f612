"""Auto epochs and the retraining schedule under them, side by side (issue 17).

Three ways to train each task, on the same tasks one after another on one backbone:
``fixed`` (2 + 2 epochs, the defaults before issue 17: dense, then retraining with the lr
annealed to 0 by a half cosine), ``auto`` (the defaults now: both phases until the
validation accuracy plateaus; retraining cuts its lr 10x at each plateau and stops at the
plateau after two cuts, keeping its best epoch) and ``cosine`` (auto dense phase; the
alternative for retraining: the half cosine laid over ``max_epochs``, stopped at a plateau,
keeping its best epoch). The test accuracy tells which schedule keeps accuracy.

    python benchmarks/auto_epochs.py --stream digits   # scikit-learn 8×8 digits, 2 tasks
    python benchmarks/auto_epochs.py --stream permuted # Permuted MNIST, 2 tasks of 20 k

Prints one JSON line per variant: mean test accuracy (%) and, per task, its test and
validation accuracy, seconds and the epochs each phase ran.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sparse_engine.learner as learner  # noqa: E402
from benchmarks.continual import chosen_device, device_option  # noqa: E402
from sparse_engine.config import AUTO, Epochs, Phase, TaskConfig  # noqa: E402
from sparse_engine.data import from_numpy  # noqa: E402
from sparse_engine.mnist import StreamTask, permuted_mnist  # noqa: E402
from sparse_engine.model import SparseCL  # noqa: E402
from sparse_engine.recipe import Run  # noqa: E402
from sparse_engine.trainer import accuracy, make_optimizer  # noqa: E402


class CosineRun(Run):
    """The alternative measured: auto retraining under a half cosine over ``max_epochs``."""

    def fit(self, phase: Phase, epochs: Epochs, *args: Any, **kwargs: Any) -> None:
        """Run.fit, but an annealed auto phase (retraining) follows the cosine over max_epochs."""
        if not (kwargs.get("anneal") and epochs == AUTO):
            return super().fit(phase, epochs, *args, **kwargs)
        net, config = self.trainer, self.config
        optimizer = make_optimizer(net.trainable_parameters(), config)
        steps = config.max_epochs * self.steps_per_epoch()
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        best, kept, waited, done = -1.0, net.checkpoint(), 0, 0
        while done < config.max_epochs and waited < config.patience:
            done, self.epoch = done + 1, self.epoch + 1
            self.train_epoch(phase, optimizer, schedule, None)
            for layer in net.kwta:
                layer.update_boost_strength()  # type: ignore[operator]
            acc = accuracy(net, self.val, self.val_targets)
            waited = 0 if acc > best else waited + 1
            if acc >= best:
                best, kept = acc, net.checkpoint()
        net.resume(kept)
        self.history.append({"phase": "cosine", "stopped": "cosine", "epochs": done})
        return None


def digits_stream(
    groups: tuple[tuple[int, ...], ...] = ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9)),
    splits: tuple[float, float] = (0.7, 0.8),
    seed: int = 0,
) -> list[StreamTask]:
    """scikit-learn's 8×8 digits (64 features in [0, 1]), one task per group of digits
    (default: two 5-class tasks), split train/val/test at ``splits`` (70/10/20 %)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.reshape(len(d.images), -1) / 16.0).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = []
    for digits in groups:
        idx = rng.permutation(np.flatnonzero(np.isin(d.target, digits)))
        a, b = int(splits[0] * len(idx)), int(splits[1] * len(idx))
        parts = [from_numpy(x[i], d.target[i]) for i in (idx[:a], idx[a:b], idx[b:])]
        out.append(StreamTask("d" + "".join(map(str, digits)), *parts))
    return out


STREAMS: dict[str, tuple[Callable[[], list[StreamTask]], str, float]] = {
    "digits": (digits_stream, "mlp:64-256-256", 0.1),
    "permuted": (lambda: permuted_mnist(tasks=2, train_limit=20000), "mlp:784-100-100", 0.3),
}


def run(variant: str, stream: str, device: str = "auto") -> dict[str, Any]:
    """Learn the stream with one variant, training on ``device``; its row."""
    make, backbone, k = STREAMS[stream]
    learner.Run = CosineRun if variant == "cosine" else Run  # type: ignore[misc]
    fixed = {"epochs": 2, "retrain_epochs": 2} if variant == "fixed" else {}
    config = TaskConfig(k=k, lr=1e-3, reuse="all", **fixed)  # type: ignore[arg-type]
    model = SparseCL(backbone, device=device)
    rows = []
    for task in make():
        start = time.perf_counter()
        record = model.learn_task(task.name, task.train, task.val, config)
        seconds = time.perf_counter() - start
        ran = [(h["phase"], h["epochs"]) for h in record.history if "stopped" in h]
        test = 100 * model.accuracy(task.name, task.test)
        rows.append(
            [task.name, round(test, 2), round(100 * record.val_accuracy, 2), round(seconds, 1), ran]
        )
    mean = round(float(np.mean([r[1] for r in rows])), 2)
    return {
        "variant": variant,
        "stream": stream,
        "backbone": backbone,
        "device": model.device.type,
        "mean_test": mean,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", choices=sorted(STREAMS), default="digits")
    parser.add_argument("--variants", default="fixed,auto,cosine")
    device_option(parser)
    args = parser.parse_args()
    chosen_device(parser, args.device)  # fail early without the GPU asked for
    for variant in args.variants.split(","):
        print(json.dumps(run(variant, args.stream, args.device)), flush=True)


if __name__ == "__main__":
    main()
