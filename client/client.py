"""A typed Python client of the sparsecl gRPC service.

with Client("127.0.0.1:50051") as c:
    for event in c.add_task("digits-01", (x, y), epochs=2):
        print(event)
    labels = c.predict("digits-01", x_test).labels
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

import grpc
import numpy as np

from sparse_engine import arrays
from sparse_engine.tune import Trial, TuneReport
from sparsecl import hyper
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


Record = TypeVar("Record")


def _record(cls: type[Record], message: Any, **given: Any) -> Record:
    """A dataclass from the message's fields of the same names (repeated ones as tuples),
    but for those ``given``."""
    values = dict(given)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in values:
            value = getattr(message, f.name)
            repeated = is_repeated(message.DESCRIPTOR.fields_by_name[f.name])
            values[f.name] = tuple(value) if repeated else value
    return cls(**values)


def is_repeated(field: Any) -> bool:
    """Whether a message field is repeated, on every protobuf the project admits: 7.x has
    only ``is_repeated``, 5.29 only ``label`` (6.x both)."""
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else field.label == field.LABEL_REPEATED


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
    total_epochs: int  # at most, with auto epochs
    steps_per_epoch: int
    # on a train/retrain phase's last epoch: why it stopped (fixed, plateau, max_epochs),
    # its epochs and the epoch whose iterate it kept (1-based within the phase)
    stopped: str = ""
    phase_epochs: int = 0
    kept_epoch: int = 0
    # phase tune, on the event ending a trial: the search so far (chosen -1 until the last)
    tune: TuneReport | None = None

    @classmethod
    def from_proto(cls, m: pb.Progress) -> Progress:
        """The message as a Progress (``tune`` only when the message holds one)."""
        return _record(cls, m, tune=tune_report(m.tune) if m.HasField("tune") else None)


def tune_request(
    tolerance: float | None, pairs: Sequence[tuple[float, Any]] | None
) -> pb.TuneRequest:
    """A tune request: ``pairs`` of (density, k), k as the hyper-parameters carry it (None:
    the server's pairs), and the tolerance (None: the server's)."""
    return pb.TuneRequest(
        tolerance=tolerance,
        pairs=[pb.TunePair(density=float(d), k=hyper.message({"k": k}).k) for d, k in pairs or ()],
    )


def tune_report(m: pb.TuneReport) -> TuneReport:
    """A tune search's report from its message (k as the hyper-parameters carry it)."""
    trials = tuple(
        Trial(
            t.density,
            hyper.values(pb.HyperParameters(k=t.k))["k"],
            tuple(t.k_units),
            t.val_accuracy,
            t.seconds,
            t.error,
        )
        for t in m.trials
    )
    return TuneReport(trials, m.chosen, m.tolerance, m.seconds)


@dataclass(frozen=True)
class TaskInfo:
    """A task as the server reports it (state committed, queued, training, failed, damaged:
    quarantined because its stored artifact or tags are broken, reason in error, or deleted:
    no longer served, its MLflow run and registered version kept)."""

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
    learned_as: str  # free | mix | supermask (capacity.py); '' unless committed
    hyper_parameters: dict[str, Any] = field(default_factory=dict)
    reuse: TaskReuse | None = None  # what it could read of earlier tasks and reads

    @classmethod
    def from_proto(cls, m: pb.TaskInfo) -> TaskInfo:
        created = dt.datetime.fromtimestamp(m.created_unix_ms / 1000, dt.UTC)
        return _record(
            cls,
            m,
            state=pb.TaskState.Name(m.state).removeprefix("TASK_STATE_").lower(),
            created=created if m.created_unix_ms else None,
            hyper_parameters=hyper.values(m.hyper_parameters),
            reuse=TaskReuse.from_proto(m.reuse) if m.HasField("reuse") else None,
        )


@dataclass(frozen=True)
class TaskReuse:
    """Which earlier tasks a task could read (``choice`` per hidden layer) and reads: under
    similar, the ids ``chosen`` (probe accuracy >= ``baseline`` + ``margin``) and every
    served earlier task's probe accuracy (``scores``: id → accuracy); ``read_from``: per
    earlier task id, the weights its mask reads per layer; ``claimed``: the free weights it
    took, per layer."""

    choice: tuple[str, ...]
    chosen: tuple[int, ...]
    baseline: float | None
    margin: float | None
    scores: dict[int, float]
    read_from: dict[int, tuple[int, ...]]
    claimed: tuple[int, ...]

    @classmethod
    def from_proto(cls, m: pb.TaskReuse) -> TaskReuse:
        return cls(
            choice=tuple(m.choice),
            chosen=tuple(m.chosen),
            baseline=m.baseline if m.HasField("baseline") else None,
            margin=m.margin if m.HasField("margin") else None,
            scores={s.task_id: s.accuracy for s in m.scores},
            read_from={r.task_id: tuple(r.weights) for r in m.read_from},
            claimed=tuple(m.claimed),
        )


