"""The server SIGKILLs itself at a chosen point of AddTask (fault injection), then restarts.

On one store: task A is committed; task P dies at the start of its prune phase; task W
dies after its files are in MLflow but before the commit tag; task C dies right after the
commit tag. After the restarts: A answers bit-identically, P and W are failed (never
half-committed), C is committed, and the weights owned in the backbone are exactly those
of the committed tasks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from client import Client, ClientError
from server.faults import ENV
from sparse_engine.mnist import Mnist

from ..serving import FAST, ServerProcess, digits

CRASHES = (
    ("P", "prune", [2, 3]),
    ("R", "retrain", [8, 9]),
    ("W", "artifacts-written", [4, 5]),
    ("C", "committed", [6, 7]),
)


@dataclass
class Crashed:
    client: Client
    probe: np.ndarray
    a_before: bytes
    output: str  # what the crashed servers printed


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory, mnist: Mnist) -> Iterator[Crashed]:
    store = tmp_path_factory.mktemp("faults")
    probe = mnist.x_test[:200]
    name, point, labels = CRASHES[0]
    server = ServerProcess(store, env={ENV: f"{point}:{name}"}).start()
    output = []
    with Client(server.address, timeout=120) as client:
        client.learn("A", digits(mnist, [0, 1], n=200), **FAST)
        a_before = client.predict("A", probe).scores.tobytes()
    for i, (name, point, labels) in enumerate(CRASHES):
        if i:  # restart on the same store, crashing at the next point
            server = ServerProcess(store, env={ENV: f"{point}:{name}"}).start()
        with Client(server.address, timeout=120) as client, contextlib.suppress(ClientError):
            client.learn(name, digits(mnist, labels, n=200), **FAST)
        assert server.process is not None and server.process.wait(60) == -9
        output += server.output
    server = ServerProcess(store).start()
    client = Client(server.address, timeout=120)
    yield Crashed(client, probe, a_before, "".join(output))
    client.close()
    server.terminate()


def test_every_injected_crash_happened(crashed: Crashed) -> None:
    for name, point, _ in CRASHES:
        assert f"SIGKILL at {point} of task {name!r}" in crashed.output


def test_committed_task_answers_bit_identically_after_the_crashes(crashed: Crashed) -> None:
    assert crashed.client.predict("A", crashed.probe).scores.tobytes() == crashed.a_before


def test_task_killed_while_pruning_is_failed(crashed: Crashed) -> None:
    assert crashed.client.task("P").state == "failed"


def test_task_killed_while_retraining_is_failed(crashed: Crashed) -> None:
    assert crashed.client.task("R").state == "failed"


def test_task_killed_before_its_commit_tag_is_failed(crashed: Crashed) -> None:
    assert crashed.client.task("W").state == "failed"


def test_task_killed_after_its_commit_tag_is_committed(crashed: Crashed) -> None:
    info = crashed.client.task("C")
    assert (info.state, info.classes) == ("committed", (6, 7))
    assert set(np.unique(crashed.client.predict("C", crashed.probe).labels)) <= {6, 7}


def test_owned_weights_are_exactly_those_of_the_committed_tasks(crashed: Crashed) -> None:
    backbone = crashed.client.backbone()
    committed = [t for t in crashed.client.tasks() if t.state == "committed"]
    assert [t.name for t in committed] == ["A", "C"]
    owned = sum(layer.weights - layer.free_weights for layer in backbone.layers)
    assert owned == sum(t.weights_owned for t in committed)
