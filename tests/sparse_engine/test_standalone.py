"""A task on its own (sparse_engine/standalone.py) answers what the model answers, bit for
bit, though its mask reads weights that earlier tasks own."""

from __future__ import annotations

import dataclasses

import pytest

from sparse_engine.config import TaskConfig
from sparse_engine.data import TaskData
from sparse_engine.model import SparseCL
from sparse_engine.standalone import StandaloneTask, dumps_weights, read_values
from sparse_engine.state import dumps

from .conftest import FAST, TINY

CONFIGS = {
    "weights": FAST,
    "dense": dataclasses.replace(FAST, density=0.5),  # layers stored dense in the plan
    "units": dataclasses.replace(FAST, structure="units", density=0.5),  # compacted plans
    "supermask": dataclasses.replace(FAST, method="supermask"),
}


# every plan format: sparse and dense linear layers, compacted units, conv layers (a tiny
# CNN learns these few examples soundly by single weights only)
CASES = [(TINY, kind) for kind in CONFIGS] + [("cnn:1x28x28-c4-c8-32", "weights")]


@pytest.mark.parametrize(("spec", "kind"), CASES)
def test_standalone_task_answers_bit_for_bit(
    three_tasks: list[TaskData], probe: TaskData, spec: str, kind: str
) -> None:
    model = SparseCL(spec)
    config: TaskConfig = dataclasses.replace(CONFIGS[kind], epochs=2)
    standalone = {}
    for i, data in enumerate(three_tasks):
        state = model.prepare_task(f"t{i}", data, config=config)
        before = read_values(model, state)  # before its commit: its own values stand in
        model.commit_task(state)
        after = read_values(model, state)
        assert all(a.equal(b) for a, b in zip(before, after, strict=True))
        standalone[state.name] = StandaloneTask(dumps(state), dumps_weights(model.spec, before))
    assert model.task("t2").record.weights_read > 0  # reads earlier tasks' weights
    for name, task in standalone.items():
        for n in (1, 2, 5, 64):
            x = probe.x[:n]
            assert task.logits(x).numpy().tobytes() == model.logits(name, x).numpy().tobytes()
            assert task.predict(x).tolist() == model.predict(name, x).tolist()
