"""The MLflow store on a real sqlite database: the commit protocol and what it keeps."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from server.store import StoreCorruptError, TaskStore, event_metrics
from sparse_engine.config import ProgressEvent, TaskConfig
from sparse_engine.mnist import Mnist, digits_task
from sparse_engine.model import SparseCL
from sparse_engine.state import TaskState

from ..serving import FAST, TINY

CONFIG = TaskConfig(**FAST)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow")


def open_store(root: Path, experiment: str, backbone: str | None = TINY) -> TaskStore:
    store = TaskStore(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts", experiment)
    store.open(backbone, 0, TINY)
    return store


@pytest.fixture(scope="module")
def prepared(mnist: Mnist) -> tuple[TaskState, list[ProgressEvent]]:
    events: list[ProgressEvent] = []
    model = SparseCL(TINY)
    state = model.prepare_task("A", digits_task([0, 1], 200, mnist), None, CONFIG, events.append)
    return state, events


@pytest.fixture(scope="module")
def committed(root: Path, prepared: tuple[TaskState, list[ProgressEvent]]) -> Iterator[str]:
    """Experiment 'committed': task A stored completely; yields its run id."""
    state, events = prepared
    store = open_store(root, "committed")
    run_id, created = store.start("A", 1, CONFIG, TINY, {"train_examples": 180})
    stored = store.commit(run_id, state, events, 3, created)
    assert stored.model_version == "1"
    yield run_id


def test_committed_task_loads_back_tensor_for_tensor(
    root: Path, committed: str, prepared: tuple[TaskState, list[ProgressEvent]]
) -> None:
    tasks, failed = open_store(root, "committed").load()
    assert failed == [] and [t.run_id for t in tasks] == [committed]
    got, want = tasks[0].state, prepared[0]
    pairs = [
        *zip(got.masks, want.masks, strict=True),
        *zip(got.own_values, want.own_values, strict=True),
        *zip(got.biases, want.biases, strict=True),
        (got.head_weight, want.head_weight),
        (got.head_bias, want.head_bias),
        *((a.duty_cycle, b.duty_cycle) for a, b in zip(got.kwta, want.kwta, strict=True)),
    ]
    assert all(torch.equal(a, b) for a, b in pairs)
    assert [(s.k, s.boost_strength) for s in got.kwta] == [
        (s.k, s.boost_strength) for s in want.kwta
    ]
    assert got.config == want.config
    assert dataclasses.replace(got.record, history=()) == dataclasses.replace(
        want.record, history=()
    )


def test_run_and_registered_model_are_browsable(root: Path, committed: str) -> None:
    store = open_store(root, "committed")
    run = store.client.get_run(committed)
    assert run.info.status == "FINISHED"
    assert run.data.params["density"] == "0.1" and "retrain/val_accuracy" in run.data.metrics
    artifacts = {
        a.path for d in ("task", "plots") for a in store.client.list_artifacts(committed, d)
    }
    assert artifacts == {
        "task/state.safetensors",
        "task/record.json",
        "plots/training.png",
        "plots/density.png",
    }
    version = store.client.get_model_version("committed.A", "1")
    assert {"backbone", "density", "accuracy", "capacity_used"} <= set(version.tags)


def test_stored_bytes_grow_with_owned_weights_not_backbone_size(
    root: Path, committed: str, prepared: tuple[TaskState, list[ProgressEvent]]
) -> None:
    path = root / "artifacts" / committed / "artifacts" / "task" / "state.safetensors"
    backbone_bytes = 4 * (784 * 64 + 64 * 64)
    owned_bytes = 4 * prepared[0].record.weights_owned
    assert owned_bytes < path.stat().st_size < owned_bytes + 0.1 * backbone_bytes


def test_run_left_training_is_loaded_as_failed(root: Path) -> None:
    store = open_store(root, "interrupted")
    run_id, _ = store.start("B", 1, CONFIG, TINY, {"train_examples": 10})
    tasks, failed = open_store(root, "interrupted").load()
    assert tasks == [] and [(f.name, f.run_id) for f in failed] == [("B", run_id)]
    assert store.client.get_run(run_id).info.status == "FAILED"


def test_tampered_task_state_refuses_to_load(
    root: Path, prepared: tuple[TaskState, list[ProgressEvent]]
) -> None:
    store = open_store(root, "tampered")
    run_id, created = store.start("A", 1, CONFIG, TINY, {})
    store.commit(run_id, prepared[0], prepared[1], 3, created)
    path = root / "artifacts" / run_id / "artifacts" / "task" / "state.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(StoreCorruptError, match="sha256"):
        open_store(root, "tampered").load()


def test_store_refuses_another_backbone(root: Path) -> None:
    open_store(root, "fixed")
    with pytest.raises(StoreCorruptError, match="mlp:784-64-64"):
        open_store(root, "fixed", backbone="mlp:784-32")


def test_store_keeps_its_backbone_when_none_is_asked(root: Path) -> None:
    open_store(root, "kept", backbone="mlp:784-32")
    assert open_store(root, "kept", backbone=None).open(None, 0, TINY) == ("mlp:784-32", 0)


def test_metrics_per_step_epoch_and_phase() -> None:
    events = [
        ProgressEvent("train", 1, 2, 0.5, 0.6, 1.0, 1.0),
        ProgressEvent("train", 1, 0, 0.4, 0.7, 1.0, 1.0),
        ProgressEvent("prune", 1, 0, float("nan"), 0.65, 0.1, 1.0),
        ProgressEvent("retrain", 2, 0, 0.3, 0.8, 0.1, 1.0),
    ]
    metrics = {(m.key, m.step): m.value for m in event_metrics(events, steps_per_epoch=5)}
    assert metrics == {
        ("train/step_loss", 2): 0.5,
        ("train/step_accuracy", 2): 0.6,
        ("train/epoch_loss", 1): 0.4,
        ("train/val_accuracy", 1): 0.7,
        ("train/density", 1): 1.0,
        ("prune/val_accuracy", 1): 0.65,
        ("prune/density", 1): 0.1,
        ("retrain/epoch_loss", 2): 0.3,
        ("retrain/val_accuracy", 2): 0.8,
        ("retrain/density", 2): 0.1,
    }


def test_each_pruning_round_logs_its_target_and_kept_density(root: Path, mnist: Mnist) -> None:
    config = dataclasses.replace(CONFIG, prune_rounds=2)
    events: list[ProgressEvent] = []
    model = SparseCL(TINY)
    state = model.prepare_task("R", digits_task([0, 1], 200, mnist), None, config, events.append)
    store = open_store(root, "rounds")
    run_id, created = store.start("R", 1, config, TINY, {"train_examples": 180})
    store.commit(run_id, state, events, 3, created)

    def history(key: str) -> list[tuple[int, float]]:
        logged = store.client.get_metric_history(run_id, key)
        return sorted((m.step, m.value) for m in logged)

    rounds = [e for e in events if e.phase == "prune"]
    assert history("prune/round_target_density") == [
        (1, pytest.approx(0.1**0.5)),
        (2, pytest.approx(0.1)),
    ]
    assert history("prune/round_kept_density") == [
        (1, pytest.approx(rounds[0].density)),
        (2, pytest.approx(rounds[1].density)),
    ]
