"""One writer per remote store: the lease in the MLflow experiment (issue 13)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from client import Client
from sparse_engine.mnist import Mnist

from ..serving import FAST, TINY, ServerProcess, digits, sparsecl
from ..tracking import free_port, start_mlflow, stop_mlflow

LEASE = ["--lease-seconds", "3"]


def serve_once(uri: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return sparsecl(
        *("serve", "--port", "0", "--backbone", TINY, "--tracking-uri", uri),
        *("--data-dir", data_dir, *LEASE),
        timeout=120,
    )


def test_a_second_writer_is_refused_and_a_dead_writers_successor_takes_over(
    tmp_path: Path, mnist: Mnist
) -> None:
    port = free_port()
    mlflow = start_mlflow(tmp_path, port)
    uri = f"http://127.0.0.1:{port}"
    first = ServerProcess(tmp_path / "one", tracking_uri=uri, args=LEASE).start()
    try:
        with Client(first.address, timeout=120) as client:
            client.learn("A", digits(mnist, [0, 1], n=200), **FAST)
            scores = client.predict("A", mnist.x_test[:20]).scores
        second = serve_once(uri, tmp_path / "two")  # another machine: another data dir
        assert second.returncode == 2
        assert "written by another sparsecl server" in second.stderr
        assert f"pid {first.process.pid}" in second.stderr  # type: ignore[union-attr]
        first.kill()  # SIGKILL: the lease is never released, it expires
        killed = time.monotonic()
        successor = ServerProcess(tmp_path / "three", tracking_uri=uri, args=LEASE).start()
        assert time.monotonic() - killed >= 1.5  # not before the lease ran out
        try:
            with Client(successor.address, timeout=120) as client:
                assert client.predict("A", mnist.x_test[:20]).scores.tobytes() == scores.tobytes()
                client.learn("B", digits(mnist, [2, 3], n=200), **FAST)
        finally:
            successor.terminate()
        after_stop = ServerProcess(tmp_path / "four", tracking_uri=uri, args=LEASE).start()
        after_stop.terminate()  # a stopped server released its lease at once
    finally:
        first.kill()
        stop_mlflow(mlflow)
