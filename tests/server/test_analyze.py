"""The Analyze RPC against the real session server (tasks A = 0/1, B = 2/3) and its store."""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient

from client import Client, ClientError
from server.auth import required_scope
from sparsecl.v1 import sparsecl_pb2 as pb

from ..serving import FAST, ServerProcess, digits
from .conftest import MAX_BATCH, MAX_EXAMPLES, Limited
from .test_fuzz import (
    DELIBERATE,
    FUZZ,
    batches,
    code_of,
    labels,
    names,
    settled,
    tensors,
    unary,
)


def store_of(s: Limited) -> MlflowClient:
    return MlflowClient(f"sqlite:///{Path(s.server.data_dir) / 'mlflow.db'}")


def analysis_runs(s: Limited) -> list[Any]:
    experiment = s.client.backbone().experiment_id
    return list(store_of(s).search_runs([experiment], "tags.`sparsecl.kind` = 'analysis'"))


def eval_data(s: Limited, digits_of: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """At most MAX_BATCH test images of the given digits (default: 2 and 3, task B)."""
    keep = np.isin(s.mnist.y_test, digits_of or [2, 3])
    return s.mnist.x_test[keep][:MAX_BATCH], s.mnist.y_test[keep][:MAX_BATCH]


def client_error_code(call: Any) -> grpc.StatusCode:
    """The status of the ClientError a client call must raise."""
    with pytest.raises(ClientError) as info:
        call()
    return info.value.code


def test_weight_agnostic_returns_one_row_per_shared_weight(limited: Limited) -> None:
    result = limited.client.analyze(
        "B", "weight-agnostic", eval_data(limited), weights=[-0.5, 0.1, 1.0]
    )
    assert result.analysis == "weight-agnostic" and result.task == "B"
    assert result.columns == ("shared_weight", "accuracy")
    assert [values[0] for _, values in result.rows] == [-0.5, 0.1, 1.0]
    assert result.summary["best_accuracy"] == max(values[1] for _, values in result.rows)
    assert result.examples == MAX_BATCH


def test_analysis_is_logged_as_an_mlflow_run_under_the_tasks_run(limited: Limited) -> None:
    result = limited.client.analyze("B", "layer-robustness", eval_data(limited), draws=1)
    store = store_of(limited)
    run = store.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["sparsecl.analysis"] == "layer-robustness"
    assert run.data.tags["mlflow.parentRunId"] == limited.client.task("B").mlflow_run_id
    assert run.data.params["draws"] == "1"
    assert run.data.metrics["baseline_accuracy"] == result.summary["baseline_accuracy"]
    files = {a.path for a in store.list_artifacts(run.info.run_id, "analysis")}
    assert files == {"analysis/table.json", "analysis/layer-robustness.png"}
    png = store.download_artifacts(run.info.run_id, "analysis/layer-robustness.png")
    assert Path(png).read_bytes().startswith(b"\x89PNG")


def test_layer_robustness_has_a_row_per_layer_and_the_head(limited: Limited) -> None:
    result = limited.client.analyze("A", "layer-robustness", eval_data(limited, [0, 1]))
    assert [label for label, _ in result.rows] == ["layer0", "layer1", "head"]


def test_noise_compares_with_a_dense_net_trained_on_the_sent_examples(limited: Limited) -> None:
    train = digits(limited.mnist, [2, 3], n=300)
    result = limited.client.analyze(
        "B", "noise", eval_data(limited), train=train, noise_levels=[0.0, 0.5], epochs=2
    )
    assert [values[0] for _, values in result.rows] == [0.0, 0.5]
    assert result.summary["train_examples"] == 300 and result.summary["dense_epochs"] == 2
    assert result.rows[0][1][2] > 0.8  # the dense network learned the task


@pytest.mark.parametrize(
    "analysis", ["weight-agnostic", "layer-robustness", "noise"], ids=lambda a: a
)
def test_analyses_leave_every_task_bit_identical(limited: Limited, analysis: str) -> None:
    before = limited.scores()
    train = digits(limited.mnist, [2, 3], n=200) if analysis == "noise" else None
    limited.client.analyze(
        "B", analysis, eval_data(limited), train=train, epochs=1 if train else None
    )
    assert limited.scores() == before


def refused(s: Limited, call: Any) -> grpc.StatusCode:
    """The code ``call`` fails with, checking it logged no run and changed no task."""
    runs, scores, tasks = len(analysis_runs(s)), s.scores(), s.committed()
    code = client_error_code(call)
    assert len(analysis_runs(s)) == runs and s.scores() == scores and s.committed() == tasks
    return code


def test_unknown_task_is_not_found(limited: Limited) -> None:
    call = lambda: limited.client.analyze("nope", "weight-agnostic", eval_data(limited))  # noqa: E731
    assert refused(limited, call) == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "options",
    [
        {"weights": [float("nan")]},
        {"draws": 0},
        {"noise_levels": [0.1]},  # not a parameter of weight-agnostic
        {"train": ((np.zeros((4, 784), np.uint8), np.array([2, 3, 2, 3])))},
    ],
    ids=["nan-weight", "zero-draws", "foreign-parameter", "training-data"],
)
def test_bad_parameters_are_invalid_argument(limited: Limited, options: dict[str, Any]) -> None:
    call = lambda: limited.client.analyze("B", "weight-agnostic", eval_data(limited), **options)  # noqa: E731
    assert refused(limited, call) == grpc.StatusCode.INVALID_ARGUMENT


