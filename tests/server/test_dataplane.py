"""The data plane called in-process, as a transport other than sparsecl.v1 gRPC would call it:
plain arrays and names in, dataclasses out, typed errors mapped to status codes in one table."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch

from server.app import load
from server.config import ServerConfig
from server.dataplane import DataPlane, InferenceModel, Progress, Queued, TaskView
from server.errors import (
    CancelledError,
    LimitExceededError,
    NotReadyError,
    PermissionDeniedError,
    QueueFullError,
    TrainingTimeError,
    UnauthenticatedError,
    http_status_of,
    status_of,
)
from server.store import StoreUnavailableError, TaskStore
from server.uploads import TRAINING, Chunk, Header
from sparse_engine.analysis import AnalysisStoppedError
from sparse_engine.config import TaskConfig
from sparse_engine.errors import (
    InvalidInputError,
    NoFreeCapacityError,
    TaskExistsError,
    UnknownTaskError,
    UnsoundTaskError,
)
from sparse_engine.mnist import Mnist

from ..serving import FAST, TINY, digits

MAX_BATCH = 100  # FAST trains batches of 64
CONFIG = TaskConfig(**FAST)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidInputError("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (UnsoundTaskError("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (UnknownTaskError("x"), grpc.StatusCode.NOT_FOUND),
        (TaskExistsError("x"), grpc.StatusCode.ALREADY_EXISTS),
        (NoFreeCapacityError("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (QueueFullError("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (LimitExceededError("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (TrainingTimeError("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (MemoryError(), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (NotReadyError("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (StoreUnavailableError("x"), grpc.StatusCode.UNAVAILABLE),
        (CancelledError("x"), grpc.StatusCode.UNAVAILABLE),
        (AnalysisStoppedError("x"), grpc.StatusCode.CANCELLED),
        (UnauthenticatedError("x"), grpc.StatusCode.UNAUTHENTICATED),
        (PermissionDeniedError("x"), grpc.StatusCode.PERMISSION_DENIED),
        (RuntimeError("x"), grpc.StatusCode.INTERNAL),
        (KeyError("x"), grpc.StatusCode.INTERNAL),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else "",
)
def test_each_error_has_one_status_code(error: Exception, code: grpc.StatusCode) -> None:
    assert status_of(error) == code


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidInputError("x"), 400),
        (UnauthenticatedError("x"), 401),
        (PermissionDeniedError("x"), 403),
        (UnknownTaskError("x"), 404),
        (LimitExceededError("x"), 413),
        (QueueFullError("x"), 429),
        (NotReadyError("x"), 503),
        (StoreUnavailableError("x"), 503),
        (RuntimeError("x"), 500),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else "",
)
def test_each_error_has_one_http_status(error: Exception, status: int) -> None:
    """The HTTP column of the same table (the Open Inference Protocol's REST transport)."""
    assert http_status_of(error) == status


@dataclass
class Plane:
    plane: DataPlane
    mnist: Mnist
    learned: list[object]  # what learning task A yielded

    def refused(self, call: Any) -> tuple[grpc.StatusCode, str]:
        """The status code and message ``call`` (a coroutine) is refused with; nothing changed."""
        before = [(v.name, v.state) for v in self.plane.tasks()]
        with pytest.raises(Exception) as info:
            asyncio.run(call)
        assert [(v.name, v.state) for v in self.plane.tasks()] == before
        return status_of(info.value), str(info.value)


async def upload(header: Header, *chunks: Chunk) -> AsyncIterator[Header | Chunk]:
    yield header
    for chunk in chunks:
        yield chunk


async def events(plane: DataPlane, header: Header, *chunks: Chunk) -> list[object]:
    return [event async for event in plane.learn(upload(header, *chunks))]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, mnist: Mnist) -> Iterator[Plane]:
    config = ServerConfig(data_dir=tmp_path_factory.mktemp("plane"), max_batch=MAX_BATCH)
    store = TaskStore(config.resolved_tracking_uri, config.artifact_root, config.experiment)
    spec, seed = store.open(TINY, 0, TINY)
    plane = asyncio.run(load(config, store, spec, seed))
    plane.start()
    x, y = digits(mnist, [0, 1], n=200)
    learned = asyncio.run(events(plane, Header("A", CONFIG), Chunk.of(TRAINING, x, y)))
    yield Plane(plane, mnist, learned)
    plane.stop()
    plane.trainer.join(60)


def test_learning_yields_queued_then_progress_then_the_committed_task(served: Plane) -> None:
    first, *progress, last = served.learned
    assert first == Queued(0)
    assert progress and all(isinstance(p, Progress) for p in progress)
    assert isinstance(last, TaskView) and (last.name, last.state, last.id) == ("A", "committed", 1)
    assert served.plane.task("A") == last
    assert [(v.name, v.state) for v in served.plane.tasks()] == [("A", "committed")]
    assert served.plane.backbone().tasks == 1


def test_predict_takes_uint8_numpy_and_float32_torch_alike(served: Plane) -> None:
    x = served.mnist.x_test[:20]
    from_uint8 = asyncio.run(served.plane.predict("A", x))
    from_torch = asyncio.run(served.plane.predict("A", torch.from_numpy(x / np.float32(255))))
    assert from_uint8.classes == (0, 1) and from_uint8.scores.shape == (20, 2)
    assert np.allclose(from_uint8.scores, from_torch.scores, atol=1e-5)
    assert np.array_equal(from_uint8.labels, np.array([0, 1])[from_uint8.scores.argmax(1)])


