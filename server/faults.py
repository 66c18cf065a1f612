"""Fault injection for crash tests: ``SPARSECL_CRASH_AT=POINT:TASK`` SIGKILLs the server there.

Points, in the order a task reaches them: ``train``, ``prune``, ``retrain`` (first progress
event of that phase); in the commit (server/store.py): ``artifacts-uploaded`` (the task's
files are in MLflow, their sha256 tag is not), ``artifacts-written`` (the sha256 tag is
written, the commit tag is not), ``committed`` (the commit tag is written, the registry
entry and memory are not), ``registered`` (the task's registered model exists, its version
does not) and ``model-version`` (the version exists, the run's tag naming it does not);
in a delete (DeleteTask, TASK the task deleted): ``delete-marked`` (its place in the replay
is tagged, the delete point is not), ``deleted`` (right after the delete point) and
``unregistered`` (its registry version is tagged deleted, the run's tag saying so is not).
Unset, it does nothing.
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "SPARSECL_CRASH_AT"


def crash_point(point: str, task: str) -> None:
    """Die at once, as on SIGKILL, when the environment asks for this point of this task."""
    if os.environ.get(ENV) == f"{point}:{task}":
        print(f"sparsecl: fault injection: SIGKILL at {point} of task {task!r}", flush=True)
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
