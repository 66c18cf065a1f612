from __future__ import annotations

import dataclasses

import pytest
import torch

from sparse_engine.data import TaskData
from sparse_engine.model import SparseCL
from sparse_engine.rigl import drop_fraction, update_mask
from sparse_engine.saliency import keep_count

from .conftest import FAST, TINY

RIGL = dataclasses.replace(FAST, method="rigl", epochs=3, rigl_interval=2, rigl_drop_fraction=0.5)


def test_update_drops_the_smallest_free_weights_and_regrows_where_gradients_are_largest() -> None:
    mask = torch.tensor([True, True, True, True, False, False, False, False])
    free = torch.tensor([False, True, True, True, True, True, True, False])
    weight = torch.tensor([0.0, 0.5, -0.1, 0.9, 0.0, 0.0, 0.0, 0.0])
    grad = torch.tensor([9.0, 0.0, 0.0, 0.0, 0.2, -3.0, 1.0, 8.0])
    new, grown = update_mask(mask, free, weight, grad, fraction=2 / 3)
    # 2 of the 3 kept free weights (0.5, -0.1 are smallest) go; position 0 is owned: stays;
    # the largest free gradients outside the new mask are at 5 and 6 (7 is owned, not free)
    assert new.tolist() == [True, False, False, True, False, True, True, False]
    assert grown.tolist() == [False, False, False, False, False, True, True, False]
    assert int(new.sum()) == int(mask.sum())


def test_drop_fraction_decays_by_a_cosine_to_zero() -> None:
    assert drop_fraction(0, 100, 0.3) == pytest.approx(0.3)
    assert drop_fraction(50, 100, 0.3) == pytest.approx(0.15)
    assert drop_fraction(100, 100, 0.3) == 0.0


def test_rigl_keeps_every_layer_at_its_density_after_every_update(
    three_tasks: list[TaskData],
) -> None:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    record = model.learn_task("t2", three_tasks[1], config=RIGL)
    layers = [h for h in record.history if h["phase"] == "rigl" and "layer" in h]
    updates = [h for h in record.history if h["phase"] == "rigl" and "moved" in h]
    assert len(updates) >= 3
    assert sum(int(h["moved"]) for h in updates) > 0  # the mask really changed
    sizes = [layer.numel for layer in model.spec.layers]
    for h in layers:
        assert h["kept"] == keep_count(RIGL.density, sizes[int(h["layer"])])
    for mask, n in zip(model.task("t2").masks, sizes, strict=True):
        assert int(mask.sum()) == keep_count(RIGL.density, n)


def test_rigl_never_writes_earlier_tasks(three_tasks: list[TaskData], probe: TaskData) -> None:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    before = model.logits("t1", probe.x)
    owned = model.owners.owned()
    values = [w[o].clone() for w, o in zip(model.backbone.weights, owned, strict=True)]
    model.learn_task("t2", three_tasks[1], config=RIGL)
    for w, o, v in zip(model.backbone.weights, owned, values, strict=True):
        assert torch.equal(w[o], v)
    assert torch.equal(model.logits("t1", probe.x), before)


def test_rigl_learns_from_a_random_sparse_start(three_tasks: list[TaskData]) -> None:
    record = SparseCL(TINY).learn_task("t", three_tasks[0], config=RIGL)
    assert record.val_accuracy > 0.9  # digits 0 vs 1; chance is 0.5
