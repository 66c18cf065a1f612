"""One launcher of a real server: ``sparsecl serve`` in a subprocess, for the demo, the tests
and the benchmarks. It only spawns the CLI and talks gRPC (the health service), so it
imports nothing of the server.

    with Server(Path("data"), backbone="mlp:784-64-64") as server:
        client = Client(server.address)

A thread reads the server's output (stdout and stderr) for its whole life into ``output``
(and hands each line to ``echo``), so the server never blocks on a full pipe.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import grpc

READY = re.compile(r"serving on (\S+)")  # the line `serve` prints once its health is SERVING
LISTENING = re.compile(r"listening on (\S+)")  # printed once bound (health NOT_SERVING yet)


@dataclass
class Server:
    """`sparsecl serve` on loopback: ``port`` 0 takes a free one, read from its ready line.

    ``args``: more `serve` options (TLS, tokens, limits); ``env``: more environment;
    ``credentials``: for the health check of a TLS server (without them its ready line,
    printed once its health service reports SERVING, is taken at its word).
    """

    data_dir: Path | None = None  # None: serve's default
    backbone: str | None = None  # None: the store's, or serve's default for a new store
    tracking_uri: str | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    cwd: Path | None = None
    echo: Callable[[str], None] | None = None  # also given each line of output as it comes
    credentials: grpc.ChannelCredentials | None = None
    address: str = field(default="", init=False)  # HOST:PORT, once started
    process: subprocess.Popen[str] | None = field(default=None, init=False)
    output: list[str] = field(default_factory=list, init=False)  # each line since the start
    _reader: threading.Thread | None = field(default=None, init=False, repr=False)

    def command(self) -> list[str]:
        """The `sparsecl serve` command line."""
        cmd = [sys.executable, "-m", "client.cli", "serve", "--port", str(self.port)]
        for flag, value in (
            ("--data-dir", self.data_dir),
            ("--backbone", self.backbone),
            ("--tracking-uri", self.tracking_uri),
        ):
            if value is not None:
                cmd += [flag, str(value)]
        return cmd + list(self.args)

    def start(self, timeout: float = 120.0, serving: bool = True) -> Self:
        """Start the server and wait until it serves (``serving`` False: until it listens,
        before its store is loaded); RuntimeError with its output if it exits or does not
        get there within ``timeout`` seconds."""
        self.address, self.output = "", []
        self.process = subprocess.Popen(
            self.command(),
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )
        ready, listening = threading.Event(), threading.Event()
        self._reader = threading.Thread(
            target=self._read, args=(self.process, self.output, ready, listening), daemon=True
        )
        self._reader.start()
        deadline = time.monotonic() + timeout

        def there() -> bool:
            return ready.wait(0.1) and self._serving() if serving else listening.wait(0.1)

        while not there():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("the server did not start:\n" + "".join(self.output))
        return self

    def _read(
        self,
        process: subprocess.Popen[str],
        output: list[str],
        ready: threading.Event,
        listening: threading.Event,
    ) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if self.echo is not None:
                self.echo(line)
            bound = LISTENING.search(line)
            if bound and not listening.is_set():
                self.address = bound.group(1)
                listening.set()
            match = READY.search(line)
            if match and not ready.is_set():
                self.address = match.group(1)
                ready.set()

    def _serving(self) -> bool:
        """Whether its health service reports SERVING (a TLS server without ``credentials``:
        its ready line, printed once it does, says so)."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        if self.credentials is None:
            if any(arg.startswith("--tls-cert") for arg in self.args):
                return True
            channel = grpc.insecure_channel(self.address)
        else:
            channel = grpc.secure_channel(self.address, self.credentials)
        with channel:
            try:
                health = health_pb2_grpc.HealthStub(channel)
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            except grpc.RpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds; its exit
        status (negative: the signal that ended it), once its output is read to the end."""
        assert self.process is not None, "the server was never started"
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
        return self._reap()

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as after a crash."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self._reap()

    def _reap(self) -> int:
        assert self.process is not None
        status = self.process.wait(30)
        if self._reader is not None:
            self._reader.join(10)  # the last lines, up to the end of the pipe
        return status

    def __enter__(self) -> Self:
        return self if self.process is not None and self.process.poll() is None else self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.stop()
