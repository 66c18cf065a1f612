"""A task past the backbone's free capacity, through the server: learned as a supermask
over frozen weights, reported as such, and served bit for bit after a restart."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from client import Client, TaskInfo
from server.store import LEARNED_AS_TAG
from sparse_engine.mnist import Mnist

from ..serving import FAST, ServerProcess, digits


@dataclass(frozen=True)
class Exhausted:
    """A's scores before and after B (learned once A owned every weight), the task records
    and scores before a restart, and the same after it."""

    data_dir: Path
    a_before_b: bytes
    before: dict[str, TaskInfo]
    scores: dict[str, bytes]
    after: dict[str, TaskInfo]
    scores_after: dict[str, bytes]


@pytest.fixture(scope="module")
def exhausted(tmp_path_factory: pytest.TempPathFactory, mnist: Mnist) -> Iterator[Exhausted]:
    data_dir = tmp_path_factory.mktemp("capacity")
    server = ServerProcess(data_dir).start()
    probe = mnist.x_test[:300]

    def read(client: Client) -> tuple[dict[str, TaskInfo], dict[str, bytes]]:
        infos = {t.name: t for t in client.tasks()}
        return infos, {n: client.predict(n, probe).scores.tobytes() for n in infos}

    try:
        with Client(server.address, timeout=120) as client:
            client.learn("A", digits(mnist, [0, 1]), **{**FAST, "density": 1.0})
            a_before_b = client.predict("A", probe).scores.tobytes()
            client.learn("B", digits(mnist, [2, 3]), **FAST)
            before, scores = read(client)
        assert server.terminate() == 0
        server.start()
        with Client(server.address, timeout=120) as client:
            after, scores_after = read(client)
        yield Exhausted(data_dir, a_before_b, before, scores, after, scores_after)
    finally:
        server.terminate()


def test_a_task_past_the_free_capacity_is_committed_as_a_supermask_owning_nothing(
    exhausted: Exhausted,
) -> None:
    a, b = exhausted.before["A"], exhausted.before["B"]
    assert (a.learned_as, b.learned_as) == ("free", "supermask")
    assert b.state == "committed" and b.weights_owned == 0 and b.weights_read > 0
    assert a.free_capacity == b.free_capacity == (0.0, 0.0)


def test_the_earlier_task_answers_bit_for_bit_as_before_the_supermask_task(
    exhausted: Exhausted,
) -> None:
    assert exhausted.scores["A"] == exhausted.a_before_b


def test_after_a_restart_both_tasks_answer_bit_for_bit_and_say_how_they_were_learned(
    exhausted: Exhausted,
) -> None:
    assert exhausted.scores_after == exhausted.scores
    assert {n: t.learned_as for n, t in exhausted.after.items()} == {
        "A": "free",
        "B": "supermask",
    }


def test_the_mlflow_run_and_registered_version_are_tagged_with_how_the_task_was_learned(
    exhausted: Exhausted,
) -> None:
    store = MlflowClient(f"sqlite:///{exhausted.data_dir / 'mlflow.db'}")
    b = exhausted.before["B"]
    assert store.get_run(b.mlflow_run_id).data.tags[LEARNED_AS_TAG] == "supermask"
    version = store.get_model_version(b.model_name, b.model_version)
    assert version.tags["learned_as"] == "supermask"
