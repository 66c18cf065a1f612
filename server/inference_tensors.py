"""The Open Inference Protocol's (KServe v2) tensors and model descriptions, for any
transport: what a model takes and gives, a request's input as an array (from raw bytes or
from a list of values), the requested outputs of a prediction, a model's metadata and the
repository's index. The gRPC (inference_messages.py) and HTTP (inference_http.py)
transports only move these between their own messages and the data plane.

A model (a committed task) takes one input ``x``, FP32 or UINT8 (scaled by 1/255, as
everywhere else), of shape ``[-1, …backbone input…]``, and gives ``scores`` (FP32,
``[-1, classes]``, the logits in the order of the task's classes) and ``label`` (INT64,
``[-1]``, in the task's own label values). The task-free model (``TASK_FREE_MODEL``,
``~taskfree``) takes the same input and gives, per example, ``task`` (BYTES, the inferred
task's name), ``label`` (INT64, in that task's values), ``confidence`` (FP32) and
``task_probs`` (FP32, ``[-1, tasks]``, p(task | x)), whose columns ``task_names`` (BYTES,
``[tasks]``) names, and the response parameter ``rule`` (which rule inferred the tasks), as
the task-free Predict (``sparsecl predict``'s .npz: task, label, confidence). A malformed
tensor is InvalidInputError here; what its values mean (shape against the backbone, NaN,
batch limits) the data plane checks, as for Predict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from sparse_engine.errors import InvalidInputError, brief

from .dataplane import TASK_FREE_MODEL, InferenceModel, InferredPrediction, Prediction, TaskView

INPUT = "x"
SCORES, LABEL, TASK, CONFIDENCE = "scores", "label", "task", "confidence"
TASK_PROBS, TASK_NAMES = "task_probs", "task_names"
OUTPUTS = (SCORES, LABEL)
TASK_FREE_OUTPUTS = (TASK, LABEL, CONFIDENCE, TASK_PROBS, TASK_NAMES)  # the task-free model's
DATATYPES = {  # per output
    SCORES: "FP32",
    LABEL: "INT64",
    TASK: "BYTES",
    CONFIDENCE: "FP32",
    TASK_PROBS: "FP32",
    TASK_NAMES: "BYTES",
}
RULE = "rule"  # the task-free model's response parameter: the rule that inferred the tasks
LENGTH = np.dtype("<u4")  # a BYTES element's length, before its bytes in raw form
PLATFORM = "sparsecl"
# the datatypes of the input, as little-endian dtypes; the metadata states FP32
INPUT_TYPES: dict[str, np.dtype] = {"FP32": np.dtype("<f4"), "UINT8": np.dtype("u1")}
INPUT_DATATYPE = "FP32"


def check_input(names: Sequence[str], datatype: str, shape: Sequence[int]) -> np.dtype:
    """The dtype of a request's one input ``x`` (InvalidInputError for another input, a
    datatype other than FP32 or UINT8, or a negative size)."""
    if list(names) != [INPUT]:
        raise InvalidInputError(
            f"the model takes one input named {INPUT!r}, got {brief(list(names))}"
        )
    if datatype not in INPUT_TYPES:
        raise InvalidInputError(
            f"input {INPUT!r} must be FP32 or UINT8 (scaled by 1/255), "
            f"got datatype {brief(datatype)}"
        )
    if any(not isinstance(size, int) or size < 0 for size in shape):
        raise InvalidInputError(f"input {INPUT!r} has a shape that is not sizes: {brief(shape)}")
    return INPUT_TYPES[datatype]


def from_bytes(data: bytes, datatype: str, shape: Sequence[int]) -> np.ndarray:
    """The input from its raw little-endian bytes."""
    dtype = INPUT_TYPES[datatype]
    want = math.prod(shape) * dtype.itemsize
    if len(data) != want:
        raise InvalidInputError(
            f"input {INPUT!r} of shape {list(shape)} and datatype {datatype} takes {want} "
            f"bytes, got {len(data)}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(tuple(shape))


def from_values(values: Sequence[Any], datatype: str, shape: Sequence[int]) -> np.ndarray:
    """The input from its values, row-major (a flat list; JSON may nest them as well)."""
    try:
        array = np.array(values, dtype=np.float64 if datatype == "FP32" else np.int64)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInputError(f"input {INPUT!r} must hold {datatype} numbers") from None
    if array.size != math.prod(shape):
        raise InvalidInputError(
            f"input {INPUT!r} of shape {list(shape)} takes {math.prod(shape)} values, "
            f"got {array.size}"
        )
    if datatype == "UINT8":
        if array.size and (int(array.min()) < 0 or int(array.max()) > 255):
            raise InvalidInputError(f"input {INPUT!r} is UINT8: its values must be 0..255")
        return array.astype(np.uint8).reshape(tuple(shape))
    return array.astype(np.float32).reshape(tuple(shape))


def model_outputs(model: str) -> tuple[str, ...]:
    """The outputs of the model named ``model``: a task's, or the task-free model's."""
    return TASK_FREE_OUTPUTS if model == TASK_FREE_MODEL else OUTPUTS


def requested(model: str, names: Sequence[str]) -> tuple[str, ...]:
    """The outputs a request to ``model`` asks for, in its order (none asked: every output)."""
    known = model_outputs(model)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InvalidInputError(
            f"the model has no output {brief(unknown[0])}; its outputs are {', '.join(known)}"
        )
    if len(set(names)) != len(names):
        raise InvalidInputError(f"an output is asked for twice: {', '.join(names)}")
    return tuple(names) or known


def outputs(
    prediction: Prediction | InferredPrediction, names: Sequence[str]
) -> list[tuple[str, str, np.ndarray]]:
    """The outputs ``names`` of a prediction: (name, datatype, array), numbers little-endian,
    BYTES as an object array of bytes."""
    arrays = {LABEL: np.ascontiguousarray(prediction.labels, dtype="<i8")}
    if isinstance(prediction, InferredPrediction):
        arrays[TASK] = encoded(prediction.tasks)
        arrays[CONFIDENCE] = np.ascontiguousarray(prediction.confidence, dtype="<f4")
        arrays[TASK_PROBS] = np.ascontiguousarray(prediction.task_probs, dtype="<f4")
        arrays[TASK_NAMES] = encoded(prediction.names)
    else:
        arrays[SCORES] = np.ascontiguousarray(prediction.scores, dtype="<f4")
    return [(name, DATATYPES[name], arrays[name]) for name in names]


def encoded(texts: Sequence[str]) -> np.ndarray:
    """Texts as a BYTES output: a 1-D object array of their UTF-8 bytes."""
    return np.array([text.encode() for text in texts], dtype=object)


def response_parameters(prediction: Prediction | InferredPrediction) -> dict[str, str]:
    """The response's parameters: the task-free model's ``rule``; none for a task's."""
    return {RULE: prediction.rule} if isinstance(prediction, InferredPrediction) else {}


