"""Only sound tasks are committed: finite everywhere and better than chance (issue 13)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sparse_engine.config import TaskConfig
from sparse_engine.data import TaskData
from sparse_engine.errors import InvalidInputError, UnsoundTaskError
from sparse_engine.learner import learn_task
from sparse_engine.model import SparseCL
from sparse_engine.soundness import check_sound
from sparse_engine.task import Task

# reuse all: written for tasks that read earlier tasks' weights (the default until auto)
FAST = TaskConfig(
    density=0.1, k=0.25, epochs=1, retrain_epochs=1, batch_size=64, lr=3e-3, reuse="all"
)


@pytest.fixture(scope="module")
def learned(three_tasks: list[TaskData]) -> Task:
    model = SparseCL("mlp:784-64-64")
    train, val = three_tasks[0].split(0.1)
    return learn_task(model.backbone, model.owners.owned(), train, val, "t", 1, FAST, 1.0)


def poisoned(sub: Task, part: str, value: float) -> Task:
    """``sub`` with one value of ``part`` replaced by ``value``."""
    if part in ("own_values", "biases"):
        tensors = [t.clone() for t in getattr(sub, part)]
        tensors[-1].view(-1)[0] = value
        return dataclasses.replace(sub, **{part: tuple(tensors)})
    if part == "kwta":
        state = sub.kwta[0]
        duty = state.duty_cycle.clone()
        duty.view(-1)[0] = value
        return dataclasses.replace(sub, kwta=(dataclasses.replace(state, duty_cycle=duty),))
    tensor = getattr(sub, part).clone()
    tensor.view(-1)[0] = value
    return dataclasses.replace(sub, **{part: tensor})


def test_a_sound_subnetwork_passes(learned: Task) -> None:
    check_sound(learned)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("part", ["own_values", "biases", "kwta", "head_weight", "head_bias"])
def test_a_non_finite_value_anywhere_is_refused(learned: Task, part: str, value: float) -> None:
    with pytest.raises(UnsoundTaskError, match=r"diverged.*Lower lr"):
        check_sound(poisoned(learned, part, value))


def test_a_non_finite_last_loss_is_refused(learned: Task) -> None:
    history = (*learned.record.history, {"phase": "retrain", "epoch": 9, "loss": float("nan")})
    record = dataclasses.replace(learned.record, history=history)
    with pytest.raises(UnsoundTaskError, match="training loss"):
        check_sound(dataclasses.replace(learned, record=record))


@pytest.mark.parametrize("accuracy", [0.5, 0.2, float("nan")])
def test_accuracy_at_or_below_chance_is_refused(learned: Task, accuracy: float) -> None:
    with pytest.raises(UnsoundTaskError, match="not above chance"):
        record = dataclasses.replace(learned.record, val_accuracy=accuracy)
        check_sound(dataclasses.replace(learned, record=record))


def test_a_task_that_cannot_learn_changes_nothing(three_tasks: list[TaskData]) -> None:
    """SGD at the largest allowed rate with heavy momentum ends at chance: refused, and
    the model (backbone, owner map, tasks) is exactly as before."""
    model = SparseCL("mlp:784-64-64")
    model.learn_task("first", three_tasks[0], None, FAST)
    weights = [w.clone() for w in model.backbone.weights]
    owners = [o.clone() for o in model.owners.owned()]
    wild = dataclasses.replace(FAST, optimizer="sgd", lr=1.0, momentum=0.99)
    with pytest.raises(UnsoundTaskError, match="nothing was committed"):
        model.learn_task("wild", three_tasks[1], None, wild)
    assert list(model.tasks) == ["first"]
    assert all(torch.equal(a, b) for a, b in zip(weights, model.backbone.weights, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(owners, model.owners.owned(), strict=True))
    model.learn_task("next", three_tasks[1], None, FAST)
    assert bool(torch.isfinite(model.logits("next", three_tasks[1].x)).all())


@pytest.mark.parametrize(
    "changes",
    [
        {"lr": 10.0},
        {"lr": 0.0},
        {"boost_strength": 100.0},
        {"weight_decay": 5.0},
        {"epochs": 2**31 - 1},
        {"retrain_epochs": 2**31},
        {"batch_size": 2**31 - 1},
        {"prune_rounds": 1000},
        {"duty_cycle_period": 2**40},
        {"seed": -1},
        {"epochs": 1.5},
        {"momentum": 1.0},
    ],
)
def test_hyper_parameters_out_of_range_are_refused(changes: dict[str, float]) -> None:
    name = next(iter(changes))
    with pytest.raises(InvalidInputError, match=name):
        TaskConfig(**changes)  # type: ignore[arg-type]


def test_inputs_that_overflow_the_network_are_refused(three_tasks: list[TaskData]) -> None:
    model = SparseCL("mlp:784-64-64")
    model.learn_task("t", three_tasks[0], None, FAST)
    huge = torch.full((2, 784), 3e38)
    with pytest.raises(InvalidInputError, match="overflow"):
        model.logits("t", huge)
