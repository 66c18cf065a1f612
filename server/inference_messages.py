"""The Open Inference Protocol's gRPC messages (KServe v2) to and from the data plane's
arguments and results: a request's input tensor as an array, a prediction as the
requested output tensors, a model's metadata and the repository's index.

A model (a committed task) takes one input ``x``, FP32 or UINT8 (scaled by 1/255, as
everywhere else), of shape ``[-1, …backbone input…]``, and gives ``scores`` (FP32,
``[-1, classes]``, the logits in the order of the task's classes) and ``label`` (INT64,
``[-1]``, in the task's own label values). A request's elements may come typed (the
tensor's ``contents``) or as raw little-endian bytes (``raw_input_contents``); the
response answers in the same form. A malformed tensor is InvalidInputError here; what
its values mean (shape, NaN, batch limits) the data plane checks, as for Predict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sparse_engine.errors import InvalidInputError, brief
from sparsecl.kserve import open_inference_pb2 as pb

from .dataplane import InferenceModel, Prediction, TaskView

INPUT = "x"
SCORES, LABEL = "scores", "label"
OUTPUTS = (SCORES, LABEL)
PLATFORM = "sparsecl"
# the input's datatypes, their little-endian dtypes and the typed contents field they use
INPUT_TYPES: dict[str, tuple[np.dtype, str]] = {
    "FP32": (np.dtype("<f4"), "fp32_contents"),
    "UINT8": (np.dtype("u1"), "uint_contents"),
}
INPUT_DATATYPE = "FP32"  # what the metadata states; UINT8 is accepted as well


def input_array(request: pb.ModelInferRequest) -> np.ndarray:
    """The request's input ``x`` as an array of its datatype and shape."""
    names = [tensor.name for tensor in request.inputs]
    if names != [INPUT]:
        raise InvalidInputError(f"the model takes one input named {INPUT!r}, got {brief(names)}")
    tensor = request.inputs[0]
    if tensor.datatype not in INPUT_TYPES:
        raise InvalidInputError(
            f"input {INPUT!r} must be FP32 or UINT8 (scaled by 1/255), "
            f"got datatype {brief(tensor.datatype)}"
        )
    dtype, field = INPUT_TYPES[tensor.datatype]
    shape = tuple(tensor.shape)
    if any(size < 0 for size in shape):
        raise InvalidInputError(f"input {INPUT!r} has a negative size in its shape {list(shape)}")
    count = math.prod(shape)
    given = [f.name for f, _ in tensor.contents.ListFields()]
    if request.raw_input_contents:
        if given:
            raise InvalidInputError(
                f"input {INPUT!r} has both contents and raw_input_contents; send one of them"
            )
        if len(request.raw_input_contents) != 1:
            raise InvalidInputError(
                f"raw_input_contents holds {len(request.raw_input_contents)} tensors for 1 input"
            )
        data = request.raw_input_contents[0]
        if len(data) != count * dtype.itemsize:
            raise InvalidInputError(
                f"input {INPUT!r} of shape {list(shape)} and datatype {tensor.datatype} takes "
                f"{count * dtype.itemsize} bytes, raw_input_contents holds {len(data)}"
            )
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    if given and given != [field]:
        raise InvalidInputError(
            f"input {INPUT!r} is {tensor.datatype}: its values go in contents.{field}, "
            f"got {', '.join(given)}"
        )
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise InvalidInputError(
            f"input {INPUT!r} of shape {list(shape)} takes {count} values, "
            f"contents.{field} holds {len(values)}"
        )
    if dtype == np.uint8:
        wide = np.array(values, dtype=np.uint32)
        if wide.size and int(wide.max()) > 255:
            raise InvalidInputError(f"input {INPUT!r} is UINT8: its values must be 0..255")
        return wide.astype(np.uint8).reshape(shape)
    return np.array(values, dtype=np.float32).reshape(shape)


def requested_outputs(request: pb.ModelInferRequest) -> tuple[str, ...]:
    """The outputs the request asks for, in its order (none asked: every output)."""
    names = tuple(output.name for output in request.outputs)
    unknown = [name for name in names if name not in OUTPUTS]
    if unknown:
        raise InvalidInputError(
            f"the model has no output {brief(unknown[0])}; its outputs are {', '.join(OUTPUTS)}"
        )
    if len(set(names)) != len(names):
        raise InvalidInputError(f"an output is asked for twice: {', '.join(names)}")
    return names or OUTPUTS


def infer_response(
    request: pb.ModelInferRequest, model: InferenceModel, prediction: Prediction
) -> pb.ModelInferResponse:
    """The requested outputs of ``prediction``: raw bytes when the request sent raw bytes,
    typed contents when it sent typed contents."""
    arrays = {
        SCORES: ("FP32", np.ascontiguousarray(prediction.scores, dtype="<f4")),
        LABEL: ("INT64", np.ascontiguousarray(prediction.labels, dtype="<i8")),
    }
    raw = bool(request.raw_input_contents)
    response = pb.ModelInferResponse(
        model_name=model.name, model_version=model.version, id=request.id
    )
    for name in requested_outputs(request):
        datatype, array = arrays[name]
        output = response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        if raw:
            response.raw_output_contents.append(array.tobytes())
        elif datatype == "FP32":
            output.contents.fp32_contents.extend(array.ravel().tolist())
        else:
            output.contents.int64_contents.extend(array.ravel().tolist())
    return response


def model_metadata(model: InferenceModel) -> pb.ModelMetadataResponse:
    """A model's versions, its input and its outputs."""
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=model.name,
        versions=[model.version] if model.version else [],
        platform=PLATFORM,
        inputs=[tensor(name=INPUT, datatype=INPUT_DATATYPE, shape=[-1, *model.input_shape])],
        outputs=[
            tensor(name=SCORES, datatype="FP32", shape=[-1, len(model.classes)]),
            tensor(name=LABEL, datatype="INT64", shape=[-1]),
        ],
    )


def repository_index(views: Sequence[TaskView], ready_only: bool) -> pb.RepositoryIndexResponse:
    """The models: committed tasks READY, the others UNAVAILABLE with their state as reason."""
    index = pb.RepositoryIndexResponse()
    for view in views:
        ready = view.state == "committed"
        if ready or not ready_only:
            index.models.add(
                name=view.name,
                version=view.model_version,
                state="READY" if ready else "UNAVAILABLE",
                reason="" if ready else view.error or view.state,
            )
    return index
