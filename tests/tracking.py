"""Real MLflow tracking servers for the tests: `mlflow server` on sqlite or on the machine's
PostgreSQL, artifacts proxied by the server itself (``mlflow-artifacts:`` URIs), so that
no sparsecl process shares a folder with another."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

# the machine's PostgreSQL (trust auth); each test makes and drops its own database in it
POSTGRES = os.environ.get("SPARSECL_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mlflow(root: Path, port: int, backend: str | None = None) -> subprocess.Popen[bytes]:
    """A real `mlflow server` on ``backend`` (default: sqlite in ``root``) serving the
    artifacts from ``root``/artifacts; returns once it is healthy."""
    mlflow = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            backend or f"sqlite:///{root / 'server.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--workers",
            "1",
        ],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: stop_mlflow takes its workers too
    )
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return mlflow
        except OSError:
            if mlflow.poll() is not None or time.monotonic() > deadline:
                stop_mlflow(mlflow)
                raise RuntimeError("mlflow server did not start") from None
            time.sleep(0.5)


def stop_mlflow(mlflow: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server and its workers (uvicorn, job runners), then wait."""
    stop_group(mlflow)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to a process started in its own group (``start_new_session``) and all of
    that group, SIGKILL after 30 s; then wait for it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty database on the machine's PostgreSQL (its URI), dropped afterwards with
    every connection to it."""
    import psycopg2

    name = f"sparsecl_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(f"{POSTGRES.replace('+psycopg2', '')}/postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield f"{POSTGRES}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
