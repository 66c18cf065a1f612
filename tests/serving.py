"""Real server processes for integration tests: `sparsecl serve` on a free loopback port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sparse_engine.mnist import Mnist

TINY = "mlp:784-64-64"
FAST = dict(density=0.1, k=0.25, epochs=1, retrain_epochs=1, batch_size=64, lr=3e-3)
READY = re.compile(r"serving on (\S+)")
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
class ServerProcess:
    """`python -m client.cli serve` on port 0; ``address`` is read from its ready line."""

    data_dir: Path
    backbone: str | None = TINY
    tracking_uri: str | None = None
    args: list[str] = field(default_factory=list)  # more `serve` options (TLS, tokens, limits)
    env: dict[str, str] = field(default_factory=dict)  # more environment (fault injection)
    address: str = ""
    process: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)

    def start(self, timeout: float = 120.0) -> ServerProcess:
        cmd = [
            sys.executable,
            "-m",
            "client.cli",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(self.data_dir),
        ]
        if self.backbone:
            cmd += ["--backbone", self.backbone]
        if self.tracking_uri:
            cmd += ["--tracking-uri", self.tracking_uri]
        cmd += self.args
        self.output = []
        self.process = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )
        found = threading.Event()

        def pump() -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                self.output.append(line)
                match = READY.search(line)
                if match and not found.is_set():
                    self.address = match.group(1)
                    found.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("server did not start:\n" + "".join(self.output))
        return self

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as after a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def restart(self) -> ServerProcess:
        self.kill()
        return self.start()
