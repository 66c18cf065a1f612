"""Limits of a real server: examples per upload and per batch, a bounded queue, cancellation.

A cancelled AddTask (deadline passed, or the client cancels) leaves no committed task:
the job fails at its next step and its MLflow run is marked FAILED.
"""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest

from client import ClientError
from client.convert import tensor
from server.config import ServerConfig
from sparsecl.v1 import sparsecl_pb2 as pb

from ..serving import FAST, digits, run_statuses
from .conftest import MAX_BATCH, MAX_EXAMPLES, Limited

SLOW = {**FAST, "epochs": 1000}  # trains for minutes unless cancelled


def upload_requests(name: str, x: np.ndarray, y: np.ndarray, **hp: float) -> list[object]:
    """A header with ``hp`` (k as a fraction, reuse one choice) and one chunk of training
    examples."""
    k = [pb.KSize(fraction=hp.pop("k"))] if "k" in hp else []
    reuse = [hp.pop("reuse")] if "reuse" in hp else []
    hyper_parameters = pb.HyperParameters(k=k, reuse=reuse, **hp)
    head = pb.AddTaskRequest(header=pb.AddTaskHeader(name=name, hyper_parameters=hyper_parameters))
    body = pb.AddTaskRequest(chunk=pb.ExampleChunk(split=pb.SPLIT_TRAIN, x=tensor(x), y=tensor(y)))
    return [head, body]


def state(s: Limited, name: str) -> str:
    try:
        return s.client.task(name).state
    except ClientError:
        return ""  # not known (yet)


def wait_for(s: Limited, name: str, states: set[str], timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while (now := state(s, name)) not in states:
        assert time.monotonic() < deadline, f"task {name!r} stayed {now!r}"
        time.sleep(0.1)
    return now


def test_upload_over_max_examples_is_resource_exhausted(limited: Limited) -> None:
    before = limited.committed()
    x, y = digits(limited.mnist, [4, 5], n=MAX_EXAMPLES + 1)
    with pytest.raises(ClientError) as info:
        limited.client.learn("big", (x, y), **FAST)
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(MAX_EXAMPLES) in info.value.message
    assert limited.committed() == before and state(limited, "big") == ""


def test_predict_batch_over_max_batch_is_resource_exhausted(limited: Limited) -> None:
    x = limited.mnist.x_test[: MAX_BATCH + 1]
    with pytest.raises(grpc.RpcError) as info:
        limited.stub.Predict(pb.PredictRequest(task="A", x=tensor(x)), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(MAX_BATCH) in (info.value.details() or "")


def test_evaluate_batch_over_max_batch_is_resource_exhausted(limited: Limited) -> None:
    x, y = limited.mnist.x_test[: MAX_BATCH + 1], limited.mnist.y_test[: MAX_BATCH + 1]
    request = pb.EvaluateRequest(x=tensor(x), y=tensor(y))
    with pytest.raises(grpc.RpcError) as info:
        limited.stub.Evaluate(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_add_task_past_its_deadline_leaves_no_committed_task(limited: Limited) -> None:
    before = limited.scores()
    x, y = digits(limited.mnist, [6, 7], n=1500)
    with pytest.raises(grpc.RpcError) as info:
        list(limited.stub.AddTask(iter(upload_requests("late", x, y, **SLOW)), timeout=3))
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_for(limited, "late", {"failed", "committed"}) == "failed"
    assert "cancelled" in limited.client.task("late").error
    assert run_statuses(limited.server.data_dir, "late") == ["FAILED"]
    assert limited.scores() == before


def test_add_task_cancelled_by_the_client_leaves_no_committed_task(limited: Limited) -> None:
    x, y = digits(limited.mnist, [6, 7], n=1500)
    call = limited.stub.AddTask(iter(upload_requests("gone", x, y, **SLOW)), timeout=60)
    assert next(call).WhichOneof("event") == "queued"
    wait_for(limited, "gone", {"training"})
    call.cancel()
    assert wait_for(limited, "gone", {"failed", "committed"}) == "failed"
    assert run_statuses(limited.server.data_dir, "gone") == ["FAILED"]


def test_full_training_queue_is_resource_exhausted(limited: Limited) -> None:
    x, y = digits(limited.mnist, [6, 7], n=1500)
    call = limited.stub.AddTask(iter(upload_requests("first", x, y, **SLOW)), timeout=60)
    assert next(call).WhichOneof("event") == "queued"
    try:
        with pytest.raises(ClientError) as info:
            limited.client.learn("second", digits(limited.mnist, [8, 9], n=200), **FAST)
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "queue is full" in info.value.message
    finally:
        call.cancel()
    wait_for(limited, "first", {"failed", "committed"})


def test_predictions_are_served_while_a_cancelled_task_winds_down(limited: Limited) -> None:
    before = limited.scores()
    x, y = digits(limited.mnist, [6, 7], n=1500)
    call = limited.stub.AddTask(iter(upload_requests("brief", x, y, **SLOW)), timeout=60)
    next(call)
    stop = threading.Timer(1.0, call.cancel)
    stop.start()
    deadline = time.monotonic() + 120
    while state(limited, "brief") != "failed":
        assert limited.scores() == before
        assert time.monotonic() < deadline, "the cancelled task never failed"
    stop.join()


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        ServerConfig(max_batch=0)
