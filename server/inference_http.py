"""The Open Inference Protocol (KServe v2) over HTTP/REST, on ``sparsecl serve --http-port``:
Starlette routes served by uvicorn in the server's own event loop, on the data plane that
the gRPC services serve, with the same tokens (the ``read`` scope, but for the health
probes) and the same TLS files.

Each route converts JSON (and the binary tensor extension's raw bytes, which tritonclient
sends by default) with inference_tensors.py and calls the data plane, nothing more; an
error answers ``{"error": message}`` with its HTTP status (errors.http_status_of, the
column of the one STATUS table). Calls are counted in the metrics by the protocol's
method names, as the gRPC ones are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from importlib import metadata
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sparse_engine.errors import InvalidInputError

from . import inference_tensors as tensors
from .auth import Tokens, bearer
from .config import ServerConfig
from .dataplane import DataPlane
from .errors import LimitExceededError, http_status_of, message_of, status_of
from .service import ContinualLearnerService

log = logging.getLogger("sparsecl.server")
HEADER_LENGTH = "Inference-Header-Content-Length"  # the binary tensor extension's header
Endpoint = Callable[[Request], Awaitable[Response]]


class InferenceApi:
    """The protocol's routes on the data plane that ``learner`` serves, once attached."""

    def __init__(
        self, learner: ContinualLearnerService, tokens: Tokens | None, max_bytes: int
    ) -> None:
        self.learner = learner
        self.tokens = tokens
        self.max_bytes = max_bytes

    @property
    def plane(self) -> DataPlane:
        return self.learner.plane  # StartingError until the learner is attached

    def app(self) -> Starlette:
        post = ["POST"]
        routes = [
            Route("/v2/health/live", self.answered("ServerLive", None, self.live)),
            Route("/v2/health/ready", self.answered("ServerReady", None, self.ready)),
            Route("/v2", self.answered("ServerMetadata", "read", self.server_metadata)),
            Route(
                "/v2/repository/index",
                self.answered("RepositoryIndex", "read", self.index),
                methods=post,
            ),
        ]
        for path in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            routes += [
                Route(path, self.answered("ModelMetadata", "read", self.model_metadata)),
                Route(f"{path}/ready", self.answered("ModelReady", "read", self.model_ready)),
                Route(
                    f"{path}/infer", self.answered("ModelInfer", "read", self.infer), methods=post
                ),
            ]
        return Starlette(routes=routes)

    def answered(self, method: str, scope: str | None, endpoint: Endpoint) -> Endpoint:
        """``endpoint`` behind the token check (``scope`` None: open), its errors answered
        ``{"error": ...}`` with their HTTP status, each call counted in the metrics."""

        async def answer(request: Request) -> Response:
            start = time.perf_counter()
            try:
                if scope is not None and self.tokens is not None:
                    self.tokens.authorize(bearer(request.headers.items()), scope, method)
                response = await endpoint(request)
                code = "OK"
            except Exception as error:
                status = http_status_of(error)
                if status == 500:
                    log.error("internal error", exc_info=error)
                response = JSONResponse({"error": message_of(error)}, status_code=status)
                code = status_of(error).name
            metrics = self.learner.metrics
            if metrics is not None:
                task = request.path_params.get("name", "")
                metrics.observe(method, code, task, time.perf_counter() - start)
            return response

        return answer

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        ready = self.learner.ready
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        self.plane  # noqa: B018 (StartingError while the server starts)
        return JSONResponse(
            {"name": "sparsecl", "version": metadata.version("sparsecl"), "extensions": []}
        )

    async def model_metadata(self, request: Request) -> Response:
        name, version = model_of(request)
        return JSONResponse(tensors.metadata(self.plane.inference_model(name, version)))

    async def model_ready(self, request: Request) -> Response:
        name, version = model_of(request)
        ready = self.plane.model_ready(name, version)
        return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)

    async def index(self, request: Request) -> Response:
        body = json_object(await self.body(request) or b"{}")
        return JSONResponse(tensors.index(self.plane.models(), bool(body.get("ready", False))))

    async def infer(self, request: Request) -> Response:
        name, version = model_of(request)
        body = await self.body(request)
        header, raw = split(body, request.headers.get(HEADER_LENGTH))
        payload = json_object(header)
        x = input_of(payload, raw)
        asked = listed(payload, "outputs")
        names = tensors.requested(name, [str(output.get("name")) for output in asked])
        binary = binary_outputs(payload, asked, names)
        model, prediction = await self.plane.infer(name, version, x)
        reply: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
        if "id" in payload:
            reply["id"] = str(payload["id"])
        if given := tensors.response_parameters(prediction):
            reply["parameters"] = given
        reply["outputs"], chunks = [], []
        for output, datatype, array in tensors.outputs(prediction, names):
            shape = list(array.shape)
            described: dict[str, Any] = {"name": output, "datatype": datatype, "shape": shape}
            if binary[output]:
                chunks.append(tensors.raw(array))
                described["parameters"] = {"binary_data_size": len(chunks[-1])}
            else:
                described["data"] = tensors.values(array)
            reply["outputs"].append(described)
        if not chunks:
            return JSONResponse(reply)
        text = json.dumps(reply, separators=(",", ":")).encode()
        return Response(
            text + b"".join(chunks),
            media_type="application/octet-stream",
            headers={HEADER_LENGTH: str(len(text))},
        )

    async def body(self, request: Request) -> bytes:
        """The request's body, refused once it exceeds ``max_bytes`` (as gRPC refuses a
        message over --max-message-bytes)."""
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_bytes:
                raise LimitExceededError(
                    f"the request exceeds the server's --max-message-bytes of {self.max_bytes}"
                )
            chunks.append(chunk)
        return b"".join(chunks)


