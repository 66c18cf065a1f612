from __future__ import annotations

import dataclasses

import pytest
import torch

from sparse_engine.data import TaskData
from sparse_engine.model import SparseCL
from sparse_engine.saliency import keep_count
from sparse_engine.supermask import straight_through
from sparse_engine.trainer import TaskTrainer

from .conftest import FAST, TINY

SUPERMASK = dataclasses.replace(FAST, method="supermask", epochs=2, lr=1e-2)


def test_straight_through_is_the_exact_top_k_mask_and_passes_gradients_to_scores() -> None:
    score = torch.tensor([[0.3, -0.9, 0.1], [0.05, -0.2, 0.6]], requires_grad=True)
    mask = straight_through(score, 3)
    assert torch.equal(mask.detach(), torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    (mask * torch.arange(6.0).reshape(2, 3)).sum().backward()
    assert score.grad is not None
    assert torch.equal(score.grad, torch.sign(score.detach()) * torch.arange(6.0).reshape(2, 3))


def test_supermask_leaves_every_backbone_value_it_keeps_bit_identical(
    three_tasks: list[TaskData],
) -> None:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    before = [w.clone() for w in model.backbone.weights]
    state = model.prepare_task("t2", three_tasks[1], config=SUPERMASK)
    assert all(torch.equal(w, b) for w, b in zip(model.backbone.weights, before, strict=True))
    model.commit_task(state)
    owned_by_t2 = model.owners.owned_by(2)
    assert sum(int(o.sum()) for o in owned_by_t2) > 0
    for w, b, m in zip(model.backbone.weights, before, state.masks, strict=True):
        assert torch.equal(w[m], b[m])  # kept weights: owned by t1, or claimed by t2 unchanged


def test_supermask_learns_no_bias(three_tasks: list[TaskData]) -> None:
    model = SparseCL(TINY)
    model.learn_task("t", three_tasks[0], config=SUPERMASK)
    assert all(not bool(b.any()) for b in model.task("t").biases)


def test_supermask_with_a_frozen_head_keeps_the_random_head(three_tasks: list[TaskData]) -> None:
    config = dataclasses.replace(SUPERMASK, supermask_train_head=False)
    model = SparseCL(TINY)
    reference = TaskTrainer(
        model.backbone, model.owners.owned(), 2, config, torch.Generator().manual_seed(config.seed)
    )
    model.learn_task("t", three_tasks[0], config=config)
    assert torch.equal(model.task("t").head_weight, reference.head.weight.detach())


def test_supermask_keeps_the_density_of_every_layer(three_tasks: list[TaskData]) -> None:
    model = SparseCL(TINY)
    model.learn_task("t", three_tasks[0], config=SUPERMASK)
    for mask, layer in zip(model.task("t").masks, model.spec.layers, strict=True):
        assert int(mask.sum()) == keep_count(SUPERMASK.density, layer.numel)


def test_supermask_on_untrained_weights_reaches_well_above_chance(
    three_tasks: list[TaskData],
) -> None:
    record = SparseCL(TINY).learn_task("t", three_tasks[0], config=SUPERMASK)
    assert record.val_accuracy > 0.9  # digits 0 vs 1; chance is 0.5


def test_supermask_forgets_nothing_of_earlier_tasks(
    three_tasks: list[TaskData], probe: TaskData
) -> None:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    before = model.logits("t1", probe.x)
    model.learn_task("t2", three_tasks[1], config=SUPERMASK)
    second = model.logits("t2", probe.x)
    model.learn_task("t3", three_tasks[2], config=SUPERMASK)
    assert torch.equal(model.logits("t1", probe.x), before)
    assert torch.equal(model.logits("t2", probe.x), second)


def test_committed_supermask_task_predicts_as_it_was_scored(three_tasks: list[TaskData]) -> None:
    train, val = three_tasks[1].split(0.2, seed=1)
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    record = model.learn_task("t2", train, val, config=SUPERMASK)
    assert model.accuracy("t2", val) == pytest.approx(record.val_accuracy, abs=1e-6)
