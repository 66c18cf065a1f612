"""--tune: a bounded (density, k) search on the validation split, its choice and its cost."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from sparse_engine.config import ProgressEvent
from sparse_engine.data import TaskData
from sparse_engine.errors import InvalidInputError
from sparse_engine.kwta import auto_k
from sparse_engine.model import SparseCL
from sparse_engine.tune import MAX_TRIALS, Trial, TuneReport, choose

from .conftest import FAST, TINY

PAIRS = ((0.2, "auto"), (0.05, 0.25), (0.1, "auto"))


def trial(density: float, accuracy: float) -> Trial:
    return Trial(density, "auto", (1,), accuracy, 1.0)


def test_choose_takes_the_smallest_density_within_the_tolerance_of_the_best() -> None:
    trials = [trial(0.2, 0.950), trial(0.05, 0.930), trial(0.1, 0.946)]
    assert choose(trials, 0.005) == 2  # 0.05 loses 2 points, 0.1 only 0.4
    assert choose(trials, 0.03) == 1
    assert choose(trials, 0.0) == 0  # no tolerance: the best


def test_choose_skips_unsound_trials_and_finds_none_when_all_are() -> None:
    unsound = dataclasses.replace(trial(0.05, 0.99), error="not above chance")
    assert choose([unsound, trial(0.1, 0.90)], 0.5) == 1
    assert choose([unsound], 0.5) == -1


def test_choose_breaks_ties_by_accuracy_then_order() -> None:
    assert choose([trial(0.1, 0.90), trial(0.1, 0.91), trial(0.1, 0.91)], 0.05) == 1


@pytest.fixture(scope="module")
def tuned(three_tasks: list[TaskData]) -> tuple[SparseCL, TuneReport, list[ProgressEvent]]:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    events: list[ProgressEvent] = []
    record, report = model.tune(
        "t2", three_tasks[1], config=FAST, candidates=PAIRS, progress=events.append
    )
    assert record.name == "t2"
    return model, report, events


def test_tune_returns_its_choice_and_cost(
    tuned: tuple[SparseCL, TuneReport, list[ProgressEvent]],
) -> None:
    model, report, _ = tuned
    assert [(t.density, t.k) for t in report.trials] == list(PAIRS)
    assert [t.k_units for t in report.trials] == [(auto_k(64),) * 2, (16, 16), (auto_k(64),) * 2]
    assert all(0.5 < t.val_accuracy <= 1.0 and t.seconds > 0 for t in report.trials)
    assert report.chosen == choose(report.trials, report.tolerance)
    assert report.tolerance == 0.005
    assert report.seconds >= sum(t.seconds for t in report.trials)
    task = model.task("t2")
    assert (task.config.density, task.config.k) == (report.choice.density, report.choice.k)
    assert task.record.val_accuracy == report.choice.val_accuracy
    assert tuple(s.k for s in task.kwta) == report.choice.k_units
    assert json.loads(report.to_json())["chosen"] == report.chosen


def test_tune_reports_each_trial_then_replays_the_chosen_one(
    tuned: tuple[SparseCL, TuneReport, list[ProgressEvent]],
) -> None:
    _, report, events = tuned
    summaries = [e for e in events if e.tune is not None]
    assert [len(e.tune.trials) for e in summaries if e.tune] == [1, 2, 3]
    assert [e.tune.chosen for e in summaries if e.tune] == [-1, -1, report.chosen]
    last = events.index(summaries[-1])
    assert {e.phase for e in events[:last]} == {"tune"}
    assert [e.phase for e in events[last + 1 :]][-1] == "commit"
    assert {"train", "prune"} <= {e.phase for e in events[last + 1 :]}


def test_tune_commits_the_task_a_direct_learn_with_its_choice_gives(
    tuned: tuple[SparseCL, TuneReport, list[ProgressEvent]], three_tasks: list[TaskData]
) -> None:
    model, report, _ = tuned
    direct = SparseCL(TINY)
    direct.learn_task("t1", three_tasks[0], config=FAST)
    choice = dataclasses.replace(FAST, density=report.choice.density, k=report.choice.k)
    direct.learn_task("t2", three_tasks[1], config=choice)
    for a, b in zip(model.task("t2").masks, direct.task("t2").masks, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(model.backbone.weights, direct.backbone.weights, strict=True):
        assert torch.equal(a, b)


def test_tune_trials_leave_the_backbone_owners_and_earlier_tasks_bit_identical(
    three_tasks: list[TaskData], probe: TaskData
) -> None:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    logits = model.logits("t1", probe.x)
    weights = [w.clone() for w in model.backbone.weights]
    owners = [m.clone() for m in model.owners.maps]
    model.prepare_tuned("t2", three_tasks[1], config=FAST, candidates=PAIRS[:2])
    assert all(torch.equal(a, b) for a, b in zip(model.backbone.weights, weights, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(model.owners.maps, owners, strict=True))
    assert list(model.tasks) == ["t1"]
    model.tune("t2", three_tasks[1], config=FAST, candidates=PAIRS[:2])
    assert torch.equal(model.logits("t1", probe.x), logits)


@pytest.mark.parametrize(
    ("candidates", "tolerance", "match"),
    [
        ((), 0.005, "1 to"),
        (((0.1, "auto"),) * (MAX_TRIALS + 1), 0.005, "1 to"),
        (((0.1, "auto"),), 2.0, "tolerance"),
        (((0.0, "auto"),), 0.005, "density"),
        (((0.1, 200),), 0.005, "k=200"),
    ],
)
def test_bad_candidates_are_refused_before_any_trial(
    three_tasks: list[TaskData], candidates: tuple, tolerance: float, match: str
) -> None:
    model = SparseCL(TINY)
    events: list[ProgressEvent] = []
    with pytest.raises(InvalidInputError, match=match):
        model.tune("t", three_tasks[0], None, FAST, events.append, candidates, tolerance)
    assert not events and not model.tasks
