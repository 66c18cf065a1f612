"""`sparsecl serve`: the process's environment and logging, then the server (app.serve)
until SIGTERM/SIGINT; the exit status says whether the store could be used."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from .config import ServerConfig
from .lock import StoreLockedError

ENVIRONMENT = {
    # Bit-identical predictions across restarts: MKL must not change its thread count or
    # code path with the machine's load (set before torch loads MKL).
    "MKL_DYNAMIC": "FALSE",
    "MKL_CBWR": "AUTO",
    # set before MLflow is imported
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # MLflow 3 sends usage telemetry from a thread at start (to config.mlflow-telemetry.io):
    # a server in a cluster has no business calling out; an operator may set it to false
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def event_loop() -> Callable[[Coroutine[Any, Any, None]], None]:
    """How the server's event loop runs: uvloop where it is installed (libuv's loop: the
    server's busiest thread spends ~13 % less CPU per one-example Predict, measured with
    benchmarks/serving.py's load, 2026-11-30), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def run(config: ServerConfig) -> int:
    """Serve ``config``; returns the process exit status (2 when the store cannot be used)."""
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from .app import serve
    from .store import StoreCorruptError, StoreUnavailableError

    try:
        event_loop()(serve(config))
    except (StoreUnavailableError, StoreCorruptError, StoreLockedError, OSError, ValueError) as e:
        print(f"sparsecl serve: error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0
