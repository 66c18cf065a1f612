"""The ContinualLearner gRPC service (grpc.aio): validates requests, maps errors to status codes.

Every rejected call changes nothing: uploads are validated completely before a job is
queued, and tasks become visible only once committed (see jobs.py and store.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import grpc
import numpy as np
import torch

from sparse_engine import analysis
from sparse_engine.config import TaskConfig
from sparse_engine.data import TaskData
from sparse_engine.errors import (
    InvalidInputError,
    NoFreeCapacityError,
    TaskExistsError,
    UnknownTaskError,
    brief,
)
from sparse_engine.model import SparseCL, check_name
from sparsecl.v1 import sparsecl_pb2 as pb
from sparsecl.v1 import sparsecl_pb2_grpc as pb_grpc

from . import messages, plots, tensors
from .config import ServerConfig
from .jobs import CancelledError, Done, Failed, Job, JobEvent, QueueFullError, Trainer
from .limits import (
    LimitExceededError,
    UploadMeter,
    check_batch,
    check_classes,
    check_examples,
    check_task_config,
)
from .store import (
    CommittedTask,
    DamagedTask,
    FailedTask,
    StoreUnavailableError,
    TaskStore,
    redact,
)
from .uploads import BufferPool, Examples, Reservation, SplitBuffer

log = logging.getLogger("sparsecl.server")
T = TypeVar("T")
RESERVED_NAMES = frozenset({"backbone"})


class NotReadyError(Exception):
    """The task exists but is not committed (queued, training or failed)."""


STATUS: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (InvalidInputError, grpc.StatusCode.INVALID_ARGUMENT),
    (UnknownTaskError, grpc.StatusCode.NOT_FOUND),
    (TaskExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (NoFreeCapacityError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (QueueFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (LimitExceededError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NotReadyError, grpc.StatusCode.FAILED_PRECONDITION),
    (MemoryError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StoreUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (CancelledError, grpc.StatusCode.UNAVAILABLE),
    (analysis.AnalysisStoppedError, grpc.StatusCode.CANCELLED),
)


def status_of(error: Exception) -> grpc.StatusCode:
    """The status code of an error; INTERNAL for anything unexpected."""
    for kind, code in STATUS:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


async def answer(context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]) -> T:
    """Run a handler body; known errors become their status code with their message."""
    try:
        return await call()
    except grpc.aio.AbortError:
        raise
    except Exception as e:
        code = status_of(e)
        if code == grpc.StatusCode.INTERNAL:
            log.exception("internal error")
        await context.abort(code, str(e) or type(e).__name__)
        raise  # abort raises; this line is never reached


class ContinualLearnerService(pb_grpc.ContinualLearnerServicer):
    """One backbone's tasks over gRPC: learn (queued), predict, list, describe, evaluate."""

    def __init__(
        self,
        config: ServerConfig,
        model: SparseCL,
        store: TaskStore,
        committed: list[CommittedTask],
        failed: list[FailedTask],
        damaged: list[DamagedTask] | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.store = store
        self.lock = threading.RLock()
        self.stored: dict[str, CommittedTask] = {t.state.name: t for t in committed}
        self.failed: dict[str, FailedTask] = {f.name: f for f in failed}
        # quarantined at start (see storecheck.py): listed, never served
        self.damaged: dict[str, DamagedTask] = {d.name: d for d in damaged or []}
        self.trainer = Trainer(
            model, store, self.lock, config.max_queue, self._committed, config.max_train_seconds
        )
        self.pool = BufferPool(config.max_buffered_bytes)
        self.uploads = ThreadPoolExecutor(1, "sparsecl-upload", initializer=lower_priority)
        # one analysis computes at a time (it may train a dense network); others wait
        self.analyses = asyncio.Semaphore(1)

    def _committed(self, task: CommittedTask) -> None:
        """Called by the trainer under the lock right after a task went live."""
        self.stored[task.state.name] = task
        self.failed.pop(task.state.name, None)
        spec = str(self.model.spec)
        try:
            self.store.describe_backbone(
                spec,
                self.model.seed,
                len(self.model.tasks),
                self.model.spec.overall(self.model.free_capacity()),
            )
        except StoreUnavailableError:
            log.warning("could not update the backbone's registered model")

    # ---- lookups --------------------------------------------------------------------------
    def _committed_info(self, name: str) -> pb.TaskInfo:
        task = self.model.task(name)
        stored = self.stored.get(name)
        return messages.task_info(
            task.record,
            task.config,
            run_id=stored.run_id if stored else "",
            model_name=stored.model_name if stored else "",
            model_version=stored.model_version if stored else "",
            created_ms=stored.created_ms if stored else 0,
            plan_bytes=self.model.plan(name).memory.total_bytes,
        )

    def _job_info(self, job: Job) -> pb.TaskInfo:
        states = {
            "queued": pb.TASK_STATE_QUEUED,
            "training": pb.TASK_STATE_TRAINING,
            "failed": pb.TASK_STATE_FAILED,
        }
        return pb.TaskInfo(
            name=job.name,
            state=states.get(job.state, pb.TASK_STATE_UNSPECIFIED),
            mlflow_run_id=job.run_id,
            created_unix_ms=job.created_ms,
            error=job.error,
            hyper_parameters=messages.hyper_parameters(job.config),
        )

    def _failed_info(self, failed: FailedTask) -> pb.TaskInfo:
        return pb.TaskInfo(
            name=failed.name,
            state=pb.TASK_STATE_FAILED,
            mlflow_run_id=failed.run_id,
            created_unix_ms=failed.created_ms,
            error=failed.error,
        )

    def _damaged_info(self, damaged: DamagedTask) -> pb.TaskInfo:
        """A quarantined task: state damaged, why (run id, artifact path) in ``error``."""
        return pb.TaskInfo(
            name=damaged.name,
            state=pb.TASK_STATE_DAMAGED,
            id=damaged.task_id,
            mlflow_run_id=damaged.run_id,
            created_unix_ms=damaged.created_ms,
            error=damaged.error,
        )

    def _info(self, name: str) -> pb.TaskInfo:
        check_name(name)  # a malformed name is INVALID_ARGUMENT, not NOT_FOUND
        with self.lock:
            if name in self.model.tasks:
                return self._committed_info(name)
            job = self.trainer.jobs.get(name)
            if job is not None:
                return self._job_info(job)
            if name in self.damaged:
                return self._damaged_info(self.damaged[name])
            if name in self.failed:
                return self._failed_info(self.failed[name])
            self.model.task(name)  # raises UnknownTaskError naming the known tasks
            raise AssertionError("unreachable")

    def _live(self, name: str) -> None:
        """Raise unless ``name`` is a committed task (NOT_FOUND / FAILED_PRECONDITION)."""
        if name in self.model.tasks:
            return
        info = self._info(name)
        state = pb.TaskState.Name(info.state).removeprefix("TASK_STATE_").lower()
        detail = f": {info.error}" if info.error else "; predict once it is committed"
        raise NotReadyError(f"task {name!r} is {state}{detail}")

    # ---- RPCs -----------------------------------------------------------------------------
    async def Predict(
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext
    ) -> pb.PredictResponse:
        async def run() -> pb.PredictResponse:
            self._live(request.task)
            x = tensors.batch(request.x, "x")
            check_batch(len(x), self.config)
            classes = self.model.task(request.task).classes
            logits = await asyncio.to_thread(self.model.logits, request.task, x)
            labels = np.asarray(classes, dtype=np.int64)[logits.argmax(1).numpy()]
            return pb.PredictResponse(
                scores=tensors.to_proto(logits.numpy()),
                labels=tensors.to_proto(labels),
                classes=list(classes),
            )

        return await answer(context, run)

    async def ListTasks(
        self, request: pb.ListTasksRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTasksResponse:
        async def run() -> pb.ListTasksResponse:
            with self.lock:
                infos = [self._committed_info(r.name) for r in self.model.records()]
                infos += [self._damaged_info(d) for d in self.damaged.values()]
                infos.sort(key=lambda info: info.id)
                jobs = self.trainer.snapshot()
                infos += [self._job_info(j) for j in jobs]
                seen = {j.name for j in jobs}
                infos += [self._failed_info(f) for f in self.failed.values() if f.name not in seen]
            return pb.ListTasksResponse(tasks=infos)

        return await answer(context, run)

    async def GetTask(
        self, request: pb.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.TaskInfo:
        async def run() -> pb.TaskInfo:
            return self._info(request.name)

        return await answer(context, run)

    async def GetBackbone(
        self, request: pb.GetBackboneRequest, context: grpc.aio.ServicerContext
    ) -> pb.BackboneInfo:
        async def run() -> pb.BackboneInfo:
            with self.lock:
                return messages.backbone_info(
                    self.model.spec,
                    self.model.seed,
                    self.model.owners,
                    len(self.model.tasks),
                    redact(self.store.tracking_uri),
                    self.store.experiment_id,
                )

        return await answer(context, run)

    async def Evaluate(
        self, request: pb.EvaluateRequest, context: grpc.aio.ServicerContext
    ) -> pb.EvaluateResponse:
        async def run() -> pb.EvaluateResponse:
            if request.task:
                self._live(request.task)
                names = [request.task]
            else:
                with self.lock:
                    names = [r.name for r in self.model.records()]
                if not names:
                    raise NotReadyError("no committed task to evaluate yet")
            x = tensors.batch(request.x, "x")
            check_batch(len(x), self.config)
            data = TaskData(x, tensors.labels(request.y, "y"))
            self.model.check_inputs(data.x)
            results = await asyncio.to_thread(self._evaluate, names, data)
            if request.task and results[0].examples == 0:
                classes = list(self.model.task(request.task).classes)
                raise InvalidInputError(
                    f"no example's label belongs to task {request.task!r} (classes {classes})"
                )
            return pb.EvaluateResponse(results=[r for r in results if r.examples > 0])

        return await answer(context, run)

    def _evaluate(self, names: list[str], data: TaskData) -> list[pb.TaskAccuracy]:
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
            out.append(pb.TaskAccuracy(task=name, accuracy=accuracy, examples=n))
        return out

    async def Analyze(
        self, request: pb.AnalyzeRequest, context: grpc.aio.ServicerContext
    ) -> pb.AnalyzeResponse:
        """Run one analysis of a committed task off the event loop, log it to MLflow.

        Analyses read committed tasks only (whose weights never change), so they do not
        enter the training queue and run beside training; one computes at a time. Every
        check (task, parameters, data, limits) happens before any work; nothing of the
        model is written (see sparse_engine.analysis). A call that is cancelled, whose
        client disconnects or whose deadline passes stops its analysis at the next step.
        """

        async def run() -> pb.AnalyzeResponse:
            self._live(request.task)
            name = messages.analysis_name(request.analysis)
            stop = threading.Event()
            call, params = self._analysis_call(name, request, stop.is_set)
            try:
                async with self.analyses:
                    result = await asyncio.to_thread(call)
            finally:  # cancelled, disconnected or past its deadline: the thread stops too
                stop.set()
            table = result.table()
            stored = self.stored.get(request.task)
            run_id = await asyncio.to_thread(
                self.store.log_analysis,
                table,
                params,
                lambda path: plots.analysis_plot(result, path),
                stored.run_id if stored else "",
            )
            return messages.analyze_response(table, run_id)

        return await answer(context, run)

    def _labelled(self, x: pb.Tensor, y: pb.Tensor, xs: str, ys: str) -> TaskData:
        data = TaskData(tensors.batch(x, xs), tensors.labels(y, ys))
        self.model.check_inputs(data.x)
        return data

    def _analysis_call(
        self, name: str, request: pb.AnalyzeRequest, stop: analysis.Stop
    ) -> tuple[Callable[[], analysis.AnalysisResult], dict[str, str]]:
        """The analysis to run and its parameters (for MLflow), every input checked first;
        parameters that do not belong to the analysis are refused rather than ignored."""
        allowed = {
            "weight-agnostic": {"weights", "keep_sign", "draws", "seed"},
            "layer-robustness": {"draws", "seed"},
            "noise": {"train_x", "train_y", "noise_levels", "epochs", "seed"},
        }[name]
        given = {f.name for f, _ in request.ListFields()} - {"task", "analysis", "x", "y"}
        if given - allowed:
            raise InvalidInputError(
                f"the {name} analysis does not take {', '.join(sorted(given - allowed))}"
            )
        weights = tuple(request.weights) or analysis.DEFAULT_WEIGHTS
        levels = tuple(request.noise_levels) or analysis.DEFAULT_NOISE
        draws = request.draws if request.HasField("draws") else 3
        epochs = request.epochs if request.HasField("epochs") else None
        seed = request.seed
        analysis.check_options(name, weights, levels, draws, epochs)
        data = self._labelled(request.x, request.y, "x", "y")
        check_batch(len(data), self.config)
        task = self.model.task(request.task)
        analysis.task_examples(self.model, task, data, "evaluation")
        params = {"task": request.task, "analysis": name, "seed": str(seed)}
        params["examples"] = str(len(data))
        model = self.model
        call: Callable[[], analysis.AnalysisResult]
        if name == "weight-agnostic":
            keep_sign = request.keep_sign if request.HasField("keep_sign") else True
            params.update(weights=",".join(map(str, weights)), keep_sign=str(keep_sign))
            params["draws"] = str(draws)

            def call() -> analysis.AnalysisResult:
                return analysis.weight_agnostic(
                    model, request.task, data, weights, keep_sign, draws, seed, stop
                )

        elif name == "layer-robustness":
            params["draws"] = str(draws)

            def call() -> analysis.AnalysisResult:
                return analysis.layer_robustness(model, request.task, data, draws, seed, stop)

        else:
            if not request.HasField("train_x") or not request.HasField("train_y"):
                raise InvalidInputError(
                    "the noise analysis needs training examples (train_x, train_y) for the "
                    "dense network it compares the task with"
                )
            train = self._labelled(request.train_x, request.train_y, "train_x", "train_y")
            check_examples(len(train), self.config)
            analysis.task_examples(self.model, task, train, "training")
            params.update(
                noise_levels=",".join(map(str, levels)),
                epochs=str(epochs if epochs is not None else task.config.total_epochs),
                train_examples=str(len(train)),
            )

            def call() -> analysis.AnalysisResult:
                return analysis.noise_robustness(
                    model, request.task, data, train, levels, epochs, seed, stop
                )

        return call, params

    async def AddTask(
        self,
        request_iterator: AsyncIterator[pb.AddTaskRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.AddTaskEvent]:
        events: asyncio.Queue[JobEvent] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        requests = aiter(request_iterator)

        async def accept() -> tuple[int, Job]:
            if self.damaged:  # a new task could claim a damaged task's weights for good
                raise NotReadyError(
                    "the store holds damaged task(s) "
                    f"{', '.join(sorted(self.damaged))}: no task can be added until they are "
                    "repaired; see `sparsecl store check`, then restore the named artifact or "
                    "run, or the data dir from a backup (sparsecl restore), and restart"
                )
            first = await self._next(requests, "header")
            if first is None:
                raise InvalidInputError("empty upload: send a header, then chunks of examples")
            if first.WhichOneof("item") != "header":
                raise InvalidInputError("the first AddTask message must be the header")
            header = first.header
            config = self._check_header(header)
            slot = self.trainer.open_slot()  # an upload in flight counts against the queue
            reservation = Reservation(self.pool)
            try:
                train, val = await self._receive(header, requests, reservation)
                name = header.name
                await asyncio.to_thread(
                    self.model.check_labels,
                    name,
                    train.labels(),
                    val.labels() if val is not None else None,
                    config,
                )
                with self.lock:  # re-checked atomically with the submit
                    self._check_free(name)

                    def listen(event: JobEvent) -> None:  # called from the trainer thread
                        loop.call_soon_threadsafe(events.put_nowait, event)

                    job = Job(name, config, train, val, listen, reservation)
                    position = self.trainer.submit(job, slot)
                    self.failed.pop(name, None)
                return position, job
            except BaseException:
                slot.release()
                reservation.release()
                raise

        position, job = await answer(context, accept)
        try:
            yield pb.AddTaskEvent(queued=pb.Queued(position=position))
            while True:
                event = await events.get()
                if isinstance(event, Done):
                    with self.lock:
                        info = self._committed_info(event.task.state.name)
                    yield pb.AddTaskEvent(task=info)
                    return
                if isinstance(event, Failed):
                    error = event.error

                    async def fail(error: Exception = error) -> None:
                        raise error

                    await answer(context, fail)
                    return
                yield pb.AddTaskEvent(
                    progress=messages.progress(event, job.config.total_epochs, job.steps_per_epoch)
                )
        finally:  # the caller went away (cancelled, disconnected, deadline): nothing is kept
            self.trainer.cancel(job, "AddTask was cancelled by the client (or its deadline passed)")

    def _check_free(self, name: str) -> None:
        """Refuse a name that is committed or being learned (call under the lock)."""
        if name in self.model.tasks or name in {j.name for j in self.trainer.active()}:
            raise TaskExistsError(
                f"task {name!r} already exists or is being learned; choose another name"
            )

    def _check_header(self, header: pb.AddTaskHeader) -> TaskConfig:
        """Everything the header alone can refuse, before any example is accepted."""
        check_task_name(header.name)
        config = messages.task_config(header.hyper_parameters)
        check_task_config(config, self.config)
        if header.labels:
            check_classes(len(set(header.labels)), self.config)
        check_examples(header.train_examples + header.val_examples, self.config)
        with self.lock:
            self._check_free(header.name)
        return config

    async def _next(
        self, requests: AsyncIterator[pb.AddTaskRequest], what: str
    ) -> pb.AddTaskRequest | None:
        """The upload's next message (None at its end), waiting at most ``upload_timeout``."""
        try:
            return await asyncio.wait_for(anext(requests), self.config.upload_timeout)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise InvalidInputError(
                f"no {what} arrived within the server's --upload-timeout of "
                f"{self.config.upload_timeout:g} s; send the upload without pauses"
            ) from None

    async def _receive(
        self,
        header: pb.AddTaskHeader,
        requests: AsyncIterator[pb.AddTaskRequest],
        reservation: Reservation,
    ) -> tuple[Examples, Examples | None]:
        """Read the upload's chunks after its header; everything is checked, and every
        chunk's bytes are counted against the server's buffer pool before it is kept."""
        most = self.config.max_upload_bytes
        splits = {
            pb.SPLIT_TRAIN: SplitBuffer("training", reservation, header.train_examples, most),
            pb.SPLIT_VAL: SplitBuffer("validation", reservation, header.val_examples, most),
        }
        meter = UploadMeter(self.config)
        labels: set[int] = set()
        while (request := await self._next(requests, "chunk")) is not None:
            if request.WhichOneof("item") != "chunk":
                raise InvalidInputError("only the first AddTask message may be a header")
            chunk = request.chunk
            if chunk.split not in splits:
                raise InvalidInputError("each chunk must say its split: SPLIT_TRAIN or SPLIT_VAL")
            meter.add(len(chunk.x.data) + len(chunk.y.data), 0)
            # off the event loop, on one thread of its own: checking and copying megabytes
            # there would stall Predict, and in the shared pool would crowd out its calls
            rows = await asyncio.get_running_loop().run_in_executor(
                self.uploads, self._keep_chunk, chunk, splits[chunk.split], labels
            )
            meter.add(0, rows)
        train, val = splits[pb.SPLIT_TRAIN].examples(), splits[pb.SPLIT_VAL].examples()
        if train is None:
            raise InvalidInputError("no training examples were sent")
        for what, data, want in (
            ("training", train, header.train_examples),
            ("validation", val, header.val_examples),
        ):
            got = len(data) if data is not None else 0
            if want and got != want:
                raise InvalidInputError(
                    f"the header announced {want} {what} examples but {got} arrived"
                )
        if header.labels and set(header.labels) != labels:
            raise InvalidInputError(
                f"the header's label set {brief(sorted(set(header.labels)))} differs from the "
                f"training labels {brief(sorted(labels))}"
            )
        return train, val

    def _keep_chunk(self, chunk: pb.ExampleChunk, split: SplitBuffer, labels: set[int]) -> int:
        """Check one chunk and append it to its split; returns its examples."""
        x, y = tensors.raw_inputs(chunk.x, "x"), tensors.labels(chunk.y, "y")
        if x.ndim < 2 or x.shape[0] != y.shape[0]:
            raise InvalidInputError(
                f"a chunk holds x of shape {list(x.shape)} and y of shape {list(y.shape)}: "
                "x must be N × features with one label per example"
            )
        self.model.check_shape(tuple(x.shape))
        if split.what == "training":
            labels.update(np.unique(y.numpy()).tolist())
            check_classes(len(labels), self.config)
        split.append(x, y.numpy())
        return int(x.shape[0])


def lower_priority() -> None:
    """Run the calling thread at a lower CPU priority (Linux: nice is per thread), so that
    copying uploads yields the cores to Predict when both want them."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def check_task_name(name: str) -> None:
    """A task name the store can hold: ``check_name``'s rules, and not one of the names
    the store uses for itself in the MLflow registry ('<experiment>.backbone')."""
    check_name(name)
    if name in RESERVED_NAMES:
        raise InvalidInputError(
            f"task name {name!r} is reserved (the registry's entry of the backbone); choose another"
        )
