"""Reuse choices: what a new task's mask may read of earlier tasks, and the similarity probe."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sparse_engine import reuse
from sparse_engine.backbone import BackboneSpec
from sparse_engine.config import TaskConfig
from sparse_engine.data import TaskData
from sparse_engine.errors import InvalidInputError, NoFreeCapacityError
from sparse_engine.model import SparseCL
from sparse_engine.owners import OwnerMap

from .conftest import FAST, TINY
from .test_model import METHODS, assert_unchanged, fresh_logits, snapshot


def two_tasks_then(
    three_tasks: list[TaskData], probe: TaskData, config: TaskConfig
) -> tuple[SparseCL, list[torch.Tensor], dict[str, tuple[torch.Tensor, ...]]]:
    """Tasks t1, t2 learned with reuse all, then t3 with ``config``: the model, the owner
    map before t3, and t1's and t2's scores before t3."""
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    model.learn_task("t2", three_tasks[1], config=FAST)
    owners = [m.clone() for m in model.owners.maps]
    scores = {name: fresh_logits(model, name, probe.x) for name in ("t1", "t2")}
    model.learn_task("t3", three_tasks[2], config=config)
    return model, owners, scores


@pytest.mark.parametrize("method", list(METHODS))
def test_reuse_none_reads_no_earlier_weight(
    three_tasks: list[TaskData], probe: TaskData, method: str
) -> None:
    """With every method: the committed mask ∩ weights owned by earlier tasks is empty,
    and every earlier task answers bit for bit as before."""
    config = dataclasses.replace(FAST, epochs=2, retrain_epochs=2, reuse="none")
    config = dataclasses.replace(config, **METHODS[method])
    model, owners, scores = two_tasks_then(three_tasks, probe, config)
    masks = model.task("t3").masks
    assert all(not bool((m & (o != 0)).any()) for m, o in zip(masks, owners, strict=True))
    assert model.task("t3").record.weights_read == 0
    for name, want in scores.items():
        got = fresh_logits(model, name, probe.x)
        assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True)), name


def test_reuse_per_layer_restricts_only_its_layers(
    three_tasks: list[TaskData], probe: TaskData
) -> None:
    """none,all: layer 0 reads no earlier weight; layer 1 may, and on these tasks does."""
    config = dataclasses.replace(FAST, reuse=("none", "all"))
    model, owners, _ = two_tasks_then(three_tasks, probe, config)
    masks = model.task("t3").masks
    assert not bool((masks[0] & (owners[0] != 0)).any())
    assert bool((masks[1] & (owners[1] != 0)).any())


def test_the_record_counts_the_mask_by_owner(three_tasks: list[TaskData], probe: TaskData) -> None:
    model, owners, _ = two_tasks_then(three_tasks, probe, FAST)
    task = model.task("t3")
    assert task.record.reuse is not None
    for layer, mask, before in zip(task.record.reuse.owners, task.masks, owners, strict=True):
        assert dict(layer) == {
            int(i): int((before[mask] == i).sum()) for i in torch.unique(before[mask])
        }
    read = task.record.reuse.read_from()
    assert sum(read.values()) == task.record.weights_read
    assert set(read) <= {1, 2}


def test_reuse_similar_reads_only_the_tasks_it_chose(
    three_tasks: list[TaskData], probe: TaskData
) -> None:
    config = dataclasses.replace(FAST, reuse="similar")
    model, owners, _ = two_tasks_then(three_tasks, probe, config)
    task = model.task("t3")
    report = task.record.reuse
    assert report is not None and report.baseline is not None
    assert [i for i, _ in report.scores] == [1, 2]
    assert set(report.chosen) == {
        i for i, s in report.scores if s >= report.baseline + reuse.MARGIN
    }
    for mask, before in zip(task.masks, owners, strict=True):
        read = set(torch.unique(before[mask]).tolist()) - {0}
        assert read <= set(report.chosen)


@pytest.mark.parametrize("choice", ["none", "similar"])
def test_retired_weights_of_a_deleted_task_are_not_read(
    three_tasks: list[TaskData], choice: str
) -> None:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    model.learn_task("t2", three_tasks[1], config=FAST)
    model.delete_task("t1")
    retired = [m == 1 for m in model.owners.maps]
    assert any(bool(r.any()) for r in retired)  # t2 reads them: kept frozen under id 1
    model.learn_task("t3", three_tasks[2], config=dataclasses.replace(FAST, reuse=choice))
    report = model.task("t3").record.reuse
    assert report is not None and 1 not in report.read_from()
    for mask, r in zip(model.task("t3").masks, retired, strict=True):
        assert not bool((mask & r).any())


def test_candidates_never_include_retired_or_unchosen_weights() -> None:
    spec = BackboneSpec.parse("mlp:4-3-2")
    owners = OwnerMap(spec)
    owners.maps[0] = torch.tensor([[0, 1, 2, 3]] * 3, dtype=owners.maps[0].dtype)
    owners.maps[1] = torch.tensor([[0, 1, 3]] * 2, dtype=owners.maps[1].dtype)  # 3 retired
    layers = reuse.candidates(owners, ("similar", "none"), readable=[1])
    assert layers is not None
    assert layers[0][0].tolist() == [True, True, False, False]
    assert layers[1][0].tolist() == [True, False, False]
    assert reuse.candidates(owners, ("all", "all"), readable=[]) is None


def test_a_wrong_number_of_per_layer_choices_is_refused_and_changes_nothing(
    three_tasks: list[TaskData],
) -> None:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    before = snapshot(model)
    config = dataclasses.replace(FAST, reuse=("none", "all", "none"))
    with pytest.raises(InvalidInputError, match="reuse gives 3 values for a backbone of 2"):
        model.learn_task("t2", three_tasks[1], config=config)
    assert_unchanged(model, before)


def test_an_unknown_choice_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="reuse must be one of"):
        TaskConfig(reuse="some")  # type: ignore[arg-type]


def test_reuse_none_without_free_room_for_the_budget_is_refused(
    three_tasks: list[TaskData],
) -> None:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=dataclasses.replace(FAST, density=0.95))
    before = snapshot(model)
    with pytest.raises(NoFreeCapacityError, match="reuse 'none' needs the task's budget"):
        model.learn_task("t2", three_tasks[1], config=dataclasses.replace(FAST, reuse="none"))
    assert_unchanged(model, before)


def test_the_probe_separates_informative_from_useless_features() -> None:
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (400,), generator=generator)
    informative = torch.randn(400, 8, generator=generator) + 3.0 * y[:, None]
    useless = torch.randn(400, 8, generator=generator)
    assert reuse.probe_accuracy(informative[:200], y[:200], informative[200:], y[200:]) > 0.99
    assert reuse.probe_accuracy(useless[:200], y[:200], useless[200:], y[200:]) < 0.65
