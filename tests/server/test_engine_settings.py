"""The server controls the inference engine's threads and backend (`sparsecl serve` options)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from client import Client
from sparse_engine.mnist import Mnist

from ..serving import FAST, ROOT, ServerProcess, digits


def test_engine_threads_and_backend_are_applied_and_served(tmp_path: Path, mnist: Mnist) -> None:
    server = ServerProcess(tmp_path, args=["--engine-threads", "1", "--engine-backend", "torch"])
    server.start()
    try:
        assert "engine torch, 1 threads" in "".join(server.output)
        with Client(server.address, timeout=120) as client:
            client.learn("A", digits(mnist, [0, 1]), **FAST)
            labels = client.predict("A", mnist.x_test[:64]).labels
        assert set(np.unique(labels)) <= {0, 1}
    finally:
        server.kill()


def test_bad_engine_settings_stop_the_server_with_a_message(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            *(sys.executable, "-m", "client.cli", "serve", "--port", "0"),
            *("--data-dir", str(tmp_path), "--engine-threads", "-1"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "engine_threads and interop_threads must be >= 0" in run.stderr
    assert not (tmp_path / "mlflow.db").exists()  # refused before the store is touched


def test_backbone_reports_the_native_kernel_and_its_level(tmp_path: Path) -> None:
    from sparse_engine import native

    if native.KERNEL is None:
        pytest.skip(f"no native kernel on this host: {native.PROBLEM}")
    server = ServerProcess(tmp_path).start()
    try:
        with Client(server.address, timeout=120) as client:
            engine = client.backbone().engine
        assert (engine.backend, engine.isa, engine.warning) == ("native", native.KERNEL.isa, "")
        assert f"engine native {native.KERNEL.isa}," in "".join(server.output)
    finally:
        server.kill()


def test_the_fallback_is_warned_at_start_and_reported_by_get_backbone(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, env={"SPARSECL_NATIVE_ISA": "none"}).start()
    try:
        with Client(server.address, timeout=120) as client:
            engine = client.backbone().engine
        assert engine.backend == "torch" and engine.isa == ""
        assert "SPARSECL_NATIVE_ISA=none" in engine.warning
        log = "".join(server.output)
        assert "WARNING" in log and "SPARSECL_NATIVE_ISA=none" in log
        assert "engine torch," in log
    finally:
        server.kill()