@pytest.mark.parametrize(
    ("task", "x", "code", "says"),
    [
        ("nope", np.zeros((2, 784), np.uint8), grpc.StatusCode.NOT_FOUND, "nope"),
        ("a b", np.zeros((2, 784), np.uint8), grpc.StatusCode.INVALID_ARGUMENT, "task name"),
        ("A", np.zeros((2, 784)), grpc.StatusCode.INVALID_ARGUMENT, "float32 or uint8"),
        ("A", np.full((2, 784), np.inf, np.float32), grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
        ("A", np.zeros((0, 784), np.uint8), grpc.StatusCode.INVALID_ARGUMENT, "N >= 1"),
        ("A", np.zeros((2, 100), np.uint8), grpc.StatusCode.INVALID_ARGUMENT, "784"),
        ("A", np.zeros((MAX_BATCH + 1, 784), np.uint8), grpc.StatusCode.RESOURCE_EXHAUSTED, "100"),
    ],
    ids=["unknown", "bad-name", "float64", "inf", "empty", "shape", "batch"],
)
def test_predict_refuses_what_every_transport_refuses(
    served: Plane, task: str, x: np.ndarray, code: grpc.StatusCode, says: str
) -> None:
    got, message = served.refused(served.plane.predict(task, x))
    assert got == code and says in message


def test_a_committed_task_is_an_inference_model_at_its_registered_version(served: Plane) -> None:
    plane = served.plane
    model = plane.inference_model("A")
    assert model == InferenceModel("A", "1", (784,), (0, 1))
    assert plane.inference_model("A", "1") == model and plane.model_ready("A", "1")
    for name, version in [("A", "2"), ("nope", "")]:
        with pytest.raises(UnknownTaskError):
            plane.inference_model(name, version)
        assert not plane.model_ready(name, version)
    x = served.mnist.x_test[:5]
    _, by_version = asyncio.run(plane.infer("A", "1", x))
    assert by_version.scores.tobytes() == asyncio.run(plane.predict("A", x)).scores.tobytes()
    assert served.refused(plane.infer("A", "2", x))[0] == grpc.StatusCode.NOT_FOUND


def test_a_task_in_training_is_a_model_not_ready_and_a_failed_one_no_model(served: Plane) -> None:
    plane = served.plane
    x, y = digits(served.mnist, [2, 3], n=200)
    slow = TaskConfig(**{**FAST, "epochs": 199})  # type: ignore[arg-type]

    async def learn_then_cancel() -> tuple[bool, list[str]]:
        learning = plane.learn(upload(Header("S", slow), Chunk.of(TRAINING, x, y)))
        assert await anext(learning) == Queued(0)
        with pytest.raises(NotReadyError, match="not ready"):
            plane.inference_model("S")
        seen = plane.model_ready("S"), [v.name for v in plane.models()]
        await learning.aclose()  # cancels the job: the task fails
        return seen

    ready, models = asyncio.run(learn_then_cancel())
    assert not ready and "S" in models
    deadline = time.monotonic() + 60
    while plane.task("S").state != "failed":
        assert time.monotonic() < deadline, "the cancelled task never failed"
        time.sleep(0.05)
    with pytest.raises(UnknownTaskError, match="failed"):
        plane.inference_model("S")
    assert "S" not in [v.name for v in plane.models()]


def test_evaluate_scores_the_examples_of_each_task(served: Plane) -> None:
    x, y = served.mnist.x_test[:MAX_BATCH], served.mnist.y_test[:MAX_BATCH]
    [result] = asyncio.run(served.plane.evaluate(x, y))
    assert result.task == "A" and result.examples == int(np.isin(y, [0, 1]).sum())
    assert result.accuracy > 0.9


def test_uploads_are_refused_before_anything_is_queued(served: Plane) -> None:
    x, y = digits(served.mnist, [2, 3], n=100)
    chunk = Chunk.of(TRAINING, x, y)
    for header, code in [
        (Header("A", CONFIG), grpc.StatusCode.ALREADY_EXISTS),
        (Header("backbone", CONFIG), grpc.StatusCode.INVALID_ARGUMENT),
        (Header("C", CONFIG, labels=(2, 3, 4)), grpc.StatusCode.INVALID_ARGUMENT),
        (Header("C", CONFIG, train_examples=101), grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        assert served.refused(events(served.plane, header, chunk))[0] == code, header
    unnamed = Chunk.of("", x, y)
    got, message = served.refused(events(served.plane, Header("C", CONFIG), unnamed))
    assert got == grpc.StatusCode.INVALID_ARGUMENT and "split" in message


def test_an_upload_that_stalls_is_refused_after_the_upload_timeout(
    tmp_path: Path, served: Plane
) -> None:
    plane = served.plane

    async def stalled() -> AsyncIterator[Header | Chunk]:
        yield Header("C", CONFIG)
        await asyncio.sleep(60)
        yield Chunk.of(TRAINING, np.zeros((1, 784), np.uint8), np.zeros(1, np.int64))

    async def learn() -> None:
        async for _ in plane.learn(stalled()):
            pass

    patient = plane.config
    plane.config = ServerConfig(data_dir=tmp_path, max_batch=MAX_BATCH, upload_timeout=0.2)
    try:
        got, message = served.refused(learn())
    finally:
        plane.config = patient
    assert got == grpc.StatusCode.INVALID_ARGUMENT and "--upload-timeout" in message
