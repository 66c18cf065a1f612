"""Tasks stored by an earlier release serve bit for bit the same scores.

tests/data/store.tar.gz holds a backup written by the release of commit 4a26bd3 (four
tasks: sparse layers, dense-stored layers, a supermask, whole-unit pruning) and the
scores its server answered for each engine backend, task and batch size
(tests/data/write_store.py wrote it). The native engine's last bits depend only on the
CPU's vector features, so its scores are compared bit for bit on a host with the features
of the machine that wrote them, and to float32 rounding elsewhere. The torch backend's
last bits also depend on the BLAS kernels torch picks for the CPU model and its thread
count (an Intel Xeon and an AMD EPYC with the same avx2/fma/avx512f flags differ in the
last bit), so its scores are compared to float32 rounding, with the same labels, and bit
for bit between two starts of the server on this host: the contract is bit-identical
answers across restarts on the same device.

One path changed on purpose: plans with a layer stored dense ("dense" and "units" here)
ran batches of 16 and more through BLAS (torch.addmm) and numba; the one C++ engine now
runs them itself (1.2-3.6x faster), so those answers agree to float32 rounding, with the
same labels, rather than bit for bit.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from client import Client
from sparse_engine.mnist import Mnist

from ..serving import ServerProcess, sparsecl

ARCHIVE = Path(__file__).resolve().parent.parent / "data" / "store.tar.gz"
BACKENDS = ("native", "torch")
DENSE_STORED = {"dense", "units"}  # tasks whose plans store a layer dense
BLAS_FROM = 16  # the batch from which the old engine ran those through torch.addmm
BIT_EXACT_ACROSS_HOSTS = {"native"}  # backends whose bits depend on the CPU flags alone


def cpu_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    line = next((x for x in text.splitlines() if x.startswith("flags")), "flags :")
    return set(line.split(":")[1].split()) & {"avx2", "fma", "avx512f"}


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray], bool]:
    """The old store restored into a new data dir, its expected scores, and whether this
    host has the CPU features of the machine that wrote them."""
    root = tmp_path_factory.mktemp("stored")
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(root, filter="data")
    done = sparsecl("restore", root / "store", root / "data")
    assert done.returncode == 0, done.stderr
    written = json.loads((root / "written.json").read_text())
    with np.load(root / "expected.npz") as expected:
        scores = {k: expected[k] for k in expected.files}
    return root / "data", scores, set(written["cpu_flags"]) == cpu_flags()


def serve_stored(
    data_dir: Path, backend: str, keys: list[str], mnist: Mnist
) -> dict[str, np.ndarray]:
    """Start a server on the restored store with ``backend`` and answer every key
    (``backend/task/batch``) with the first ``batch`` test images; stopped after."""
    server = ServerProcess(data_dir, backbone=None, args=["--engine-backend", backend]).start()
    try:
        with Client(server.address, timeout=300) as client:
            got = {}
            for key in keys:
                _, task, batch = key.split("/")
                got[key] = client.predict(task, mnist.x_test[: int(batch)]).scores
            return got
    finally:
        assert server.terminate() == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_old_store_serves_the_same_scores(
    stored: tuple[Path, dict[str, np.ndarray], bool], mnist: Mnist, backend: str
) -> None:
    data_dir, expected, same_cpu = stored
    mine = {k: v for k, v in expected.items() if k.startswith(f"{backend}/")}
    assert len(mine) == 4 * 7  # four tasks, seven batch sizes
    answers = serve_stored(data_dir, backend, list(mine), mnist)
    for key, want in mine.items():
        got = answers[key]
        _, task, batch = key.split("/")
        rerouted = backend == "native" and task in DENSE_STORED and int(batch) >= BLAS_FROM
        if same_cpu and backend in BIT_EXACT_ACROSS_HOSTS and not rerouted:
            assert got.tobytes() == want.tobytes(), key
        else:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=key)
        assert (got.argmax(1) == want.argmax(1)).all(), key


def test_torch_backend_serves_the_old_store_bit_for_bit_across_restarts(
    stored: tuple[Path, dict[str, np.ndarray], bool], mnist: Mnist
) -> None:
    data_dir, expected, _ = stored
    keys = [k for k in expected if k.startswith("torch/")]
    first = serve_stored(data_dir, "torch", keys, mnist)
    second = serve_stored(data_dir, "torch", keys, mnist)
    for key in keys:
        assert first[key].tobytes() == second[key].tobytes(), key
