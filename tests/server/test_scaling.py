"""Scaling out with real processes only: an `mlflow server` on the machine's PostgreSQL with
proxied artifacts, one trainer and two inference replicas on free loopback ports.

The tests run in file order on one cluster: the replicas serve what the trainer serves,
follow its new tasks, refuse to write; then one replica is killed, a second trainer is
refused, and the killed trainer's successor takes over once its lease expires.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest

from client import Client, ClientError
from sparse_engine.mnist import Mnist

from ..serving import FAST, ServerProcess, digits, sparsecl
from ..tracking import free_port, postgres_database, start_mlflow, stop_mlflow

LEASE = "6"  # seconds: the trainer's lease, short so that a successor waits little
POLL = 0.5  # seconds: the replicas' poll for new tasks


@dataclass
class Cluster:
    root: Path
    uri: str
    trainer: ServerProcess
    replicas: list[ServerProcess]
    mnist: Mnist
    probe: np.ndarray
    clients: list[Client] = field(default_factory=list)

    def client(self, server: ServerProcess) -> Client:
        client = Client(server.address, timeout=120)
        self.clients.append(client)
        return client

    def trainer_process(self, name: str) -> ServerProcess:
        return ServerProcess(
            self.root / name,
            tracking_uri=self.uri,
            args=["--role", "trainer", "--lease-seconds", LEASE],
        )

    def replica(self, name: str, *args: str) -> ServerProcess:
        return ServerProcess(
            self.root / name,
            backbone=None,
            tracking_uri=self.uri,
            args=["--role", "inference", "--poll-seconds", str(POLL), *args],
        )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, mnist: Mnist) -> Iterator[Cluster]:
    root: Path = tmp_path_factory.mktemp("cluster")
    with postgres_database() as database:
        port = free_port()
        mlflow = start_mlflow(root, port, backend=database)
        uri = f"http://127.0.0.1:{port}"
        cluster = Cluster(root, uri, ServerProcess(), [], mnist, mnist.x_test[:256])
        try:
            cluster.trainer = cluster.trainer_process("trainer").start()
            Client(cluster.trainer.address, timeout=300).learn("A", digits(mnist, [0, 1]), **FAST)
            cluster.replicas = [cluster.replica(f"replica{i}").start() for i in (1, 2)]
            yield cluster
        finally:
            for client in cluster.clients:
                client.close()
            for server in [cluster.trainer, *cluster.replicas]:
                if server.process is not None:
                    server.stop()
            stop_mlflow(mlflow)


def scores(server: ServerProcess, task: str, x: np.ndarray) -> bytes:
    with Client(server.address, timeout=60) as client:
        return client.predict(task, x).scores.tobytes()


def test_the_store_is_a_tracking_server_on_postgresql_with_proxied_artifacts(
    cluster: Cluster,
) -> None:
    from mlflow.tracking import MlflowClient

    info = cluster.client(cluster.trainer).task("A")
    run = MlflowClient(cluster.uri).get_run(info.mlflow_run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert (cluster.root / "artifacts").is_dir()  # the tracking server's folder, no other


def test_replicas_predict_bit_for_bit_what_the_trainer_predicts(cluster: Cluster) -> None:
    expected = scores(cluster.trainer, "A", cluster.probe)
    for replica in cluster.replicas:
        assert scores(replica, "A", cluster.probe) == expected
        assert scores(replica, "A", cluster.probe[:1]) == scores(
            cluster.trainer, "A", cluster.probe[:1]
        )


def test_a_replica_refuses_to_learn_naming_its_role(cluster: Cluster) -> None:
    client = cluster.client(cluster.replicas[0])
    with pytest.raises(ClientError) as info:
        client.learn("B", digits(cluster.mnist, [2, 3]), **FAST)
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "role is inference" in info.value.message and "trainer" in info.value.message
    assert [t.name for t in client.tasks()] == ["A"]


def test_a_replica_refuses_to_analyze_naming_its_role(cluster: Cluster) -> None:
    client = cluster.client(cluster.replicas[0])
    x, y = digits(cluster.mnist, [0, 1], n=50)
    with pytest.raises(ClientError) as info:
        client.analyze("A", "layer-robustness", (x, y))
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "role is inference" in info.value.message


def test_a_task_added_while_replicas_serve_appears_on_both_with_no_failed_call(
    cluster: Cluster,
) -> None:
    expected = scores(cluster.trainer, "A", cluster.probe)
    failures: list[str] = []
    stop = threading.Event()

    def hammer(replica: ServerProcess) -> None:
        with Client(replica.address, timeout=60) as client:
            while not stop.is_set():
                try:
                    if client.predict("A", cluster.probe).scores.tobytes() != expected:
                        failures.append(f"{replica.address}: changed answer")
                except ClientError as e:
                    failures.append(f"{replica.address}: {e.code.name} {e.message}")

    threads = [threading.Thread(target=hammer, args=(r,)) for r in cluster.replicas]
    for thread in threads:
        thread.start()
    try:
        cluster.client(cluster.trainer).learn("B", digits(cluster.mnist, [2, 3]), **FAST)
        committed = time.monotonic()
        expected_b = scores(cluster.trainer, "B", cluster.probe)
        for replica in cluster.replicas:
            assert wait_for_task(replica, "B", cluster.probe) == expected_b
        delay = time.monotonic() - committed
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert failures == []
    assert delay < POLL + 15  # a poll and one artifact download, on 2 busy cores


def wait_for_task(replica: ServerProcess, task: str, x: np.ndarray, timeout: float = 60) -> bytes:
    """The task's scores on ``replica`` once it serves it (NOT_FOUND until then)."""
    deadline = time.monotonic() + timeout
    with Client(replica.address, timeout=60) as client:
        while True:
            try:
                return client.predict(task, x).scores.tobytes()
            except ClientError as e:
                if e.code != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                    raise
            time.sleep(0.05)


