"""The Open Inference Protocol (KServe v2) over gRPC: ``inference.GRPCInferenceService``
beside sparsecl.v1.ContinualLearner, on the same port, tokens and TLS. Each RPC converts
its request (inference_messages.py) and calls the data plane, nothing more; errors are
answered with their status code (errors.status_of), as the ContinualLearner's are.

A model is a committed task: its name, and its registered model's version in MLflow. The
servicer serves the data plane of the ContinualLearner service it is made with, once that
one is attached: while the server starts, it is live but not ready.
"""

from __future__ import annotations

from importlib import metadata

from grpc.aio import ServicerContext as Context

from sparsecl.kserve import grpc_predict_v2_pb2_grpc as pb_grpc
from sparsecl.kserve import open_inference_pb2 as pb

from . import inference_messages as messages
from .dataplane import DataPlane
from .metrics import Metrics
from .service import ContinualLearnerService, answered

SERVER_NAME = "sparsecl"


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The Open Inference Protocol of the data plane that ``learner`` serves."""

    def __init__(self, learner: ContinualLearnerService) -> None:
        self.learner = learner

    @property
    def plane(self) -> DataPlane:
        return self.learner.plane  # StartingError until the learner is attached

    @property
    def metrics(self) -> Metrics | None:
        return self.learner.metrics

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.learner.ready)

    @answered
    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.plane.model_ready(request.name, request.version))

    @answered
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=metadata.version("sparsecl"))

    @answered
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        model = self.plane.inference_model(request.name, request.version)
        return messages.model_metadata(model)

    @answered
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        x = messages.input_array(request)
        messages.requested_outputs(request)  # refused before any work
        model, prediction = await self.plane.infer(request.model_name, request.model_version, x)
        return messages.infer_response(request, model, prediction)

    @answered
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        return messages.repository_index(self.plane.models(), request.ready)
