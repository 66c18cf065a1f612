"""The service against a real server process and a real sqlite MLflow store.

One server for the module: tasks A and B are learned once; every error path is then
checked to answer its status code and to leave the task list and predictions unchanged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from client import Client, ClientError, Progress
from client.convert import tensor
from sparse_engine.config import PERIOD_STEPS, TaskConfig
from sparse_engine.mnist import Mnist
from sparsecl.v1 import sparsecl_pb2 as pb
from sparsecl.v1 import sparsecl_pb2_grpc as pb_grpc

from ..serving import FAST, ServerProcess, digits


@dataclass
class Served:
    server: ServerProcess
    client: Client
    stub: pb_grpc.ContinualLearnerStub
    probe: np.ndarray
    a_before_b: np.ndarray  # A's scores on the probe right after A was committed
    mnist: Mnist


TRAIN = {**FAST, "retrain_epochs": 2}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, mnist: Mnist) -> Iterator[Served]:
    server = ServerProcess(tmp_path_factory.mktemp("store")).start()
    client = Client(server.address, timeout=120)
    probe = mnist.x_test[:200]
    # two retrain epochs: with one, FAST's few steps of annealed retraining leave a task
    # near the accuracy floor that test_predicted_labels_are_the_tasks_own_label_values checks
    client.learn("A", digits(mnist, [0, 1]), **TRAIN)
    a_before_b = client.predict("A", probe).scores
    client.learn("B", digits(mnist, [2, 3]), **TRAIN)
    channel = grpc.insecure_channel(server.address)
    yield Served(server, client, pb_grpc.ContinualLearnerStub(channel), probe, a_before_b, mnist)
    channel.close()
    client.close()
    server.terminate()


def snapshot(s: Served) -> tuple[list[tuple[str, str, int]], bytes, bytes]:
    """The task list and both tasks' scores on the probe, as bytes for bit comparison."""
    tasks = [(t.name, t.state, t.id) for t in s.client.tasks()]
    return (
        tasks,
        s.client.predict("A", s.probe).scores.tobytes(),
        s.client.predict("B", s.probe).scores.tobytes(),
    )


def rejected(s: Served, code: grpc.StatusCode, call: Callable[[], object]) -> str:
    """Run a call that must fail with ``code`` and change nothing; returns its message."""
    before = snapshot(s)
    with pytest.raises((ClientError, grpc.RpcError)) as info:
        call()
    error = info.value
    got = error.code if isinstance(error, ClientError) else error.code()  # type: ignore[operator]
    message = error.message if isinstance(error, ClientError) else error.details()  # type: ignore[operator]
    assert got == code, message
    assert snapshot(s) == before
    return str(message)


def upload(s: Served, *requests: pb.AddTaskRequest) -> list[pb.AddTaskEvent]:
    return list(s.stub.AddTask(iter(requests), timeout=60))


def header(name: str = "C", **hp: float) -> pb.AddTaskRequest:
    return pb.AddTaskRequest(
        header=pb.AddTaskHeader(name=name, hyper_parameters=pb.HyperParameters(**hp))
    )


def chunk(x: np.ndarray, y: np.ndarray, split: int = pb.SPLIT_TRAIN) -> pb.AddTaskRequest:
    return pb.AddTaskRequest(chunk=pb.ExampleChunk(split=split, x=tensor(x), y=tensor(y)))


# ---- the promises ----------------------------------------------------------------------------
def test_predictions_of_a_are_bit_identical_after_b(served: Served) -> None:
    after = served.client.predict("A", served.probe).scores
    assert after.tobytes() == served.a_before_b.tobytes()


def test_tasks_are_listed_committed_in_id_order_with_their_mlflow_run(served: Served) -> None:
    tasks = served.client.tasks()
    assert [(t.name, t.state, t.id, t.classes) for t in tasks[:2]] == [
        ("A", "committed", 1, (0, 1)),
        ("B", "committed", 2, (2, 3)),
    ]
    assert all(t.mlflow_run_id and t.model_version == "1" for t in tasks[:2])


