"""The data plane: every operation of the server in plain Python, for every transport.

A transport (the sparsecl.v1 gRPC service in service.py; the Open Inference Protocol's in
inference_service.py)
converts its messages to these arguments (arrays, names, TaskConfig) and these results
(dataclasses) back to its messages; what these raise, it maps with ``errors.status_of``.
Every check is made here, so every transport refuses the same requests with the same
messages. A refused call changes nothing: an upload is checked completely before its job
is queued, and a task becomes visible only once committed (see jobs.py and store.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from sparse_engine import analysis
from sparse_engine.analysis import AnalysisTable
from sparse_engine.backbone import BackboneSpec
from sparse_engine.config import ProgressEvent, TaskConfig
from sparse_engine.data import TaskData
from sparse_engine.engine import EngineInfo
from sparse_engine.errors import InvalidInputError, TaskExistsError, UnknownTaskError, brief
from sparse_engine.model import SparseCL, check_name
from sparse_engine.task import TaskDeletion, TaskRecord

from . import inputs, plots
from .config import ServerConfig
from .errors import NotReadyError
from .inputs import ArrayLike
from .jobs import Done, Failed, Job, JobEvent, Trainer
from .limits import check_batch, check_classes, check_examples, check_task_config
from .store import (
    CommittedTask,
    DamagedTask,
    FailedTask,
    StoreUnavailableError,
    TaskStore,
    redact,
)
from .storecheck import Rebuilt
from .uploads import BufferPool, Chunk, Examples, Header, Reservation, Upload, upload_thread

log = logging.getLogger("sparsecl.server")
RESERVED_NAMES = frozenset({"backbone"})
# The Open Inference Protocol's model that routes each example to its inferred task
# (task-free inference): '~' is URL-safe unencoded (RFC 3986's unreserved characters) and
# no task name can hold it (check_name), so no task, stored or future, is ever shadowed.
TASK_FREE_MODEL = "~taskfree"
# the parameters each analysis takes (AnalysisOptions' fields); others given are refused
PARAMETERS = {
    "weight-agnostic": {"weights", "keep_sign", "draws", "seed"},
    "layer-robustness": {"draws", "seed"},
    "noise": {"train_x", "train_y", "noise_levels", "epochs", "seed"},
}


@dataclass(frozen=True)
class TaskView:
    """One task as the server knows it: committed, queued, training, failed, damaged or
    deleted."""

    name: str
    state: str
    id: int = 0
    record: TaskRecord | None = None  # committed tasks
    config: TaskConfig | None = None  # committed, queued and training tasks
    run_id: str = ""
    model_name: str = ""
    model_version: str = ""
    created_ms: int = 0
    error: str = ""  # why the task failed or is damaged
    plan_bytes: int = 0  # a committed task's inference plan


@dataclass(frozen=True)
class Deletion:
    """A task just deleted: as it is listed now, and what its delete did to the backbone."""

    task: TaskView
    deletion: TaskDeletion


@dataclass(frozen=True)
class Backbone:
    spec: BackboneSpec
    seed: int
    free_weights: tuple[int, ...]  # per layer, read under the lock: never a half-done commit
    tasks: int
    tracking_uri: str  # without its password
    experiment_id: str
    engine: EngineInfo


@dataclass(frozen=True)
class Prediction:
    scores: np.ndarray  # float32, N × classes (logits)
    labels: np.ndarray  # int64, N: the predicted labels, in the task's own values
    classes: tuple[int, ...]  # the column order of scores


@dataclass(frozen=True)
class InferredPrediction:
    """Task-free: per example the task inferred, its label and a confidence."""

    tasks: tuple[str, ...]  # per example, the task inferred
    labels: np.ndarray  # int64, N: in the inferred task's own label values
    confidence: np.ndarray  # float32, N: p(task | x) × p(label | x, task)
    task_probs: np.ndarray  # float32, N × tasks: p(task | x), columns ``names``
    names: tuple[str, ...]  # the committed tasks scored, in id order
    rule: str  # "identity" or "entropy" (see sparse_engine.taskfree)


@dataclass(frozen=True)
class InferenceModel:
    """A committed task as a model of the Open Inference Protocol (KServe v2), any transport."""

    name: str
    version: str  # its registered model's version in MLflow ("" when the store has none)
    input_shape: tuple[int, ...]  # one example's: the backbone's input
    classes: tuple[int, ...]  # the label values, in the column order of the scores
    task_free: bool = False  # TASK_FREE_MODEL: each example's task inferred (no classes)


@dataclass(frozen=True)
class Accuracy:
    """A task's accuracy on the examples whose labels belong to it."""

    task: str
    accuracy: float
    examples: int


