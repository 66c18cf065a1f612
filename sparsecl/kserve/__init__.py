"""Stubs generated from protos/sparsecl/kserve/*.proto (``make protos``); do not edit: the
Open Inference Protocol's gRPC service (``inference.GRPCInferenceService``). Import
``open_inference_pb2`` and ``grpc_predict_v2_pb2_grpc``, never ``grpc_predict_v2_pb2``
(see the .proto files: it would clash with tritonclient's or KServe's own stubs)."""
