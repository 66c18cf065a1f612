"""Reuse auto: each auto layer learned reading earlier tasks' weights (all) and not (none),
the trial of the higher validation accuracy kept; reading where a layer is short of room."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from sparse_engine import reuse, state
from sparse_engine.backbone import BackboneSpec
from sparse_engine.config import TaskConfig
from sparse_engine.data import TaskData
from sparse_engine.model import SparseCL
from sparse_engine.owners import OwnerMap
from sparse_engine.task import ReuseReport, Task

from .conftest import FAST, TINY
from .test_model import fresh_logits

AUTO = dataclasses.replace(FAST, reuse="auto")


def owner_map(spec: str, owned: list[int]) -> tuple[BackboneSpec, OwnerMap]:
    """An owner map whose layer i has its first ``owned[i]`` weights owned by task 1."""
    backbone = BackboneSpec.parse(spec)
    owners = OwnerMap(backbone)
    for m, n in zip(owners.maps, owned, strict=True):
        m.view(-1)[:n] = 1
    return backbone, owners


def test_auto_tries_all_and_none_where_earlier_weights_exist() -> None:
    spec, owners = owner_map("mlp:10-10-10", [5, 5])
    config = dataclasses.replace(AUTO, reuse=("auto", "all"))
    assert reuse.options(spec, owners, config) == (("all", "all"), ("none", "all"))


def test_auto_learns_once_when_no_earlier_task_owns_a_weight() -> None:
    spec, owners = owner_map("mlp:10-10-10", [0, 0])
    assert reuse.options(spec, owners, AUTO) == (("all", "all"),)


def test_auto_reads_where_the_free_weights_are_short_of_the_budget() -> None:
    spec, owners = owner_map("mlp:10-10-10", [95, 5])  # layer 0: 5 free, budget 10
    assert reuse.options(spec, owners, AUTO) == (("all", "all"), ("all", "none"))


def test_other_choices_are_learned_as_given() -> None:
    spec, owners = owner_map("mlp:10-10-10", [5, 5])
    config = dataclasses.replace(FAST, reuse=("none", "similar"))
    assert reuse.options(spec, owners, config) == (("none", "similar"),)


def test_auto_keeps_the_trial_of_the_higher_validation_accuracy(
    three_tasks: list[TaskData],
) -> None:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    report = model.learn_task("t2", three_tasks[1], config=AUTO).reuse
    assert report is not None
    assert [c for c, _ in report.trials] == [("all", "all"), ("none", "none")]
    best = max(a for _, a in report.trials)
    assert report.choice == next(c for c, a in report.trials if a == best)  # ties: reading
    assert model.task("t2").record.val_accuracy == best


def test_the_kept_trial_is_the_task_learned_with_its_choice(
    three_tasks: list[TaskData],
) -> None:
    """Bit for bit: the trial that is kept is what learning with its choice gives."""
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    auto = model.prepare_task("t2", three_tasks[1], config=AUTO)
    assert auto.record.reuse is not None
    kept = dataclasses.replace(FAST, reuse=auto.record.reuse.choice)
    direct = model.prepare_task("t2", three_tasks[1], config=kept)
    for a, b in zip(auto.masks + auto.own_values, direct.masks + direct.own_values, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(auto.head_weight, direct.head_weight)
    assert auto.config.reuse == "auto"  # the task keeps the config it was learned with


def test_auto_reads_earlier_weights_where_they_help(probe: TaskData) -> None:
    """Ten digits again, briefly at a small learning rate: the first task's trained
    weights give better features than fresh ones, and the reading trial wins."""
    model = SparseCL(TINY)
    model.learn_task("t1", probe, config=FAST)
    brief = dataclasses.replace(AUTO, lr=3e-4, retrain_epochs=0)
    report = model.learn_task("t1-again", probe, config=brief).reuse
    assert report is not None and report.choice == ("all", "all")
    assert report.trials[0][1] > report.trials[1][1]
    assert report.read_from().get(1, 0) > 0


def test_auto_reads_no_earlier_weight_where_they_do_not_help(
    three_tasks: list[TaskData], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the trial reading nothing validates better, the kept mask holds no weight of an
    earlier task (the reading trial's validation accuracy is lowered to make it so)."""
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    owners = [m.clone() for m in model.owners.maps]
    learn_with = model._learn_with

    def worse_when_reading(*args: object) -> Task:
        task = learn_with(*args)  # type: ignore[arg-type]
        if "all" in args[4]:  # type: ignore[operator]
            task = dataclasses.replace(
                task, record=dataclasses.replace(task.record, val_accuracy=0.0)
            )
        return task

    monkeypatch.setattr(model, "_learn_with", worse_when_reading)
    report = model.learn_task("t2", three_tasks[1], config=AUTO).reuse
    assert report is not None and report.choice == ("none", "none")
    for mask, before in zip(model.task("t2").masks, owners, strict=True):
        assert not bool((mask & (before != 0)).any())


def test_auto_leaves_earlier_tasks_bit_identical(
    three_tasks: list[TaskData], probe: TaskData
) -> None:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    before = fresh_logits(model, "t1", probe.x)
    model.learn_task("t2", three_tasks[1], config=AUTO)
    model.learn_task("t3", three_tasks[2], config=AUTO)
    after = fresh_logits(model, "t1", probe.x)
    assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True))


def test_auto_falls_back_to_reading_instead_of_refusing(three_tasks: list[TaskData]) -> None:
    """A first task at density 0.95 leaves less than the next one's budget free: auto reads
    (learned in one trial over the frozen weights) where none raises NoFreeCapacityError."""
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=dataclasses.replace(FAST, density=0.95))
    record = model.learn_task("t2", three_tasks[1], config=AUTO)
    assert record.reuse is not None
    assert record.reuse.choice == ("all", "all") and record.reuse.trials == ()
    assert record.learned_as == "mix"


def test_a_stored_auto_task_loads_with_its_config_and_trials(
    three_tasks: list[TaskData],
) -> None:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    config = dataclasses.replace(AUTO, reuse=("auto", "all"))
    task = model.prepare_task("t2", three_tasks[1], config=config)
    loaded = state.loads(state.dumps(task))
    assert loaded.config == config
    assert loaded.record.reuse == task.record.reuse


def test_a_stored_report_without_trials_loads_unchanged() -> None:
    report = ReuseReport(choice=("all", "all"))
    data = json.loads(json.dumps(dataclasses.asdict(report)))
    del data["trials"]
    assert ReuseReport.from_json(data) == report


def test_auto_is_a_choice_per_layer() -> None:
    assert TaskConfig(reuse=("auto", "none")).reuse_per_layer(2) == ("auto", "none")
