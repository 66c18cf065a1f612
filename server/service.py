"""The sparsecl.v1 ContinualLearner service over gRPC (grpc.aio): each RPC converts its
request to the data plane's arguments and the result to its reply, nothing more; what the
data plane raises is answered with its status code (errors.status_of) by ``answered``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, TypeVar, cast

import grpc
from grpc.aio import ServicerContext as Context

from sparsecl.v1 import sparsecl_pb2 as pb
from sparsecl.v1 import sparsecl_pb2_grpc as pb_grpc

from . import messages, tensors
from .dataplane import AnalysisOptions, DataPlane, Progress, Queued, TaskView
from .errors import StartingError, message_of, status_of
from .metrics import Metrics
from .uploads import TRAINING, VALIDATION, Chunk, Header

log = logging.getLogger("sparsecl.server")
Handler = TypeVar("Handler", bound=Callable[..., Any])
SPLITS = {pb.SPLIT_TRAIN: TRAINING, pb.SPLIT_VAL: VALIDATION}
# the request field that names the task, for the metrics (the Open Inference Protocol's too)
TASK_FIELDS = ("task", "name", "model_name")


async def abort(context: Context, error: Exception) -> NoReturn:
    """Answer the call with ``error``'s status code and message."""
    if isinstance(error, grpc.aio.AbortError):  # already answered (a malformed request)
        raise error
    code = status_of(error)
    if code == grpc.StatusCode.INTERNAL:
        log.error("internal error", exc_info=error)
    # The answer needs the code and message only. The traceback's frames hold the failed
    # call's locals (a refused upload's buffers among them), and grpc.aio keeps the
    # AbortError, which reaches them, in a reference cycle: without this each refused
    # 25 MB upload stayed in memory until the next full garbage collection.
    traceback.clear_frames(error.__traceback__)
    await context.abort(code, message_of(error))
    raise AssertionError("unreachable: abort raises")


def answer_code(error: Exception, context: Context) -> str:
    """The name of the status code ``error`` is answered with."""
    if isinstance(error, grpc.aio.AbortError):  # answered already, with its own code
        return (context.code() or grpc.StatusCode.UNKNOWN).name
    return status_of(error).name


class Answering:
    """One call's answer: counts it (before its answer, so a client that sees an error and
    then scrapes finds it counted) and answers an error with its status code. A plain class,
    not an asynccontextmanager: this runs on every call, and the generator's machinery cost
    ~2 % of a one-example Predict's server CPU (py-spy, 2026-11-30)."""

    __slots__ = ("context", "method", "request", "servicer", "start")

    def __init__(self, method: str, servicer: Any, request: Any, context: Context) -> None:
        self.method, self.servicer, self.request, self.context = method, servicer, request, context
        self.start = time.perf_counter()

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, error: Any, _: Any) -> bool:
        if kind is None:
            self.observe("OK")
        elif issubclass(kind, asyncio.CancelledError):
            self.observe("CANCELLED")
        elif issubclass(kind, Exception):
            self.observe(answer_code(error, self.context))
            await abort(self.context, error)
        return False

    def observe(self, code: str) -> None:
        metrics = self.servicer.metrics
        if metrics is not None:
            named = (getattr(self.request, f) for f in TASK_FIELDS if hasattr(self.request, f))
            task = str(next(named, ""))
            metrics.observe(self.method, code, task, time.perf_counter() - self.start)


def answered(handler: Handler) -> Handler:
    """An RPC handler (a coroutine, or an async generator for a stream of replies) whose
    errors are answered with their status code, and whose calls the metrics count (any
    servicer with a ``metrics`` attribute: this one and inference_service's)."""
    method = handler.__name__

    if inspect.isasyncgenfunction(handler):

        @functools.wraps(handler)
        async def stream(self: Any, request: Any, context: Context) -> AsyncIterator[Any]:
            async with (
                Answering(method, self, request, context),
                contextlib.aclosing(handler(self, request, context)) as replies,
            ):
                async for reply in replies:
                    yield reply

        return cast(Handler, stream)

    @functools.wraps(handler)
    async def unary(self: Any, request: Any, context: Context) -> Any:
        async with Answering(method, self, request, context):
            return await handler(self, request, context)

    return cast(Handler, unary)


