"""The server SIGKILLs itself at a chosen point of AddTask (fault injection), then restarts.

On one store: task A is committed; then one task dies at each point: P at the start of its
prune phase, R of its retrain phase, U after its files are in MLflow but before their
sha256 tag, W before the commit tag, C right after the commit tag, G after its registered
model is created (before its version), V after its version is created (before the run's
tag naming it). After the restarts: A answers bit-identically, every task killed before
its commit tag is failed (never half-committed) and its name can be learned again, every
task killed after it is committed and fully served (registry entry repaired), and the
weights owned in the backbone are exactly those of the committed tasks.
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
    ("U", "artifacts-uploaded", [0, 2]),
    ("W", "artifacts-written", [4, 5]),
    ("C", "committed", [6, 7]),
    ("G", "registered", [1, 3]),
    ("V", "model-version", [5, 7]),
)
FAILED = ("P", "R", "U", "W")  # killed before the commit tag
COMMITTED = ("A", "C", "G", "V")  # in id order


@dataclass
class Crashed:
    client: Client
    probe: np.ndarray
    a_before: bytes
    output: str  # what the crashed servers printed
    mnist: Mnist


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
    yield Crashed(client, probe, a_before, "".join(output), mnist)
    client.close()
    server.terminate()


def test_every_injected_crash_happened(crashed: Crashed) -> None:
    for name, point, _ in CRASHES:
        assert f"SIGKILL at {point} of task {name!r}" in crashed.output


def test_committed_task_answers_bit_identically_after_the_crashes(crashed: Crashed) -> None:
    assert crashed.client.predict("A", crashed.probe).scores.tobytes() == crashed.a_before


@pytest.mark.parametrize("name", FAILED)
def test_task_killed_before_its_commit_tag_is_failed(crashed: Crashed, name: str) -> None:
    info = crashed.client.task(name)
    assert (info.state, info.id) == ("failed", 0)


@pytest.mark.parametrize("name", ["C", "G", "V"])
def test_task_killed_after_its_commit_tag_is_committed_and_served(
    crashed: Crashed, name: str
) -> None:
    info = crashed.client.task(name)
    labels = {n: set(digits) for n, _, digits in CRASHES}[name]
    assert (info.state, set(info.classes)) == ("committed", labels)
    assert info.model_name and info.model_version  # the registry entry was repaired
    assert set(np.unique(crashed.client.predict(name, crashed.probe).labels)) <= labels


def test_owned_weights_are_exactly_those_of_the_committed_tasks(crashed: Crashed) -> None:
    backbone = crashed.client.backbone()
    committed = [t for t in crashed.client.tasks() if t.state == "committed"]
    assert [t.name for t in committed] == list(COMMITTED)
    owned = sum(layer.weights - layer.free_weights for layer in backbone.layers)
    assert owned == sum(t.weights_owned for t in committed)


def test_the_name_of_a_task_killed_before_its_sha256_tag_can_be_learned_again(
    crashed: Crashed,
) -> None:
    info = crashed.client.learn("U", digits(crashed.mnist, [0, 2], n=200), **FAST)
    assert (info.state, info.id) == ("committed", len(COMMITTED) + 1)
    assert crashed.client.predict("A", crashed.probe).scores.tobytes() == crashed.a_before
