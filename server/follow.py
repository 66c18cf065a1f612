"""An inference replica follows the store: the tasks its trainer commits, served without a restart.

Every ``poll_seconds`` the replica asks the store for its committed task runs (one search,
no artifact) and replays those with ids past its own, in id order, exactly as a start does
(``SparseCL.commit_task``, then the plan compiled before the next poll): so a replica
serves what the trainer's process serves, bit for bit. The trainer commits one id after
another, so a task appears at most ``poll_seconds`` plus one artifact download after its
AddTask returned. A task the replica cannot read (its artifact missing or corrupt) holds
back the ids after it, which a replay could not place; the replica logs why and keeps
serving what it has, and so does it while the store is unreachable.
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
            next_id = len(plane.model.tasks) + 1
        added: list[str] = []
        for task_id in sorted(i for i in runs if i >= next_id):
            if task_id != next_id:
                return Followed(tuple(added), f"task id {next_id} is not committed yet")
            task = store.read(runs[task_id], task_id)
            if isinstance(task, DamagedTask):
                return Followed(tuple(added), task.error)
            self._replay(task)
            added.append(task.state.name)
            next_id += 1
        self._refresh_versions(runs)
        return Followed(tuple(added))

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
