"""Requests that are not valid protobuf get INVALID_ARGUMENT, not grpc's UNKNOWN/INTERNAL.

An interceptor swaps each ContinualLearner (and Open Inference Protocol) method's request
deserializer for one that turns a DecodeError into a ``Malformed`` marker, which the
wrapped handler answers with INVALID_ARGUMENT before the service sees it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from .auth import INFERENCE, PROTECTED


@dataclass(frozen=True)
class Malformed:
    """A request whose bytes could not be parsed."""

    error: str


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as e:
            return Malformed(str(e))

    return decode


async def _refuse(request: Malformed, context: grpc.aio.ServicerContext) -> None:
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"the request is not a valid protobuf message ({request.error}); "
        "send messages built from the service's .proto (protos/ in sparsecl's repository)",
    )


async def _checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
    """The client's stream of requests, aborting at the first malformed one."""
    async for request in requests:
        if isinstance(request, Malformed):
            await _refuse(request, context)
        yield request


def _wrap(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    kwargs = {
        "request_deserializer": _tolerant(handler.request_deserializer),
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        inner = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, Malformed):
                await _refuse(request, context)
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(unary, **kwargs)
    if handler.stream_stream:
        streamed = handler.stream_stream

        async def stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            async with contextlib.aclosing(streamed(_checked(requests, context), context)) as out:
                async for response in out:
                    yield response

        return grpc.stream_stream_rpc_method_handler(stream, **kwargs)
    return handler  # the service has no other kinds of method


class DecodeInterceptor(grpc.aio.ServerInterceptor):
    """Answers unparseable ContinualLearner and inference requests with INVALID_ARGUMENT."""

    def __init__(self) -> None:
        # method → (its handler, wrapped): wrapping builds closures and a handler, ~1.5 % of
        # a one-example Predict's server CPU when it was done on every call
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith((PROTECTED, INFERENCE)):
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _wrap(handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped
