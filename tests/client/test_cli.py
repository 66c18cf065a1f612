"""The `sparsecl` CLI against a real server: add-task, tasks, predict, evaluate, errors."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from client import Client, ClientError
from client.client import Progress, TaskInfo
from sparse_engine.mnist import Mnist

from ..serving import FAST, ServerProcess, digits, sparsecl


@dataclass
class Cli:
    server: ServerProcess
    files: Path
    added: subprocess.CompletedProcess[str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return sparsecl(*args, "--address", self.server.address)


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


def test_tasks_table_shows_the_plan_memory(cli: Cli) -> None:
    done = cli.run("tasks")
    header, row = done.stdout.splitlines()[:2]
    assert header.split()[:9] == [
        "id",
        "name",
        "state",
        "classes",
        "val_acc",
        "density",
        "owned",
        "learned",
        "plan",
    ]
    plan_bytes = json.loads(cli.run("tasks", "--json").stdout)[0]["plan_bytes"]
    assert f"{plan_bytes / 1e6:.2f} MB" in row and plan_bytes > 0


def test_tasks_table_and_json_show_how_each_task_was_learned(cli: Cli) -> None:
    row = cli.run("tasks").stdout.splitlines()[1]
    assert row.split()[7] == "free"
    assert json.loads(cli.run("tasks", "--json").stdout)[0]["learned_as"] == "free"


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


def test_evaluate_with_a_reference_prints_the_forward_transfer(cli: Cli) -> None:
    reference = cli.files / "alone.json"
    reference.write_text(json.dumps({"zeros-ones": 0.5}))
    done = cli.run(
        *("evaluate", "zeros-ones", "--data", str(cli.files / "test.npz")),
        *("--reference", str(reference)),
    )
    assert done.returncode == 0, done.stderr
    accuracy = float(done.stdout.split("accuracy")[1].split()[0])
    transfer = float(done.stdout.split("transfer")[1].split()[0])
    assert transfer == pytest.approx(100 * (accuracy - 0.5), abs=0.01)


def test_error_exits_non_zero_with_the_servers_message(cli: Cli) -> None:
    done = cli.run("predict", "nope", "--data", str(cli.files / "test.npz"))
    assert done.returncode == 1
    assert "NOT_FOUND" in done.stderr and "unknown task 'nope'" in done.stderr


def test_unreachable_server_exits_non_zero() -> None:
    done = sparsecl("tasks", "--address", "127.0.0.1:1")
    assert done.returncode == 1 and "UNAVAILABLE" in done.stderr


def test_health_exits_zero_when_the_server_is_serving(cli: Cli) -> None:
    done = cli.run("health")
    assert (done.returncode, done.stdout.strip()) == (0, f"{cli.server.address}: SERVING")


def test_health_exits_two_when_no_server_answers() -> None:
    done = sparsecl("health", "--address", "127.0.0.1:1")
    assert done.returncode == 2 and "UNAVAILABLE" in done.stderr


def test_health_of_a_service_the_server_does_not_have_exits_non_zero(cli: Cli) -> None:
    done = cli.run("health", "--service", "no.such.Service")
    assert done.returncode == 1 and "NOT_FOUND" in done.stderr


# ---- add-task: the research modes (issue 6, part A) ---------------------------------------


def hyper_parameters_after_add_task(
    cli: Cli, tmp_path_factory: pytest.TempPathFactory, name: str, *flags: str
) -> dict[str, object]:
    """`sparsecl add-task NAME --train ... FLAGS` on a server of its own; the task's settings."""
    server = ServerProcess(tmp_path_factory.mktemp(name)).start()
    try:
        done = sparsecl(
            *("add-task", name, "--train", str(cli.files / "train.npz")),
            *("--address", server.address, "--batch-size=64", "--quiet", *flags),
        )
        assert done.returncode == 0, done.stderr
        with Client(server.address) as client:
            return dict(client.task(name).hyper_parameters)
    finally:
        server.terminate()


def test_add_task_learns_a_supermask_with_a_frozen_head(
    cli: Cli, tmp_path_factory: pytest.TempPathFactory
) -> None:
    hyper = hyper_parameters_after_add_task(
        cli,
        tmp_path_factory,
        "masked",
        *("--epochs=1", "--lr=0.01", "--method", "supermask", "--no-supermask-train-head"),
    )
    assert hyper["method"] == "supermask" and hyper["supermask_train_head"] is False


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--method", "rigl", "--retrain", "late_rewind"], "applies to method 'prune' only"),
        (["--retrain", "late_rewind", "--epochs=1", "--rewind-epoch=2"], "rewind_epoch 2 lies"),
        (["--method", "rigl", "--rigl-drop-fraction=1.5"], "rigl_drop_fraction must lie in"),
        (["--method", "rigl", "--rigl-interval=0"], "rigl_interval must lie in [1, 1000000]"),
    ],
)
def test_add_task_refuses_bad_research_options_with_the_reason(
    cli: Cli, flags: list[str], message: str
) -> None:
    done = cli.run("add-task", "refused", "--train", str(cli.files / "train.npz"), *flags)
    assert done.returncode == 1
    assert "INVALID_ARGUMENT" in done.stderr and message in done.stderr
    assert "refused" not in cli.run("tasks").stdout


