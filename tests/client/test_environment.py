"""`sparsecl serve` takes each option from SPARSECL_<OPTION> too (12-factor): the
environment sets defaults, the command line wins, a bad value names its variable and starts
nothing, and the README's table lists every variable."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from client import Client, ClientError
from client.cli import env_name, serve_options
from client.convert import tensor
from sparsecl.v1 import sparsecl_pb2 as pb

from ..serving import ROOT, ServerProcess

ENV = {"SPARSECL_MAX_MESSAGE_BYTES": "65536", "SPARSECL_ENGINE_THREADS": "1"}


def serve_dests() -> list[str]:
    parser = argparse.ArgumentParser()
    serve_options(parser)
    return [a.dest for a in parser._actions if a.option_strings and a.dest != "help"]


def test_the_environment_sets_the_servers_options(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, env=ENV).start()
    try:
        assert "1 threads" in "".join(server.output)
        request = pb.PredictRequest(task="A", x=tensor(np.zeros((40, 784), np.float32)))
        with Client(server.address, timeout=60) as client, pytest.raises(ClientError) as refused:
            client._call(client._stub.Predict, request)  # 125 KB in one message
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        server.kill()


def test_the_command_line_wins_over_the_environment(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, env=ENV, args=["--engine-threads", "2"]).start()
    try:
        assert "2 threads" in "".join(server.output)
    finally:
        server.kill()


def test_a_bad_value_names_its_variable_and_starts_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "client.cli", "serve", "--port", "0", "--data-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SPARSECL_ENGINE_BACKEND": "numba"},
    )
    assert done.returncode == 2
    assert "SPARSECL_ENGINE_BACKEND='numba'" in done.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_the_readme_lists_every_variable() -> None:
    listed = set(re.findall(r"`(SPARSECL_[A-Z_]+)`", (ROOT / "README.md").read_text()))
    assert {env_name(dest) for dest in serve_dests()} <= listed
