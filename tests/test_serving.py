"""benchmarks/serving.py's h2load generator: gRPC calls as raw HTTP/2 against a real server."""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Iterator

import numpy as np
import pytest

from benchmarks.serving import MODEL, grpc_call, grpc_frame, h2load_cell
from client import Client
from sparse_engine.mnist import Mnist
from sparsecl import tensors
from sparsecl.v1 import sparsecl_pb2 as pb

from .serving import FAST, ServerProcess, digits

needs_h2load = pytest.mark.skipif(
    shutil.which("h2load") is None, reason="h2load is not installed (Debian: nghttp2-client)"
)
CELL = argparse.Namespace(clients=2, seconds=1.0, warmup=0.3)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, mnist: Mnist) -> Iterator[str]:
    """A server with the benchmark's task name committed; its address."""
    server = ServerProcess(tmp_path_factory.mktemp("serving")).start()
    with Client(server.address, timeout=120) as client:
        client.learn(MODEL, digits(mnist, [0, 1], n=200), **FAST)
    yield server.address
    server.terminate()


def one_example(mnist: Mnist) -> np.ndarray:
    return np.ascontiguousarray(mnist.x_test[:1].reshape(1, -1).astype(np.float32) / 255.0)


def test_a_grpc_frame_is_an_uncompressed_length_prefix() -> None:
    framed = grpc_frame(b"abc")
    assert framed[0] == 0
    assert int.from_bytes(framed[1:5], "big") == 3
    assert framed[5:] == b"abc"


def test_the_predict_body_is_the_python_generators_request(mnist: Mnist) -> None:
    x = one_example(mnist)
    path, body = grpc_call("sparsecl", x)
    assert path == "/sparsecl.v1.ContinualLearner/Predict"
    request = pb.PredictRequest.FromString(body[5:])
    assert request.task == MODEL
    assert tensors.decode(request.x).tobytes() == x.tobytes()


@needs_h2load
def test_h2load_times_answered_calls(served: str, mnist: Mnist) -> None:
    row = h2load_cell([served], grpc_call("sparsecl", one_example(mnist)), 1, 5 + 8, CELL)
    assert row["errors"] == 0
    assert row["calls"] > 0
    assert 0 < row["p50_ms"] <= row["p99_ms"]


@needs_h2load
def test_h2load_counts_grpc_errors_behind_a_2xx(served: str, mnist: Mnist) -> None:
    request = pb.PredictRequest(task="no-such-task", x=tensors.encode(one_example(mnist)))
    call = ("/sparsecl.v1.ContinualLearner/Predict", grpc_frame(request.SerializeToString()))
    row = h2load_cell([served], call, 1, 5 + 8, CELL)
    assert row["calls"] > 0
    assert row["errors"] >= row["calls"]
