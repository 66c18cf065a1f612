"""A typed Python client of the sparsecl gRPC service.

with Client("127.0.0.1:50051") as c:
    for event in c.add_task("digits-01", (x, y), epochs=2):
        print(event)
    labels = c.predict("digits-01", x_test).labels
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from sparsecl.v1 import sparsecl_pb2 as pb
from sparsecl.v1 import sparsecl_pb2_grpc as pb_grpc

from . import convert

DEFAULT_ADDRESS = "127.0.0.1:50051"
MESSAGE_BYTES = 4 * 1024 * 1024
CHUNK_BYTES = 3 * 1024 * 1024  # payload per message, well under the 4 MiB default
BATCH_ROWS = 4096  # examples per Predict/Evaluate call, under the server's default 8192


class ClientError(Exception):
    """The server refused a call; ``code`` is its gRPC status, ``message`` says why."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Queued:
    """The upload was accepted; ``position`` tasks are ahead of it in the training queue."""

    position: int


@dataclass(frozen=True)
class Progress:
    """One step of learning; ``step`` 0 marks the end of an epoch or phase."""

    phase: str
    epoch: int
    step: int
    loss: float
    accuracy: float
    density: float
    free_capacity: float
    total_epochs: int
    steps_per_epoch: int


@dataclass(frozen=True)
class TaskInfo:
    """A task as the server reports it (state committed, queued, training, failed, or
    damaged: quarantined because its stored artifact or tags are broken, reason in error)."""

    name: str
    state: str
    id: int
    classes: tuple[int, ...]
    density: tuple[float, ...]
    weights_owned: int
    weights_read: int
    val_accuracy: float
    free_capacity: tuple[float, ...]
    mlflow_run_id: str
    model_name: str
    model_version: str
    created: dt.datetime | None
    seconds: float
    error: str
    plan_bytes: int  # memory of the task's inference plan on the server (0 unless committed)
    hyper_parameters: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, m: pb.TaskInfo) -> TaskInfo:
        hp: dict[str, Any] = {
            f.name: v for f, v in m.hyper_parameters.ListFields() if f.name != "k"
        }
        ks = [
            k.count if k.WhichOneof("size") == "count" else k.fraction for k in m.hyper_parameters.k
        ]
        if ks:
            hp["k"] = ks[0] if len(ks) == 1 else tuple(ks)
        return cls(
            name=m.name,
            state=pb.TaskState.Name(m.state).removeprefix("TASK_STATE_").lower(),
            id=m.id,
            classes=tuple(m.classes),
            density=tuple(m.density),
            weights_owned=m.weights_owned,
            weights_read=m.weights_read,
            val_accuracy=m.val_accuracy,
            free_capacity=tuple(m.free_capacity),
            mlflow_run_id=m.mlflow_run_id,
            model_name=m.model_name,
            model_version=m.model_version,
            created=(
                dt.datetime.fromtimestamp(m.created_unix_ms / 1000, dt.UTC)
                if m.created_unix_ms
                else None
            ),
            seconds=m.seconds,
            error=m.error,
            plan_bytes=m.plan_bytes,
            hyper_parameters=hp,
        )


@dataclass(frozen=True)
class Prediction:
    """Predicted labels (the task's own label values) and per-class scores (columns = classes)."""

    labels: np.ndarray
    scores: np.ndarray
    classes: tuple[int, ...]


@dataclass(frozen=True)
class LayerInfo:
    kind: str
    weight_shape: tuple[int, ...]
    weights: int
    free_weights: int
    free_capacity: float


@dataclass(frozen=True)
class BackboneInfo:
    """The backbone's architecture and how much of it is still free."""

    spec: str
    seed: int
    input_shape: tuple[int, ...]
    layers: tuple[LayerInfo, ...]
    free_capacity: float
    tasks: int
    max_tasks: int
    tracking_uri: str
    experiment_id: str


@dataclass(frozen=True)
class TaskAccuracy:
    """Accuracy of one task on the examples whose labels belong to it."""

    task: str
    accuracy: float
    examples: int