@dataclass(frozen=True)
class AnalysisOptions:
    """An analysis's parameters; None = not given (the analysis's default). One given that
    the analysis does not take is refused rather than ignored (see PARAMETERS)."""

    weights: tuple[float, ...] | None = None
    keep_sign: bool | None = None
    noise_levels: tuple[float, ...] | None = None
    epochs: int | None = None
    draws: int | None = None
    seed: int | None = None
    train_x: ArrayLike | None = None  # the noise analysis's dense network learns these
    train_y: ArrayLike | None = None


@dataclass(frozen=True)
class AnalysisReport:
    table: AnalysisTable
    run_id: str  # the MLflow run that holds it


@dataclass(frozen=True)
class Queued:
    """The upload was accepted; ``position`` jobs are ahead of it."""

    position: int


@dataclass(frozen=True)
class Progress:
    event: ProgressEvent
    total_epochs: int
    steps_per_epoch: int


class DataPlane:
    """One backbone's tasks: learn (queued), predict, list, describe, evaluate, analyze."""

    def __init__(
        self, config: ServerConfig, model: SparseCL, store: TaskStore, rebuilt: Rebuilt
    ) -> None:
        self.config = config
        self.model = model
        self.store = store
        self.lock = threading.RLock()
        self.stored: dict[str, CommittedTask] = {t.state.name: t for t in rebuilt.committed}
        self.failed = {f.name: f for f in rebuilt.failed}
        self.damaged = {d.name: d for d in rebuilt.damaged}  # listed, never served
        # the latest deleted task of each name, listed while no other task holds the name
        self.deleted = {t.state.name: t for t in rebuilt.deleted}
        self.trainer = Trainer(
            model, store, self.lock, config.max_queue, self._committed, config.max_train_seconds
        )
        self.pool = BufferPool(config.max_buffered_bytes)
        self.uploads = upload_thread()
        # one analysis computes at a time (it may train a dense network); others wait
        self.analyses = asyncio.Semaphore(1)
        self.ready = False

    # ---- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start learning queued tasks (a server that writes the store): ready."""
        if self.config.writes:
            self.trainer.start()
        self.ready = True

    def stop(self) -> None:
        """Not ready: the task training is cancelled at its next step, queued ones fail."""
        self.ready = False
        self.trainer.stop()

    def describe_backbone(self, last_run: str | None = None) -> None:
        """Bring the registry's entry of the backbone up to date (StoreUnavailableError);
        ``last_run``: the run of the task just committed (its owner-map plot)."""
        model = self.model
        self.store.describe_backbone(
            str(model.spec),
            model.seed,
            len(model.tasks),
            model.spec.overall(model.free_capacity()),
            last_run,
        )

    def _committed(self, task: CommittedTask) -> None:
        """Called by the trainer under the lock right after a task went live."""
        self.stored[task.state.name] = task
        self.failed.pop(task.state.name, None)
        self.deleted.pop(task.state.name, None)
        try:
            self.describe_backbone(task.run_id)
        except StoreUnavailableError:
            log.warning("could not update the backbone's registered model")

    # ---- reads ------------------------------------------------------------------------------
    def tasks(self) -> list[TaskView]:
        """Committed and damaged tasks by id, then queued, training and failed ones."""
        with self.lock:
            views = [self._committed_view(r.name) for r in self.model.records()]
            views += [stored_view(d) for d in self.damaged.values()]
            views.sort(key=lambda view: view.id)
            jobs = self.trainer.snapshot()
            views += [job_view(j) for j in jobs]
            seen = {j.name for j in jobs}
            views += [stored_view(f) for f in self.failed.values() if f.name not in seen]
            seen |= set(self.failed) | set(self.model.tasks) | set(self.damaged)
            views += [deleted_view(t) for t in self.deleted.values() if t.state.name not in seen]
        return views

    def knows(self, name: str) -> bool:
        """Whether ``name`` is a task of this server, in any state."""
        with self.lock:
            return (
                name in self.model.tasks
                or name in self.trainer.jobs
                or name in self.damaged
                or name in self.failed
                or name in self.deleted
            )

    def task(self, name: str) -> TaskView:
        """The task ``name`` in any state (UnknownTaskError naming the known tasks)."""
        check_name(name)  # a malformed name is InvalidInputError, not UnknownTaskError
        with self.lock:
            if name in self.model.tasks:
                return self._committed_view(name)
            job = self.trainer.jobs.get(name)
            if job is not None:
                return job_view(job)
            if name in self.damaged:
                return stored_view(self.damaged[name])
            if name in self.failed:
                return stored_view(self.failed[name])
            if name in self.deleted:
                return deleted_view(self.deleted[name])
            self.model.task(name)  # raises UnknownTaskError naming the known tasks
            raise AssertionError("unreachable")

    def backbone(self) -> Backbone:
        with self.lock:
            return Backbone(
                self.model.spec,
                self.model.seed,
                tuple(self.model.owners.free_count()),
                len(self.model.tasks),
                redact(self.store.tracking_uri),
                self.store.experiment_id,
                self.model.engine.info(),
            )

    def _committed_view(self, name: str) -> TaskView:
        task, stored = self.model.task(name), self.stored.get(name)
        return TaskView(
            name,
            "committed",
            task.record.id,
            task.record,
            task.config,
            run_id=stored.run_id if stored else "",
            model_name=stored.model_name if stored else "",
            model_version=stored.model_version if stored else "",
            created_ms=stored.created_ms if stored else 0,
            plan_bytes=self.model.plan(name).memory.total_bytes,
        )

    def _require_writer(self, call: str) -> None:
        """Raise NotReadyError naming the role unless this server learns and writes."""
        if not self.config.writes:
            raise NotReadyError(
                f"this server's role is {self.config.role} (a read-only replica of the store "
                f"{redact(self.store.tracking_uri)}): send {call} to the trainer"
            )

    def models(self) -> list[TaskView]:
        """The tasks that are models of the Open Inference Protocol: all but failed ones
        (committed ones are ready; queued, training and damaged ones are not)."""
        return [view for view in self.tasks() if view.state not in ("failed", "deleted")]

    def inference_model(self, name: str, version: str = "") -> InferenceModel:
        """The committed task ``name`` as a model, at ``version`` ("" = the latest, the one
        version a committed task has). UnknownTaskError for a name that is no task, a
        failed task (not a model) or another version; NotReadyError for a task that is not
        committed (queued, training, damaged); InvalidInputError for a malformed name.
        ``TASK_FREE_MODEL``: the task-free model, NotReadyError while no task is committed."""
        if name == TASK_FREE_MODEL:
            return self._task_free_model(version)
        view = self.task(name)
        if view.state == "failed":
            raise UnknownTaskError(f"unknown model {name!r}: its task failed ({view.error})")
        if view.state == "deleted":
            raise UnknownTaskError(f"unknown model {name!r}: its task was deleted")
        if view.record is None:
            detail = f": {view.error}" if view.error else "; infer once it is committed"
            raise NotReadyError(f"model {name!r} is not ready: its task is {view.state}{detail}")
        if version and version != view.model_version:
            have = repr(view.model_version) if view.model_version else "none"
            raise UnknownTaskError(
                f"model {name!r} has no version {brief(version)} (it has {have})"
            )
        return InferenceModel(
            name, view.model_version, self.model.spec.input_shape, view.record.classes
        )

    def _task_free_model(self, version: str) -> InferenceModel:
        """The task-free model (it has no version), once a task is committed."""
        if version:
            raise UnknownTaskError(
                f"model {TASK_FREE_MODEL!r} has no version {brief(version)} (it has none)"
            )
        with self.lock:
            if not self.model.tasks:
                raise NotReadyError(
                    f"model {TASK_FREE_MODEL!r} is not ready: no committed task to infer from yet"
                )
        return InferenceModel(TASK_FREE_MODEL, "", self.model.spec.input_shape, (), True)

    def model_ready(self, name: str, version: str = "") -> bool:
        """Whether ``inference_model(name, version)`` would answer (never raises)."""
        try:
            self.inference_model(name, version)
        except (InvalidInputError, UnknownTaskError, NotReadyError):
            return False
        return self.ready

    def _require_committed(self, name: str) -> None:
        """Raise unless ``name`` is a committed task (UnknownTaskError, NotReadyError)."""
        if name in self.model.tasks:
            return
        view = self.task(name)
        if view.state == "committed":  # it was committed since the line above
            return
        if view.state == "deleted":
            raise UnknownTaskError(f"task {name!r} was deleted (no longer served)")
        detail = f": {view.error}" if view.error else "; predict once it is committed"
        raise NotReadyError(f"task {name!r} is {view.state}{detail}")

    # ---- inference --------------------------------------------------------------------------
    async def predict(self, task: str, x: ArrayLike) -> Prediction:
        """Task ``task``'s scores and labels for the batch ``x`` (float32, or uint8 scaled by
        1/255; N × the backbone's input)."""
        self._require_committed(task)
        return await self._predict(task, x)

    async def predict_task_free(self, x: ArrayLike) -> InferredPrediction:
        """Task-free: every committed task scored for the batch ``x`` in one call of the
        library (``SparseCL.infer_task``), each example's task inferred and labelled."""
        with self.lock:
            if not self.model.tasks:
                raise NotReadyError("no committed task to infer from yet")
        batch = inputs.batch_array(x, "x")
        check_batch(len(batch), self.config)
        if len(batch) < 16:  # as _predict: small batches on the event loop
            return self._infer(batch)
        return await asyncio.to_thread(self._infer, batch)

    def _infer(self, batch: ArrayLike) -> InferredPrediction:
        result = self.model.infer_task(batch)
        return InferredPrediction(
            result.tasks,
            result.labels.numpy(),
            result.confidence.numpy(),
            result.task_probs.numpy(),
            result.names,
            result.rule,
        )

    async def infer(
        self, name: str, version: str, x: ArrayLike
    ) -> tuple[InferenceModel, Prediction | InferredPrediction]:
        """The Open Inference Protocol's inference: the model ``name`` at ``version`` ("" =
        the latest; see inference_model), looked up once, and its prediction for ``x``:
        task-free Predict's for ``TASK_FREE_MODEL``, the task's Predict's for a task."""
        model = self.inference_model(name, version)
        if model.task_free:
            return model, await self.predict_task_free(x)
        return model, await self._predict(name, x)

    async def _predict(self, task: str, x: ArrayLike) -> Prediction:
        # Below 16 examples (~0.1-0.3 ms of compute) on the event loop, as handing it to a
        # thread and back costs as much again (+36 % calls/s at one example, see
        # benchmarks/RESULTS.md, Serving). Larger batches are checked, converted and run on a
        # thread, so that the loop, the server's busiest thread, keeps serving meanwhile.
        if (x.shape[0] if x.ndim else 0) < 16:
            return self._compute(task, x)
        return await asyncio.to_thread(self._compute, task, x)

    def _compute(self, task: str, x: ArrayLike) -> Prediction:
        batch = inputs.batch_array(x, "x")
        check_batch(len(batch), self.config)
        classes = self.model.task(task).classes
        logits = self.model.logits(task, batch)  # converts and checks the values, once
        scores = logits.numpy()
        labels = np.asarray(classes, dtype=np.int64)[scores.argmax(1)]
        return Prediction(scores, labels, tuple(classes))

    async def evaluate(self, x: ArrayLike, y: ArrayLike, task: str = "") -> list[Accuracy]:
        """The accuracy of ``task`` (every committed task when "") on the examples whose
        labels belong to it; tasks none of whose labels occur are left out."""
        if task:
            self._require_committed(task)
            names = [task]
        else:
            with self.lock:
                names = [r.name for r in self.model.records()]
            if not names:
                raise NotReadyError("no committed task to evaluate yet")
        batch = inputs.batch(x, "x")
        check_batch(len(batch), self.config)
        data = TaskData(batch, inputs.labels(y, "y"))
        self.model.check_inputs(data.x)
        results = await asyncio.to_thread(self._evaluate, names, data)
        if task and results[0].examples == 0:
            classes = list(self.model.task(task).classes)
            raise InvalidInputError(
                f"no example's label belongs to task {task!r} (classes {classes})"
            )
        return [r for r in results if r.examples > 0]

    def _evaluate(self, names: list[str], data: TaskData) -> list[Accuracy]:
        out = []
        for name in names:
            classes = torch.tensor(self.model.task(name).classes, dtype=torch.int64)
            keep = torch.isin(data.y, classes)
            n = int(keep.sum())
            accuracy = (
                float((self.model.predict(name, data.x[keep]) == data.y[keep]).float().mean())
                if n
                else 0.0
            )
            out.append(Accuracy(name, accuracy, n))
        return out

    async def analyze(
        self,
        task: str,
        name: str,
        x: ArrayLike,
        y: ArrayLike,
        options: AnalysisOptions,
    ) -> AnalysisReport:
        """Run analysis ``name`` of a committed task off the event loop, log it to MLflow.

        Analyses read committed tasks only (whose weights never change), so they do not
        enter the training queue and run beside training; one computes at a time. Every
        check (task, parameters, data, limits) happens before any work; nothing of the
        model is written (see sparse_engine.analysis). A call that is cancelled (its client
        gone, its deadline passed) stops its analysis at the next step.
        """
        self._require_writer("Analyze")  # it logs a run to the store
        self._require_committed(task)
        stop = threading.Event()
        call, params = self._analysis_call(task, name, x, y, options, stop.is_set)
        try:
            async with self.analyses:
                result = await asyncio.to_thread(call)
        finally:  # cancelled: the thread stops too
            stop.set()
        table = result.table()
        stored = self.stored.get(task)
        run_id = await asyncio.to_thread(
            self.store.log_analysis,
            table,
            params,
            lambda path: plots.analysis_plot(result, path),
            stored.run_id if stored else "",
        )
        return AnalysisReport(table, run_id)

    def _labelled(self, x: ArrayLike, y: ArrayLike, xs: str, ys: str) -> TaskData:
        data = TaskData(inputs.batch(x, xs), inputs.labels(y, ys))
        self.model.check_inputs(data.x)
        return data

    def _analysis_call(
        self,
        task_name: str,
        name: str,
        x: ArrayLike,
        y: ArrayLike,
        options: AnalysisOptions,
        stop: analysis.Stop,
    ) -> tuple[Callable[[], analysis.AnalysisResult], dict[str, str]]:
        """The analysis to run and its parameters (for MLflow), every input checked first."""
        if name not in PARAMETERS:
            raise InvalidInputError(
                f"analysis must be one of {tuple(PARAMETERS)}, got {brief(name)}"
            )
        given = {f.name for f in fields(options) if getattr(options, f.name) is not None}
        if given - PARAMETERS[name]:
            raise InvalidInputError(
                f"the {name} analysis does not take {', '.join(sorted(given - PARAMETERS[name]))}"
            )
        weights = options.weights or analysis.DEFAULT_WEIGHTS
        levels = options.noise_levels or analysis.DEFAULT_NOISE
        draws = options.draws if options.draws is not None else 3
        epochs, seed = options.epochs, options.seed or 0
        analysis.check_options(name, weights, levels, draws, epochs)
        data = self._labelled(x, y, "x", "y")
        check_batch(len(data), self.config)
        model, task = self.model, self.model.task(task_name)
        analysis.task_examples(model, task, data, "evaluation")
        params = {"task": task_name, "analysis": name, "seed": str(seed)}
        params["examples"] = str(len(data))
        call: Callable[[], analysis.AnalysisResult]
        if name == "weight-agnostic":
            keep_sign = options.keep_sign if options.keep_sign is not None else True
            params.update(weights=",".join(map(str, weights)), keep_sign=str(keep_sign))
            params["draws"] = str(draws)

            def call() -> analysis.AnalysisResult:
                return analysis.weight_agnostic(
                    model, task_name, data, weights, keep_sign, draws, seed, stop
                )

        elif name == "layer-robustness":
            params["draws"] = str(draws)

            def call() -> analysis.AnalysisResult:
                return analysis.layer_robustness(model, task_name, data, draws, seed, stop)

        else:
            if options.train_x is None or options.train_y is None:
                raise InvalidInputError(
                    "the noise analysis needs training examples (train_x, train_y) for the "
                    "dense network it compares the task with"
                )
            train = self._labelled(options.train_x, options.train_y, "train_x", "train_y")
            check_examples(len(train), self.config)
            analysis.task_examples(model, task, train, "training")
            params.update(
                noise_levels=",".join(map(str, levels)),
                epochs=str(epochs if epochs is not None else analysis.dense_epochs(task)),
                train_examples=str(len(train)),
            )

            def call() -> analysis.AnalysisResult:
                return analysis.noise_robustness(
                    model, task_name, data, train, levels, epochs, seed, stop
                )

        return call, params

    # ---- deleting ---------------------------------------------------------------------------
    async def delete(self, name: str) -> Deletion:
        """Delete the committed task ``name`` (DeleteTask): stored first (store.delete, the
        delete point), then no longer served; its weights that no remaining task reads go
        back to the free pool. UnknownTaskError for a name not committed (or deleted),
        NotReadyError while it is queued or training, while any task trains (a delete
        changes the free weights it learns from) or while the store holds damaged tasks."""
        self._require_writer("DeleteTask")
        check_name(name)
        deletion = await asyncio.to_thread(self._delete, name)
        try:
            self.describe_backbone()
        except StoreUnavailableError:
            log.warning("could not update the backbone's registered model")
        return deletion

    def _delete(self, name: str) -> Deletion:
        with self.lock:  # held throughout: no job starts training meanwhile (jobs.py)
            job = self.trainer.jobs.get(name)
            if name not in self.model.tasks:
                if job is not None and job.state in ("queued", "training"):
                    raise NotReadyError(
                        f"task {name!r} is {job.state}: it can be deleted once committed "
                        "(cancel its AddTask to drop it now)"
                    )
                if name in self.deleted:
                    raise UnknownTaskError(f"task {name!r} is already deleted")
                if name in self.damaged:
                    raise NotReadyError(
                        f"task {name!r} is damaged: repair it first (see `sparsecl store check`)"
                    )
                self.task(name)  # UnknownTaskError, or a failed task:
                raise UnknownTaskError(f"task {name!r} is not committed: nothing to delete")
            if self.damaged:  # freeing weights a damaged task reads would lose it for good
                raise NotReadyError(
                    f"the store holds damaged task(s) {', '.join(sorted(self.damaged))}: no "
                    "task can be deleted until they are repaired (see `sparsecl store check`)"
                )
            training = [j.name for j in self.trainer.active() if j.state == "training"]
            if training:
                raise NotReadyError(
                    f"task {training[0]!r} is training: delete {name!r} once it is committed "
                    "or failed (a delete changes the free weights a task learns from)"
                )
            stored = self.stored[name]
            position = self.model.last_id
            self.store.delete(stored, position)  # the delete point; raises: nothing changed
            deletion = self.forget(replace(stored, deleted_after=position))
            log.info(
                "deleted task %r (id %d): %d weights freed, %d kept for the tasks reading them",
                name,
                deletion.id,
                sum(deletion.freed),
                sum(deletion.retired),
            )
            return Deletion(deleted_view(self.deleted[name]), deletion)

    def forget(self, task: CommittedTask) -> TaskDeletion:
        """Stop serving a task the store holds as deleted (its delete, or a replica following
        the trainer's): the model frees its unread weights, the task is listed deleted."""
        with self.lock:
            deletion = self.model.delete_task(task.state.name)
            self.stored.pop(task.state.name, None)
            self.deleted[task.state.name] = task
        return deletion

    # ---- learning ---------------------------------------------------------------------------
    async def learn(
        self, upload: AsyncIterator[Header | Chunk]
    ) -> AsyncGenerator[Queued | Progress | TaskView, None]:
        """Learn a task from an upload (a Header, then Chunks): yields Queued once the upload
        passed every check and its job is queued, Progress while it trains, then the
        committed task; raises the job's error if it fails. Closing this generator before
        the end (the caller went away) cancels the job: nothing is kept."""
        events: asyncio.Queue[JobEvent] = asyncio.Queue()
        job, position = await self._accept(upload, events)
        try:
            yield Queued(position)
            while True:
                event = await events.get()
                if isinstance(event, Done):
                    with self.lock:
                        view = self._committed_view(event.task.state.name)
                    yield view
                    return
                if isinstance(event, Failed):
                    raise event.error
                yield Progress(
                    event, job.config.most_epochs(job.steps_per_epoch), job.steps_per_epoch
                )
        finally:
            self.trainer.cancel(job, "AddTask was cancelled by the client (or its deadline passed)")

    async def _accept(
        self, upload: AsyncIterator[Header | Chunk], events: asyncio.Queue[JobEvent]
    ) -> tuple[Job, int]:
        """Receive and check the whole upload, then queue its job; returns the job and how
        many jobs are ahead of it."""
        self._require_writer("AddTask")
        if self.damaged:  # a new task could claim a damaged task's weights for good
            raise NotReadyError(
                "the store holds damaged task(s) "
                f"{', '.join(sorted(self.damaged))}: no task can be added until they are "
                "repaired; see `sparsecl store check`, then restore the named artifact or "
                "run, or the data dir from a backup (sparsecl restore), and restart"
            )
        header = await self._next(upload, "header")
        if header is None:
            raise InvalidInputError("empty upload: send a header, then chunks of examples")
        if not isinstance(header, Header):
            raise InvalidInputError("the first AddTask message must be the header")
        self._check_header(header)
        slot = self.trainer.open_slot()  # an upload in flight counts against the queue
        reservation = Reservation(self.pool)
        try:
            train, val = await self._receive(header, upload, reservation)
            await asyncio.to_thread(
                self.model.check_labels,
                header.name,
                train.labels(),
                val.labels() if val is not None else None,
                header.config,
            )
            loop = asyncio.get_running_loop()

            def listen(event: JobEvent) -> None:  # called from the trainer thread
                loop.call_soon_threadsafe(events.put_nowait, event)

            with self.lock:  # re-checked atomically with the submit
                self._check_free(header.name)
                job = Job(header.name, header.config, train, val, listen, reservation, header.tune)
                position = self.trainer.submit(job, slot)
                self.failed.pop(header.name, None)
            return job, position
        except BaseException:
            slot.release()
            reservation.release()
            raise

    def _check_free(self, name: str) -> None:
        """Refuse a name that is committed or being learned (call under the lock)."""
        if name in self.model.tasks or name in {j.name for j in self.trainer.active()}:
            raise TaskExistsError(
                f"task {name!r} already exists or is being learned; choose another name"
            )

    def _check_header(self, header: Header) -> None:
        """Everything the header alone can refuse, before any example is accepted."""
        check_task_name(header.name)
        check_task_config(header.config, self.config)
        if header.labels:
            check_classes(len(set(header.labels)), self.config)
        check_examples(header.train_examples + header.val_examples, self.config)
        with self.lock:
            self._check_free(header.name)

    async def _next(
        self, upload: AsyncIterator[Header | Chunk], what: str
    ) -> Header | Chunk | None:
        """The upload's next item (None at its end), waiting at most ``upload_timeout``."""
        try:
            return await asyncio.wait_for(anext(upload), self.config.upload_timeout)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise InvalidInputError(
                f"no {what} arrived within the server's --upload-timeout of "
                f"{self.config.upload_timeout:g} s; send the upload without pauses"
            ) from None

    async def _receive(
        self, header: Header, upload: AsyncIterator[Header | Chunk], reservation: Reservation
    ) -> tuple[Examples, Examples | None]:
        """Read the upload's chunks after its header; every chunk's bytes are counted against
        the server's limits and buffer pool before it is kept."""
        received = Upload(header, reservation, self.config, self.model.check_shape)
        loop = asyncio.get_running_loop()
        while (item := await self._next(upload, "chunk")) is not None:
            if not isinstance(item, Chunk):
                raise InvalidInputError("only the first AddTask message may be a header")
            received.count(item)
            await loop.run_in_executor(self.uploads, received.keep, item)
        return received.examples()


