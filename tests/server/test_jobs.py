"""A task's progress total (TaskConfig.total_epochs): the epochs each method actually runs."""

from __future__ import annotations

import dataclasses

import pytest

from sparse_engine.config import ProgressEvent, TaskConfig
from sparse_engine.mnist import Mnist, digits_task
from sparse_engine.model import SparseCL

from ..serving import FAST, TINY

BASE = TaskConfig(**FAST)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        {"method": "supermask", "epochs": 2, "retrain_epochs": 1},
        {"method": "rigl", "epochs": 1, "retrain_epochs": 2},
        {"prune_rounds": 2, "retrain_epochs": 1},
    ],
    ids=["supermask", "rigl", "prune-2-rounds"],
)
def test_total_epochs_is_what_the_learner_runs(mnist: Mnist, changes: dict[str, object]) -> None:
    config = dataclasses.replace(BASE, **changes)  # type: ignore[arg-type]
    train = digits_task([0, 1], 120, mnist)
    events: list[ProgressEvent] = []
    SparseCL(TINY).learn_task("t", train, None, config, events.append)
    ran = max(e.epoch for e in events if e.phase in ("train", "retrain"))
    assert config.total_epochs == ran
