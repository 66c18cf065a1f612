"""sparse_engine: continual learning as sparse subnetworks of one backbone (pure ML, no I/O)."""

import importlib
import os
from typing import TYPE_CHECKING, Any

# Zero forgetting is promised to the bit, so BLAS must not change its reduction order with
# the machine's load (MKL's dynamic threading) or with memory alignment. This only takes
# effect when sparse_engine is imported before torch; the server sets it the same way.
os.environ.setdefault("MKL_DYNAMIC", "FALSE")
os.environ.setdefault("MKL_CBWR", "AUTO")

if TYPE_CHECKING:
    from .backbone import Backbone, BackboneSpec, LayerSpec
    from .config import ProgressEvent, TaskConfig
    from .data import (
        TaskData,
        from_avalanche,
        from_avalanche_stream,
        from_numpy,
        from_torch_dataset,
    )
    from .errors import (
        InvalidInputError,
        NoFreeCapacityError,
        SparseCLError,
        TaskExistsError,
        UnknownTaskError,
    )
    from .kwta import KWinners
    from .metrics import AccuracyMatrix
    from .model import SparseCL
    from .owners import OwnerMap
    from .task import Task, TaskNet, TaskRecord
    from .tune import Trial, TuneReport

# Exports load on first use (PEP 562), so that importing a torch-free module such as
# sparse_engine.config (the CLI does, for its --help) does not import torch.
_EXPORTS: dict[str, str] = {
    "Backbone": "backbone",
    "BackboneSpec": "backbone",
    "LayerSpec": "backbone",
    "ProgressEvent": "config",
    "TaskConfig": "config",
    "TaskData": "data",
    "from_avalanche": "data",
    "from_avalanche_stream": "data",
    "from_numpy": "data",
    "from_torch_dataset": "data",
    "InvalidInputError": "errors",
    "NoFreeCapacityError": "errors",
    "SparseCLError": "errors",
    "TaskExistsError": "errors",
    "UnknownTaskError": "errors",
    "KWinners": "kwta",
    "AccuracyMatrix": "metrics",
    "SparseCL": "model",
    "OwnerMap": "owners",
    "Task": "task",
    "TaskNet": "task",
    "TaskRecord": "task",
    "Trial": "tune",
    "TuneReport": "tune",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
