"""A data dir can be moved, copied, backed up and restored: it serves bit for bit after.

The embedded store records absolute artifact locations; the server adopts a moved or
copied data dir at start (server/datadir.py), and a copy becomes an independent store.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from client import Client
from sparse_engine.mnist import Mnist

from ..serving import FAST, ServerProcess, digits, sparsecl

NAMES = ("A", "B")


@dataclass
class Original:
    """A stopped store of tasks A and B whose recorded location no longer exists."""

    home: Path  # where it lies now (moved away from the location its database records)
    probe: np.ndarray
    scores: dict[str, bytes]
    mnist: Mnist


def scores(client: Client, probe: np.ndarray) -> dict[str, bytes]:
    return {n: client.predict(n, probe).scores.tobytes() for n in NAMES}


def served(data_dir: Path, probe: np.ndarray) -> tuple[dict[str, bytes], list[str]]:
    """Start a server on ``data_dir``; A's and B's scores and the task names; stop it."""
    server = ServerProcess(data_dir).start()
    with Client(server.address, timeout=120) as client:
        result = scores(client, probe), [t.name for t in client.tasks()]
    assert server.terminate() == 0
    return result


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory, mnist: Mnist) -> Original:
    root = tmp_path_factory.mktemp("portable")
    server = ServerProcess(root / "first").start()
    probe = mnist.x_test[:200]
    with Client(server.address, timeout=120) as client:
        client.learn("A", digits(mnist, [0, 1], n=200), **FAST)
        client.learn("B", digits(mnist, [2, 3], n=200), **FAST)
        before = scores(client, probe)
    assert server.terminate() == 0
    (root / "first").rename(root / "home")  # the recorded artifact root is gone
    return Original(root / "home", probe, before, mnist)


def test_moved_data_dir_serves_bit_identically(original: Original, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(original.home, moved)
    assert served(moved, original.probe) == (original.scores, list(NAMES))


def test_copied_data_dir_is_an_independent_store(original: Original, tmp_path: Path) -> None:
    first, copy = tmp_path / "first", tmp_path / "copy"
    shutil.copytree(original.home, first)
    served(first, original.probe)  # adopted: its database now records its own location
    before = files(first / "artifacts")
    shutil.copytree(first, copy)
    server = ServerProcess(copy).start()
    with Client(server.address, timeout=120) as client:
        assert scores(client, original.probe) == original.scores
        run_id = client.learn("C", digits(original.mnist, [4, 5], n=200), **FAST).mlflow_run_id
    assert server.terminate() == 0
    assert (copy / "artifacts" / run_id / "artifacts" / "task" / "state.safetensors").is_file()
    assert files(first / "artifacts") == before  # the copy wrote nothing into the original
    assert served(first, original.probe) == (original.scores, list(NAMES))


def test_backup_of_a_running_server_restores_elsewhere_bit_identically(
    original: Original, tmp_path: Path
) -> None:
    live, snapshot, restored = tmp_path / "live", tmp_path / "backup", tmp_path / "restored"
    shutil.copytree(original.home, live)
    server = ServerProcess(live).start()
    try:
        done = sparsecl("backup", live, snapshot)
    finally:
        assert server.terminate() == 0
    assert done.returncode == 0, done.stderr
    done = sparsecl("restore", snapshot, restored)
    assert done.returncode == 0, done.stderr
    assert served(restored, original.probe) == (original.scores, list(NAMES))


def test_restore_refuses_a_non_empty_data_dir(original: Original, tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    done = sparsecl("restore", original.home, tmp_path / "busy")
    assert done.returncode == 2 and "not empty" in done.stderr
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["keep.txt"]


def test_backup_refuses_a_remote_tracking_store(tmp_path: Path) -> None:
    done = sparsecl(
        "backup", tmp_path / "data", tmp_path / "dest", "--tracking-uri", "http://x:5000"
    )
    assert done.returncode == 2 and "pg_dump" in done.stderr
    assert not (tmp_path / "dest").exists()
