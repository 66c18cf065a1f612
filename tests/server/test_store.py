"""The MLflow store on a real sqlite database: the commit protocol and what it keeps."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from server.lease import LEASE_TAG, StoreLease
from server.store import (
    COMMITTED,
    FAILED,
    KIND_TAG,
    MODEL_TRAINING,
    STATE,
    TASK_ID,
    OwnerCounts,
    StoreCorruptError,
    TaskStore,
    WriterConflictError,
    event_metrics,
)
from sparse_engine import reuse
from sparse_engine.config import ProgressEvent, TaskConfig
from sparse_engine.mnist import Mnist, digits_task
from sparse_engine.model import SparseCL
from sparse_engine.task import Task

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
def prepared(mnist: Mnist) -> tuple[Task, list[ProgressEvent]]:
    events: list[ProgressEvent] = []
    model = SparseCL(TINY)
    state = model.prepare_task("A", digits_task([0, 1], 200, mnist), None, CONFIG, events.append)
    return state, events


@pytest.fixture(scope="module")
def committed(root: Path, prepared: tuple[Task, list[ProgressEvent]]) -> Iterator[str]:
    """Experiment 'committed': task A stored completely; yields its run id."""
    state, events = prepared
    store = open_store(root, "committed")
    run_id, created = store.start("A", 1, CONFIG, TINY, {"train_examples": 180})
    stored = store.commit(run_id, state, events, 3, created)
    assert stored.model_version == "1"
    yield run_id


def test_committed_task_loads_back_tensor_for_tensor(
    root: Path, committed: str, prepared: tuple[Task, list[ProgressEvent]]
) -> None:
    loaded = open_store(root, "committed").load()
    tasks = loaded.committed
    assert loaded.failed == loaded.damaged == [] and [t.run_id for t in tasks] == [committed]
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
    root: Path, committed: str, prepared: tuple[Task, list[ProgressEvent]]
) -> None:
    """A task stores the weights it owns and its identity model (task-free inference: per
    class, a mean and principal directions over the inputs, whatever the hidden widths),
    plus less than a tenth of the backbone's size in masks, biases and head."""
    path = root / "artifacts" / committed / "artifacts" / "task" / "state.safetensors"
    backbone_bytes = 4 * (784 * 64 + 64 * 64)
    owned_bytes = 4 * prepared[0].record.weights_owned
    identity = prepared[0].identity
    assert identity is not None
    parts = (identity.mean, identity.basis, identity.variances, identity.noise)
    own = owned_bytes + sum(t.numel() * t.element_size() for t in parts)
    assert own < path.stat().st_size < own + 0.1 * backbone_bytes


def test_run_left_training_is_loaded_as_failed(root: Path) -> None:
    store = open_store(root, "interrupted")
    run_id, _ = store.start("B", 1, CONFIG, TINY, {"train_examples": 10})
    loaded = open_store(root, "interrupted").load()
    assert loaded.committed == loaded.damaged == []
    assert [(f.name, f.run_id) for f in loaded.failed] == [("B", run_id)]
    assert store.client.get_run(run_id).info.status == "FAILED"


def commit_a(root: Path, experiment: str, prepared: tuple[Task, list[ProgressEvent]]) -> str:
    """A store ``experiment`` holding task A, committed; returns its run id."""
    store = open_store(root, experiment)
    run_id, created = store.start("A", 1, CONFIG, TINY, {})
    store.commit(run_id, prepared[0], prepared[1], 3, created)
    return run_id


def test_tampered_task_state_is_damaged_not_fatal(
    root: Path, prepared: tuple[Task, list[ProgressEvent]]
) -> None:
    run_id = commit_a(root, "tampered", prepared)
    path = root / "artifacts" / run_id / "artifacts" / "task" / "state.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    loaded = open_store(root, "tampered").load()
    assert loaded.committed == [] and [(d.name, d.task_id) for d in loaded.damaged] == [("A", 1)]
    assert run_id in loaded.damaged[0].error and str(path) in loaded.damaged[0].error
    assert "sha256" in loaded.damaged[0].error


def test_committed_run_tagged_failed_is_damaged_and_never_downgraded(
    root: Path, prepared: tuple[Task, list[ProgressEvent]]
) -> None:
    run_id = commit_a(root, "edited", prepared)
    store = open_store(root, "edited")
    store.client.set_tag(run_id, STATE, FAILED)  # as if edited in the MLflow UI
    loaded = store.load()
    assert loaded.committed == loaded.failed == []
    assert [(d.name, d.run_id) for d in loaded.damaged] == [("A", run_id)]
    assert loaded.damaged[0].state is not None  # intact: replayed, not served
    run = store.client.get_run(run_id)
    assert run.info.status == "FINISHED" and STATE in loaded.damaged[0].error