@dataclass(frozen=True)
class AnalysisResult:
    """One analysis of a task: a table (row label, one value per column), summary numbers,
    the evaluation examples used, and the MLflow run that holds it with its plot."""

    task: str
    analysis: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, tuple[float, ...]], ...]
    summary: dict[str, float]
    examples: int
    mlflow_run_id: str

    def format(self) -> str:
        """The table as aligned text, then the summary and the MLflow run."""
        width = max([len("row")] + [len(label) for label, _ in self.rows])
        lines = [f"{'row':<{width}}  " + "  ".join(f"{c:>17}" for c in self.columns)]
        for label, values in self.rows:
            lines.append(f"{label:<{width}}  " + "  ".join(f"{v:>17.4f}" for v in values))
        lines += [f"{k}: {v:.4g}" for k, v in self.summary.items()]
        lines.append(
            f"{self.examples} examples of task {self.task!r}; MLflow run {self.mlflow_run_id}"
        )
        return "\n".join(lines)


ANALYSES: dict[str, int] = {
    "weight-agnostic": pb.ANALYSIS_WEIGHT_AGNOSTIC,
    "layer-robustness": pb.ANALYSIS_LAYER_ROBUSTNESS,
    "noise": pb.ANALYSIS_NOISE,
}

Event = Queued | Progress | TaskInfo


def _k_sizes(k: int | float | Sequence[int | float] | None) -> list[pb.KSize]:
    if k is None:
        return []
    values = list(k) if isinstance(k, Sequence) else [k]
    return [
        pb.KSize(count=int(v)) if isinstance(v, int) else pb.KSize(fraction=float(v))
        for v in values
    ]


CALL_TIMEOUT = 60.0  # seconds: the default deadline of a call that does not train
LEARN_TIMEOUT = 4 * 3600.0  # seconds: AddTask and Analyze (uploading and training)


