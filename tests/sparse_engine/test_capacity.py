"""Capacity that never runs out: a task the free weights cannot cover is learned over the
frozen weights of earlier tasks (supermask), or over them plus the free ones left (mix)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from sparse_engine.capacity import CapacityTrainer, learned_as
from sparse_engine.data import TaskData
from sparse_engine.engine import InferenceEngine
from sparse_engine.model import SparseCL
from sparse_engine.saliency import keep_count
from sparse_engine.state import dumps, loads
from sparse_engine.task import TaskNet

from .conftest import FAST, TINY

FULL = dataclasses.replace(FAST, density=1.0)  # owns every weight: nothing left free
MOST = dataclasses.replace(FAST, density=0.95)  # leaves 5 % free, under FAST's 10 % budget


def exhausted(three_tasks: list[TaskData], first: object = FULL) -> SparseCL:
    """A model whose first task took every free weight (or ``first``'s share)."""
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=first)  # type: ignore[arg-type]
    return model


@pytest.mark.parametrize(
    ("free", "expected"),
    [
        ((100, 100), "free"),  # every layer covers its budget of 100
        ((99, 500), "mix"),  # one layer short, free weights left
        ((0, 500), "mix"),  # one layer empty, another not
        ((0, 0), "supermask"),
    ],
)
def test_a_layer_short_of_its_budget_sends_the_task_over_frozen_weights(
    free: tuple[int, int], expected: str
) -> None:
    assert learned_as(0.1, free, (1000, 1000)) == expected


