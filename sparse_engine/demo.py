"""The in-process demo: learn Split-MNIST task by task, print the accuracy matrix, ACC and BWT."""

from __future__ import annotations

import time

from tqdm import tqdm

from .config import DEFAULT_BACKBONE, ProgressEvent, TaskConfig
from .metrics import AccuracyMatrix
from .mnist import split_mnist
from .model import SparseCL


def run_demo(
    backbone: str = DEFAULT_BACKBONE,
    config: TaskConfig | None = None,
    train_limit: int | None = None,
) -> AccuracyMatrix:
    """Learn the five Split-MNIST tasks one after another on one backbone; return R."""
    config = config or TaskConfig()
    stream = split_mnist(train_limit=train_limit)
    model = SparseCL(backbone)
    matrix = AccuracyMatrix(len(stream))
    start = time.perf_counter()
    print(f"backbone {model.spec}, mask density {config.density:.0%} per layer, k-WTA k={config.k}")
    for i, task in enumerate(stream):
        per_epoch = -(-len(task.train) // config.batch_size)
        steps = config.most_epochs(per_epoch) * per_epoch
        with tqdm(total=steps, desc=f"task {i + 1}/{len(stream)} {task.name}", unit="step") as bar:

            def progress(event: ProgressEvent, bar: tqdm = bar, steps: int = steps) -> None:
                if event.step:
                    bar.n = min(steps, bar.n + 50)
                    bar.set_postfix(
                        phase=event.phase,
                        loss=f"{event.loss:.3f}",
                        acc=f"{event.accuracy:.3f}",
                        density=f"{event.density:.2f}",
                    )
                    bar.refresh()

            record = model.learn_task(task.name, task.train, task.val, config, progress=progress)
            bar.n = steps
            bar.set_postfix(
                val_acc=f"{record.val_accuracy:.4f}",
                free=f"{model.spec.overall(record.free_capacity):.2f}",
            )
        for j in range(i + 1):
            matrix.record(i, j, model.accuracy(stream[j].name, stream[j].test))
    names = [t.name for t in stream]
    print("\naccuracy matrix R[i][j] (%, test split): row = after learning task i, column = task j")
    print(matrix.format(names))
    print(
        f"\nACC {100 * matrix.acc():.2f} %   BWT {100 * matrix.bwt():+.2f}   "
        f"forgetting {100 * matrix.forgetting():.2f}   ({time.perf_counter() - start:.0f} s)"
    )
    return matrix
