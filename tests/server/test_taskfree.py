"""Task-free Predict through a real server: the task inferred per example, its label and a
confidence; the same answers after a restart; refused while no task is committed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest

from client import Client, ClientError
from sparse_engine.mnist import Mnist

from ..serving import FAST, ServerProcess, digits

PERMUTATION = np.random.default_rng(0).permutation(784)


def permuted(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)[:, PERMUTATION].reshape(x.shape)


@dataclass
class Served:
    server: ServerProcess
    client: Client
    x: np.ndarray  # 100 plain test digits 0-2, then the same 100 permuted
    y: np.ndarray
    truth: np.ndarray  # the task each row belongs to


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, mnist: Mnist) -> Iterator[Served]:
    server = ServerProcess(tmp_path_factory.mktemp("taskfree")).start()
    client = Client(server.address, timeout=120)
    with pytest.raises(ClientError) as empty:
        client.predict(None, mnist.x_test[:2])
    assert empty.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "no committed task" in empty.value.message
    x, y = digits(mnist, [0, 1, 2], n=300)
    client.learn("plain", (x, y), **FAST)
    client.learn("permuted", (permuted(x), y), **FAST)
    keep = np.isin(mnist.y_test, [0, 1, 2])
    test, test_y = mnist.x_test[keep][:100], mnist.y_test[keep][:100]
    yield Served(
        server,
        client,
        np.concatenate([test, permuted(test)]),
        np.concatenate([test_y] * 2),
        np.array(["plain"] * 100 + ["permuted"] * 100),
    )
    client.close()
    server.terminate()


def test_predict_without_a_task_infers_it(served: Served) -> None:
    result = served.client.predict(None, served.x)
    assert result.rule == "identity" and result.task_names == ("plain", "permuted")
    assert (result.tasks == served.truth).mean() >= 0.99
    for name in result.task_names:  # each label is its task's own answer for those rows
        rows = result.tasks == name
        assert np.array_equal(
            result.labels[rows], served.client.predict(name, served.x[rows]).labels
        )
    correct = result.labels == served.y
    assert correct.mean() > 0.75  # tiny 1-epoch tasks: their own accuracy bounds it
    assert result.confidence.dtype == np.float32 and result.confidence.shape == (200,)
    assert ((result.confidence > 0) & (result.confidence <= 1)).all()
    assert result.confidence[correct].mean() > result.confidence[~correct].mean()
    assert result.task_probs.shape == (200, 2)
    np.testing.assert_allclose(result.task_probs.sum(1), 1.0, rtol=1e-5)


def test_task_free_answers_survive_a_restart(served: Served) -> None:
    before = served.client.predict(None, served.x)
    served.server.restart()
    with Client(served.server.address, timeout=120) as client:
        after = client.predict(None, served.x)
    served.client = Client(served.server.address, timeout=120)
    assert np.array_equal(before.tasks, after.tasks)
    assert np.array_equal(before.labels, after.labels)
    assert before.confidence.tobytes() == after.confidence.tobytes()


def test_task_free_refuses_bad_inputs(served: Served) -> None:
    with pytest.raises(ClientError) as info:
        served.client.predict(None, np.zeros((2, 5), np.float32))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
