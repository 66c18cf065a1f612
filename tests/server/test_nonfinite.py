"""NaN, +Inf and -Inf in the data of every RPC that takes data, against the shared server.

Each is sent by the raw stub (no client-side check in the way) inside otherwise real
MNIST data, and must be answered INVALID_ARGUMENT naming the problem, with nothing
changed: ListTasks answers the same bytes and the committed tasks score a probe bit for
bit as before.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import numpy as np
import pytest

from client.convert import tensor
from sparsecl.v1 import sparsecl_pb2 as pb

from ..serving import FAST
from .conftest import Limited

VALUES = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf}


def data(s: Limited, which: list[int], n: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n real training images of the given digits as float32 in [0, 1], and their labels."""
    keep = np.isin(s.mnist.y_train, which)
    x = s.mnist.x_train[keep][offset : offset + n].reshape(n, -1).astype(np.float32) / 255
    return x, s.mnist.y_train[keep][offset : offset + n].astype(np.int64)


def spoiled(x: np.ndarray, value: float) -> np.ndarray:
    """A copy of ``x`` with one element of one example set to ``value``."""
    out = x.copy()
    out[len(out) // 2, 300] = value
    return out


def hyper_parameters() -> pb.HyperParameters:
    hp = pb.HyperParameters(
        density=FAST["density"],
        epochs=int(FAST["epochs"]),
        retrain_epochs=int(FAST["retrain_epochs"]),
        batch_size=int(FAST["batch_size"]),
        lr=FAST["lr"],
    )
    hp.k.append(pb.KSize(fraction=FAST["k"]))
    return hp


def upload(x: np.ndarray, y: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> list[pb.AddTaskRequest]:
    header = pb.AddTaskHeader(
        name="C",
        hyper_parameters=hyper_parameters(),
        labels=sorted(set(y.tolist())),
        train_examples=len(x),
        val_examples=len(vx),
    )
    return [
        pb.AddTaskRequest(header=header),
        pb.AddTaskRequest(chunk=pb.ExampleChunk(split=pb.SPLIT_TRAIN, x=tensor(x), y=tensor(y))),
        pb.AddTaskRequest(chunk=pb.ExampleChunk(split=pb.SPLIT_VAL, x=tensor(vx), y=tensor(vy))),
    ]


def predict_x(s: Limited, value: float) -> Callable[[], object]:
    x, _ = data(s, [0, 1], 20, offset=500)
    request = pb.PredictRequest(task="A", x=tensor(spoiled(x, value)))
    return lambda: s.stub.Predict(request, timeout=60)


def evaluate_x(s: Limited, value: float) -> Callable[[], object]:
    x, y = data(s, [0, 1, 2, 3], 20, offset=500)
    request = pb.EvaluateRequest(x=tensor(spoiled(x, value)), y=tensor(y))
    return lambda: s.stub.Evaluate(request, timeout=60)


def analyze_x(s: Limited, value: float) -> Callable[[], object]:
    x, y = data(s, [2, 3], 40, offset=500)
    request = pb.AnalyzeRequest(
        task="B",
        analysis=pb.ANALYSIS_WEIGHT_AGNOSTIC,
        x=tensor(spoiled(x, value)),
        y=tensor(y),
        weights=[0.5],
        draws=1,
    )
    return lambda: s.stub.Analyze(request, timeout=120)


def analyze_train_x(s: Limited, value: float) -> Callable[[], object]:
    x, y = data(s, [2, 3], 40, offset=500)
    tx, ty = data(s, [2, 3], 100)
    request = pb.AnalyzeRequest(
        task="B",
        analysis=pb.ANALYSIS_NOISE,
        x=tensor(x),
        y=tensor(y),
        train_x=tensor(spoiled(tx, value)),
        train_y=tensor(ty),
        noise_levels=[0.0],
        epochs=1,
    )
    return lambda: s.stub.Analyze(request, timeout=120)


def add_task_train_x(s: Limited, value: float) -> Callable[[], object]:
    x, y = data(s, [4, 5], 100)
    vx, vy = data(s, [4, 5], 20, offset=100)
    requests = upload(spoiled(x, value), y, vx, vy)
    return lambda: list(s.stub.AddTask(iter(requests), timeout=120))


def add_task_val_x(s: Limited, value: float) -> Callable[[], object]:
    x, y = data(s, [4, 5], 100)
    vx, vy = data(s, [4, 5], 20, offset=100)
    requests = upload(x, y, spoiled(vx, value), vy)
    return lambda: list(s.stub.AddTask(iter(requests), timeout=120))


CALLS = {
    "predict-x": predict_x,
    "evaluate-x": evaluate_x,
    "analyze-x": analyze_x,
    "analyze-train_x": analyze_train_x,
    "add-task-train-x": add_task_train_x,
    "add-task-val-x": add_task_val_x,
}


def state(s: Limited) -> tuple[bytes, tuple[bytes, bytes]]:
    """ListTasks as bytes, and the committed tasks' scores on the probe as bytes."""
    listed = s.stub.ListTasks(pb.ListTasksRequest(), timeout=30)
    return listed.SerializeToString(deterministic=True), s.scores()


@pytest.mark.parametrize("value", list(VALUES))
@pytest.mark.parametrize("call", list(CALLS))
def test_non_finite_data_is_invalid_and_changes_nothing(
    limited: Limited, call: str, value: str
) -> None:
    run = CALLS[call](limited, VALUES[value])
    before = state(limited)
    with pytest.raises(grpc.RpcError) as info:
        run()
    error = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "NaN or Inf" in (error.details() or "")
    assert state(limited) == before
