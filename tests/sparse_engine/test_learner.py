from __future__ import annotations

import dataclasses

import pytest
import torch

from sparse_engine.backbone import Backbone, BackboneSpec
from sparse_engine.config import ProgressEvent
from sparse_engine.data import TaskData
from sparse_engine.learner import TaskTrainer
from sparse_engine.model import SparseCL
from sparse_engine.saliency import density_schedule

from .conftest import FAST, TINY


def test_iterative_pruning_follows_the_density_schedule(three_tasks: list[TaskData]) -> None:
    config = dataclasses.replace(FAST, density=0.1, prune_rounds=3)
    events: list[ProgressEvent] = []
    SparseCL(TINY).learn_task("t", three_tasks[0], config=config, progress=events.append)
    pruned = [e.density for e in events if e.phase == "prune"]
    assert pruned == pytest.approx(density_schedule(0.1, 3), abs=1e-3)


def test_progress_reports_every_phase_in_order(three_tasks: list[TaskData]) -> None:
    events: list[ProgressEvent] = []
    SparseCL(TINY).learn_task("t", three_tasks[0], config=FAST, progress=events.append)
    phases = [e.phase for e in events if e.step == 0]
    assert phases == ["train", "prune", "retrain", "commit"]
    assert events[-1].density == pytest.approx(0.1, abs=1e-3)


def test_rewind_restores_every_trainable_value_to_its_start() -> None:
    spec = BackboneSpec.parse("mlp:12-6")
    backbone = Backbone(spec)
    trainer = TaskTrainer(
        backbone, [torch.zeros(6, 12, dtype=torch.bool)], 3, FAST, torch.Generator().manual_seed(0)
    )
    start = [p.detach().clone() for p in trainer.parameters()]
    with torch.no_grad():
        for p in trainer.parameters():
            p.add_(1.0)
    trainer.rewind()
    assert all(torch.equal(p, s) for p, s in zip(trainer.parameters(), start, strict=True))


def test_gradients_never_reach_owned_positions() -> None:
    spec = BackboneSpec.parse("mlp:12-6")
    owned = torch.zeros(6, 12, dtype=torch.bool)
    owned[:3] = True
    trainer = TaskTrainer(Backbone(spec), [owned], 3, FAST, torch.Generator().manual_seed(0))
    trainer(torch.randn(5, 12)).sum().backward()
    grad = trainer.free[0].grad
    assert grad is not None
    assert torch.equal(grad[owned], torch.zeros(int(owned.sum())))
    assert bool((grad[~owned] != 0).any())


def test_rewound_lottery_ticket_still_learns(three_tasks: list[TaskData]) -> None:
    config = dataclasses.replace(FAST, retrain="rewind", retrain_epochs=2, prune_rounds=2)
    model = SparseCL(TINY)
    record = model.learn_task("t", three_tasks[0], config=config)
    assert record.val_accuracy > 0.9  # digits 0 vs 1; chance is 0.5