def test_noise_without_training_examples_is_invalid_argument(limited: Limited) -> None:
    call = lambda: limited.client.analyze("B", "noise", eval_data(limited))  # noqa: E731
    assert refused(limited, call) == grpc.StatusCode.INVALID_ARGUMENT


def test_data_without_the_tasks_labels_is_invalid_argument(limited: Limited) -> None:
    call = lambda: limited.client.analyze("B", "weight-agnostic", eval_data(limited, [7]))  # noqa: E731
    assert refused(limited, call) == grpc.StatusCode.INVALID_ARGUMENT


def test_unspecified_analysis_is_invalid_argument(limited: Limited) -> None:
    x, y = eval_data(limited)
    request = pb.AnalyzeRequest(task="B")
    request.x.CopyFrom(pb.Tensor(shape=list(x.shape), dtype=pb.DTYPE_UINT8, data=x.tobytes()))
    request.y.CopyFrom(pb.Tensor(shape=list(y.shape), dtype=pb.DTYPE_INT64, data=y.tobytes()))
    with pytest.raises(grpc.RpcError) as info:
        limited.stub.Analyze(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_more_evaluation_examples_than_max_batch_are_resource_exhausted(limited: Limited) -> None:
    keep = np.isin(limited.mnist.y_test, [2, 3])
    data = (
        limited.mnist.x_test[keep][: MAX_BATCH + 1],
        limited.mnist.y_test[keep][: MAX_BATCH + 1],
    )
    call = lambda: limited.client.analyze("B", "layer-robustness", data)  # noqa: E731
    assert refused(limited, call) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_more_training_examples_than_max_examples_are_resource_exhausted(limited: Limited) -> None:
    x, y = digits(limited.mnist, [2, 3], n=MAX_EXAMPLES)
    train = (np.concatenate([x, x[:1]]), np.concatenate([y, y[:1]]))
    call = lambda: limited.client.analyze("B", "noise", eval_data(limited), train=train)  # noqa: E731
    assert refused(limited, call) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_analysis_past_its_deadline_is_deadline_exceeded(limited: Limited) -> None:
    train = digits(limited.mnist, [2, 3], n=MAX_EXAMPLES)

    def call() -> None:
        with Client(limited.server.address, timeout=1.5) as client:
            client.analyze("B", "noise", eval_data(limited), train=train, epochs=100)

    assert refused(limited, call) == grpc.StatusCode.DEADLINE_EXCEEDED


def test_predict_is_served_while_an_analysis_runs(limited: Limited) -> None:
    train = digits(limited.mnist, [2, 3], n=MAX_EXAMPLES)
    finished: list[float] = []

    def analyse() -> None:
        with Client(limited.server.address, timeout=300) as client:
            client.analyze("B", "noise", eval_data(limited), train=train, epochs=40)
        finished.append(time.monotonic())

    worker = threading.Thread(target=analyse)
    worker.start()
    time.sleep(1.0)  # the dense network is training now
    answered = []
    for _ in range(5):
        limited.client.predict("A", limited.probe[:10])
        answered.append(time.monotonic())
    worker.join(300)
    assert finished and answered[-1] < finished[0]


def test_analyze_needs_the_write_scope() -> None:
    assert required_scope("/sparsecl.v1.ContinualLearner/Analyze") == "write"


def test_read_token_is_refused_and_write_token_served(
    tmp_path_factory: pytest.TempPathFactory, limited: Limited
) -> None:
    folder = tmp_path_factory.mktemp("analyze-auth")
    read, write = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    (folder / "tokens").write_text(f"read {read}\nread,write {write}\n")
    (folder / "tokens").chmod(0o600)  # the server refuses a tokens file others can read
    server = ServerProcess(folder / "store", args=["--tokens", str(folder / "tokens")]).start()
    try:
        with Client(server.address, timeout=120, token=write) as client:
            client.learn("A", digits(limited.mnist, [0, 1], n=200), **FAST)
            data = eval_data(limited, [0, 1])
            assert client.analyze("A", "layer-robustness", data, draws=1).mlflow_run_id
        with Client(server.address, timeout=60, token=read) as client:
            call = lambda: client.analyze("A", "layer-robustness", data)  # noqa: E731
            assert client_error_code(call) == grpc.StatusCode.PERMISSION_DENIED
    finally:
        server.terminate()


@pytest.fixture(scope="module")
def baseline(limited: Limited) -> tuple[bytes, bytes]:
    return limited.scores()


floats = st.floats(-1e4, 1e4) | st.sampled_from([float("nan"), float("inf"), -1e9, 0.0])


@FUZZ
@given(
    request=st.builds(
        pb.AnalyzeRequest,
        task=names,
        analysis=st.integers(0, 4),
        x=st.one_of(tensors(), batches()),
        y=st.one_of(tensors(), st.lists(st.integers(0, 3), max_size=8).map(labels)),
        train_x=st.one_of(tensors(), batches()),
        train_y=st.lists(st.integers(0, 3), max_size=8).map(labels),
        weights=st.lists(floats, max_size=3),
        noise_levels=st.lists(floats, max_size=3),
        epochs=st.integers(-1, 2),
        draws=st.integers(-1, 2),
        seed=st.integers(-(2**63), 2**63 - 1),
    )
)
def test_analyze_never_fails_internally(
    limited: Limited, baseline: tuple[bytes, bytes], request: pb.AnalyzeRequest
) -> None:
    code = code_of(unary(limited, "Analyze"), request.SerializeToString())
    event(code.name)
    assert code in DELIBERATE, request
    settled(limited, baseline)


def test_analysis_runs_are_not_read_back_as_tasks_after_a_restart(
    tmp_path_factory: pytest.TempPathFactory, limited: Limited
) -> None:
    server = ServerProcess(tmp_path_factory.mktemp("analyze-restart")).start()
    try:
        data = eval_data(limited, [0, 1])
        with Client(server.address, timeout=120) as client:
            client.learn("A", digits(limited.mnist, [0, 1], n=200), **FAST)
            before = client.predict("A", data[0]).scores
            client.analyze("A", "weight-agnostic", data, weights=[0.1])
        server.restart()
        with Client(server.address, timeout=60) as client:
            assert [(t.name, t.state) for t in client.tasks()] == [("A", "committed")]
            assert np.array_equal(client.predict("A", data[0]).scores, before)
    finally:
        server.terminate()
