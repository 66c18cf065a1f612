"""Real server processes for integration tests: `sparsecl serve` on a free loopback port."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client.launch import Server
from sparse_engine.mnist import Mnist

TINY = "mlp:784-64-64"
# reuse all: these tests were written for tasks that read earlier tasks' weights (the
# default until reuse auto); test_reuse_auto covers the default
FAST = dict(density=0.1, k=0.25, epochs=1, retrain_epochs=1, batch_size=64, lr=3e-3, reuse="all")
ROOT = Path(__file__).resolve().parent.parent


def sparsecl(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m client.cli ARGS` to its end: exit status, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "client.cli", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_statuses(data_dir: Path, name: str) -> list[str]:
    """The MLflow statuses of task ``name``'s runs in an embedded store (FAILED, ...)."""
    from mlflow.tracking import MlflowClient

    store = MlflowClient(f"sqlite:///{Path(data_dir) / 'mlflow.db'}")
    experiment = store.get_experiment_by_name("sparsecl")
    assert experiment is not None
    runs = store.search_runs([experiment.experiment_id])
    return [r.info.status for r in runs if r.info.run_name == name]


def digits(
    mnist: Mnist, which: list[int], n: int = 300, offset: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """n real MNIST training images (uint8) of the given digits, and their labels."""
    keep = np.isin(mnist.y_train, which)
    return mnist.x_train[keep][offset : offset + n], mnist.y_train[keep][offset : offset + n]


@dataclass
class ServerProcess(Server):
    """The launcher (client/launch.py) with the tests' tiny backbone, run from the repository."""

    backbone: str | None = TINY
    cwd: Path | None = ROOT

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait (SIGKILL after ``timeout``); returns the exit status."""
        return self.stop(timeout)

    def restart(self) -> ServerProcess:
        """SIGKILL, as after a crash, then start again on the same store."""
        self.kill()
        return self.start()


@contextlib.contextmanager
def trainer_and_replica(root: Path, poll: float) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """An ``mlflow server`` in ``root`` as the shared store, a trainer and an inference
    replica (polling every ``poll`` seconds) on it, not yet started; stopped at the end."""
    from .tracking import free_port, start_mlflow, stop_mlflow

    port = free_port()
    mlflow = start_mlflow(root, port)
    uri = f"http://127.0.0.1:{port}"
    trainer = ServerProcess(root / "trainer", tracking_uri=uri, args=["--role", "trainer"])
    replica = ServerProcess(
        root / "replica",
        backbone=None,
        tracking_uri=uri,
        args=["--role", "inference", "--poll-seconds", str(poll)],
    )
    try:
        yield trainer, replica
    finally:
        for server in (trainer, replica):
            if server.process is not None:
                server.stop()
        stop_mlflow(mlflow)