class ContinualLearnerService(pb_grpc.ContinualLearnerServicer):
    """The sparsecl.v1 API of one data plane."""

    def __init__(self, plane: DataPlane | None = None, metrics: Metrics | None = None) -> None:
        """Without ``plane`` (the server is starting) every call is UNAVAILABLE until
        ``attach`` gives it one."""
        self._plane = plane
        self.metrics = metrics

    def attach(self, plane: DataPlane, metrics: Metrics | None = None) -> None:
        """Serve ``plane`` (loaded: every plan compiled), counted by ``metrics``."""
        self.metrics = metrics
        self._plane = plane

    @property
    def ready(self) -> bool:
        """Whether a loaded data plane is attached and serving (False while starting)."""
        return self._plane is not None and self._plane.ready

    @property
    def plane(self) -> DataPlane:
        if self._plane is None:
            raise StartingError("the server is starting (loading its tasks): retry shortly")
        return self._plane

    @answered
    async def Predict(self, request: pb.PredictRequest, context: Context) -> pb.PredictResponse:
        if not request.task:
            inferred = await self.plane.predict_task_free(tensors.from_proto(request.x, "x"))
            return pb.PredictResponse(
                labels=tensors.to_proto(inferred.labels),
                tasks=list(inferred.tasks),
                confidence=tensors.to_proto(inferred.confidence),
                task_probs=tensors.to_proto(inferred.task_probs),
                task_names=list(inferred.names),
                rule=inferred.rule,
            )
        result = await self.plane.predict(request.task, tensors.from_proto(request.x, "x"))
        return pb.PredictResponse(
            scores=tensors.to_proto(result.scores),
            labels=tensors.to_proto(result.labels),
            classes=list(result.classes),
        )

    @answered
    async def ListTasks(
        self, request: pb.ListTasksRequest, context: Context
    ) -> pb.ListTasksResponse:
        return pb.ListTasksResponse(tasks=[task_info(view) for view in self.plane.tasks()])

    @answered
    async def GetTask(self, request: pb.GetTaskRequest, context: Context) -> pb.TaskInfo:
        return task_info(self.plane.task(request.name))

    @answered
    async def GetBackbone(
        self, request: pb.GetBackboneRequest, context: Context
    ) -> pb.BackboneInfo:
        return messages.backbone_info(self.plane.backbone())

    @answered
    async def Evaluate(self, request: pb.EvaluateRequest, context: Context) -> pb.EvaluateResponse:
        x, y = tensors.from_proto(request.x, "x"), tensors.from_proto(request.y, "y")
        results = await self.plane.evaluate(x, y, request.task)
        return pb.EvaluateResponse(
            results=[
                pb.TaskAccuracy(task=r.task, accuracy=r.accuracy, examples=r.examples)
                for r in results
            ]
        )

    @answered
    async def Analyze(self, request: pb.AnalyzeRequest, context: Context) -> pb.AnalyzeResponse:
        report = await self.plane.analyze(
            request.task,
            messages.analysis_name(request.analysis),
            tensors.from_proto(request.x, "x"),
            tensors.from_proto(request.y, "y"),
            analysis_options(request),
        )
        return messages.analyze_response(report.table, report.run_id)

    @answered
    async def DeleteTask(
        self, request: pb.DeleteTaskRequest, context: Context
    ) -> pb.DeleteTaskResponse:
        result = await self.plane.delete(request.name)
        return pb.DeleteTaskResponse(
            task=task_info(result.task),
            freed_weights=list(result.deletion.freed),
            retired_weights=list(result.deletion.retired),
            free_capacity=list(result.deletion.free_capacity),
        )

    @answered
    async def AddTask(
        self, request_iterator: AsyncIterator[pb.AddTaskRequest], context: Context
    ) -> AsyncIterator[pb.AddTaskEvent]:
        upload = (upload_item(request) async for request in request_iterator)
        async with contextlib.aclosing(self.plane.learn(upload)) as events:
            async for event in events:
                if isinstance(event, Queued):
                    yield pb.AddTaskEvent(queued=pb.Queued(position=event.position))
                elif isinstance(event, Progress):
                    progress = messages.progress(
                        event.event, event.total_epochs, event.steps_per_epoch
                    )
                    yield pb.AddTaskEvent(progress=progress)
                else:
                    yield pb.AddTaskEvent(task=task_info(event))


def task_info(view: TaskView) -> pb.TaskInfo:
    if view.record is not None and view.config is not None:  # committed
        return messages.task_info(
            view.record,
            view.config,
            run_id=view.run_id,
            model_name=view.model_name,
            model_version=view.model_version,
            created_ms=view.created_ms,
            plan_bytes=view.plan_bytes,
        )
    return pb.TaskInfo(
        name=view.name,
        state=f"TASK_STATE_{view.state.upper()}",
        id=view.id,
        mlflow_run_id=view.run_id,
        model_name=view.model_name,
        model_version=view.model_version,
        created_unix_ms=view.created_ms,
        error=view.error,
        hyper_parameters=messages.hyper_parameters(view.config) if view.config else None,
    )


def analysis_options(request: pb.AnalyzeRequest) -> AnalysisOptions:
    """The parameters the request sets (unset ones None)."""

    def given(name: str) -> Any:
        return getattr(request, name) if request.HasField(name) else None

    train_x, train_y = given("train_x"), given("train_y")
    return AnalysisOptions(
        weights=tuple(request.weights) or None,
        keep_sign=given("keep_sign"),
        noise_levels=tuple(request.noise_levels) or None,
        epochs=given("epochs"),
        draws=given("draws"),
        seed=given("seed"),
        train_x=tensors.from_proto(train_x, "train_x") if train_x is not None else None,
        train_y=tensors.from_proto(train_y, "train_y") if train_y is not None else None,
    )


def upload_item(request: pb.AddTaskRequest) -> Header | Chunk:
    """An AddTask message as an upload's item (a message holding neither: a chunk of no
    split, which the data plane refuses)."""
    if request.WhichOneof("item") == "header":
        h = request.header
        config = messages.task_config(h.hyper_parameters)
        tune = messages.tune_search(h, config) if h.HasField("tune") else None
        return Header(h.name, config, tuple(h.labels), h.train_examples, h.val_examples, tune)
    chunk = request.chunk
    return Chunk(
        SPLITS.get(chunk.split, ""),
        len(chunk.x.data) + len(chunk.y.data),
        lambda: (tensors.from_proto(chunk.x, "x"), tensors.from_proto(chunk.y, "y")),
    )
