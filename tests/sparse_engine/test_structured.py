"""Structured pruning (issue 6): whole units/channels removed, compacted plans, zero forgetting."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import Tensor

from sparse_engine.backbone import BackboneSpec
from sparse_engine.config import TaskConfig
from sparse_engine.data import TaskData
from sparse_engine.errors import InvalidInputError
from sparse_engine.kwta import auto_k
from sparse_engine.model import SparseCL
from sparse_engine.plan import compile_task
from sparse_engine.state import dumps, loads
from sparse_engine.structured import structured_masks
from sparse_engine.task import Task

from .conftest import FAST, TINY

UNITS = dataclasses.replace(FAST, density=0.5, structure="units")
CNN = "cnn:1x28x28-c4-c8-32"


@pytest.fixture(scope="module")
def mlp(three_tasks: list[TaskData]) -> SparseCL:
    """An unstructured task, then a structured one, on the tiny MLP."""
    model = SparseCL(TINY)
    model.learn_task("plain", three_tasks[0], config=FAST)
    model.learn_task("units", three_tasks[1], config=UNITS)
    return model


@pytest.fixture(scope="module")
def cnn(three_tasks: list[TaskData]) -> SparseCL:
    model = SparseCL(CNN)
    model.learn_task("units", three_tasks[0], config=UNITS)
    return model


def rows_of(task: Task) -> list[Tensor]:
    units = task.units
    assert all(u is not None for u in units)
    return [u for u in units if u is not None]


def columns(mask: Tensor) -> Tensor:
    """Per input (column, or input channel of a conv), whether any weight reads it."""
    return mask.any(0).reshape(mask.shape[1], -1).any(1) if mask.ndim == 4 else mask.any(0)


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_masks_are_whole_rows_and_removed_units_lose_their_columns(
    which: str, request: pytest.FixtureRequest
) -> None:
    model: SparseCL = request.getfixturevalue(which)
    task = model.task("units")
    rows = rows_of(task)
    for i, (mask, kept) in enumerate(zip(task.masks, rows, strict=True)):
        per_row = mask.reshape(mask.shape[0], -1)
        assert not per_row[~kept].any(), f"layer {i}: a removed unit keeps weights"
        assert per_row[kept].any(1).all(), f"layer {i}: a kept unit has no weight"
        if i + 1 < len(task.masks):
            following = columns(task.masks[i + 1])
            spread = following.numel() // kept.numel()
            assert not following[~kept.repeat_interleave(spread)].any()
        assert int(kept.sum()) == round(0.5 * kept.numel())


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_removed_units_are_zero_in_every_activation(
    which: str, request: pytest.FixtureRequest, probe: TaskData
) -> None:
    model: SparseCL = request.getfixturevalue(which)
    net = model.net("units")
    rows = rows_of(model.task("units"))
    seen: list[Tensor] = []
    hooks = [k.register_forward_hook(lambda _m, _i, out: seen.append(out)) for k in net.kwta]
    net(probe.x)
    for h in hooks:
        h.remove()
    for i, (out, kept) in enumerate(zip(seen, rows, strict=True)):
        per_row = out.reshape(out.shape[0], kept.numel(), -1)
        assert torch.equal(per_row[:, ~kept], torch.zeros_like(per_row[:, ~kept])), f"layer {i}"
        assert per_row[:, kept].ne(0).any(), f"layer {i}: kept units all silent"


@pytest.mark.parametrize("which", ["mlp", "cnn"])
@pytest.mark.parametrize("batch", [1, 16, 70])
def test_engine_matches_the_reference(
    which: str, batch: int, request: pytest.FixtureRequest, probe: TaskData
) -> None:
    model: SparseCL = request.getfixturevalue(which)
    x = probe.x[:batch]
    got, want = model.logits("units", x), model.reference_logits("units", x)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), f"max |Δ| {(got - want).abs().max()}"
    assert torch.equal(got.argmax(1), want.argmax(1))


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_compacted_plan_is_smaller_than_the_uncompacted_one(
    which: str, request: pytest.FixtureRequest
) -> None:
    model: SparseCL = request.getfixturevalue(which)
    task = model.task("units")
    kwta = tuple(dataclasses.replace(s, units=None) for s in task.kwta)
    uncompacted = dataclasses.replace(task, kwta=kwta)
    small = compile_task(model.spec, model.backbone.weights, task)
    large = compile_task(model.spec, model.backbone.weights, uncompacted)
    assert small.memory.total_bytes < large.memory.total_bytes
    for s, big in zip(small.layers, large.layers, strict=True):
        assert s.units < big.units


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_compacted_plan_stays_within_the_memory_bound(
    which: str, request: pytest.FixtureRequest
) -> None:
    model: SparseCL = request.getfixturevalue(which)
    memory = compile_task(model.spec, model.backbone.weights, model.task("units")).memory
    assert memory.total_bytes <= memory.bound_bytes


@pytest.mark.parametrize("magnitude", [False, True], ids=["summed", "l2-norm"])
def test_units_with_the_highest_group_saliency_are_kept(magnitude: bool) -> None:
    spec = BackboneSpec.parse("mlp:4-3-2")
    # unit 1 has the largest single weight, unit 2 the largest sum and L2 norm
    first = torch.tensor([[0.1] * 4, [0.9, 0.0, 0.0, 0.0], [0.5] * 4])
    second = torch.ones(2, 3)
    ones = [torch.ones(3, dtype=torch.bool), torch.ones(2, dtype=torch.bool)]
    candidates = [torch.ones(3, 4, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bool)]
    units, masks = structured_masks(spec, [first, second], candidates, ones, 0.34, magnitude)
    assert units[0].tolist() == [False, False, True]
    assert masks[0].tolist() == [[False] * 4, [False] * 4, [True] * 4]
    assert units[1].tolist() == [True, False]  # a tie: the first unit, reproducibly
    assert masks[1].tolist() == [[False, False, True], [False, False, False]]


def test_compacted_dense_layer_is_stored_dense(mlp: SparseCL) -> None:
    plan = mlp.engine.plan(mlp.task("units"), mlp.backbone.weights)
    assert [layer.format for layer in plan.layers] == ["dense_rows", "dense_rows"]
    assert [layer.units for layer in plan.layers] == [32, 32]


@pytest.mark.parametrize("spec", [TINY, CNN])
def test_earlier_tasks_stay_bit_identical_across_mixed_tasks(
    spec: str, three_tasks: list[TaskData], probe: TaskData
) -> None:
    model = SparseCL(spec)
    model.learn_task("plain", three_tasks[0], config=FAST)
    plain = model.logits("plain", probe.x)
    weights = [w.clone() for w in model.backbone.weights]
    owned = model.owners.owned()
    model.learn_task("units", three_tasks[1], config=UNITS)
    units = model.logits("units", probe.x)
    model.learn_task("last", three_tasks[2], config=dataclasses.replace(FAST, epochs=2))
    assert torch.equal(plain, model.logits("plain", probe.x))
    assert torch.equal(units, model.logits("units", probe.x))
    for w, before, o in zip(model.backbone.weights, weights, owned, strict=True):
        assert torch.equal(w[o], before[o])


def test_structured_task_owns_only_free_weights_of_its_kept_block(mlp: SparseCL) -> None:
    task = mlp.task("units")
    for owned, mask in zip(mlp.owners.owned_by(task.record.id), task.masks, strict=True):
        assert not (owned & ~mask).any()
    plain = mlp.owners.owned_by(mlp.task("plain").record.id)
    assert all(not (p & o).any() for p, o in zip(plain, mlp.owners.owned_by(2), strict=True))


def test_structured_task_learns_real_mnist(mlp: SparseCL, three_tasks: list[TaskData]) -> None:
    assert mlp.accuracy("units", three_tasks[1]) > 0.85  # two classes: chance is 0.5


def test_restart_keeps_the_units_mask(mlp: SparseCL, probe: TaskData) -> None:
    state = loads(dumps(mlp.task("units")))
    for stored, kept in zip(state.kwta, rows_of(mlp.task("units")), strict=True):
        assert stored.units is not None and torch.equal(stored.units, kept)
    rebuilt = SparseCL(TINY)
    rebuilt.commit_task(loads(dumps(mlp.task("plain"))))
    rebuilt.commit_task(state)
    assert torch.equal(rebuilt.logits("units", probe.x), mlp.logits("units", probe.x))


def test_unstructured_task_stores_no_units_mask(mlp: SparseCL) -> None:
    state = loads(dumps(mlp.task("plain")))
    assert all(s.units is None for s in state.kwta)


@pytest.mark.parametrize(
    "bad",
    [
        {"structure": "neurons"},
        {"structure": "units", "method": "supermask"},
        {"structure": "units", "method": "rigl"},
    ],
)
def test_bad_structure_configs_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError, match="structure"):
        TaskConfig(**bad)  # type: ignore[arg-type]


def test_k_count_beyond_the_kept_units_is_refused(three_tasks: list[TaskData]) -> None:
    model = SparseCL(TINY)
    config = dataclasses.replace(UNITS, density=0.25, k=20)  # keeps 16 of 64 units
    with pytest.raises(InvalidInputError, match="keeps 16 of 64"):
        model.learn_task("t", three_tasks[0], config=config)
    assert not model.tasks and all(f == 1.0 for f in model.free_capacity())


def test_fractional_k_is_a_fraction_of_the_kept_units(mlp: SparseCL) -> None:
    assert [s.k for s in mlp.task("units").kwta] == [8, 8]  # 0.25 × 32 kept units


def test_stored_units_that_do_not_fit_the_layer_are_refused(mlp: SparseCL) -> None:
    state = mlp.task("units")
    bad = dataclasses.replace(state.kwta[0], units=torch.ones(7, dtype=torch.bool))
    blob = dumps(dataclasses.replace(state, kwta=(bad, *state.kwta[1:])))
    with pytest.raises(ValueError, match="do not fit 64 units"):
        loads(blob)


def test_auto_k_is_taken_of_the_kept_units(three_tasks: list[TaskData]) -> None:
    model = SparseCL(TINY)
    model.learn_task("t", three_tasks[0], config=dataclasses.replace(UNITS, k="auto"))
    assert [s.k for s in model.task("t").kwta] == [auto_k(32)] * 2  # 32 of 64 units kept
