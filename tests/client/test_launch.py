"""The one server launcher (client/launch.py) and the demo that drives a server through it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client.launch import Server

from ..serving import ROOT, TINY
from ..tracking import free_port


def test_a_server_serves_on_the_port_given_and_its_output_is_read_to_the_end(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    port = free_port()
    with Server(tmp_path / "data", TINY, port=port, echo=lines.append, cwd=ROOT) as server:
        assert server.address == f"127.0.0.1:{port}"
        with grpc.insecure_channel(server.address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert server.process is not None and server.process.returncode == 0
    assert lines == server.output and "sparsecl: shutting down" in lines[-1]


def test_a_server_that_does_not_stop_on_sigterm_in_time_is_killed(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", TINY, cwd=ROOT).start()
    assert server.stop(timeout=0.001) == -signal.SIGKILL


def test_a_server_that_cannot_start_is_reported_with_its_output(tmp_path: Path) -> None:
    server = Server(tmp_path, TINY, args=["--engine-threads", "-1"], cwd=ROOT)
    with pytest.raises(RuntimeError, match=r"did not start:\n.*engine_threads"):
        server.start()


def test_the_demo_drives_split_mnist_through_a_server_and_shows_its_output(
    tmp_path: Path,
) -> None:
    demo = [sys.executable, "-m", "client.demo", "--data-dir", str(tmp_path), "--backbone", TINY]
    quick = ["--train-limit", "200", "--epochs", "1", "--retrain-epochs", "1", "--k", "0.25"]
    done = subprocess.run(
        [*demo, *quick, "--batch-size", "64"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "[server] sparsecl serving on" in out and "[server] sparsecl: shutting down" in out
    header = out.split("column = task j\n")[1].splitlines()[0]
    assert header.split() == [f"digits-{d}{d + 1}" for d in range(0, 10, 2)]
    assert "ACC " in out and f"--backend-store-uri sqlite:///{tmp_path}" in out
