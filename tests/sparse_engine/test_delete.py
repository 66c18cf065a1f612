"""Deleting a task: exactly the weights no remaining task reads are freed, nothing else moves."""

from __future__ import annotations

import pytest
import torch

from sparse_engine.backbone import BackboneSpec
from sparse_engine.data import TaskData
from sparse_engine.errors import TaskExistsError, UnknownTaskError
from sparse_engine.model import SparseCL
from sparse_engine.owners import OwnerMap
from sparse_engine.state import dumps, loads
from sparse_engine.task import Task

from .conftest import FAST, TINY


def test_release_frees_only_unread_weights_of_retired_ids() -> None:
    owners = OwnerMap(BackboneSpec.parse("mlp:10-4"))
    first, second = torch.zeros(4, 10, dtype=torch.bool), torch.zeros(4, 10, dtype=torch.bool)
    first[0], second[1] = True, True
    owners.claim(1, [first])
    owners.claim(2, [second])
    reading = torch.zeros(4, 10, dtype=torch.bool)
    reading[0, :3] = True  # a remaining task reads three of task 1's weights
    freed = owners.release({1}, [reading])
    assert int(freed[0].sum()) == 7
    assert owners.maps[0][0].tolist() == [1, 1, 1] + [0] * 7
    assert torch.equal(owners.maps[0][1], torch.full((10,), 2, dtype=torch.int16))
    owners.release({1}, [torch.zeros(4, 10, dtype=torch.bool)])  # its last reader went
    assert int((owners.maps[0] == 1).sum()) == 0


def read_mask(model: SparseCL) -> list[torch.Tensor]:
    return [r.clone() for r in model.reading()]


def test_delete_frees_exactly_the_unread_weights_and_changes_no_other_task(
    three_tasks: list[TaskData], probe: TaskData
) -> None:
    model = SparseCL(TINY)
    for i, data in enumerate(three_tasks, 1):
        model.learn_task(f"t{i}", data, config=FAST)
    logits = {name: model.logits(name, probe.x) for name in ("t1", "t3")}
    owners = [m.clone() for m in model.owners.maps]
    weights = [w.clone() for w in model.backbone.weights]

    deletion = model.delete_task("t2")

    reading = [model.tasks["t1"].masks[i] | model.tasks["t3"].masks[i] for i in range(2)]
    for i in range(2):
        expect_freed = (owners[i] == 2) & ~reading[i]
        assert deletion.freed[i] == int(expect_freed.sum())
        assert torch.equal(model.owners.maps[i] == 0, (owners[i] == 0) | expect_freed)
        kept = (owners[i] == 2) & reading[i]  # read by t3: frozen, still under id 2
        assert torch.equal(model.owners.maps[i] == 2, kept)
        assert deletion.retired[i] == int(kept.sum())
        # every weight but the freed ones keeps its value (the free pool as after commit 3)
        assert torch.equal(model.backbone.weights[i][~expect_freed], weights[i][~expect_freed])
        assert not torch.equal(model.backbone.weights[i][expect_freed], weights[i][expect_freed])
    assert sum(deletion.retired) > 0, "t3 reads none of t2's weights: the test proves less"
    for name, before in logits.items():
        assert torch.equal(model.logits(name, probe.x), before)
    with pytest.raises(UnknownTaskError):
        model.logits("t2", probe.x)
    with pytest.raises(UnknownTaskError):
        model.delete_task("t2")

    record = model.learn_task("t2", three_tasks[1], config=FAST)  # the name is free again
    assert record.id == 4  # ids are never reused
    assert (model.owners.maps[0] == 2).sum() == deletion.retired[0]  # no one wrote id 2's
    for name, before in logits.items():
        assert torch.equal(model.logits(name, probe.x), before)

    retired = [m == 2 for m in model.owners.maps]
    model.delete_task("t3")  # the last reader of some of t2's retired weights
    reading = read_mask(model)
    for i in range(2):
        assert torch.equal(model.owners.maps[i] == 2, retired[i] & reading[i])
    assert torch.equal(model.logits("t1", probe.x), logits["t1"])


