"""A full disk under the store: the server's file writes fail (RLIMIT_FSIZE 0 via prlimit).

While it lasts AddTask is UNAVAILABLE and changes nothing, predictions keep being served;
once space returns tasks are learned again, and a restart finds every committed task intact.
"""

from __future__ import annotations

import resource
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest

from client import Client, ClientError
from sparse_engine.mnist import Mnist

from ..serving import FAST, ServerProcess, digits


@dataclass
class Full:
    server: ServerProcess
    client: Client
    probe: np.ndarray
    a_before: bytes
    mnist: Mnist

    def limit_writes(self, size: int) -> None:
        """Set the server's file-size limit: 0 makes every write to a file fail, like ENOSPC."""
        assert self.server.process is not None
        _, hard = resource.prlimit(self.server.process.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(self.server.process.pid, resource.RLIMIT_FSIZE, (size, hard))


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory, mnist: Mnist) -> Iterator[Full]:
    server = ServerProcess(tmp_path_factory.mktemp("full")).start()
    client = Client(server.address, timeout=120)
    probe = mnist.x_test[:200]
    client.learn("A", digits(mnist, [0, 1], n=200), **FAST)
    yield Full(server, client, probe, client.predict("A", probe).scores.tobytes(), mnist)
    client.close()
    server.kill()


def test_add_task_on_a_full_disk_is_unavailable(full: Full) -> None:
    full.limit_writes(0)
    with pytest.raises(ClientError) as info:
        full.client.learn("F", digits(full.mnist, [2, 3], n=200), **FAST)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE, info.value.message
    assert "MLflow" in info.value.message


def test_nothing_is_committed_while_the_disk_is_full(full: Full) -> None:
    assert [t.name for t in full.client.tasks() if t.state == "committed"] == ["A"]


def test_predictions_are_served_while_the_disk_is_full(full: Full) -> None:
    assert full.client.predict("A", full.probe).scores.tobytes() == full.a_before


def test_tasks_are_learned_again_once_space_returns(full: Full) -> None:
    full.limit_writes(resource.RLIM_INFINITY)
    assert full.client.learn("B", digits(full.mnist, [2, 3], n=200), **FAST).state == "committed"


def test_restart_after_the_full_disk_finds_every_committed_task(full: Full) -> None:
    full.server.restart()
    with Client(full.server.address, timeout=120) as client:
        committed = [t.name for t in client.tasks() if t.state == "committed"]
        assert committed == ["A", "B"]
        assert client.predict("A", full.probe).scores.tobytes() == full.a_before
