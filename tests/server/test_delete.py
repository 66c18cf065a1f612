"""DeleteTask with real server processes on one embedded store, in file order.

Tasks A (0/1), B (2/3) and C (4/5) are committed; B is deleted: exactly the weights that
no remaining task reads are freed (checked against a replay of the stored states in the
library), A and C answer bit for bit, before and after a SIGKILL restart; B's run and
registered version are kept, tagged deleted; the name B is learned again (a new id).
Then the server SIGKILLs itself during a delete of C: before the delete point C is still
served, after it C is deleted, and the restart repairs the registry.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from client import Client, ClientError
from server.faults import ENV
from sparse_engine.mnist import Mnist
from sparse_engine.model import SparseCL
from sparse_engine.state import loads
from sparsecl.v1 import sparsecl_pb2_grpc as pb_grpc

from ..serving import FAST, TINY, ServerProcess, digits
from .test_limits import SLOW, upload_requests


@dataclass
class Store:
    root: Path
    server: ServerProcess
    client: Client
    mnist: Mnist
    probe: np.ndarray
    scores: dict[str, bytes]  # the served tasks' scores on the probe, as first answered

    def restart(self, env: dict[str, str] | None = None) -> None:
        """SIGKILL (if still running), then serve the same store again."""
        self.client.close()
        if self.server.process is not None and self.server.process.poll() is None:
            self.server.kill()
        self.server = ServerProcess(self.root, env=env or {}).start()
        self.client = Client(self.server.address, timeout=120)

    def answers(self, task: str) -> bytes:
        return self.client.predict(task, self.probe).scores.tobytes()

    def assert_bit_identical(self) -> None:
        for task, scores in self.scores.items():
            assert self.answers(task) == scores, task

    def replay(self) -> SparseCL:
        """The library's model rebuilt from the store's committed and deleted task states,
        each deleted after the id its run names: what the server must hold."""
        from mlflow.tracking import MlflowClient

        store = MlflowClient(f"sqlite:///{self.root / 'mlflow.db'}")
        experiment = store.get_experiment_by_name("sparsecl")
        assert experiment is not None
        runs = [
            r
            for r in store.search_runs([experiment.experiment_id], "tags.`sparsecl.kind` = 'task'")
            if r.data.tags.get("sparsecl.state") in ("committed", "deleted")
        ]
        runs.sort(key=lambda r: int(r.data.tags["sparsecl.task_id"]))
        deletes = [
            (int(r.data.tags["sparsecl.deleted_after"]), r.data.tags["sparsecl.task"])
            for r in runs
            if r.data.tags["sparsecl.state"] == "deleted"
        ]
        model = SparseCL(TINY)
        with tempfile.TemporaryDirectory() as tmp:
            for r in runs:
                path = store.download_artifacts(r.info.run_id, "task/state.safetensors", tmp)
                state = loads(Path(path).read_bytes())
                model.commit_task(state)
                for _, name in sorted(d for d in deletes if d[0] == state.record.id):
                    model.delete_task(name)
        return model

    def free_weights(self) -> list[int]:
        return [layer.free_weights for layer in self.client.backbone().layers]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, mnist: Mnist) -> Iterator[Store]:
    root = tmp_path_factory.mktemp("delete")
    server = ServerProcess(root).start()
    client = Client(server.address, timeout=120)
    for name, labels in (("A", [0, 1]), ("B", [2, 3]), ("C", [4, 5])):
        client.learn(name, digits(mnist, labels, n=200), **FAST)
    probe = mnist.x_test[:100]
    scores = {t: client.predict(t, probe).scores.tobytes() for t in "AC"}
    s = Store(root, server, client, mnist, probe, scores)
    yield s
    s.client.close()
    s.server.terminate()


def test_delete_frees_exactly_the_weights_no_remaining_task_reads(store: Store) -> None:
    expected = store.replay()  # A, B, C as committed
    b_id = expected.tasks["B"].record.id
    want = expected.delete_task("B")
    result = store.client.delete_task("B")
    assert result.task.state == "deleted" and result.task.id == b_id
    assert result.task.mlflow_run_id and result.task.model_name == "sparsecl.B"
    assert result.freed_weights == want.freed
    assert result.retired_weights == want.retired
    assert store.free_weights() == expected.owners.free_count()
    store.assert_bit_identical()


def test_a_deleted_task_is_not_served_but_listed_with_its_run(store: Store) -> None:
    with pytest.raises(ClientError) as info:
        store.client.predict("B", store.probe)
    assert info.value.code == grpc.StatusCode.NOT_FOUND and "deleted" in info.value.message
    listed = {t.name: t.state for t in store.client.tasks()}
    assert listed == {"A": "committed", "C": "committed", "B": "deleted"}
    for name in ("B", "nobody"):  # already deleted; never existed
        with pytest.raises(ClientError) as info:
            store.client.delete_task(name)
        assert info.value.code == grpc.StatusCode.NOT_FOUND


def test_mlflow_keeps_the_deleted_run_and_version_tagged_deleted(store: Store) -> None:
    from mlflow.tracking import MlflowClient

    mlflow = MlflowClient(f"sqlite:///{store.root / 'mlflow.db'}")
    info = store.client.task("B")
    run = mlflow.get_run(info.mlflow_run_id)
    assert run.data.tags["sparsecl.state"] == "deleted"
    version = mlflow.get_model_version("sparsecl.B", info.model_version)
    assert version.tags["state"] == "deleted"
    assert mlflow.get_registered_model("sparsecl.B").tags["state"] == "deleted"


def test_after_a_restart_the_same_weights_are_free_and_every_task_bit_identical(
    store: Store,
) -> None:
    free = store.free_weights()
    store.restart()
    assert store.free_weights() == free
    store.assert_bit_identical()
    assert store.client.task("B").state == "deleted"


def test_the_name_may_be_used_again(store: Store) -> None:
    info = store.client.learn("B", digits(store.mnist, [6, 7], n=200), **FAST)
    assert info.state == "committed" and info.id == 4 and info.model_version == "2"
    store.assert_bit_identical()
    store.scores["B"] = store.answers("B")
    store.restart()
    store.assert_bit_identical()


def test_a_sigkill_before_the_delete_point_keeps_the_task(store: Store) -> None:
    store.restart(env={ENV: "delete-marked:C"})
    with pytest.raises(ClientError):
        store.client.delete_task("C")
    assert store.server.process is not None and store.server.process.wait(60) == -9
    store.restart()
    assert store.client.task("C").state == "committed"
    store.assert_bit_identical()


def test_a_sigkill_after_the_delete_point_ends_deleted_and_repaired(store: Store) -> None:
    store.restart(env={ENV: "deleted:C"})
    with pytest.raises(ClientError):
        store.client.delete_task("C")
    assert store.server.process is not None and store.server.process.wait(60) == -9
    store.restart()
    assert store.client.task("C").state == "deleted"
    del store.scores["C"]
    store.assert_bit_identical()
    assert store.free_weights() == store.replay().owners.free_count()
    from mlflow.tracking import MlflowClient

    info = store.client.task("C")
    version = MlflowClient(f"sqlite:///{store.root / 'mlflow.db'}").get_model_version(
        "sparsecl.C", info.model_version
    )
    assert version.tags["state"] == "deleted"  # the registry, repaired at the start


def test_a_task_cannot_be_deleted_while_one_trains(store: Store) -> None:
    x, y = digits(store.mnist, [8, 9], n=1500)
    channel = grpc.insecure_channel(store.server.address)
    call = pb_grpc.ContinualLearnerStub(channel).AddTask(
        iter(upload_requests("D", x, y, **{**SLOW, "epochs": 150})), timeout=120
    )
    try:
        assert next(call).WhichOneof("event") == "queued"
        deadline = time.monotonic() + 60
        while store.client.task("D").state != "training" and time.monotonic() < deadline:
            time.sleep(0.1)
        for name in ("D", "A"):
            with pytest.raises(ClientError) as info:
                store.client.delete_task(name)
            assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert "training" in info.value.message
    finally:
        call.cancel()
        channel.close()
    store.assert_bit_identical()
