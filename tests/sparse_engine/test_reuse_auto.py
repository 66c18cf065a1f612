"""Reuse auto: a layer reads no earlier task's weight while its free weights hold the task's
budget, and reads them all once they do not (never NoFreeCapacityError)."""

from __future__ import annotations

import dataclasses

import torch

from sparse_engine import reuse, state
from sparse_engine.backbone import BackboneSpec
from sparse_engine.config import TaskConfig
from sparse_engine.data import TaskData
from sparse_engine.model import SparseCL
from sparse_engine.owners import OwnerMap

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


def test_auto_reads_nothing_in_a_layer_with_room_and_all_in_one_without() -> None:
    spec, owners = owner_map("mlp:10-10-10", [95, 5])  # layer 0: 5 free, budget 10
    assert reuse.resolve(spec, owners, AUTO) == ("all", "none")


def test_auto_reads_where_short_with_whole_units_too() -> None:
    spec, owners = owner_map("mlp:10-10-10", [95, 5])
    config = dataclasses.replace(AUTO, structure="units", density=0.5)
    assert reuse.resolve(spec, owners, config) == ("all", "none")


def test_auto_resolves_per_layer_and_leaves_other_choices_as_given() -> None:
    spec, owners = owner_map("mlp:10-10-10", [95, 95])
    config = dataclasses.replace(FAST, reuse=("similar", "auto"))
    assert reuse.resolve(spec, owners, config) == ("similar", "all")


def test_a_task_learned_with_auto_reads_no_earlier_weight_while_there_is_room(
    three_tasks: list[TaskData],
) -> None:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    owners = [m.clone() for m in model.owners.maps]
    record = model.learn_task("t2", three_tasks[1], config=AUTO)
    assert record.reuse is not None and record.reuse.choice == ("none", "none")
    assert record.weights_read == 0
    for mask, before in zip(model.task("t2").masks, owners, strict=True):
        assert not bool((mask & (before != 0)).any())


def test_auto_with_room_is_none_bit_for_bit(three_tasks: list[TaskData]) -> None:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    auto = model.prepare_task("t2", three_tasks[1], config=AUTO)
    none = model.prepare_task("t2", three_tasks[1], config=dataclasses.replace(FAST, reuse="none"))
    for a, b in zip(auto.masks + auto.own_values, none.masks + none.own_values, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(auto.head_weight, none.head_weight)
    assert auto.config.reuse == "auto"  # the task keeps the config it was learned with


def test_auto_falls_back_to_reading_instead_of_refusing(three_tasks: list[TaskData]) -> None:
    """A first task at density 0.95 leaves less than the next one's budget free: auto reads
    there (learned over the frozen weights, issue 18) where none raises NoFreeCapacityError."""
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=dataclasses.replace(FAST, density=0.95))
    record = model.learn_task("t2", three_tasks[1], config=AUTO)
    assert record.reuse is not None and record.reuse.choice == ("all", "all")
    assert record.learned_as == "mix"
    assert record.weights_read > 0


def test_auto_leaves_earlier_tasks_bit_identical(
    three_tasks: list[TaskData], probe: TaskData
) -> None:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    before = fresh_logits(model, "t1", probe.x)
    model.learn_task("t2", three_tasks[1], config=AUTO)
    model.learn_task("t3", three_tasks[2], config=dataclasses.replace(AUTO, density=0.95))
    after = fresh_logits(model, "t1", probe.x)
    assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True))


def test_a_stored_task_keeps_its_per_layer_reuse(three_tasks: list[TaskData]) -> None:
    model = SparseCL(TINY)
    config = dataclasses.replace(FAST, reuse=("auto", "all"))
    task = model.prepare_task("t1", three_tasks[0], config=config)
    loaded = state.loads(state.dumps(task))
    assert loaded.config == config
    assert loaded.record.reuse == task.record.reuse


def test_auto_is_a_choice_per_layer() -> None:
    assert TaskConfig(reuse=("auto", "none")).reuse_per_layer(2) == ("auto", "none")


def test_the_default_is_auto() -> None:
    assert TaskConfig().reuse == "auto"
