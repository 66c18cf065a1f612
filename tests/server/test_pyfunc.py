"""Committed tasks as MLflow models (server/pyfunc.py): ``mlflow.pyfunc.load_model`` and
``mlflow models serve`` answer exactly what ``Predict`` answers, for a task that reads an
earlier task's weights too, and a store written before them gains them at the next start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from client import Client
from client.client import TaskInfo
from server.store import MLFLOW_MODEL
from sparse_engine.data import as_inputs
from sparse_engine.mnist import Mnist

from ..serving import FAST, ROOT, ServerProcess, digits, sparsecl
from ..tracking import free_port
from .test_stored_tasks import ARCHIVE

BATCHES = (1, 2, 5, 64)
SERVE = (
    "--env-manager",
    "local",
    "--host",
    "127.0.0.1",
    "--workers",
    "1",
)  # one sample at a time below 3, vector chunks from there


@dataclass
class Stored:
    """A server on its embedded store, its client, and the tasks it committed."""

    data_dir: Path
    server: ServerProcess
    client: Client
    tasks: dict[str, TaskInfo]


def use_store(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point this process's MLflow tracking and registry at an embedded store's database,
    for this test only: through the environment, which ``monkeypatch`` restores (a global
    ``mlflow.set_registry_uri`` would send later tests' MlflowClient registry calls here)."""
    uri = f"sqlite:///{data_dir / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    return uri


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory, mnist: Mnist) -> Iterator[Stored]:
    data_dir = tmp_path_factory.mktemp("pyfunc")
    server = ServerProcess(data_dir).start()
    client = Client(server.address, timeout=120)
    tasks = {
        name: client.learn(name, digits(mnist, which, n=200), **FAST)
        for name, which in (("A", [0, 1]), ("B", [2, 3]))
    }
    yield Stored(data_dir, server, client, tasks)
    client.close()
    assert server.terminate() == 0


def test_task_reads_earlier_weights(stored: Stored) -> None:
    """B's mask reads weights A owns, so its own state alone could not answer."""
    assert stored.tasks["B"].weights_read > 0


@pytest.mark.parametrize("task", ["A", "B"])
def test_load_model_answers_as_predict(
    stored: Stored, mnist: Mnist, task: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_store(stored.data_dir, monkeypatch)
    info = stored.tasks[task]
    model = mlflow.pyfunc.load_model(f"models:/{info.model_name}/{info.model_version}")
    assert model.metadata.signature is not None
    for n in BATCHES:
        images = mnist.x_test[:n].reshape(n, -1)
        want = stored.client.predict(task, images)
        x = as_inputs(images).numpy()
        scores = model.predict(x)
        assert scores.dtype == np.float32
        assert scores.tobytes() == want.scores.tobytes(), n
        labels = model.predict(x, params={"output": "label"})
        assert labels.tolist() == want.labels.tolist(), n


def test_mlflow_models_serve(
    stored: Stored, mnist: Mnist, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mlflow models serve --env-manager local` serves task B; its REST answers are
    Predict's scores exactly (float32 values survive MLflow's JSON round trip). It runs
    uvicorn from PATH: the venv's bin/ comes first, as in an activated venv."""
    uri = use_store(stored.data_dir, monkeypatch)
    info = stored.tasks["B"]
    port = free_port()
    bin_dir = Path(sys.executable).parent
    log = (tmp_path / "serve.log").open("wb")
    model_uri = f"models:/{info.model_name}/{info.model_version}"
    process = subprocess.Popen(
        [bin_dir / "mlflow", "models", "serve", "-m", model_uri, *SERVE, "--port", str(port)],
        cwd=ROOT,
        env={
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "MLFLOW_TRACKING_URI": uri,
            "MLFLOW_REGISTRY_URI": uri,
        },
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, "mlflow models serve did not start in 120 s"
            time.sleep(0.5)
        images = mnist.x_test[:5].reshape(5, -1)
        want = stored.client.predict("B", images)
        x = as_inputs(images).numpy()

        def invoke(body: dict[str, object]) -> object:
            request = urllib.request.Request(
                f"{base}/invocations",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=60) as r:
                return json.loads(r.read())["predictions"]

        scores = np.asarray(invoke({"inputs": x.tolist()}), dtype=np.float32)
        assert scores.tobytes() == want.scores.tobytes()
        labels = invoke({"inputs": x.tolist(), "params": {"output": "label"}})
        assert labels == want.labels.tolist()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def test_old_store_gains_models(
    tmp_path: Path, mnist: Mnist, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store of an earlier release (tests/data/store.tar.gz: no MLflow models) gains
    them at its next start, without touching the committed state: it restarts with every
    task committed (each state still matches its sha256 tag), and each task's model
    answers exactly what Predict answers."""
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(tmp_path, filter="data")
    data_dir = tmp_path / "data"
    done = sparsecl("restore", tmp_path / "store", data_dir)
    assert done.returncode == 0, done.stderr
    uri = use_store(data_dir, monkeypatch)

    def tagged() -> list[bool]:
        store = MlflowClient(uri)
        experiment = store.get_experiment_by_name("sparsecl")
        assert experiment is not None
        runs = store.search_runs(
            [experiment.experiment_id], filter_string="tags.`sparsecl.kind` = 'task'"
        )
        return [MLFLOW_MODEL in r.data.tags for r in runs]

    assert tagged() == [False] * 4
    server = ServerProcess(data_dir, backbone=None).start()
    try:
        with Client(server.address, timeout=300) as client:
            infos = [t for t in client.tasks() if t.state == "committed"]
            assert len(infos) == 4
            images = mnist.x_test[:8].reshape(8, -1)
            for info in infos:
                model = mlflow.pyfunc.load_model(f"models:/{info.model_name}/{info.model_version}")
                want = client.predict(info.name, images).scores
                assert model.predict(as_inputs(images).numpy()).tobytes() == want.tobytes()
        assert server.terminate() == 0
        assert tagged() == [True] * 4
        server.start()  # again: nothing is written twice, every task still committed
        with Client(server.address, timeout=300) as client:
            assert [t.state for t in client.tasks()] == ["committed"] * 4
    finally:
        server.terminate()