def model_of(request: Request) -> tuple[str, str]:
    return request.path_params["name"], request.path_params.get("version", "")


def split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON part of a body and the binary tensors after it (binary tensor extension)."""
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 <= length <= len(body):
        raise InvalidInputError(f"{HEADER_LENGTH} {header_length!r} does not fit the body")
    return body[:length], body[length:]


def json_object(text: bytes) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInputError("the request body is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidInputError("the request body must be a JSON object")
    return value


def listed(obj: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """``obj[key]``, a list of objects (empty when absent)."""
    value = obj.get(key) or []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise InvalidInputError(f"{key} must be a list of objects")
    return value


def binary_outputs(
    payload: dict[str, Any], asked: list[dict[str, Any]], names: tuple[str, ...]
) -> dict[str, bool]:
    """Whether each output of ``names`` goes as raw bytes after the JSON (the binary tensor
    extension): as its request asks, else as the request's binary_data_output says (default
    JSON)."""
    default = bool(parameters(payload).get("binary_data_output", False))
    binary = dict.fromkeys(names, default)
    for output in asked:
        binary[str(output.get("name"))] = bool(parameters(output).get("binary_data", default))
    return binary


def parameters(obj: dict[str, Any]) -> dict[str, Any]:
    value = obj.get("parameters") or {}
    if not isinstance(value, dict):
        raise InvalidInputError("parameters must be an object")
    return value


def input_of(payload: dict[str, Any], binary: bytes) -> Any:
    """The request's input ``x``: its ``data``, or its binary_data_size bytes after the JSON."""
    inputs = listed(payload, "inputs")
    first = inputs[0] if inputs else {}
    shape = first.get("shape")
    if not isinstance(shape, list):
        raise InvalidInputError(f"input {tensors.INPUT!r} needs a shape (a list of sizes)")
    datatype = str(first.get("datatype"))
    tensors.check_input([str(i.get("name")) for i in inputs], datatype, shape)
    size = parameters(first).get("binary_data_size")
    if size is None:
        if "data" not in first:
            raise InvalidInputError(f"input {tensors.INPUT!r} has no data")
        data = first["data"]
        return tensors.from_values(data if isinstance(data, list) else [data], datatype, shape)
    if not isinstance(size, int) or size != len(binary):
        raise InvalidInputError(
            f"input {tensors.INPUT!r} says binary_data_size {size!r}, the body holds {len(binary)}"
        )
    return tensors.from_bytes(binary, datatype, shape)


class _Uvicorn(uvicorn.Server):
    """uvicorn in an event loop it does not own: the server's signal handlers stay."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """The protocol's HTTP routes served on a bound socket until ``stop``."""

    def __init__(self, config: ServerConfig, learner: ContinualLearnerService) -> None:
        assert config.http_port is not None
        tokens = Tokens.load(config.tokens) if config.tokens else None
        api = InferenceApi(learner, tokens, config.max_message_bytes)
        family, kind, proto, _, address = socket.getaddrinfo(
            config.host, config.http_port, type=socket.SOCK_STREAM
        )[0]
        self.socket = socket.socket(family, kind, proto)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind(address)
        except OSError as e:
            self.socket.close()
            where = f"{config.host}:{config.http_port}"
            raise OSError(f"cannot listen for HTTP on {where}: {e}") from None
        self.port = int(self.socket.getsockname()[1])
        tls = config.tls_cert is not None and config.tls_key is not None
        self.url = f"{'https' if tls else 'http'}://{config.host}:{self.port}"
        self.server = _Uvicorn(
            uvicorn.Config(
                api.app(),
                log_config=None,  # the server's logging stays as it is
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=math.ceil(config.grace_seconds),  # as gRPC calls get
                ssl_certfile=config.tls_cert if tls else None,
                ssl_keyfile=config.tls_key if tls else None,
                ssl_ca_certs=config.tls_client_ca,
                ssl_cert_reqs=ssl.CERT_REQUIRED if config.tls_client_ca else ssl.CERT_NONE,
            )
        )
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.socket]))
        while not self.server.started:
            if self.task.done():
                await self.task  # raises why it could not start
                raise OSError(f"the HTTP server on {self.url} stopped at once")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task
        self.socket.close()


async def serve_http(config: ServerConfig, learner: ContinualLearnerService) -> HttpServer:
    """The protocol over HTTP on ``config.http_port``, serving (not ready until attached)."""
    server = HttpServer(config, learner)
    await server.start()
    return server
