"""Rebuild the served model from the store, quarantining what is damaged; ``sparsecl store check``.

Both the server's start and ``sparsecl store check`` call ``rebuild``: one load, one replay.

Replay rule. Tasks are replayed by ``SparseCL.commit_task`` in id order; a task owns the
weights of its mask that were free when it was committed and reads the earlier tasks'
weights under the rest of its mask. A damaged task whose state cannot be read is replaced
by an empty placeholder (no mask, no weights), so the later ids stay in step; the weights
it owned then look free. ``commit_task`` checks that a task's own values fill exactly
mask ∩ free; since the replayed free set is a superset of the true one, that count is
right exactly when the mask touches none of the unreplayed weights. So a later task
either replays bit for bit (served), or fails the check because it reads weights of a
damaged task (quarantined too, and itself replaced by a placeholder). A damaged task
whose state is intact (only its tags contradict the store) is replayed, so tasks reading
it stay served, but it is not served itself. Placeholders and damaged tasks are removed
from ``model.tasks`` once the replay is done; while anything is damaged the service
refuses new tasks (they could claim a damaged task's weights and make it unrecoverable).

Deleted tasks are replayed like the others, and each is deleted (``SparseCL.delete_task``)
right after the commit of the id its run names (``sparsecl.deleted_after``), where the
trainer deleted it: the free set and free pool every later task met are rebuilt exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from sparse_engine.config import TaskConfig
from sparse_engine.errors import TaskExistsError
from sparse_engine.model import SparseCL
from sparse_engine.standalone import dumps_weights, read_values
from sparse_engine.task import Task, TaskRecord

from .datadir import DB
from .store import (
    CommittedTask,
    DamagedTask,
    FailedTask,
    StoreCorruptError,
    StoreUnavailableError,
    TaskStore,
    redact,
)

HEALTHY, DAMAGED, UNUSABLE = 0, 1, 2  # exit statuses of `sparsecl store check`


@dataclass(frozen=True)
class Rebuilt:
    """The store as served: committed tasks (replayed), damaged ones (quarantined), failed,
    and deleted ones (replayed, then deleted: no longer served)."""

    committed: list[CommittedTask]
    damaged: list[DamagedTask]
    failed: list[FailedTask]
    deleted: list[CommittedTask] = field(default_factory=list)


def rebuild(store: TaskStore, model: SparseCL, repair: bool = True) -> Rebuilt:
    """Load the store and replay its committed tasks into ``model`` (see the module
    docstring); a task that cannot be replayed is quarantined, never fatal."""
    contents = store.load(repair)
    entries: list[CommittedTask | DamagedTask] = [*contents.committed, *contents.damaged]
    by_id: dict[int, list[CommittedTask | DamagedTask]] = {}
    for entry in entries:
        by_id.setdefault(_task_id(entry), []).append(entry)
    no_id = by_id.pop(0, [])  # no usable id tag: nothing to replay
    quarantined = [d for d in no_id if isinstance(d, DamagedTask)]
    served: list[CommittedTask] = []
    deleted: list[CommittedTask] = []
    deletes: dict[int, list[CommittedTask]] = {}  # by the id after which each was deleted
    for entry in contents.committed:
        if entry.deleted_after:
            deletes.setdefault(entry.deleted_after, []).append(entry)
    last = max(by_id, default=0)
    unread: list[DamagedTask] = []  # damaged tasks whose weights could not be replayed
    hidden: list[str] = []  # names in model.tasks to drop once the replay is done
    for task_id in range(1, last + 1):
        claims = by_id.get(task_id, [])  # load fills every id; several = a conflict
        state = claims[0].state if len(claims) == 1 else None
        if state is not None:
            try:
                model.commit_task(state)
            except (ValueError, TaskExistsError) as e:
                claims = [_unreplayable(claims[0], str(e), unread)]
                state = None
        if state is None:
            placeholder = _placeholder(model, task_id)
            model.commit_task(placeholder)
            hidden.append(placeholder.name)
            lost = [c for c in claims if isinstance(c, DamagedTask)]
            unread += lost
            quarantined += lost
        elif isinstance(claims[0], CommittedTask):
            if not claims[0].deleted_after:
                served.append(claims[0])
        else:
            hidden.append(state.name)
            quarantined.append(claims[0])
        positions = [task_id] if task_id < last else [p for p in deletes if p >= task_id]
        for gone in [t for p in sorted(positions) for t in deletes.get(p, [])]:
            replayed = model.tasks.get(gone.state.name)
            if replayed is not None and replayed.record.id == gone.state.record.id:
                model.delete_task(gone.state.name)
                deleted.append(gone)
    for name in hidden:
        del model.tasks[name]
    quarantined.sort(key=lambda d: d.task_id)
    return Rebuilt(served, quarantined, contents.failed, deleted)


def add_mlflow_models(store: TaskStore, model: SparseCL, tasks: list[CommittedTask]) -> int:
    """Make the ``task/`` of each replayed task stored before MLflow models existed an
    MLflow model (server/pyfunc.py), from the rebuilt backbone: a writer's start does it
    once per task (the run's tag says it is done), never changing the committed state.
    Returns how many it wrote."""
    added = 0
    for task in tasks:
        if not task.mlflow_model:
            weights = dumps_weights(model.spec, read_values(model, task.state))
            store.log_model(task.run_id, task.state, weights)
            added += 1
    return added


def _task_id(entry: CommittedTask | DamagedTask) -> int:
    return entry.state.record.id if isinstance(entry, CommittedTask) else entry.task_id


def _unreplayable(
    entry: CommittedTask | DamagedTask, error: str, unread: list[DamagedTask]
) -> DamagedTask:
    """The damaged entry of a task ``commit_task`` refused during the replay."""
    if unread:
        names = ", ".join(f"{d.name!r} (id {d.task_id})" for d in unread)
        why = f"its mask reads weights of damaged task(s) {names}, which cannot be replayed"
    else:
        why = f"it cannot be replayed onto the backbone: {error}"
    if isinstance(entry, DamagedTask):
        return DamagedTask(
            entry.name, entry.task_id, entry.run_id, f"{entry.error}; {why}", entry.created_ms
        )
    name, task_id = entry.state.name, entry.state.record.id
    return DamagedTask(
        name,
        task_id,
        entry.run_id,
        f"run {entry.run_id} of task {name!r} (id {task_id}): {why}; it is served again once "
        "those are restored",
        entry.created_ms,
    )


def _placeholder(model: SparseCL, task_id: int) -> Task:
    """An empty task (no mask, no weights) holding id ``task_id`` during the replay; its
    name has a space, which no real task name can have."""
    layers = model.spec.layers
    record = TaskRecord(
        id=task_id,
        name=f"damaged #{task_id}",
        classes=(),
        density=tuple(0.0 for _ in layers),
        weights_owned=0,
        weights_read=0,
        val_accuracy=0.0,
        free_capacity=tuple(model.free_capacity()),
        seconds=0.0,
    )
    return Task(
        record=record,
        config=TaskConfig(),
        masks=tuple(torch.zeros(layer.weight_shape, dtype=torch.bool) for layer in layers),
        own_values=tuple(torch.zeros(0) for _ in layers),
        biases=(),
        kwta=(),
        head_weight=torch.zeros(0, 0),
        head_bias=torch.zeros(0),
    )


def check(tracking_uri: str, artifact_root: Path | None, experiment: str) -> tuple[int, list[str]]:
    """``sparsecl store check``: the store's health as report lines, and the exit status
    (0 healthy, 1 something damaged, 2 the store cannot be opened). Repairs nothing."""
    where = f"{redact(tracking_uri)} (experiment {experiment!r})"
    if artifact_root is not None and not (artifact_root.parent / DB).is_file():
        return UNUSABLE, [f"no sparsecl store in {artifact_root.parent} (no {DB})"]
    try:
        store = TaskStore(tracking_uri, artifact_root, experiment)
        spec, seed = store.open(None, 0, "", create=False)
        rebuilt = rebuild(store, SparseCL(spec, seed), repair=False)
    except (StoreUnavailableError, StoreCorruptError, ValueError) as e:
        return UNUSABLE, [f"store {where} cannot be opened: {e}"]
    lines = [f"store {where}: backbone {spec} (seed {seed})"]
    if store.relocated_from:
        lines.append(
            f"adopted a moved or copied data dir: artifact locations {store.relocated_from}"
            f" now point to {artifact_root}"
        )
    rows: list[tuple[int, str]] = [
        (t.state.record.id, f"{t.state.name}: committed, run {t.run_id}") for t in rebuilt.committed
    ]
    rows += [(d.task_id, f"{d.name}: DAMAGED, {d.error}") for d in rebuilt.damaged]
    rows += [
        (t.state.record.id, f"{t.state.name}: deleted (after id {t.deleted_after}), run {t.run_id}")
        for t in rebuilt.deleted
    ]
    lines += [f"{i or '-':>4}  {text}" for i, text in sorted(rows, key=lambda r: r[0])]
    lines += [f"{'-':>4}  {f.name}: failed, run {f.run_id}: {f.error}" for f in rebuilt.failed]
    counts = (
        f"{len(rebuilt.committed)} committed, {len(rebuilt.damaged)} damaged, "
        f"{len(rebuilt.failed)} failed, {len(rebuilt.deleted)} deleted"
    )
    if rebuilt.damaged:
        lines.append(
            f"DAMAGED: {counts}. Damaged tasks are not served and new tasks are refused "
            "until the damaged runs or artifacts are restored (sparsecl restore BACKUP "
            "DATA_DIR, or put the named artifact back)"
        )
        return DAMAGED, lines
    lines.append(f"healthy: {counts}")
    return HEALTHY, lines
