"""An inference replica follows the store: the tasks its trainer commits, served without a restart.

Every ``poll_seconds`` the replica asks the store for its committed task runs (one search,
no artifact) and replays those with ids past its own, in id order, exactly as a start does
(``SparseCL.commit_task``, then the plan compiled before the next poll): so a replica
serves what the trainer's process serves, bit for bit. The trainer commits one id after
another, so a task appears at most ``poll_seconds`` plus one artifact download after its
AddTask returned. A task the replica cannot read (its artifact missing or corrupt) holds
back the ids after it, which a replay could not place; the replica logs why and keeps
serving what it has, and so does it while the store is unreachable.

A task the trainer deleted (its run tagged ``sparsecl.state=deleted`` after id P) is
deleted here at the same place in the replay, right after id P, as a start does
(storecheck.py): so the replica frees the same weights and keeps serving bit for bit. The
trainer deletes nothing while a task trains, so a delete is stored before any later id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from .dataplane import DataPlane
from .store import CommittedTask, DamagedTask

log = logging.getLogger("sparsecl.server")


@dataclass(frozen=True)
class Followed:
    """What one poll did: the tasks it added (names, id order) and why it stopped short."""

    added: tuple[str, ...]
    held_back: str = ""  # the damaged task that holds back later ids, if any


class Follower:
    """Replays into ``plane`` the tasks committed to its store since the last poll."""

    def __init__(self, plane: DataPlane, seconds: float) -> None:
        self.plane = plane
        self.seconds = seconds
        self._said = ""  # the last problem logged (each is logged once, not every poll)

    def poll(self) -> Followed:
        """Replay the tasks committed since the last poll; StoreUnavailableError if the
        store cannot be read (nothing changes then)."""
        plane, store = self.plane, self.plane.store
        runs = store.committed_runs()
        if plane.damaged:  # the replay placed no task after a damaged one (storecheck.py)
            names = ", ".join(sorted(plane.damaged))
            return Followed((), f"damaged task(s) {names}: restart the replica once repaired")
        with plane.lock:
            last, retired = plane.model.last_id, set(plane.model.retired)
        deletes: dict[int, list[int]] = {}  # task ids to delete, by the id after which
        for task_id, r in runs.items():
            position = store.deleted_after(r)
            if position and task_id not in retired:
                deletes.setdefault(position, []).append(task_id)
        if any(position < last for position in deletes):
            return Followed((), "a task was deleted before ids this replica served: restart it")
        added: list[str] = []
        while True:
            for task_id in deletes.pop(last, []):
                self._delete(task_id, store.deleted_after(runs[task_id]))
            if last + 1 not in runs:
                break
            task = store.read(runs[last + 1], last + 1)
            if isinstance(task, DamagedTask):
                return Followed(tuple(added), task.error)
            self._replay(task)
            if not task.deleted_after:
                added.append(task.state.name)
            last += 1
        if any(i > last for i in runs):
            return Followed(tuple(added), f"task id {last + 1} is not committed yet")
        self._refresh_versions(runs)
        return Followed(tuple(added))

    def _delete(self, task_id: int, position: int) -> None:
        """Delete a replayed task the trainer deleted after id ``position``."""
        plane = self.plane
        with plane.lock:
            stored = next(t for t in plane.stored.values() if t.state.record.id == task_id)
            plane.forget(replace(stored, deleted_after=position))
        log.info("task %r deleted by the trainer is no longer served", stored.state.name)

    def _replay(self, task: CommittedTask) -> None:
        """Commit a stored task into the served model and compile its plan."""
        plane, name = self.plane, task.state.name
        with plane.lock:
            plane.model.commit_task(task.state)
            plane.stored[name] = task
            plane.failed.pop(name, None)
        plane.model.plan(name)

    def _refresh_versions(self, runs: dict[int, Any]) -> None:
        """Take the registry's model version of tasks committed before it was registered."""
        plane, store = self.plane, self.plane.store
        with plane.lock:
            stale = [t for t in plane.stored.values() if not t.model_version]
            for stored in stale:
                version = store.version_of(runs.get(stored.state.record.id))
                if version:
                    plane.stored[stored.state.name] = replace(stored, model_version=version)

    async def run(self) -> None:
        """Poll until cancelled; problems are logged (once each), never fatal."""
        while True:
            await asyncio.sleep(self.seconds)
            started = time.perf_counter()
            try:
                followed = await asyncio.to_thread(self.poll)
            except Exception as e:  # the store is down or answers nonsense: try again later
                self._say(f"could not read the store for new tasks: {e}")
                continue
            for name in followed.added:
                log.info(
                    "task %r committed by the trainer is served now (poll took %.0f ms)",
                    name,
                    1000 * (time.perf_counter() - started),
                )
            if followed.held_back:
                self._say(f"later tasks are held back: {followed.held_back}")
            else:
                self._said = ""

    def _say(self, problem: str) -> None:
        if problem != self._said:
            log.warning("%s", problem)
            self._said = problem
