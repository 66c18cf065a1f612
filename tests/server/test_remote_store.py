"""The server on a real `mlflow server` process (any tracking URI works, not only sqlite)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from client import Client, ClientError
from sparse_engine.mnist import Mnist

from ..serving import FAST, ServerProcess, digits
from ..tracking import free_port, start_mlflow, stop_mlflow


@dataclass
class Remote:
    mlflow: subprocess.Popen[bytes]
    uri: str
    root: Path
    port: int
    server: ServerProcess
    client: Client
    probe: np.ndarray
    before: bytes
    mnist: Mnist


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory, mnist: Mnist) -> Iterator[Remote]:
    root: Path = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    mlflow = start_mlflow(root, port)
    uri = f"http://127.0.0.1:{port}"
    server = ServerProcess(root / "data", tracking_uri=uri).start()
    client = Client(server.address, timeout=120)
    client.learn("A", digits(mnist, [0, 1]), **FAST)
    probe = mnist.x_test[:200]
    before = client.predict("A", probe).scores.tobytes()
    remote = Remote(mlflow, uri, root, port, server, client, probe, before, mnist)
    yield remote
    client.close()
    server.terminate()
    stop_mlflow(remote.mlflow)  # the tests restart it: stop the one running now


def test_task_is_stored_in_the_mlflow_server(remote: Remote) -> None:
    info = remote.client.task("A")
    store = MlflowClient(remote.uri)
    run = store.get_run(info.mlflow_run_id)
    assert run.data.tags["sparsecl.state"] == "committed" and run.info.status == "FINISHED"
    assert {a.path for a in store.list_artifacts(run.info.run_id, "task")} >= {
        "task/state.safetensors"
    }
    assert store.get_model_version(info.model_name, info.model_version).run_id == run.info.run_id
    assert remote.client.backbone().tracking_uri == remote.uri


def test_unreachable_store_is_unavailable_and_changes_nothing(remote: Remote) -> None:
    stop_mlflow(remote.mlflow)
    with pytest.raises(ClientError) as info:
        remote.client.learn("B", digits(remote.mnist, [2, 3]), **FAST)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert "MLflow" in info.value.message
    committed = [t.name for t in remote.client.tasks() if t.state == "committed"]
    assert committed == ["A"]
    assert remote.client.predict("A", remote.probe).scores.tobytes() == remote.before


def test_tasks_are_learned_again_once_the_store_returns(remote: Remote) -> None:
    stop_mlflow(remote.mlflow)  # run alone: make the store go away first
    remote.mlflow = start_mlflow(remote.root, remote.port)
    info = remote.client.learn("B", digits(remote.mnist, [2, 3]), **FAST)
    assert (info.name, info.state) == ("B", "committed")
    assert remote.client.predict("A", remote.probe).scores.tobytes() == remote.before
