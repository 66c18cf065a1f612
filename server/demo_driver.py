"""The service demo (`make demo`): start the server on the embedded MLflow store, drive it
with the Python client through Split-MNIST, print R, ACC and BWT, point at the MLflow UI.

The data is prepared here on the client side (sparse_engine.mnist reads the local MNIST);
the server only ever sees arrays over gRPC. Re-running it reuses the tasks already in the
store (they are rebuilt from MLflow, bit for bit) and learns only the missing ones.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from client import Client, Progress, TaskInfo
from sparse_engine.config import DEFAULT_BACKBONE
from sparse_engine.metrics import AccuracyMatrix
from sparse_engine.mnist import split_mnist


def start_server(data_dir: Path, backbone: str) -> tuple[subprocess.Popen[str], str]:
    """`sparsecl serve` on a free port; returns the process and its address."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "client.cli",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
            "--backbone",
            backbone,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        match = re.search(r"serving on (\S+)", line)
        if match:
            print(line.rstrip())
            return process, match.group(1)
        if "error" in line.lower():
            print(line.rstrip(), file=sys.stderr)
    raise SystemExit(f"the server did not start (exit status {process.wait()})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path("sparsecl-data"))
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--k", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--retrain-epochs", type=int, default=2)
    parser.add_argument("--train-limit", type=int, default=None)
    args = parser.parse_args(argv)

    stream = split_mnist(train_limit=args.train_limit)
    process, address = start_server(args.data_dir, args.backbone)
    start = time.perf_counter()
    try:
        with Client(address) as client:
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
                        density=args.density,
                        k=args.k,
                        epochs=args.epochs,
                        retrain_epochs=args.retrain_epochs,
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
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    names = [t.name for t in stream]
    print(
        "\naccuracy matrix R[i][j] (%, test split, over gRPC): row = after task i, column = task j"
    )
    print(matrix.format(names))
    print(
        f"\nACC {100 * matrix.acc():.2f} %   BWT {100 * matrix.bwt():+.2f}   "
        f"free capacity {100 * backbone.free_capacity:.1f} %   "
        f"({time.perf_counter() - start:.0f} s)"
    )
    uri = f"sqlite:///{args.data_dir}/mlflow.db"
    print(
        f"\nBrowse the tasks (runs, masks, plots, registered models):\n"
        f"  .venv/bin/mlflow ui --backend-store-uri {uri}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
