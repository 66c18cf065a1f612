"""The server's own errors, and the one table of the status code each error is answered with.

The data plane raises these and sparse_engine's errors; a transport maps what it catches
with ``status_of`` (gRPC) or ``http_status_of`` (HTTP): one table, STATUS.
"""

from __future__ import annotations

import grpc

from sparse_engine.analysis import AnalysisStoppedError
from sparse_engine.errors import (
    InvalidInputError,
    NoFreeCapacityError,
    TaskExistsError,
    UnknownTaskError,
)

from .store import StoreUnavailableError, WriterConflictError


class NotReadyError(Exception):
    """The task exists but is not committed (queued, training or failed), or the server
    cannot take the request in its present state."""


class StartingError(Exception):
    """The server is up but still opening its store or loading its tasks (health NOT_SERVING)."""


class LimitExceededError(Exception):
    """A request is larger than the server allows."""


class TrainingTimeError(LimitExceededError):
    """A job trained past the server's --max-train-seconds."""


class QueueFullError(Exception):
    """Too many training jobs are waiting."""


class CancelledError(Exception):
    """The job was stopped before its commit (shutdown or client gone); it is reported failed."""


class UnauthenticatedError(Exception):
    """A call without a token, or with an unknown one, to a server that needs one."""


class PermissionDeniedError(Exception):
    """The call's token does not grant the scope the call needs."""


# The first row whose error type matches wins; any other error is INTERNAL (HTTP 500).
# The columns: the gRPC status code, the HTTP status (the Open Inference Protocol's REST).
STATUS: tuple[tuple[type[BaseException], grpc.StatusCode, int], ...] = (
    (InvalidInputError, grpc.StatusCode.INVALID_ARGUMENT, 400),
    (UnknownTaskError, grpc.StatusCode.NOT_FOUND, 404),
    (TaskExistsError, grpc.StatusCode.ALREADY_EXISTS, 409),
    (NoFreeCapacityError, grpc.StatusCode.RESOURCE_EXHAUSTED, 507),
    (QueueFullError, grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    (LimitExceededError, grpc.StatusCode.RESOURCE_EXHAUSTED, 413),
    (MemoryError, grpc.StatusCode.RESOURCE_EXHAUSTED, 507),
    (NotReadyError, grpc.StatusCode.FAILED_PRECONDITION, 503),
    (WriterConflictError, grpc.StatusCode.FAILED_PRECONDITION, 409),
    (StoreUnavailableError, grpc.StatusCode.UNAVAILABLE, 503),
    (CancelledError, grpc.StatusCode.UNAVAILABLE, 503),
    (StartingError, grpc.StatusCode.UNAVAILABLE, 503),
    (AnalysisStoppedError, grpc.StatusCode.CANCELLED, 499),
    (UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED, 401),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED, 403),
)
INTERNAL_HTTP = 500


def status_of(error: BaseException) -> grpc.StatusCode:
    """The status code of an error; INTERNAL for anything unexpected."""
    for kind, code, _ in STATUS:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def http_status_of(error: BaseException) -> int:
    """The HTTP status of an error; 500 for anything unexpected."""
    for kind, _, http in STATUS:
        if isinstance(error, kind):
            return http
    return INTERNAL_HTTP


def message_of(error: BaseException) -> str:
    """What a refusal says: the error's message, else its type's name."""
    return str(error) or type(error).__name__