def raw(array: np.ndarray) -> bytes:
    """An output's raw bytes: numbers as they are (little-endian); BYTES elements each after
    its length as 4 little-endian bytes (the protocol's raw and binary layout)."""
    if array.dtype != object:
        return array.tobytes()
    return b"".join(LENGTH.type(len(item)).tobytes() + item for item in array.ravel())


def values(array: np.ndarray) -> list[Any]:
    """An output's values as JSON takes them, row-major (BYTES elements as text)."""
    if array.dtype != object:
        return array.ravel().tolist()
    return [item.decode() for item in array.ravel()]


def metadata(model: InferenceModel) -> dict[str, Any]:
    """A model's versions, input and outputs, as the protocol's metadata object."""
    described = [
        {"name": name, "datatype": DATATYPES[name], "shape": output_shape(model, name)}
        for name in (TASK_FREE_OUTPUTS if model.task_free else OUTPUTS)
    ]
    return {
        "name": model.name,
        "versions": [model.version] if model.version else [],
        "platform": PLATFORM,
        "inputs": [{"name": INPUT, "datatype": INPUT_DATATYPE, "shape": [-1, *model.input_shape]}],
        "outputs": described,
    }


def output_shape(model: InferenceModel, name: str) -> list[int]:
    """An output's shape in the metadata: -1 for the batch, and for the number of tasks
    (``task_probs``' columns, ``task_names``), which grows as tasks are committed."""
    if name == SCORES:
        return [-1, len(model.classes)]
    return [-1, -1] if name == TASK_PROBS else [-1]


def index(views: Sequence[TaskView], ready_only: bool) -> list[dict[str, str]]:
    """The models: committed tasks READY, the others UNAVAILABLE with their state as reason;
    last, the task-free model, READY once a task is committed."""
    committed = any(view.state == "committed" for view in views)
    task_free = {
        "name": TASK_FREE_MODEL,
        "version": "",
        "state": "READY" if committed else "UNAVAILABLE",
        "reason": "" if committed else "no committed task to infer from yet",
    }
    return [
        {
            "name": view.name,
            "version": view.model_version,
            "state": "READY" if view.state == "committed" else "UNAVAILABLE",
            "reason": "" if view.state == "committed" else view.error or view.state,
        }
        for view in views
        if view.state == "committed" or not ready_only
    ] + ([task_free] if committed or not ready_only else [])