def test_a_request_that_looked_the_task_up_before_its_delete_compiles_no_plan(
    three_tasks: list[TaskData], probe: TaskData
) -> None:
    """A Predict holding the Task from before the delete must not compile it from weights
    the delete re-initialised (nor cache a plan for a task that is gone)."""
    learned = SparseCL(TINY)
    learned.learn_task("t1", three_tasks[0], config=FAST)
    learned.learn_task("t2", three_tasks[1], config=FAST)
    model = replay(TINY, [learned.tasks["t1"], learned.tasks["t2"]])  # as after a restart
    stale = model.task("t2")
    assert "t2" not in model.engine.memory()  # never predicted: no plan compiled yet
    model.delete_task("t2")
    with pytest.raises(UnknownTaskError, match="was deleted"):
        model.engine.logits(stale, model.backbone.weights, probe.x)
    assert "t2" not in model.engine.memory()


def test_task_free_inference_racing_a_delete_answers_from_the_tasks_still_served(
    three_tasks: list[TaskData],
) -> None:
    """A task-free call whose task list included a task deleted mid-call (its plan never
    compiled, so the engine refuses it) infers again among the remaining tasks."""
    learned = SparseCL(TINY)
    learned.learn_task("t1", three_tasks[0], config=FAST)
    learned.learn_task("t2", three_tasks[1], config=FAST)
    x = torch.cat([three_tasks[0].x[:20], three_tasks[1].x[:20]])
    assert set(learned.infer_task(x).tasks) == {"t1", "t2"}  # both plans are needed
    model = replay(TINY, [learned.tasks["t1"], learned.tasks["t2"]])  # no plan compiled
    run = model.engine.logits

    def delete_t2_on_first_call(*args: object) -> torch.Tensor:
        model.engine.logits = run  # type: ignore[method-assign]
        model.delete_task("t2")  # lands between the call's task list and t2's plan
        return run(*args)  # type: ignore[arg-type]

    model.engine.logits = delete_t2_on_first_call  # type: ignore[method-assign]
    got = model.infer_task(x)

    expected = model.infer_task(x)  # t1 alone, after the delete
    assert got.names == ("t1",) and set(got.tasks) == {"t1"}
    assert torch.equal(got.labels, expected.labels)
    assert torch.equal(got.confidence, expected.confidence)


def test_a_plan_handed_out_before_the_delete_keeps_its_own_values(
    three_tasks: list[TaskData], probe: TaskData
) -> None:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    before = model.logits("t1", probe.x)
    plan = model.plan("t1")
    model.delete_task("t1")  # frees and re-initialises every weight t1 owned
    assert torch.equal(model.engine.run(plan, probe.x), before)


def replay(spec: str, events: list[Task | str]) -> SparseCL:
    """A model rebuilt from stored states and deletes, in their order (what a restart does)."""
    model = SparseCL(spec)
    for event in events:
        if isinstance(event, str):
            model.delete_task(event)
        else:
            model.commit_task(loads(dumps(event)))
    return model


def test_a_replay_of_commits_and_deletes_rebuilds_the_backbone_bit_for_bit(
    three_tasks: list[TaskData], probe: TaskData
) -> None:
    model = SparseCL(TINY)
    events: list[Task | str] = []
    for name, data in (("a", three_tasks[0]), ("b", three_tasks[1])):
        model.learn_task(name, data, config=FAST)
        events.append(model.tasks[name])
    model.delete_task("a")
    model.delete_task("b")  # two deletes after one commit, in either order
    events += ["b", "a"]
    model.learn_task("a", three_tasks[2], config=FAST)
    events.append(model.tasks["a"])
    rebuilt = replay(TINY, events)
    for ours, theirs in zip(model.backbone.weights, rebuilt.backbone.weights, strict=True):
        assert torch.equal(ours, theirs)
    for ours, theirs in zip(model.owners.maps, rebuilt.owners.maps, strict=True):
        assert torch.equal(ours, theirs)
    assert torch.equal(rebuilt.logits("a", probe.x), model.logits("a", probe.x))
    assert rebuilt.next_id == model.next_id == 4
    with pytest.raises(TaskExistsError):
        rebuilt.commit_task(loads(dumps(model.tasks["a"])))