def test_a_replica_lists_the_registered_model_version_of_a_task_it_followed(
    cluster: Cluster,
) -> None:
    trainer = cluster.client(cluster.trainer).task("B")
    deadline = time.monotonic() + 30
    while True:
        followed = cluster.client(cluster.replicas[1]).task("B")
        if followed.model_version or time.monotonic() > deadline:
            break
        time.sleep(POLL)
    assert (followed.state, followed.model_version) == ("committed", trainer.model_version)
    assert followed.mlflow_run_id == trainer.mlflow_run_id


def test_a_replica_is_not_serving_until_it_can_read_its_store(cluster: Cluster) -> None:
    replica = cluster.replica("early")
    replica.tracking_uri = f"http://127.0.0.1:{free_port()}"  # no tracking server there yet
    replica.start(serving=False)
    try:
        deadline = time.monotonic() + 60
        while not any("waiting for the store" in line for line in replica.output):
            assert time.monotonic() < deadline, "".join(replica.output)
            time.sleep(0.2)
        with Client(replica.address, timeout=10) as client:
            assert client.health() == "NOT_SERVING"
            with pytest.raises(ClientError) as info:
                client.predict("A", cluster.probe[:1])
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
            assert "starting" in info.value.message
    finally:
        replica.stop()


def test_a_replica_killed_with_sigkill_leaves_the_other_answering(cluster: Cluster) -> None:
    expected = scores(cluster.trainer, "A", cluster.probe)
    cluster.replicas[0].kill()
    assert scores(cluster.replicas[1], "A", cluster.probe) == expected


def test_a_second_trainer_on_the_same_store_is_refused(cluster: Cluster) -> None:
    second = cluster.trainer_process("second-trainer")
    with pytest.raises(RuntimeError) as info:
        second.start(timeout=60)
    assert second.process is not None and second.process.returncode == 2
    assert "written by another sparsecl server" in str(info.value)
    assert cluster.trainer.address in str(info.value)  # the holder is named


def test_the_killed_trainers_successor_takes_over_once_the_lease_expires(
    cluster: Cluster,
) -> None:
    expected = scores(cluster.trainer, "A", cluster.probe)
    cluster.trainer.kill()
    killed = time.monotonic()
    successor = cluster.trainer_process("successor").start(timeout=120)
    cluster.trainer = successor  # stopped by the fixture
    assert time.monotonic() - killed >= float(LEASE) - 1  # it waited the lease out
    client = cluster.client(successor)
    assert scores(successor, "A", cluster.probe) == expected
    info = client.learn("C", digits(cluster.mnist, [4, 5]), **FAST)
    assert (info.state, info.id) == ("committed", 3)  # the owner map went on from B
    assert wait_for_task(cluster.replicas[1], "C", cluster.probe) == scores(
        successor, "C", cluster.probe
    )


def test_an_inference_replica_without_a_tracking_uri_is_refused(tmp_path: Path) -> None:
    done = sparsecl("serve", "--role", "inference", "--data-dir", tmp_path / "data")
    assert done.returncode == 2
    assert "--role inference" in done.stderr and "--tracking-uri" in done.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was made
