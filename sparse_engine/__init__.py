"""sparse_engine: continual learning as sparse subnetworks of one backbone (pure ML, no I/O)."""

import os

# Zero forgetting is promised to the bit, so BLAS must not change its reduction order with
# the machine's load (MKL's dynamic threading) or with memory alignment. This only takes
# effect when sparse_engine is imported before torch; the server sets it the same way.
os.environ.setdefault("MKL_DYNAMIC", "FALSE")
os.environ.setdefault("MKL_CBWR", "AUTO")

from .backbone import Backbone, BackboneSpec, LayerSpec
from .config import ProgressEvent, TaskConfig
from .data import TaskData, from_avalanche, from_avalanche_stream, from_numpy, from_torch_dataset
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

__all__ = [
    "AccuracyMatrix",
    "Backbone",
    "BackboneSpec",
    "InvalidInputError",
    "KWinners",
    "LayerSpec",
    "NoFreeCapacityError",
    "OwnerMap",
    "ProgressEvent",
    "SparseCL",
    "SparseCLError",
    "Task",
    "TaskConfig",
    "TaskData",
    "TaskExistsError",
    "TaskNet",
    "TaskRecord",
    "UnknownTaskError",
    "from_avalanche",
    "from_avalanche_stream",
    "from_numpy",
    "from_torch_dataset",
]