def test_add_task_structure_units_prunes_whole_units(
    cli: Cli, tmp_path_factory: pytest.TempPathFactory
) -> None:
    hyper = hyper_parameters_after_add_task(
        cli,
        tmp_path_factory,
        "units",
        *("--epochs=1", "--retrain-epochs=1", "--density=0.5", "--structure", "units"),
    )
    assert hyper["structure"] == "units"


def test_add_task_reuse_per_layer_reads_no_earlier_weight_where_none(
    tmp_path_factory: pytest.TempPathFactory, mnist: Mnist
) -> None:
    """--reuse none,all: the task's record says layer 0 reads nothing of task 1."""
    files = tmp_path_factory.mktemp("reuse-npz")
    for name, which in (("a", [0, 1]), ("b", [2, 3])):
        x, y = digits(mnist, which)
        np.savez(files / f"{name}.npz", x=x, y=y)
    server = ServerProcess(tmp_path_factory.mktemp("reuse")).start()
    try:
        options = [f"--{k.replace('_', '-')}={v}" for k, v in FAST.items() if k != "reuse"]
        for name, reuse in (("a", "all"), ("b", "none,all")):
            done = sparsecl(
                *("add-task", name, "--train", str(files / f"{name}.npz"), "--quiet"),
                *("--address", server.address, "--reuse", reuse, *options),
            )
            assert done.returncode == 0, done.stderr
        assert "reuse none,all: reads task 1:" in done.stdout
        with Client(server.address) as client:
            info = client.task("b")
    finally:
        server.terminate()
    assert info.hyper_parameters["reuse"] == ("none", "all")
    assert info.reuse is not None and info.reuse.choice == ("none", "all")
    assert info.reuse.read_from[1][0] == 0 and info.reuse.read_from[1][1] > 0


def test_add_task_refuses_an_unknown_reuse_choice() -> None:
    done = sparsecl("add-task", "x", "--train", "t.npz", "--reuse", "none,some")
    assert done.returncode == 2 and "'some' is not one of all, none, similar" in done.stderr


def test_add_task_offers_only_known_methods() -> None:
    done = sparsecl("add-task", "x", "--train", "t.npz", "--method", "lottery")
    assert done.returncode == 2 and "invalid choice: 'lottery'" in done.stderr


# ---- analyze (issue 6, part B) -------------------------------------------------------------


def test_analyze_weight_agnostic_prints_one_row_per_shared_weight(cli: Cli) -> None:
    done = cli.run(
        "analyze",
        "weight-agnostic",
        "zeros-ones",
        "--data",
        str(cli.files / "test.npz"),
        "--weights=-1,0.1,1",
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split()[0] for line in done.stdout.splitlines()[1:4]]
    assert rows == ["w=-1", "w=0.1", "w=1"]
    assert "best_accuracy" in done.stdout and "MLflow run" in done.stdout


def test_analyze_layer_robustness_prints_a_row_per_layer(cli: Cli) -> None:
    done = cli.run(
        "analyze", "layer-robustness", "zeros-ones", "--data", str(cli.files / "test.npz")
    )
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()[1:4]] == [
        "layer0",
        "layer1",
        "head",
    ]