def test_committed_tasks_report_their_plan_within_its_memory_bound(served: Served) -> None:
    for t in served.client.tasks()[:2]:
        kept = t.weights_owned + t.weights_read
        rows = 64 + 64  # both layers' output units: one row pointer each (+1 per layer)
        head = 64 * len(t.classes)
        # at least a float32 value and a uint16 index per kept weight; at most 1.5 × a
        # plain CSR (float32 values, int32 indices, int64 row pointers) plus the head
        assert 6 * kept <= t.plan_bytes <= 1.5 * (8 * kept + 8 * (rows + 2) + 4 * head), t


def test_predicted_labels_are_the_tasks_own_label_values(served: Served) -> None:
    x, y = digits(served.mnist, [2, 3], n=100, offset=1000)
    prediction = served.client.predict("B", x)
    assert set(np.unique(prediction.labels)) <= {2, 3}
    assert (prediction.labels == y).mean() > 0.8


def test_evaluate_scores_every_task_on_its_own_labels(served: Served) -> None:
    x, y = served.mnist.x_test[:1000], served.mnist.y_test[:1000]
    results = {r.task: r for r in served.client.evaluate(x, y)}
    assert set(results) == {"A", "B"}
    assert results["A"].examples == int(np.isin(y, [0, 1]).sum())
    assert results["A"].accuracy > 0.9


def test_backbone_reports_free_capacity_per_layer(served: Served) -> None:
    backbone = served.client.backbone()
    assert backbone.spec == "mlp:784-64-64"
    assert backbone.tasks == len(served.client.tasks())
    assert [lay.weight_shape for lay in backbone.layers] == [(64, 784), (64, 64)]
    owned = sum(t.weights_owned for t in served.client.tasks())
    assert sum(lay.weights - lay.free_weights for lay in backbone.layers) == owned > 0


def test_predictions_for_a_are_served_while_b_trains(served: Served) -> None:
    expected = served.client.predict("A", served.probe).scores.tobytes()
    x, y = digits(served.mnist, [6, 7], n=1500)
    events: list[object] = []
    errors: list[Exception] = []

    def learn() -> None:
        try:
            events.extend(served.client.add_task("slow", (x, y), **{**FAST, "epochs": 4}))
        except Exception as e:
            errors.append(e)

    def state() -> str:
        try:
            return served.client.task("slow").state
        except ClientError:
            return ""  # not queued yet

    thread = threading.Thread(target=learn)
    thread.start()
    served_during_training = 0
    deadline = time.monotonic() + 300
    while thread.is_alive():
        assert time.monotonic() < deadline, "learning 'slow' took over 300 s"
        before = state()
        assert served.client.predict("A", served.probe).scores.tobytes() == expected
        if before == "training" and state() == "training":
            served_during_training += 1
        time.sleep(0.02)
    thread.join()
    assert not errors, errors
    assert served_during_training >= 3
    assert served.client.task("slow").state == "committed"


# ---- every error path: its status code, and nothing changed ---------------------------------
def test_unknown_task_is_not_found(served: Served) -> None:
    message = rejected(
        served, grpc.StatusCode.NOT_FOUND, lambda: served.client.predict("nope", served.probe)
    )
    assert "nope" in message and "A" in message


def test_get_unknown_task_is_not_found(served: Served) -> None:
    rejected(served, grpc.StatusCode.NOT_FOUND, lambda: served.client.task("nope"))


def test_taken_name_is_already_exists(served: Served) -> None:
    rejected(
        served,
        grpc.StatusCode.ALREADY_EXISTS,
        lambda: served.client.learn("A", digits(served.mnist, [4, 5]), **FAST),
    )


def test_inputs_of_the_wrong_shape_are_invalid(served: Served) -> None:
    message = rejected(
        served,
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: served.client.predict("A", np.zeros((3, 100), np.float32)),
    )
    assert "784" in message


def test_integer_inputs_are_invalid(served: Served) -> None:
    request = pb.PredictRequest(task="A", x=tensor(np.zeros((2, 784), np.int32)))
    rejected(served, grpc.StatusCode.INVALID_ARGUMENT, lambda: served.stub.Predict(request))


def test_nan_inputs_are_invalid(served: Served) -> None:
    x = np.zeros((2, 784), np.float32)
    x[1, 5] = np.nan
    message = rejected(
        served, grpc.StatusCode.INVALID_ARGUMENT, lambda: served.client.predict("A", x)
    )
    assert "NaN" in message