class Client:
    """Calls one sparsecl server; every method raises ClientError with the server's status."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        timeout: float | None = None,
        *,
        token: str | None = None,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> None:
        """``token`` is sent as a bearer token; ``tls_ca`` (the CA that signed the server's
        certificate) turns TLS on, ``tls_cert``/``tls_key`` add a client certificate.

        ``timeout``: seconds every call may take; None (the default) gives each call a
        deadline of its kind, ``CALL_TIMEOUT`` or ``LEARN_TIMEOUT`` for AddTask and Analyze
        (which train); ``math.inf`` waits for ever."""
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds (math.inf: none), got {timeout}")
        self.address = address
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        options = [
            ("grpc.max_receive_message_length", MESSAGE_BYTES),
            ("grpc.max_send_message_length", MESSAGE_BYTES),
        ]
        if tls_ca is None and tls_cert is None:
            self._channel = grpc.insecure_channel(address, options=options)
        else:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=tls_ca.read_bytes() if tls_ca else None,
                private_key=tls_key.read_bytes() if tls_key else None,
                certificate_chain=tls_cert.read_bytes() if tls_cert else None,
            )
            self._channel = grpc.secure_channel(address, credentials, options=options)
        self._stub = pb_grpc.ContinualLearnerStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the server accepts connections (or raise ClientError UNAVAILABLE)."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise ClientError(
                grpc.StatusCode.UNAVAILABLE,
                f"no server answered at {self.address} within {timeout} s",
            ) from None

    def _deadline(self, learning: bool = False) -> float | None:
        """The seconds a call may take (None: no deadline)."""
        timeout = self.timeout
        if timeout is None:
            timeout = LEARN_TIMEOUT if learning else CALL_TIMEOUT
        return None if math.isinf(timeout) else timeout

    def _call(self, method: Any, request: Any, learning: bool = False) -> Any:
        try:
            return method(request, timeout=self._deadline(learning), metadata=self._metadata)
        except grpc.RpcError as e:
            raise ClientError(e.code(), e.details() or "") from None

    # ---- learning -------------------------------------------------------------------------
    def add_task(
        self,
        name: str,
        train: Any,
        val: Any = None,
        *,
        density: float | None = None,
        k: int | float | Sequence[int | float] | None = None,
        epochs: int | None = None,
        retrain_epochs: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        optimizer: str | None = None,
        momentum: float | None = None,
        weight_decay: float | None = None,
        saliency: str | None = None,
        prune_rounds: int | None = None,
        retrain: str | None = None,
        saliency_batches: int | None = None,
        boost_strength: float | None = None,
        boost_strength_factor: float | None = None,
        duty_cycle_period: int | None = None,
        seed: int | None = None,
        rewind_epoch: int | None = None,
        method: str | None = None,
        supermask_train_head: bool | None = None,
        rigl_interval: int | None = None,
        rigl_drop_fraction: float | None = None,
        structure: str | None = None,
    ) -> Iterator[Event]:
        """Upload a task and follow its learning: yields Queued, Progress..., then TaskInfo.

        ``train``/``val``: (x, y) numpy arrays or torch tensors, a torch dataset, or an
        Avalanche experience. Unset hyper-parameters take the server's defaults.
        """
        x, y = convert.examples(train)
        vx, vy = convert.examples(val) if val is not None else (None, None)
        given = dict(
            density=density,
            epochs=epochs,
            retrain_epochs=retrain_epochs,
            batch_size=batch_size,
            lr=lr,
            optimizer=optimizer,
            momentum=momentum,
            weight_decay=weight_decay,
            saliency=saliency,
            prune_rounds=prune_rounds,
            retrain=retrain,
            saliency_batches=saliency_batches,
            boost_strength=boost_strength,
            boost_strength_factor=boost_strength_factor,
            duty_cycle_period=duty_cycle_period,
            seed=seed,
            rewind_epoch=rewind_epoch,
            method=method,
            supermask_train_head=supermask_train_head,
            rigl_interval=rigl_interval,
            rigl_drop_fraction=rigl_drop_fraction,
            structure=structure,
        )
        hp = pb.HyperParameters(k=_k_sizes(k))
        for field_name, value in given.items():
            if value is not None:
                setattr(hp, field_name, value)
        header = pb.AddTaskHeader(
            name=name,
            hyper_parameters=hp,
            labels=sorted({int(v) for v in np.unique(y)}),
            train_examples=len(x),
            val_examples=len(vx) if vx is not None else 0,
        )

        def requests() -> Iterator[pb.AddTaskRequest]:
            yield pb.AddTaskRequest(header=header)
            for split, xs, ys in ((pb.SPLIT_TRAIN, x, y), (pb.SPLIT_VAL, vx, vy)):
                if xs is None or ys is None:
                    continue
                row = xs[0].nbytes + 8 if len(xs) else 1
                for part in convert.chunks(len(xs), row, CHUNK_BYTES):
                    yield pb.AddTaskRequest(
                        chunk=pb.ExampleChunk(
                            split=split, x=convert.tensor(xs[part]), y=convert.tensor(ys[part])
                        )
                    )

        try:
            calls = self._stub.AddTask(
                requests(), timeout=self._deadline(learning=True), metadata=self._metadata
            )
            for event in calls:
                kind = event.WhichOneof("event")
                if kind == "queued":
                    yield Queued(event.queued.position)
                elif kind == "progress":
                    p = event.progress
                    yield Progress(
                        p.phase,
                        p.epoch,
                        p.step,
                        p.loss,
                        p.accuracy,
                        p.density,
                        p.free_capacity,
                        p.total_epochs,
                        p.steps_per_epoch,
                    )
                elif kind == "task":
                    yield TaskInfo.from_proto(event.task)
        except grpc.RpcError as e:
            raise ClientError(e.code(), e.details() or "") from None

    def learn(self, name: str, train: Any, val: Any = None, **hyper: Any) -> TaskInfo:
        """``add_task`` without following progress: returns the committed task."""
        last: Event | None = None
        for last in self.add_task(name, train, val, **hyper):  # noqa: B007
            pass
        if not isinstance(last, TaskInfo):
            raise ClientError(grpc.StatusCode.UNKNOWN, "the server ended AddTask without a task")
        return last

    # ---- inference ------------------------------------------------------------------------
    def predict(self, task: str, x: Any) -> Prediction:
        """Labels and scores of ``task`` for inputs ``x`` (sent in chunks under 4 MiB)."""
        xs = convert.inputs(x)
        labels, scores, classes = [], [], ()
        row = xs[0].nbytes if len(xs) else 1
        for part in convert.chunks(max(1, len(xs)), row, CHUNK_BYTES, BATCH_ROWS):
            reply = self._call(
                self._stub.Predict, pb.PredictRequest(task=task, x=convert.tensor(xs[part]))
            )
            labels.append(convert.array(reply.labels))
            scores.append(convert.array(reply.scores))
            classes = tuple(reply.classes)
        return Prediction(np.concatenate(labels), np.concatenate(scores), classes)

    def evaluate(self, x: Any, y: Any, task: str | None = None) -> list[TaskAccuracy]:
        """Accuracy of ``task`` (or of every task) on the examples whose labels it has."""
        xs, ys = convert.inputs(x), convert.labels(y)
        correct: dict[str, float] = {}
        seen: dict[str, int] = {}
        row = (xs[0].nbytes if len(xs) else 1) + 8
        for part in convert.chunks(max(1, len(xs)), row, CHUNK_BYTES, BATCH_ROWS):
            reply = self._call(
                self._stub.Evaluate,
                pb.EvaluateRequest(
                    task=task or "", x=convert.tensor(xs[part]), y=convert.tensor(ys[part])
                ),
            )
            for r in reply.results:
                correct[r.task] = correct.get(r.task, 0.0) + round(r.accuracy * r.examples)
                seen[r.task] = seen.get(r.task, 0) + r.examples
        return [
            TaskAccuracy(t, correct[t] / seen[t] if seen[t] else math.nan, seen[t]) for t in seen
        ]

    # ---- analyses -------------------------------------------------------------------------
    def analyze(
        self,
        task: str,
        analysis: str,
        data: Any,
        *,
        train: Any = None,
        weights: Sequence[float] | None = None,
        keep_sign: bool | None = None,
        noise_levels: Sequence[float] | None = None,
        epochs: int | None = None,
        draws: int | None = None,
        seed: int | None = None,
    ) -> AnalysisResult:
        """Run ``analysis`` (weight-agnostic, layer-robustness or noise) on committed task
        ``task`` with labelled evaluation ``data`` (and, for noise, ``train`` examples of
        the dense comparison), like ``add_task``'s data. Everything goes in one message:
        at most 4 MiB and the server's --max-batch evaluation examples."""
        if analysis not in ANALYSES:
            raise ValueError(f"analysis must be one of {sorted(ANALYSES)}, got {analysis!r}")
        x, y = convert.examples(data)
        request = pb.AnalyzeRequest(
            task=task,
            analysis=ANALYSES[analysis],  # type: ignore[arg-type]
            x=convert.tensor(x),
            y=convert.tensor(y),
            weights=list(weights or ()),
            noise_levels=list(noise_levels or ()),
        )
        if train is not None:
            tx, ty = convert.examples(train)
            request.train_x.CopyFrom(convert.tensor(tx))
            request.train_y.CopyFrom(convert.tensor(ty))
        for field_name, value in (
            ("keep_sign", keep_sign),
            ("epochs", epochs),
            ("draws", draws),
            ("seed", seed),
        ):
            if value is not None:
                setattr(request, field_name, value)
        m = self._call(self._stub.Analyze, request, learning=True)
        names = {code: name for name, code in ANALYSES.items()}
        return AnalysisResult(
            task=m.task,
            analysis=names.get(m.analysis, str(m.analysis)),
            columns=tuple(m.columns),
            rows=tuple((r.label, tuple(r.values)) for r in m.rows),
            summary={s.name: s.value for s in m.summary},
            examples=m.examples,
            mlflow_run_id=m.mlflow_run_id,
        )

    # ---- browsing -------------------------------------------------------------------------
    def tasks(self) -> list[TaskInfo]:
        """Every task: committed ones in id order, then queued, training and failed ones."""
        reply = self._call(self._stub.ListTasks, pb.ListTasksRequest())
        return [TaskInfo.from_proto(t) for t in reply.tasks]

    def task(self, name: str) -> TaskInfo:
        return TaskInfo.from_proto(self._call(self._stub.GetTask, pb.GetTaskRequest(name=name)))

    def backbone(self) -> BackboneInfo:
        m = self._call(self._stub.GetBackbone, pb.GetBackboneRequest())
        layers = tuple(
            LayerInfo(
                lay.kind, tuple(lay.weight_shape), lay.weights, lay.free_weights, lay.free_capacity
            )
            for lay in m.layers
        )
        return BackboneInfo(
            m.spec,
            m.seed,
            tuple(m.input_shape),
            layers,
            m.free_capacity,
            m.tasks,
            m.max_tasks,
            m.tracking_uri,
            m.experiment_id,
        )
