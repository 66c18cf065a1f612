"""The `sparsecl` CLI against a real server: add-task, tasks, predict, evaluate, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from client import Client
from sparse_engine.mnist import Mnist

from ..serving import FAST, ROOT, ServerProcess, digits


@dataclass
class Cli:
    server: ServerProcess
    files: Path
    added: subprocess.CompletedProcess[str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return sparsecl(*args, "--address", self.server.address)


def sparsecl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "client.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory, mnist: Mnist) -> Iterator[Cli]:
    files = tmp_path_factory.mktemp("npz")
    x, y = digits(mnist, [0, 1])
    np.savez(files / "train.npz", x=x, y=y)
    vx, vy = digits(mnist, [0, 1], n=60, offset=300)
    np.savez(files / "val.npz", x=vx.astype(np.float32) / 255, y=vy)
    keep = np.isin(mnist.y_test, [0, 1])
    np.savez(files / "test.npz", x=mnist.x_test[keep][:200], y=mnist.y_test[keep][:200])
    server = ServerProcess(tmp_path_factory.mktemp("store")).start()
    options = [f"--{k.replace('_', '-')}={v}" for k, v in FAST.items()]
    added = sparsecl(
        "add-task",
        "zeros-ones",
        "--train",
        str(files / "train.npz"),
        "--val",
        str(files / "val.npz"),
        "--address",
        server.address,
        *options,
    )
    yield Cli(server, files, added)
    server.terminate()


def test_add_task_commits_and_reports_the_mlflow_run(cli: Cli) -> None:
    assert cli.added.returncode == 0, cli.added.stderr
    assert "task 'zeros-ones' committed" in cli.added.stdout and "MLflow run" in cli.added.stdout


def test_add_task_shows_a_progress_bar(cli: Cli) -> None:
    assert "step" in cli.added.stderr and "phase=" in cli.added.stderr


def test_tasks_json_lists_the_task(cli: Cli) -> None:
    done = cli.run("tasks", "--json")
    rows = json.loads(done.stdout)
    assert [(r["name"], r["state"], r["classes"]) for r in rows] == [
        ("zeros-ones", "committed", [0, 1])
    ]


def test_predict_saves_labels_equal_to_the_client_api(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "pred.npy"
    done = cli.run(
        "predict", "zeros-ones", "--data", str(cli.files / "test.npz"), "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    x = np.load(cli.files / "test.npz")["x"]
    with Client(cli.server.address) as client:
        assert np.array_equal(np.load(out), client.predict("zeros-ones", x).labels)


def test_predict_scores_have_one_column_per_class(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "scores.npy"
    cli.run(
        "predict",
        "zeros-ones",
        "--data",
        str(cli.files / "test.npz"),
        "--out",
        str(out),
        "--scores",
    )
    assert np.load(out).shape == (200, 2)


def test_evaluate_prints_accuracy(cli: Cli) -> None:
    done = cli.run("evaluate", "zeros-ones", "--data", str(cli.files / "test.npz"))
    assert done.returncode == 0, done.stderr
    accuracy = float(done.stdout.split("accuracy")[1].split()[0])
    assert accuracy > 0.9


def test_error_exits_non_zero_with_the_servers_message(cli: Cli) -> None:
    done = cli.run("predict", "nope", "--data", str(cli.files / "test.npz"))
    assert done.returncode == 1
    assert "NOT_FOUND" in done.stderr and "unknown task 'nope'" in done.stderr


def test_unreachable_server_exits_non_zero() -> None:
    done = sparsecl("tasks", "--address", "127.0.0.1:1")
    assert done.returncode == 1 and "UNAVAILABLE" in done.stderr