def test_tensor_bytes_not_matching_its_shape_are_invalid(served: Served) -> None:
    bad = pb.Tensor(shape=[2, 784], dtype=pb.DTYPE_FLOAT32, data=b"\0" * 100)
    rejected(
        served,
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: served.stub.Predict(pb.PredictRequest(task="A", x=bad)),
    )


def test_message_over_4_mib_is_resource_exhausted(served: Served) -> None:
    x = np.zeros((1500, 784), np.float32)  # 4.7 MB in one message
    request = pb.PredictRequest(task="A", x=tensor(x))
    rejected(served, grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: served.stub.Predict(request))


def test_hyper_parameter_out_of_range_is_invalid(served: Served) -> None:
    message = rejected(
        served,
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: served.client.learn("C", digits(served.mnist, [4, 5]), **{**FAST, "density": 1.5}),
    )
    assert "density" in message


def test_k_larger_than_a_layer_is_invalid(served: Served) -> None:
    rejected(
        served,
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: served.client.learn("C", digits(served.mnist, [4, 5]), **{**FAST, "k": 65}),
    )


@pytest.mark.parametrize(
    ("reuse", "message"),
    [
        (("none", "all", "none"), "reuse gives 3 values for a backbone of 2 hidden layers"),
        (("none", "most"), "reuse must be one of ('all', 'none', 'similar', 'auto')"),
    ],
)
def test_a_bad_reuse_choice_is_invalid(
    served: Served, reuse: tuple[str, ...], message: str
) -> None:
    got = rejected(
        served,
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: served.client.learn("C", digits(served.mnist, [4, 5]), **{**FAST, "reuse": reuse}),
    )
    assert message in got


def test_single_class_is_invalid(served: Served) -> None:
    rejected(
        served,
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: served.client.learn("C", digits(served.mnist, [4]), **FAST),
    )


def test_bad_task_name_is_invalid(served: Served) -> None:
    rejected(
        served,
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: served.client.learn("no spaces/allowed", digits(served.mnist, [4, 5]), **FAST),
    )


def test_upload_without_examples_is_invalid(served: Served) -> None:
    rejected(served, grpc.StatusCode.INVALID_ARGUMENT, lambda: upload(served, header()))


def test_upload_not_starting_with_a_header_is_invalid(served: Served) -> None:
    x, y = digits(served.mnist, [4, 5], n=50)
    rejected(served, grpc.StatusCode.INVALID_ARGUMENT, lambda: upload(served, chunk(x, y)))


def test_label_set_not_matching_the_labels_is_invalid(served: Served) -> None:
    x, y = digits(served.mnist, [4, 5], n=50)
    first = header()
    first.header.labels.extend([4, 5, 9])
    rejected(served, grpc.StatusCode.INVALID_ARGUMENT, lambda: upload(served, first, chunk(x, y)))


def test_incomplete_upload_is_invalid(served: Served) -> None:
    x, y = digits(served.mnist, [4, 5], n=50)
    first = header()
    first.header.train_examples = 80
    message = rejected(
        served, grpc.StatusCode.INVALID_ARGUMENT, lambda: upload(served, first, chunk(x, y))
    )
    assert "80" in message


def test_validation_labels_outside_the_task_are_invalid(served: Served) -> None:
    rejected(
        served,
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: served.client.learn(
            "C", digits(served.mnist, [4, 5]), digits(served.mnist, [6, 7], n=50), **FAST
        ),
    )


def test_evaluate_with_no_label_of_the_task_is_invalid(served: Served) -> None:
    x, y = digits(served.mnist, [8, 9], n=50)
    rejected(
        served, grpc.StatusCode.INVALID_ARGUMENT, lambda: served.client.evaluate(x, y, task="A")
    )