def test_analyze_noise_json_holds_the_table(cli: Cli) -> None:
    done = cli.run(
        "analyze",
        "noise",
        "zeros-ones",
        "--data",
        str(cli.files / "test.npz"),
        "--train",
        str(cli.files / "train.npz"),
        "--noise-levels",
        "0,0.3",
        "--epochs",
        "1",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["columns"] == ["noise_std", "sparse_accuracy", "dense_accuracy"]
    assert [row[1][0] for row in result["rows"]] == [0.0, 0.3]
    assert result["mlflow_run_id"]


def test_analyze_noise_without_training_data_exits_with_the_servers_message(cli: Cli) -> None:
    done = cli.run("analyze", "noise", "zeros-ones", "--data", str(cli.files / "test.npz"))
    assert done.returncode == 1
    assert "INVALID_ARGUMENT" in done.stderr and "training examples" in done.stderr


def test_predict_without_a_name_saves_task_label_and_confidence(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "taskfree.npz"
    done = cli.run("predict", "--data", str(cli.files / "test.npz"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    x = np.load(cli.files / "test.npz")["x"]
    with np.load(out) as saved, Client(cli.server.address) as client:
        assert sorted(saved.files) == ["confidence", "label", "task"]
        assert saved["task"].tolist() == ["zeros-ones"] * 200  # the only task
        assert saved["label"].dtype == np.int64
        assert np.array_equal(saved["label"], client.predict("zeros-ones", x).labels)
        assert saved["confidence"].dtype == np.float32 and saved["confidence"].shape == (200,)
    printed = cli.run("predict", "--data", str(cli.files / "test.npz")).stdout.splitlines()
    assert len(printed) == 200 and printed[0].split("\t")[0] == "zeros-ones"


# ---- add-task --tune (issue 17, sizes that adapt) ------------------------------------------


def test_add_task_tune_reports_the_choice_and_its_cost_and_stores_it(
    cli: Cli, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The CLI and the client carry --tune over gRPC; the search's report comes back on the
    tune Progress events, and lands in MLflow as sparsecl.tune.* tags and tune.json."""
    server = ServerProcess(tmp_path_factory.mktemp("tuned")).start()
    fast = [f"--{k.replace('_', '-')}={v}" for k, v in FAST.items() if k not in ("density", "k")]
    try:
        done = sparsecl(
            *("add-task", "tuned", "--train", str(cli.files / "train.npz"), "--tune"),
            *("--address", server.address, "--quiet", *fast),
        )
        assert done.returncode == 0, done.stderr
        assert "tune: 3 trial(s)" in done.stdout and "<- chosen" in done.stdout
        assert "chose density" in done.stdout and "task 'tuned' committed" in done.stdout
        with Client(server.address) as client:
            train = np.load(cli.files / "train.npz")
            events = list(
                client.add_task(
                    "tuned-2",
                    (train["x"], train["y"]),
                    tune=True,
                    tune_tolerance=1.0,  # every trial is within: the smallest density wins
                    **{k: v for k, v in FAST.items() if k not in ("density", "k")},
                )
            )
            reports = [e.tune for e in events if isinstance(e, Progress) and e.tune is not None]
            report = reports[-1]
            assert [t.density for t in report.trials] == [0.05, 0.1, 0.2]
            sound = [i for i, t in enumerate(report.trials) if not t.error]
            assert report.chosen == sound[0]  # within a tolerance of 1: the smallest density
            assert report.tolerance == 1.0 and report.seconds > 0
            assert [r.chosen for r in reports] == [-1, -1, report.chosen]
            info = events[-1]
            assert isinstance(info, TaskInfo)
            assert info.hyper_parameters["density"] == report.choice.density
            with pytest.raises(ClientError, match="tolerance must lie in") as refused:
                client.learn("bad", (train["x"], train["y"]), tune=True, tune_tolerance=2.0)
            assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert server.data_dir is not None
        mlflow = MlflowClient(f"sqlite:///{server.data_dir / 'mlflow.db'}")
        tags = mlflow.get_run(info.mlflow_run_id).data.tags
        assert tags["sparsecl.tune.density"] == str(report.choice.density)
        assert tags["sparsecl.tune.trials"] == "3"
        assert float(tags["sparsecl.tune.seconds"]) == pytest.approx(report.seconds, abs=1e-3)
        stored = json.loads(
            Path(mlflow.download_artifacts(info.mlflow_run_id, "tune.json")).read_text()
        )
        assert stored["chosen"] == report.chosen and len(stored["trials"]) == 3
    finally:
        server.terminate()


def test_add_task_tune_pairs_tries_exactly_the_pairs_given(
    cli: Cli, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """--tune-pairs travels over gRPC: the trials are the pairs asked for, in order, with
    their k; a bad pair is refused before the upload and adds no task."""
    server = ServerProcess(tmp_path_factory.mktemp("pairs")).start()
    fast = [f"--{k.replace('_', '-')}={v}" for k, v in FAST.items() if k not in ("density", "k")]
    train = str(cli.files / "train.npz")
    try:
        done = sparsecl(
            *("add-task", "paired", "--train", train, "--tune-pairs", "0.3:0.25", "0.1"),
            *("--address", server.address, "--quiet", *fast),
        )
        assert done.returncode == 0, done.stderr
        assert "tune: 2 trial(s)" in done.stdout
        with Client(server.address) as client:
            (info,) = client.tasks()
            assert info.name == "paired"
            data = np.load(cli.files / "train.npz")
            events = client.add_task(
                "paired-2",
                (data["x"], data["y"]),
                tune_pairs=[(0.3, 0.25), (0.1, "auto")],
                **{k: v for k, v in FAST.items() if k not in ("density", "k")},
            )
            reports = [e.tune for e in events if isinstance(e, Progress) and e.tune is not None]
            assert [(t.density, t.k) for t in reports[-1].trials] == [(0.3, 0.25), (0.1, "auto")]
        refused = sparsecl(
            *("add-task", "bad", "--train", train, "--tune-pairs", "0.1", "1.5:auto"),
            *("--address", server.address, "--quiet", *fast),
        )
        assert refused.returncode != 0
        assert "INVALID_ARGUMENT" in refused.stderr and "density" in refused.stderr
        with Client(server.address) as client:
            assert sorted(t.name for t in client.tasks()) == ["paired", "paired-2"]
    finally:
        server.terminate()
