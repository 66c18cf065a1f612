"""The server's own errors, and the one table of the status code each error is answered with.

The data plane raises these and sparse_engine's errors; a transport maps what it catches
with ``status_of`` (an HTTP transport would add its column to STATUS).
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


# The first row whose error type matches wins; any other error is INTERNAL.
STATUS: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (InvalidInputError, grpc.StatusCode.INVALID_ARGUMENT),
    (UnknownTaskError, grpc.StatusCode.NOT_FOUND),
    (TaskExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (NoFreeCapacityError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (QueueFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (LimitExceededError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (MemoryError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NotReadyError, grpc.StatusCode.FAILED_PRECONDITION),
    (WriterConflictError, grpc.StatusCode.FAILED_PRECONDITION),
    (StoreUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (CancelledError, grpc.StatusCode.UNAVAILABLE),
    (StartingError, grpc.StatusCode.UNAVAILABLE),
    (AnalysisStoppedError, grpc.StatusCode.CANCELLED),
    (UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
)


def status_of(error: BaseException) -> grpc.StatusCode:
    """The status code of an error; INTERNAL for anything unexpected."""
    for kind, code in STATUS:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def message_of(error: BaseException) -> str:
    """What a refusal says: the error's message, else its type's name."""
    return str(error) or type(error).__name__
