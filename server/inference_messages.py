"""The Open Inference Protocol's gRPC messages (KServe v2) to and from the data plane's
arguments and results, through the transport-free rules of inference_tensors.py.

A request's elements may come typed (the tensor's ``contents``) or as raw little-endian
bytes (``raw_input_contents``); the response answers in the same form.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sparse_engine.errors import InvalidInputError
from sparsecl.kserve import open_inference_pb2 as pb

from . import inference_tensors as tensors
from .dataplane import InferenceModel, InferredPrediction, Prediction, TaskView

# the typed contents field of each input datatype, and of each output datatype
CONTENTS = {"FP32": "fp32_contents", "UINT8": "uint_contents"}
OUTPUT_CONTENTS = {"FP32": "fp32_contents", "INT64": "int64_contents", "BYTES": "bytes_contents"}


def input_array(request: pb.ModelInferRequest) -> np.ndarray:
    """The request's input ``x`` as an array of its datatype and shape."""
    names = [tensor.name for tensor in request.inputs]
    tensor = request.inputs[0] if request.inputs else pb.ModelInferRequest.InferInputTensor()
    tensors.check_input(names, tensor.datatype, tensor.shape)
    shape = list(tensor.shape)
    given = [f.name for f, _ in tensor.contents.ListFields()]
    if request.raw_input_contents:
        if given:
            raise InvalidInputError(
                f"input {tensors.INPUT!r} has both contents and raw_input_contents; send one"
            )
        if len(request.raw_input_contents) != 1:
            raise InvalidInputError(
                f"raw_input_contents holds {len(request.raw_input_contents)} tensors for 1 input"
            )
        return tensors.from_bytes(request.raw_input_contents[0], tensor.datatype, shape)
    field = CONTENTS[tensor.datatype]
    if given and given != [field]:
        raise InvalidInputError(
            f"input {tensors.INPUT!r} is {tensor.datatype}: its values go in contents.{field}, "
            f"got {', '.join(given)}"
        )
    return tensors.from_values(getattr(tensor.contents, field), tensor.datatype, shape)


def requested_outputs(request: pb.ModelInferRequest) -> tuple[str, ...]:
    """The outputs the request asks for, in its order (none asked: every output)."""
    return tensors.requested(request.model_name, [output.name for output in request.outputs])


def infer_response(
    request: pb.ModelInferRequest,
    model: InferenceModel,
    prediction: Prediction | InferredPrediction,
) -> pb.ModelInferResponse:
    """The requested outputs of ``prediction`` and its parameters: raw bytes when the
    request sent raw bytes, typed contents when it sent typed contents."""
    raw = bool(request.raw_input_contents)
    response = pb.ModelInferResponse(
        model_name=model.name, model_version=model.version, id=request.id
    )
    for key, value in tensors.response_parameters(prediction).items():
        response.parameters[key].string_param = value
    for name, datatype, array in tensors.outputs(prediction, requested_outputs(request)):
        output = response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        if raw:
            response.raw_output_contents.append(tensors.raw(array))
        else:
            getattr(output.contents, OUTPUT_CONTENTS[datatype]).extend(array.ravel().tolist())
    return response


def model_metadata(model: InferenceModel) -> pb.ModelMetadataResponse:
    """A model's versions, its input and its outputs."""
    return pb.ModelMetadataResponse(**tensors.metadata(model))


def repository_index(views: Sequence[TaskView], ready_only: bool) -> pb.RepositoryIndexResponse:
    """The models: committed tasks READY, the others UNAVAILABLE with their state as reason."""
    return pb.RepositoryIndexResponse(models=tensors.index(views, ready_only))
