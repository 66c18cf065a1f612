"""The load test's short form: benchmarks/load.py in its own process against the shared server."""

from __future__ import annotations

import json
import subprocess
import sys

from ..serving import ROOT
from .conftest import Limited


def test_short_load_run_answers_every_predict_while_tasks_are_added(limited: Limited) -> None:
    args = ["--address", limited.server.address, "--names", "A,B", "--seconds", "3"]
    args += ["--workers", "4", "--max-requests", "400", "--batch", "16", "--add-epochs", "1"]
    done = subprocess.run(
        [sys.executable, "benchmarks/load.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["errors"] == 0 and result["requests"] > 0
    added = result["tasks_added_during_load"]
    assert added and all(t["state"] == "committed" for t in added)
