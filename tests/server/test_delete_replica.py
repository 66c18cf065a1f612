"""A delete reaches inference replicas: one trainer and one replica on an `mlflow server`
(sqlite, proxied artifacts). The replica stops serving the deleted task, answers the others
bit for bit, follows a task learned after the delete (which needs the same free weights)
and refuses DeleteTask itself, naming its role."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from client import Client, ClientError
from sparse_engine.mnist import Mnist

from ..serving import FAST, ServerProcess, digits, trainer_and_replica

POLL = 0.5


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with trainer_and_replica(tmp_path_factory.mktemp("delete-replica"), POLL) as servers:
        yield servers


def until(check: Callable[[], bool], seconds: float = 60) -> None:
    """Wait until ``check()`` holds (a NOT_FOUND meanwhile: not yet)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
        except ClientError as e:
            assert e.code == grpc.StatusCode.NOT_FOUND, e
        assert time.monotonic() < deadline, "the replica did not follow in time"
        time.sleep(0.2)


def test_a_replica_follows_a_delete_and_the_tasks_after_it(
    servers: tuple[ServerProcess, ServerProcess], mnist: Mnist
) -> None:
    trainer, replica = servers
    probe = mnist.x_test[:100]
    trainer.start()
    with Client(trainer.address, timeout=120) as learner:
        for name, labels in (("A", [0, 1]), ("B", [2, 3])):
            learner.learn(name, digits(mnist, labels, n=200), **FAST)
        replica.start()
        with Client(replica.address, timeout=60) as reader:
            until(lambda: reader.task("B").state == "committed")
            a = learner.predict("A", probe).scores.tobytes()
            learner.delete_task("A")
            until(lambda: reader.task("A").state == "deleted")
            with pytest.raises(ClientError) as info:
                reader.predict("A", probe)
            assert info.value.code == grpc.StatusCode.NOT_FOUND
            b = learner.predict("B", probe).scores.tobytes()
            assert reader.predict("B", probe).scores.tobytes() == b
            learner.learn("C", digits(mnist, [0, 1], n=200), **FAST)  # may claim A's weights
            until(lambda: reader.task("C").state == "committed")
            for task in ("B", "C"):
                assert (
                    reader.predict(task, probe).scores.tobytes()
                    == learner.predict(task, probe).scores.tobytes()
                )
            assert [lay.free_weights for lay in reader.backbone().layers] == [
                lay.free_weights for lay in learner.backbone().layers
            ]
            with pytest.raises(ClientError) as info:
                reader.delete_task("B")
            assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert "role is inference" in info.value.message
            assert a  # A's answers before the delete were served; they are gone now