@dataclass(frozen=True)
class Deletion:
    """A deleted task (state deleted) and what its delete did to the backbone, per layer."""

    task: TaskInfo
    freed_weights: tuple[int, ...]  # back in the free pool
    retired_weights: tuple[int, ...]  # its own, read by remaining tasks: kept frozen
    free_capacity: tuple[float, ...]  # after the delete


@dataclass(frozen=True)
class Prediction:
    """Predicted labels (the task's own label values) and per-class scores (columns = classes)."""

    labels: np.ndarray
    scores: np.ndarray
    classes: tuple[int, ...]


@dataclass(frozen=True)
class TaskFreePrediction:
    """Task-free: per example the task inferred, its label (in that task's own values) and
    a confidence, p(task | x) × p(label | x, task); ``task_probs`` columns = ``task_names``."""

    tasks: np.ndarray  # str, N
    labels: np.ndarray  # int64, N
    confidence: np.ndarray  # float32, N
    task_probs: np.ndarray  # float32, N × len(task_names)
    task_names: tuple[str, ...]
    rule: str  # "identity" or "entropy"


@dataclass(frozen=True)
class LayerInfo:
    kind: str
    weight_shape: tuple[int, ...]
    weights: int
    free_weights: int
    free_capacity: float


@dataclass(frozen=True)
class EngineInfo:
    """What runs Predict: "native" (the C++ kernel, at instruction-set level ``isa``) or
    "torch"; ``warning`` says why the slower torch fallback runs, when it was not asked for."""

    backend: str
    isa: str
    warning: str


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
    engine: EngineInfo


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

    def health(self, service: str = "") -> str:
        """The server's health (grpc.health.v1) as a status name: "SERVING", or
        "NOT_SERVING" while it starts, loads its tasks or stops; ``service`` "" is the
        server as a whole. Unreachable: ClientError UNAVAILABLE."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self._channel)
        reply = self._call(stub.Check, health_pb2.HealthCheckRequest(service=service))
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

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
        tune: bool = False,
        tune_tolerance: float | None = None,
        tune_pairs: Sequence[tuple[float, Any]] | None = None,
        **hyper_parameters: Any,
    ) -> Iterator[Event]:
        """Upload a task and follow its learning: yields Queued, Progress..., then TaskInfo.

        ``train``/``val``: (x, y) numpy arrays or torch tensors, a torch dataset, or an
        Avalanche experience. ``hyper_parameters``: the fields of
        ``sparse_engine.config.TaskConfig`` by name (``SETTINGS`` describes each), e.g.
        ``density=0.1, k="auto"`` (or one k per hidden layer), ``epochs=2`` (or "auto",
        the default), ``method="rigl"``; unset (or None) ones take the server's defaults,
        an unknown name raises TypeError. ``tune``: first try the server's few (density, k)
        pairs on the validation split and keep the smallest density within
        ``tune_tolerance`` (default 0.005) of the best; the "tune" Progress events report
        every trial, the last one the choice and the seconds spent. ``tune_pairs``: the
        (density, k) pairs to try instead of the server's (1 to 9; k as ``k`` takes it);
        giving them implies ``tune``.
        The data and the names are checked here; the upload starts with the iteration.
        """
        x, y = arrays.examples(train)
        vx, vy = arrays.examples(val) if val is not None else (None, None)
        header = pb.AddTaskHeader(
            name=name,
            hyper_parameters=hyper.message(hyper_parameters),
            labels=sorted({int(v) for v in np.unique(y)}),
            train_examples=len(x),
            val_examples=len(vx) if vx is not None else 0,
            tune=tune_request(tune_tolerance, tune_pairs) if tune or tune_pairs else None,
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

        return self._follow(requests())

    def _follow(self, requests: Iterator[pb.AddTaskRequest]) -> Iterator[Event]:
        """The AddTask call's events, as the client's types."""
        try:
            calls = self._stub.AddTask(
                requests, timeout=self._deadline(learning=True), metadata=self._metadata
            )
            for event in calls:
                kind = event.WhichOneof("event")
                if kind == "queued":
                    yield Queued(event.queued.position)
                elif kind == "progress":
                    yield Progress.from_proto(event.progress)
                elif kind == "task":
                    yield TaskInfo.from_proto(event.task)
        except grpc.RpcError as e:
            raise ClientError(e.code(), e.details() or "") from None

    def learn(
        self,
        name: str,
        train: Any,
        val: Any = None,
        *,
        tune: bool = False,
        tune_tolerance: float | None = None,
        tune_pairs: Sequence[tuple[float, Any]] | None = None,
        **hyper_parameters: Any,
    ) -> TaskInfo:
        """``add_task`` without following progress: returns the committed task."""
        last: Event | None = None
        events = self.add_task(
            name,
            train,
            val,
            tune=tune,
            tune_tolerance=tune_tolerance,
            tune_pairs=tune_pairs,
            **hyper_parameters,
        )
        for last in events:  # noqa: B007
            pass
        if not isinstance(last, TaskInfo):
            raise ClientError(grpc.StatusCode.UNKNOWN, "the server ended AddTask without a task")
        return last

    # ---- inference ------------------------------------------------------------------------
    @overload
    def predict(self, task: str, x: Any) -> Prediction: ...
    @overload
    def predict(self, task: None, x: Any) -> TaskFreePrediction: ...
    def predict(self, task: str | None, x: Any) -> Prediction | TaskFreePrediction:
        """Labels and scores of ``task`` for inputs ``x`` (sent in chunks under 4 MiB);
        without a task, task-free: each example's task inferred, its label and confidence."""
        if task is None:
            return self._predict_task_free(x)
        if not task:
            raise ValueError("task must be a task's name, or None for task-free inference")
        xs = arrays.inputs(x)
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

    def _predict_task_free(self, x: Any) -> TaskFreePrediction:
        xs = arrays.inputs(x)
        replies = [
            self._call(self._stub.Predict, pb.PredictRequest(task="", x=convert.tensor(xs[part])))
            for part in convert.chunks(
                max(1, len(xs)), xs[0].nbytes if len(xs) else 1, CHUNK_BYTES, BATCH_ROWS
            )
        ]
        # a task committed between two chunks adds a column: align on every name seen
        names = list(dict.fromkeys(n for r in replies for n in r.task_names))
        probs = []
        for r in replies:
            part = convert.array(r.task_probs)
            full = np.zeros((len(part), len(names)), dtype=np.float32)
            full[:, [names.index(n) for n in r.task_names]] = part
            probs.append(full)
        return TaskFreePrediction(
            np.array([t for r in replies for t in r.tasks], dtype=str),
            np.concatenate([convert.array(r.labels) for r in replies]),
            np.concatenate([convert.array(r.confidence) for r in replies]),
            np.concatenate(probs),
            tuple(names),
            replies[-1].rule,
        )

    def evaluate(self, x: Any, y: Any, task: str | None = None) -> list[TaskAccuracy]:
        """Accuracy of ``task`` (or of every task) on the examples whose labels it has."""
        xs, ys = arrays.inputs(x), arrays.labels(y)
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
        x, y = arrays.examples(data)
        optional: dict[str, Any] = dict(keep_sign=keep_sign, epochs=epochs, draws=draws, seed=seed)
        request = pb.AnalyzeRequest(
            task=task,
            analysis=ANALYSES[analysis],  # type: ignore[arg-type]
            x=convert.tensor(x),
            y=convert.tensor(y),
            weights=list(weights or ()),
            noise_levels=list(noise_levels or ()),
            **{name: value for name, value in optional.items() if value is not None},
        )
        if train is not None:
            tx, ty = arrays.examples(train)
            request.train_x.CopyFrom(convert.tensor(tx))
            request.train_y.CopyFrom(convert.tensor(ty))
        m = self._call(self._stub.Analyze, request, learning=True)
        names = {code: name for name, code in ANALYSES.items()}
        return _record(
            AnalysisResult,
            m,
            analysis=names.get(m.analysis, str(m.analysis)),
            rows=tuple((r.label, tuple(r.values)) for r in m.rows),
            summary={s.name: s.value for s in m.summary},
        )

    # ---- browsing -------------------------------------------------------------------------
    def tasks(self) -> list[TaskInfo]:
        """Every task: committed ones in id order, then queued, training and failed ones."""
        reply = self._call(self._stub.ListTasks, pb.ListTasksRequest())
        return [TaskInfo.from_proto(t) for t in reply.tasks]

    def task(self, name: str) -> TaskInfo:
        return TaskInfo.from_proto(self._call(self._stub.GetTask, pb.GetTaskRequest(name=name)))

    def delete_task(self, name: str) -> Deletion:
        """Delete the committed task ``name``: no longer served, its weights that no
        remaining task reads freed; the name may then be used again."""
        m = self._call(self._stub.DeleteTask, pb.DeleteTaskRequest(name=name))
        return _record(Deletion, m, task=TaskInfo.from_proto(m.task))

    def backbone(self) -> BackboneInfo:
        m = self._call(self._stub.GetBackbone, pb.GetBackboneRequest())
        return _record(
            BackboneInfo,
            m,
            layers=tuple(_record(LayerInfo, lay) for lay in m.layers),
            engine=_record(EngineInfo, m.engine),
        )
