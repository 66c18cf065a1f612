"""The service demo (`make demo`): start the server on the embedded MLflow store, drive it
with the Python client through Split-MNIST, print R, ACC and BWT, point at the MLflow UI.

The data is prepared here on the client side (sparse_engine.mnist reads the local MNIST);
the server only ever sees arrays over gRPC, and its output is shown as it comes. Re-running
it reuses the tasks already in the store (they are rebuilt from MLflow, bit for bit) and
learns only the missing ones.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sparse_engine.config import DEFAULT_BACKBONE
from sparse_engine.metrics import AccuracyMatrix
from sparse_engine.mnist import split_mnist

from .cli import hyper_flags, hyper_values
from .client import Client, Progress, TaskInfo
from .launch import Server


def show(line: str) -> None:
    """A line of the server's output, set apart from the demo's own."""
    print(f"  [server] {line}", end="", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="the server's store (default: serve's)"
    )
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument(
        "--train-limit", type=int, default=None, help="at most this many training examples a task"
    )
    hyper_flags(parser)
    args = parser.parse_args(argv)

    stream = split_mnist(train_limit=args.train_limit)
    start = time.perf_counter()
    server = Server(args.data_dir, backbone=args.backbone, echo=show)
    with server, Client(server.address) as client:
        known = {t.name for t in client.tasks() if t.state == "committed"}
        matrix = AccuracyMatrix(len(stream))
        for i, task in enumerate(stream):
            if task.name in known:
                print(f"task {i + 1}/{len(stream)} {task.name}: already in the store")
            else:
                for event in client.add_task(
                    task.name,
                    (task.train.x.numpy(), task.train.y.numpy()),
                    (task.val.x.numpy(), task.val.y.numpy()),
                    **hyper_values(args),
                ):
                    if isinstance(event, Progress) and event.step == 0:
                        print(
                            f"  {task.name} {event.phase:<8} epoch {event.epoch} "
                            f"val acc {event.accuracy:.4f} density {event.density:.3f}",
                            flush=True,
                        )
                    elif isinstance(event, TaskInfo):
                        print(
                            f"task {i + 1}/{len(stream)} {task.name}: committed, MLflow "
                            f"run {event.mlflow_run_id}, model {event.model_name} "
                            f"v{event.model_version}",
                            flush=True,
                        )
            for j in range(i + 1):
                test = stream[j].test
                prediction = client.predict(stream[j].name, test.x.numpy())
                matrix.record(i, j, float((prediction.labels == test.y.numpy()).mean()))
        backbone = client.backbone()
    print(
        "\naccuracy matrix R[i][j] (%, test split, over gRPC): row = after task i, column = task j"
    )
    print(matrix.format([t.name for t in stream]))
    print(
        f"\nACC {100 * matrix.acc():.2f} %   BWT {100 * matrix.bwt():+.2f}   "
        f"free capacity {100 * backbone.free_capacity:.1f} %   "
        f"({time.perf_counter() - start:.0f} s)"
    )
    print(
        f"\nBrowse the tasks (runs, masks, plots, registered models):\n"
        f"  .venv/bin/mlflow ui --backend-store-uri {backbone.tracking_uri}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