def test_duplicate_and_missing_task_ids_are_damaged_not_fatal(
    root: Path, prepared: tuple[Task, list[ProgressEvent]]
) -> None:
    first = commit_a(root, "ids", prepared)
    store = open_store(root, "ids")
    second, _ = store.start("A2", 1, CONFIG, TINY, {})
    store.client.set_tag(second, STATE, COMMITTED)  # a second run claiming id 1
    loaded = store.load()
    assert loaded.committed == []
    assert {(d.run_id, d.task_id) for d in loaded.damaged} == {(first, 1), (second, 1)}
    assert all("all claim task id 1" in d.error for d in loaded.damaged)
    store.client.set_tag(second, TASK_ID, "3")  # now ids 1 and 3: id 2 is missing
    loaded = store.load()
    assert [t.run_id for t in loaded.committed] == [first]
    assert [d.task_id for d in loaded.damaged] == [2, 3]
    assert "no committed run holds task id 2" in loaded.damaged[0].error


def test_a_commit_of_a_task_id_another_run_committed_meanwhile_is_refused(
    root: Path, prepared: tuple[Task, list[ProgressEvent]]
) -> None:
    first = commit_a(root, "two-writers", prepared)
    store = open_store(root, "two-writers")
    second, created = store.start("A", 1, CONFIG, TINY, {})  # a second writer's view: id 1
    meanwhile = f"task id 1 was committed meanwhile by run {first}"
    with pytest.raises(WriterConflictError, match=meanwhile):
        store.commit(second, prepared[0], prepared[1], 3, created)
    assert store.client.get_run(second).data.tags[STATE] != COMMITTED
    assert [t.run_id for t in store.load().committed] == [first]


def test_a_commit_after_the_lease_was_taken_over_is_refused(
    root: Path, prepared: tuple[Task, list[ProgressEvent]]
) -> None:
    store = open_store(root, "lease-lost")
    lease = StoreLease(store, 30)
    lease.acquire()
    try:
        other = {"id": "other", "pid": 4242, "host": "elsewhere", "expires": time.time() + 30}
        store.client.set_experiment_tag(store.experiment_id, LEASE_TAG, json.dumps(other))
        run_id, created = store.start("A", 1, CONFIG, TINY, {})
        with pytest.raises(WriterConflictError, match="pid 4242 on elsewhere"):
            store.commit(run_id, prepared[0], prepared[1], 3, created)
        assert store.load().committed == []
    finally:
        lease.release()


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


def test_the_experiment_is_shown_as_model_training_in_mlflow_3(root: Path) -> None:
    store = open_store(root, "kind")
    experiment = store.client.get_experiment(store.experiment_id)
    assert experiment.tags[KIND_TAG] == MODEL_TRAINING == "custom_model_development"
    # an experiment made before the tag existed gets it when the server next opens it
    store.client.delete_experiment_tag(store.experiment_id, KIND_TAG)
    reopened = open_store(root, "kind")
    assert reopened.client.get_experiment(store.experiment_id).tags[KIND_TAG] == MODEL_TRAINING


def test_a_task_run_shows_whose_weights_its_mask_holds(root: Path, mnist: Mnist) -> None:
    """owners.json, the two plots and the tags of a task that reads task 1; the backbone's
    registered model points at the owner map's plot."""
    model = SparseCL(TINY)
    model.learn_task("A", digits_task([0, 1], 200, mnist), config=CONFIG)
    events: list[ProgressEvent] = []
    state = model.prepare_task("B", digits_task([2, 3], 200, mnist), None, CONFIG, events.append)
    store = open_store(root, "owners")
    run_id, created = store.start("B", 2, CONFIG, TINY, {"train_examples": 180})
    owners = OwnerCounts({1: "A"}, reuse.counts_after(model.owners, state))
    store.commit(run_id, state, events, 3, created, owners=owners)
    store.describe_backbone(TINY, 0, 2, 0.8, last_run=run_id)
    report = state.record.reuse
    assert report is not None and report.read_from()[1] > 0
    table = json.loads(Path(store.client.download_artifacts(run_id, "owners.json")).read_text())
    rows = {r["owner"]: r for r in table["mask_by_owner"]}
    assert rows[1]["task"] == "A" and rows[2]["claimed"] and rows[2]["task"] == "B"
    assert [rows[1]["weights"], rows[2]["weights"]] == [
        list(report.by_owner()[1]),
        list(report.by_owner()[0]),
    ]
    after = table["owner_map_after_commit"]
    assert [int(layer["2"]) for layer in after] == list(report.by_owner()[0])
    plots = {a.path for a in store.client.list_artifacts(run_id, "plots")}
    assert {"plots/owners.png", "plots/owner_map.png"} <= plots
    tags = store.client.get_run(run_id).data.tags
    assert tags["sparsecl.reuse"] == "all,all"
    assert json.loads(tags["sparsecl.reuse.read_from"]) == {"1": report.read_from()[1]}
    backbone = store.client.get_registered_model("owners.backbone")
    assert backbone.tags["owner_map"] == f"runs:/{run_id}/plots/owner_map.png"
