"""The sparsecl Python client and CLI (talks to the server over gRPC only)."""

from .client import (
    BackboneInfo,
    Client,
    ClientError,
    Deletion,
    EngineInfo,
    Prediction,
    Progress,
    Queued,
    TaskAccuracy,
    TaskInfo,
)

__all__ = [
    "BackboneInfo",
    "Client",
    "ClientError",
    "Deletion",
    "EngineInfo",
    "Prediction",
    "Progress",
    "Queued",
    "TaskAccuracy",
    "TaskInfo",
]
