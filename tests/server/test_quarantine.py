"""Damage stays local: a task whose stored artifact is broken, or whose tags contradict the
store, is quarantined (listed `damaged`, not served); every other task answers bit for bit.

Scenarios run on copies of one store of tasks A (0/1), B (2/3) and C (4/5); the replay rule
(server/storecheck.py) is also checked in-process, where masks can be chosen exactly.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from client import Client, ClientError
from server.store import FAILED, STATE, CommittedTask, DamagedTask, StoreContents
from server.storecheck import rebuild
from sparse_engine.config import TaskConfig
from sparse_engine.mnist import Mnist, digits_task
from sparse_engine.model import SparseCL
from sparse_engine.state import loads
from sparse_engine.task import Task

from ..serving import FAST, TINY, ServerProcess, digits, sparsecl

NAMES = ("A", "B", "C")


@dataclass
class Source:
    """A stopped store of tasks A, B, C: their run ids and scores on the probe."""

    home: Path
    runs: dict[str, str]
    scores: dict[str, bytes]
    probe: np.ndarray
    mnist: Mnist

    def copy(self, to: Path) -> Path:
        shutil.copytree(self.home, to)
        return to

    def state_file(self, data_dir: Path, name: str) -> Path:
        return data_dir / "artifacts" / self.runs[name] / "artifacts" / "task" / "state.safetensors"


@dataclass
class Served:
    """What a server started on a damaged copy answered."""

    tasks: dict[str, tuple[str, str]]  # name -> (state, error)
    scores: dict[str, bytes]  # of the tasks still committed
    refusals: dict[str, tuple[grpc.StatusCode, str]]  # Predict of the others, AddTask


def serve(source: Source, data_dir: Path) -> Served:
    """Start a server on ``data_dir``, ask everything, try to add a task, stop it."""
    server = ServerProcess(data_dir).start()
    refusals: dict[str, tuple[grpc.StatusCode, str]] = {}
    with Client(server.address, timeout=120) as client:
        tasks = {t.name: (t.state, t.error) for t in client.tasks()}
        scores: dict[str, bytes] = {}
        for name in NAMES:
            try:
                scores[name] = client.predict(name, source.probe).scores.tobytes()
            except ClientError as e:
                refusals[name] = (e.code, e.message)
        try:
            client.learn("D", digits(source.mnist, [6, 7], n=200), **FAST)
        except ClientError as e:
            refusals["add"] = (e.code, e.message)
    assert server.terminate() == 0
    return Served(tasks, scores, refusals)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, mnist: Mnist) -> Source:
    home = tmp_path_factory.mktemp("quarantine") / "home"
    server = ServerProcess(home).start()
    probe = mnist.x_test[:200]
    with Client(server.address, timeout=120) as client:
        runs = {
            name: client.learn(name, digits(mnist, labels, n=200), **FAST).mlflow_run_id
            for name, labels in zip(NAMES, ([0, 1], [2, 3], [4, 5]), strict=True)
        }
        scores = {n: client.predict(n, probe).scores.tobytes() for n in NAMES}
    assert server.terminate() == 0
    return Source(home, runs, scores, probe, mnist)


def test_corrupt_task_is_quarantined_and_the_others_answer_bit_identically(
    source: Source, tmp_path: Path
) -> None:
    data_dir = source.copy(tmp_path / "corrupt")
    path = source.state_file(data_dir, "C")
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    served = serve(source, data_dir)
    assert {n: s for n, (s, _) in served.tasks.items()} == {
        "A": "committed",
        "B": "committed",
        "C": "damaged",
    }
    error = served.tasks["C"][1]
    assert source.runs["C"] in error and str(path) in error and "sha256" in error
    assert served.scores == {n: source.scores[n] for n in ("A", "B")}
    code, message = served.refusals["C"]
    assert code == grpc.StatusCode.FAILED_PRECONDITION and source.runs["C"] in message
    code, message = served.refusals["add"]
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "damaged" in message
    done = sparsecl("store", "check", "--data-dir", data_dir)
    assert done.returncode == 1 and str(path) in done.stdout and "DAMAGED" in done.stdout


def masks(source: Source) -> dict[str, tuple[torch.Tensor, ...]]:
    return {n: loads(source.state_file(source.home, n).read_bytes()).masks for n in NAMES}


def test_missing_artifact_quarantines_its_task_and_the_tasks_reading_its_weights(
    source: Source, tmp_path: Path
) -> None:
    m = masks(source)
    owned_by_b = [b & ~a for a, b in zip(m["A"], m["B"], strict=True)]
    assert any(bool((c & o).any()) for c, o in zip(m["C"], owned_by_b, strict=True))
    data_dir = source.copy(tmp_path / "missing")
    path = source.state_file(data_dir, "B")
    path.unlink()
    served = serve(source, data_dir)
    assert {n: s for n, (s, _) in served.tasks.items()} == {
        "A": "committed",
        "B": "damaged",
        "C": "damaged",
    }
    assert "missing" in served.tasks["B"][1] and str(path) in served.tasks["B"][1]
    assert "reads weights of damaged task(s) 'B'" in served.tasks["C"][1]
    assert served.scores == {"A": source.scores["A"]}
    assert set(served.refusals) == {"B", "C", "add"}
    done = sparsecl("store", "check", "--data-dir", data_dir)
    assert done.returncode == 1 and str(path) in done.stdout
    assert "C: DAMAGED" in done.stdout and "A: committed" in done.stdout


def test_committed_run_tagged_failed_is_quarantined_not_fatal(
    source: Source, tmp_path: Path
) -> None:
    data_dir = source.copy(tmp_path / "edited")
    client = MlflowClient(tracking_uri=f"sqlite:///{data_dir / 'mlflow.db'}")
    client.set_tag(source.runs["B"], STATE, FAILED)  # as if edited in the MLflow UI
    served = serve(source, data_dir)
    assert {n: s for n, (s, _) in served.tasks.items()} == {
        "A": "committed",
        "B": "damaged",
        "C": "committed",  # B's weights are intact and replayed: C still reads them
    }
    assert served.scores == {n: source.scores[n] for n in ("A", "C")}
    run = client.get_run(source.runs["B"])
    assert run.info.status == "FINISHED" and "sparsecl.error" not in run.data.tags
    assert sparsecl("store", "check", "--data-dir", data_dir).returncode == 1


def test_unreadable_database_is_one_line_and_exit_status_2(tmp_path: Path) -> None:
    (tmp_path / "mlflow.db").write_bytes(b"not a database at all" * 100)
    for args in (["serve", "--port", "0"], ["store", "check"]):
        done = sparsecl(*args, "--data-dir", tmp_path)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and "not a usable sqlite database" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# ---- the replay rule, in-process with chosen masks ------------------------------------------
class Loaded:
    """A store stand-in whose ``load`` returns fixed contents."""

    def __init__(self, contents: StoreContents) -> None:
        self.contents = contents

    def load(self, repair: bool = True) -> StoreContents:
        return self.contents


def committed(state: Task) -> CommittedTask:
    return CommittedTask(state, f"run-{state.name}", state.name, "1", 0)


def damaged(state: Task, keep_state: bool) -> DamagedTask:
    return DamagedTask(
        state.name, state.record.id, f"run-{state.name}", "broken", 0, state if keep_state else None
    )


@pytest.fixture(scope="module")
def states(mnist: Mnist) -> tuple[list[Task], Task]:
    """Tasks A, B, C learned in turn, and C' = C without the weights B owns (C' reads
    nothing of B, and owns exactly what C owns)."""
    model, out = SparseCL(TINY), []
    config = TaskConfig(**FAST)  # type: ignore[arg-type]
    for name, labels in zip(NAMES, ([0, 1], [2, 3], [4, 5]), strict=True):
        out.append(model.prepare_task(name, digits_task(labels, 200, mnist), None, config))
        model.commit_task(out[-1])
    owned_by_b = model.owners.owned_by(2)
    c = out[2]
    c_free = dataclasses.replace(
        c, masks=tuple(m & ~o for m, o in zip(c.masks, owned_by_b, strict=True))
    )
    return out, c_free


def replayed(*states: Task) -> SparseCL:
    model = SparseCL(TINY)
    for s in states:
        model.commit_task(s)
    return model


def test_replay_serves_a_later_task_that_reads_nothing_of_an_unreadable_one(
    states: tuple[list[Task], Task], mnist: Mnist
) -> None:
    (a, b, c), c_free = states
    x = torch.from_numpy(mnist.x_test[:100].reshape(100, -1).astype(np.float32) / 255)
    reference = replayed(a, b, c_free)
    model = SparseCL(TINY)
    contents = StoreContents([committed(a), committed(c_free)], [damaged(b, False)], [])
    got = rebuild(Loaded(contents), model)  # type: ignore[arg-type]
    assert [t.state.name for t in got.committed] == ["A", "C"] and list(model.tasks) == ["A", "C"]
    for name in ("A", "C"):
        assert torch.equal(model.logits(name, x), reference.logits(name, x))
    model = SparseCL(TINY)
    contents = StoreContents([committed(a), committed(c)], [damaged(b, False)], [])
    got = rebuild(Loaded(contents), model)  # type: ignore[arg-type]
    assert list(model.tasks) == ["A"] and [d.name for d in got.damaged] == ["B", "C"]
    assert "'B' (id 2)" in got.damaged[1].error


def test_replay_keeps_the_weights_of_an_intact_damaged_task(
    states: tuple[list[Task], Task], mnist: Mnist
) -> None:
    (a, b, c), _ = states
    x = torch.from_numpy(mnist.x_test[:100].reshape(100, -1).astype(np.float32) / 255)
    reference = replayed(a, b, c)
    model = SparseCL(TINY)
    contents = StoreContents([committed(a), committed(c)], [damaged(b, True)], [])
    got = rebuild(Loaded(contents), model)  # type: ignore[arg-type]
    assert list(model.tasks) == ["A", "C"] and [d.name for d in got.damaged] == ["B"]
    assert torch.equal(model.logits("C", x), reference.logits("C", x))
