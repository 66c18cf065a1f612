"""Fault injection for crash tests: ``SPARSECL_CRASH_AT=POINT:TASK`` SIGKILLs the server there.

Points: ``train``, ``prune``, ``retrain`` (first progress event of that phase),
``artifacts-written`` (the task's files are in MLflow, the commit tag is not) and
``committed`` (the commit tag is written, memory not yet updated). Unset, it does nothing.
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