def test_a_supermask_by_necessity_task_writes_no_backbone_weight_and_leaves_every_earlier_task_bit_identical(  # noqa: E501
    three_tasks: list[TaskData], probe: TaskData
) -> None:
    model = exhausted(three_tasks)
    weights = [w.clone() for w in model.backbone.weights]
    owners = [m.clone() for m in model.owners.maps]
    t1 = model.logits("t1", probe.x)
    record = model.learn_task("t2", three_tasks[1], config=FAST)
    assert (record.learned_as, record.weights_owned) == ("supermask", 0)
    assert all(torch.equal(a, b) for a, b in zip(model.backbone.weights, weights, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(model.owners.maps, owners, strict=True))
    assert torch.equal(model.logits("t1", probe.x), t1)
    fresh = InferenceEngine(model.spec).logits(model.task("t1"), model.backbone.weights, probe.x)
    assert torch.equal(fresh, t1)


def test_a_supermask_task_learns_its_labels_at_its_density(
    three_tasks: list[TaskData],
) -> None:
    model = exhausted(three_tasks)
    record = model.learn_task("t2", three_tasks[1], config=FAST)
    assert record.val_accuracy > 0.8
    assert record.density == pytest.approx((0.1, 0.1), abs=1e-3)
    assert record.weights_read == sum(int(m.sum()) for m in model.task("t2").masks)


def test_the_engine_serves_a_task_that_owns_nothing_as_its_reference_does(
    three_tasks: list[TaskData], probe: TaskData
) -> None:
    model = exhausted(three_tasks)
    model.learn_task("t2", three_tasks[1], config=FAST)
    reference = TaskNet(model.spec, model.backbone.weights, model.task("t2"))(probe.x)
    torch.testing.assert_close(model.logits("t2", probe.x), reference, rtol=1e-5, atol=1e-5)


def test_a_mix_task_takes_every_free_weight_left_and_owns_them(
    three_tasks: list[TaskData], probe: TaskData
) -> None:
    model = exhausted(three_tasks, MOST)
    free = model.owners.free()
    frozen = [(w.clone(), ~f) for w, f in zip(model.backbone.weights, free, strict=True)]
    t1 = model.logits("t1", probe.x)
    record = model.learn_task("t2", three_tasks[1], config=FAST)
    assert record.learned_as == "mix"
    assert record.weights_owned == sum(int(f.sum()) for f in free)
    for mask, f, mine in zip(model.task("t2").masks, free, model.owners.owned_by(2), strict=True):
        assert bool(mask[f].all()) and torch.equal(mine, f)
        assert int(mask.sum()) == keep_count(FAST.density, mask.numel())
    for w, (before, was_owned) in zip(model.backbone.weights, frozen, strict=True):
        assert torch.equal(w[was_owned], before[was_owned])
    assert torch.equal(model.logits("t1", probe.x), t1)


def test_the_capacity_trainer_gives_no_gradient_to_an_owned_weight(
    three_tasks: list[TaskData],
) -> None:
    model = exhausted(three_tasks, MOST)
    owned = model.owners.owned()
    trainer = CapacityTrainer(model.backbone, owned, 2, FAST, torch.Generator().manual_seed(0))
    x, y = three_tasks[1].x[:64], (three_tasks[1].y[:64] == 3).long()
    F.cross_entropy(trainer(x), y).backward()
    for p, o in zip(trainer.free, owned, strict=True):
        assert p.grad is not None
        assert not bool(p.grad[o].any())  # frozen: a constant of the forward pass
        assert bool(p.grad[~o].any())  # the free weights left do learn
    assert all(s.grad is not None and bool(s.grad.any()) for s in trainer.scores)


def test_a_stored_supermask_task_replays_bit_for_bit(
    three_tasks: list[TaskData], probe: TaskData
) -> None:
    model = exhausted(three_tasks, MOST)
    model.learn_task("t2", three_tasks[1], config=FAST)  # mix
    model.learn_task("t3", three_tasks[2], config=FAST)  # supermask: nothing left
    assert [r.learned_as for r in model.records()] == ["free", "mix", "supermask"]
    replayed = SparseCL(TINY)
    for task in sorted(model.tasks.values(), key=lambda t: t.record.id):
        replayed.commit_task(loads(dumps(task)))
    for a, b in zip(replayed.backbone.weights, model.backbone.weights, strict=True):
        assert torch.equal(a, b)
    assert [r.learned_as for r in replayed.records()] == ["free", "mix", "supermask"]
    for name in ("t1", "t2", "t3"):
        assert torch.equal(replayed.logits(name, probe.x), model.logits(name, probe.x))


def test_deleting_the_task_whose_weights_a_supermask_task_reads_leaves_it_bit_identical(
    three_tasks: list[TaskData], probe: TaskData
) -> None:
    model = exhausted(three_tasks)
    model.learn_task("t2", three_tasks[1], config=FAST)
    t2 = model.logits("t2", probe.x)
    deletion = model.delete_task("t1")
    assert sum(deletion.retired) == sum(int(m.sum()) for m in model.task("t2").masks)
    fresh = InferenceEngine(model.spec).logits(model.task("t2"), model.backbone.weights, probe.x)
    assert torch.equal(fresh, t2)


def test_a_capacity_task_reads_no_earlier_weight_in_a_layer_whose_reuse_is_none(
    three_tasks: list[TaskData],
) -> None:
    """Per-layer reuse ``none,all`` with layer 2 short: layer 2 falls back to scores over
    frozen weights, layer 1 still chooses (and reads) free weights only."""
    model = SparseCL(TINY)
    g = torch.Generator().manual_seed(1)
    owned = [
        torch.rand(layer.weight_shape, generator=g) < share
        for layer, share in zip(model.spec.layers, (0.5, 0.95), strict=True)
    ]
    candidates = [~owned[0], torch.ones_like(owned[1])]
    trainer = CapacityTrainer(
        model.backbone, owned, 2, FAST, torch.Generator().manual_seed(0), candidates=candidates
    )
    x, y = three_tasks[1].x[:64], (three_tasks[1].y[:64] == 3).long()
    F.cross_entropy(trainer(x), y).backward()
    trainer.update_masks()
    first, second = trainer.masks
    assert not bool((first & owned[0]).any())  # layer 1: free weights only
    assert int(first.sum()) == keep_count(FAST.density, first.numel())
    assert bool((second & owned[1]).any()) and bool((second & ~owned[1]).sum() == (~owned[1]).sum())
    assert not bool(trainer.weights()[0][owned[0]].any())  # no layer-1 earlier value is read
