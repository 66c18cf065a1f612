"""Writes tests/data/store.tar.gz: a store of four tasks and their predictions, as a
release of sparsecl serves them, for tests/server/test_stored_tasks.py.

Run it with the code of the release whose store the test keeps (from that checkout's
root, so that its own packages are imported): ``python tests/data/write_store.py OUT``.
The archive holds ``store/`` (a backup, as ``sparsecl backup`` writes it) and
``expected.npz``: per engine backend, task and batch size, the scores of the first
``batch`` probe images (real MNIST test images 0..255), as the server answered them.
"""

from __future__ import annotations

import json
import platform
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path.cwd()))

from client import Client
from sparse_engine.mnist import load_mnist
from tests.serving import FAST, ServerProcess, digits, sparsecl

BATCHES = (1, 2, 3, 8, 16, 64, 256)
BACKENDS = ("native", "torch")
# (name, digits, hyper-parameters): sparse layers, dense-stored layers (density above
# plan.DENSE_FROM), a supermask and a task pruned by whole units
TASKS = (
    ("sparse", [0, 1], {}),
    ("dense", [2, 3], {"density": 0.5}),
    ("supermask", [4, 5], {"method": "supermask"}),
    ("units", [6, 7], {"structure": "units", "density": 0.3}),
)


def cpu_flags() -> list[str]:
    """The CPU features that decide a float's last bits in the native kernel."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next(
        (line.split(":")[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    return sorted(set(flags) & {"avx2", "fma", "avx512f"})


def main(out: Path) -> None:
    mnist = load_mnist()
    probe = mnist.x_test[: max(BATCHES)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = ServerProcess(root / "data").start()
        with Client(server.address, timeout=300) as client:
            for name, which, hyper in TASKS:
                client.learn(name, digits(mnist, which, n=300), **{**FAST, **hyper})
        assert server.terminate() == 0
        expected: dict[str, np.ndarray] = {}
        for backend in BACKENDS:
            server = ServerProcess(root / "data", args=["--engine-backend", backend]).start()
            with Client(server.address, timeout=300) as client:
                for name, _, _ in TASKS:
                    for b in BATCHES:
                        expected[f"{backend}/{name}/{b}"] = client.predict(name, probe[:b]).scores
            assert server.terminate() == 0
        done = sparsecl("backup", root / "data", root / "store")
        assert done.returncode == 0, done.stderr
        np.savez_compressed(root / "expected.npz", **expected)
        (root / "written.json").write_text(
            json.dumps({"machine": platform.machine(), "cpu_flags": cpu_flags()}) + "\n"
        )
        with tarfile.open(out, "w:gz") as tar:
            for part in ("store", "expected.npz", "written.json"):
                tar.add(root / part, arcname=part)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