def job_view(job: Job) -> TaskView:
    return TaskView(
        job.name,
        job.state,
        config=job.config,
        run_id=job.run_id,
        created_ms=job.created_ms,
        error=job.error,
    )


def stored_view(task: FailedTask | DamagedTask) -> TaskView:
    """A failed task, or a quarantined one (why, naming its run and artifact, in ``error``)."""
    if isinstance(task, DamagedTask):
        state, task_id = "damaged", task.task_id
    else:
        state, task_id = "failed", 0
    return TaskView(
        task.name,
        state,
        task_id,
        run_id=task.run_id,
        created_ms=task.created_ms,
        error=task.error,
    )


def deleted_view(task: CommittedTask) -> TaskView:
    """A deleted task: its id, run and registered version are kept for its history."""
    return TaskView(
        task.state.name,
        "deleted",
        task.state.record.id,
        config=task.state.config,
        run_id=task.run_id,
        model_name=task.model_name,
        model_version=task.model_version,
        created_ms=task.created_ms,
    )


def check_task_name(name: str) -> None:
    """A task name the store can hold: ``check_name``'s rules, and not one of the names
    the store uses for itself in the MLflow registry ('<experiment>.backbone')."""
    check_name(name)
    if name in RESERVED_NAMES:
        raise InvalidInputError(
            f"task name {name!r} is reserved (the registry's entry of the backbone); choose another"
        )
