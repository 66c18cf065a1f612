"""`sparsecl serve --device` (SPARSECL_DEVICE): where the server trains. A GPU that is not
there stops the server at start with the reason; the ready line and each task's MLflow run
say where tasks train; on a GPU, tasks trained there are served by the CPU engine bit for
bit across a restart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from client import Client
from sparse_engine.mnist import Mnist

from ..serving import FAST, ServerProcess, digits

CUDA = torch.cuda.is_available()


def device_tags(data_dir: Path) -> dict[str, str]:
    """Task name → the ``sparsecl.device`` tag of its run, in an embedded store."""
    from mlflow.tracking import MlflowClient

    store = MlflowClient(f"sqlite:///{data_dir / 'mlflow.db'}")
    experiment = store.get_experiment_by_name("sparsecl")
    assert experiment is not None
    runs = store.search_runs([experiment.experiment_id])
    return {r.info.run_name: r.data.tags.get("sparsecl.device", "") for r in runs}


@pytest.mark.skipif(CUDA, reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("how", ["flag", "environment"])
def test_cuda_without_a_gpu_stops_the_server_at_start_with_the_reason(
    tmp_path: Path, how: str
) -> None:
    server = (
        ServerProcess(tmp_path, args=["--device", "cuda"])
        if how == "flag"
        else ServerProcess(tmp_path, env={"SPARSECL_DEVICE": "cuda"})
    )
    with pytest.raises(RuntimeError, match="did not start"):
        server.start()
    output = "".join(server.output)
    assert "sparsecl serve: error: device 'cuda' asked for but" in output
    assert "use device 'auto' or 'cpu'" in output and "Traceback" not in output
    assert server.process is not None and server.process.returncode == 2
    assert not (tmp_path / "mlflow.db").exists()  # refused before the store is touched


def test_an_unknown_device_names_its_variable(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, env={"SPARSECL_DEVICE": "tpu"})
    with pytest.raises(RuntimeError, match="did not start"):
        server.start()
    assert "SPARSECL_DEVICE='tpu'" in "".join(server.output)


def test_the_server_says_where_it_trains_and_tags_each_task(tmp_path: Path, mnist: Mnist) -> None:
    server = ServerProcess(tmp_path, args=["--device", "cpu"]).start()
    try:
        assert "| training on cpu |" in "".join(server.output)
        with Client(server.address, timeout=120) as client:
            client.learn("A", digits(mnist, [0, 1]), **FAST)
    finally:
        server.terminate()
    assert device_tags(tmp_path) == {"A": "cpu"}


@pytest.mark.skipif(not CUDA, reason="no CUDA GPU on this machine")
def test_tasks_trained_on_the_gpu_serve_bit_identically_across_a_restart(
    tmp_path: Path, mnist: Mnist
) -> None:
    probe = mnist.x_test[:64]
    server = ServerProcess(tmp_path, args=["--device", "cuda"]).start()
    try:
        assert "| training on cuda |" in "".join(server.output)
        with Client(server.address, timeout=300) as client:
            client.learn("A", digits(mnist, [0, 1]), **FAST)
            client.learn("B", digits(mnist, [2, 3]), **FAST)
            before = {name: client.predict(name, probe).scores for name in ("A", "B")}
    finally:
        server.terminate()
    assert device_tags(tmp_path) == {"A": "cuda", "B": "cuda"}
    server = ServerProcess(tmp_path, args=["--device", "cuda"]).start()
    try:
        with Client(server.address, timeout=300) as client:
            for name, scores in before.items():
                assert np.array_equal(client.predict(name, probe).scores, scores)
    finally:
        server.terminate()