def test_rejected_uploads_leave_no_mlflow_run(served: Served) -> None:
    from mlflow.tracking import MlflowClient

    store = MlflowClient(f"sqlite:///{Path(served.server.data_dir) / 'mlflow.db'}")
    runs = store.search_runs([served.client.backbone().experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(t.name for t in served.client.tasks())


def test_health_service_reports_serving_to_a_generic_client(served: Served) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(served.server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        overall = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        learner = stub.Check(
            health_pb2.HealthCheckRequest(service="sparsecl.v1.ContinualLearner"), timeout=10
        )
    assert overall.status == health_pb2.HealthCheckResponse.SERVING
    assert learner.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_service_without_our_stubs(served: Served) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(served.server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    names = {s.name for s in replies[0].list_services_response.service}
    assert {"sparsecl.v1.ContinualLearner", "grpc.health.v1.Health"} <= names


def test_overall_density_and_free_capacity_agree_in_the_api_events_and_mlflow(
    served: Served,
) -> None:
    """One formula (BackboneSpec.overall, each layer counting by its size) behind the commit
    event, GetBackbone, the run's metrics and the registry's tags."""
    from mlflow.tracking import MlflowClient

    data = digits(served.mnist, [6, 8], n=600)
    events = list(served.client.add_task("agree", data, **{**TRAIN, "epochs": 2}))
    commit = next(e for e in events if getattr(e, "phase", "") == "commit")
    backbone = served.client.backbone()
    assert backbone.free_capacity == pytest.approx(commit.free_capacity, abs=1e-12)
    sizes = [lay.weights for lay in backbone.layers]
    info = served.client.task("agree")
    weighted = sum(d * n for d, n in zip(info.density, sizes, strict=True)) / sum(sizes)
    assert commit.density == pytest.approx(weighted, abs=1e-12)
    assert len(set(info.density)) > 1 or len(set(sizes)) == 1  # layers differ: a mean would not do
    store = MlflowClient(f"sqlite:///{served.server.data_dir / 'mlflow.db'}")
    metrics = store.get_run(info.mlflow_run_id).data.metrics
    assert metrics["density"] == pytest.approx(commit.density, abs=1e-12)
    assert metrics["capacity_used"] == pytest.approx(1 - commit.free_capacity, abs=1e-12)
    version = store.get_model_version(info.model_name, info.model_version)
    assert float(version.tags["density"]) == pytest.approx(commit.density, abs=1e-4)
    assert float(version.tags["capacity_used"]) == pytest.approx(1 - commit.free_capacity, abs=1e-4)
    tags = store.get_registered_model("sparsecl.backbone").tags
    assert float(tags["free_capacity"]) == pytest.approx(backbone.free_capacity, abs=1e-4)


def test_auto_epochs_travel_over_grpc_and_say_why_each_phase_stopped(served: Served) -> None:
    """epochs/retrain_epochs "auto" reach the server (as -1 on the wire), the progress events
    end each phase with its reason, and the run's tags and metrics keep them."""
    from mlflow.tracking import MlflowClient

    auto = {**FAST, "epochs": "auto", "retrain_epochs": "auto", "patience": 1, "max_epochs": 4}
    events = list(served.client.add_task("auto", digits(served.mnist, [4, 7], n=300), **auto))
    ends = {e.phase: e for e in events if isinstance(e, Progress) and e.stopped}
    assert set(ends) == {"train", "retrain"}
    # 270 examples (30 held out) at batch 64: 5 steps an epoch, so a period of 10 epochs
    period = TaskConfig(**auto).epochs_per_period(ends["train"].steps_per_epoch)
    assert ends["train"].steps_per_epoch == 5 and period == -(-PERIOD_STEPS // 5)
    for end in ends.values():
        assert end.stopped in ("plateau", "max_epochs") and 1 <= end.phase_epochs <= 4 * period
        assert 1 <= end.kept_epoch <= end.phase_epochs and end.total_epochs == 8 * period
    # 2 lr cuts and a stop at patience 1 take 3 periods without a better epoch
    assert ends["retrain"].stopped == "max_epochs" or ends["retrain"].phase_epochs > 3 * period
    info = served.client.task("auto")
    assert {k: info.hyper_parameters[k] for k in auto} == auto
    run = MlflowClient(f"sqlite:///{served.server.data_dir / 'mlflow.db'}").get_run(
        info.mlflow_run_id
    )
    for phase, end in ends.items():
        assert run.data.tags[f"sparsecl.stopped.{phase}"] == end.stopped
        assert run.data.metrics[f"{phase}/epochs_run"] == end.phase_epochs
        assert run.data.metrics[f"{phase}/kept_epoch"] == end.kept_epoch
    assert run.data.params["epochs"] == "auto"
