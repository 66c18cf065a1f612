"""The Open Inference Protocol (KServe v2) over gRPC, called by the real tritonclient on a
real server with tokens: liveness, readiness, metadata, inference bit-identical to
Predict (FP32 and UINT8, one example and a batch, raw and typed contents), requested
outputs, every refusal with its status code, and a task added while a client is
connected. (This process imports tritonclient, whose stubs define the protocol's messages
in package ``inference``; sparsecl's own stubs use another package, so both load here.)
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from client import Client
from server import auth
from sparse_engine.mnist import Mnist
from sparsecl.kserve import grpc_predict_v2_pb2_grpc as kserve_grpc

from ..serving import FAST, ServerProcess, digits

MAX_BATCH = 100


@dataclass
class Served:
    server: ServerProcess
    client: Client  # sparsecl's own, for Predict
    triton: triton.InferenceServerClient
    stub: service_pb2_grpc.GRPCInferenceServiceStub  # tritonclient's stubs, for raw requests
    read: dict[str, str]  # headers with a read token
    write: dict[str, str]  # headers with a write-only token
    probe: np.ndarray  # uint8, N × 28 × 28
    mnist: Mnist

    def metadata(self) -> list[tuple[str, str]]:
        return list(self.read.items())


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, mnist: Mnist) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("kserve")
    read, write = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    tokens = folder / "tokens"
    tokens.write_text(f"read,write {read}\nwrite {write}\n")
    tokens.chmod(0o600)
    args = ["--tokens", str(tokens), "--max-batch", str(MAX_BATCH)]
    server = ServerProcess(Path(folder / "store"), args=args).start()
    client = Client(server.address, timeout=120, token=read)
    client.learn("A", digits(mnist, [0, 1], n=200), **FAST)
    client.learn("B", digits(mnist, [2, 3], n=200), **FAST)
    channel = grpc.insecure_channel(server.address)
    inference = triton.InferenceServerClient(server.address)
    yield Served(
        server,
        client,
        inference,
        service_pb2_grpc.GRPCInferenceServiceStub(channel),
        {"authorization": f"Bearer {read}"},
        {"authorization": f"Bearer {write}"},
        mnist.x_test[:MAX_BATCH],
        mnist,
    )
    inference.close()
    channel.close()
    client.close()
    server.terminate()


def infer(
    s: Served, model: str, x: np.ndarray, outputs: tuple[str, ...] = (), version: str = ""
) -> triton.InferResult:
    """ModelInfer through tritonclient (raw_input_contents), FP32 or UINT8 by x's dtype."""
    datatype = {np.dtype(np.float32): "FP32", np.dtype(np.uint8): "UINT8"}[x.dtype]
    given = triton.InferInput("x", list(x.shape), datatype)
    given.set_data_from_numpy(x)
    asked = [triton.InferRequestedOutput(name) for name in outputs] or None
    return s.triton.infer(model, [given], model_version=version, outputs=asked, headers=s.read)


def refused(call: Callable[[], object]) -> tuple[str, str]:
    """The status code name and message a call that must fail is answered with."""
    with pytest.raises(InferenceServerException) as info:
        call()
    return str(info.value.status()).removeprefix("StatusCode."), str(info.value.message())


def raw_refused(s: Served, request: service_pb2.ModelInferRequest) -> tuple[str, str]:
    with pytest.raises(grpc.RpcError) as info:
        s.stub.ModelInfer(request, metadata=s.metadata(), timeout=30)
    error: grpc.Call = info.value  # type: ignore[assignment]
    return error.code().name, error.details() or ""


def request(
    x: np.ndarray, datatype: str = "FP32", model: str = "A"
) -> service_pb2.ModelInferRequest:
    """A ModelInferRequest with typed contents (which tritonclient's API does not send)."""
    tensor = service_pb2.ModelInferRequest.InferInputTensor(
        name="x", datatype=datatype, shape=list(x.shape)
    )
    if datatype == "FP32":
        tensor.contents.fp32_contents.extend(x.ravel().tolist())
    else:
        tensor.contents.uint_contents.extend(x.ravel().tolist())
    return service_pb2.ModelInferRequest(model_name=model, inputs=[tensor])


def flat(images: np.ndarray) -> np.ndarray:
    """uint8 images as the FP32 inputs the server scales them to."""
    return (images.reshape(len(images), -1) / np.float32(255)).astype(np.float32)


# ---- health and metadata ------------------------------------------------------------------
def test_the_server_is_live_and_ready_without_a_token(served: Served) -> None:
    assert served.triton.is_server_live()
    assert served.triton.is_server_ready()


def test_a_committed_task_is_a_ready_model(served: Served) -> None:
    assert served.triton.is_model_ready("A", headers=served.read)
    assert served.triton.is_model_ready("A", "1", headers=served.read)
    assert not served.triton.is_model_ready("A", "7", headers=served.read)
    assert not served.triton.is_model_ready("nope", headers=served.read)


def test_server_metadata(served: Served) -> None:
    metadata = served.triton.get_server_metadata(headers=served.read, as_json=True)
    assert metadata["name"] == "sparsecl" and metadata["version"]


def test_model_metadata_states_the_input_and_the_outputs(served: Served) -> None:
    metadata = served.triton.get_model_metadata("A", headers=served.read, as_json=True)
    assert metadata["name"] == "A" and metadata["versions"] == ["1"]
    assert metadata["platform"] == "sparsecl"
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "784"]}]
    assert metadata["outputs"] == [
        {"name": "scores", "datatype": "FP32", "shape": ["-1", "2"]},
        {"name": "label", "datatype": "INT64", "shape": ["-1"]},
    ]
    same = served.triton.get_model_metadata("A", "1", headers=served.read, as_json=True)
    assert same == metadata


def test_the_repository_index_lists_the_tasks(served: Served) -> None:
    index = served.triton.get_model_repository_index(headers=served.read, as_json=True)
    # JSON of a message leaves out empty fields: the task-free model has no version
    models = {m["name"]: (m.get("version", ""), m["state"]) for m in index["models"]}
    assert models["A"] == ("1", "READY") and models["B"] == ("1", "READY")
    assert models["~taskfree"] == ("", "READY")  # tests/server/test_kserve_taskfree.py


def test_every_method_of_the_service_has_a_decided_scope() -> None:
    servicer = kserve_grpc.GRPCInferenceServiceServicer
    methods = {name for name in vars(servicer) if name[0].isupper()}
    assert methods == set(auth.INFERENCE_SCOPES)
    for name, scope in auth.INFERENCE_SCOPES.items():
        assert auth.required_scope(f"{auth.INFERENCE}{name}") == scope


# ---- inference ----------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, MAX_BATCH])
@pytest.mark.parametrize("uint8", [False, True], ids=["FP32", "UINT8"])
def test_inference_is_bit_identical_to_predict(served: Served, n: int, uint8: bool) -> None:
    images = served.probe[:n]
    x = images.reshape(n, -1) if uint8 else flat(images)
    expected = served.client.predict("A", x)
    result = infer(served, "A", x)
    assert result.as_numpy("scores").tobytes() == expected.scores.tobytes()
    assert result.as_numpy("label").tobytes() == expected.labels.tobytes()
    response = result.get_response()
    assert (response.model_name, response.model_version) == ("A", "1")


def test_images_of_the_backbone_input_shape_are_accepted_as_by_predict(served: Served) -> None:
    images = served.probe[:3]  # N × 28 × 28, as Predict takes them
    expected = served.client.predict("B", images).scores
    assert infer(served, "B", images).as_numpy("scores").tobytes() == expected.tobytes()


@pytest.mark.parametrize("datatype", ["FP32", "UINT8"])
def test_typed_contents_are_accepted_and_answered_typed(served: Served, datatype: str) -> None:
    images = served.probe[:5].reshape(5, -1)
    x = flat(served.probe[:5]) if datatype == "FP32" else images
    expected = served.client.predict("A", x)
    response = served.stub.ModelInfer(request(x, datatype), metadata=served.metadata())
    assert not response.raw_output_contents
    scores, labels = response.outputs
    assert (scores.name, scores.datatype, list(scores.shape)) == ("scores", "FP32", [5, 2])
    got = np.array(scores.contents.fp32_contents, dtype=np.float32).reshape(5, 2)
    assert got.tobytes() == expected.scores.tobytes()
    assert list(labels.contents.int64_contents) == expected.labels.tolist()


def test_requested_outputs_are_honoured(served: Served) -> None:
    x = flat(served.probe[:4])
    only = infer(served, "A", x, outputs=("label",))
    assert [o.name for o in only.get_response().outputs] == ["label"]
    assert only.as_numpy("scores") is None
    assert only.as_numpy("label").tolist() == served.client.predict("A", x).labels.tolist()
    both = infer(served, "A", x, outputs=("label", "scores"))
    assert [o.name for o in both.get_response().outputs] == ["label", "scores"]


def test_the_request_id_is_echoed(served: Served) -> None:
    given = triton.InferInput("x", [1, 784], "FP32")
    given.set_data_from_numpy(flat(served.probe[:1]))
    result = served.triton.infer("A", [given], request_id="call-42", headers=served.read)
    assert result.get_response().id == "call-42"


# ---- refusals -----------------------------------------------------------------------------
def test_an_unknown_model_is_not_found(served: Served) -> None:
    code, message = refused(lambda: infer(served, "nope", flat(served.probe[:1])))
    assert code == "NOT_FOUND" and "nope" in message
    code, _ = refused(lambda: served.triton.get_model_metadata("nope", headers=served.read))
    assert code == "NOT_FOUND"


def test_an_unknown_version_is_not_found(served: Served) -> None:
    code, message = refused(lambda: infer(served, "A", flat(served.probe[:1]), version="7"))
    assert code == "NOT_FOUND" and "version" in message


def test_a_wrong_shape_is_invalid(served: Served) -> None:
    x = flat(served.probe[:2])[:, :783]
    code, message = refused(lambda: infer(served, "A", np.ascontiguousarray(x)))
    assert code == "INVALID_ARGUMENT" and "783" in message


@pytest.mark.parametrize("datatype", ["INT64", "FP64", "BYTES"])
def test_a_wrong_datatype_is_invalid(served: Served, datatype: str) -> None:
    given = triton.InferInput("x", [1, 784], datatype)
    dtype = {"INT64": np.int64, "FP64": np.float64, "BYTES": np.object_}[datatype]
    given.set_data_from_numpy(np.zeros((1, 784), dtype=dtype))
    code, message = refused(lambda: served.triton.infer("A", [given], headers=served.read))
    assert code == "INVALID_ARGUMENT" and "FP32 or UINT8" in message


def test_a_wrong_input_name_and_an_unknown_output_are_invalid(served: Served) -> None:
    given = triton.InferInput("pixels", [1, 784], "FP32")
    given.set_data_from_numpy(flat(served.probe[:1]))
    code, _ = refused(lambda: served.triton.infer("A", [given], headers=served.read))
    assert code == "INVALID_ARGUMENT"
    code, message = refused(lambda: infer(served, "A", flat(served.probe[:1]), ("logits",)))
    assert code == "INVALID_ARGUMENT" and "scores, label" in message


def test_nan_inputs_and_oversized_batches_are_refused_as_by_predict(served: Served) -> None:
    x = flat(served.probe[:2])
    x[0, 0] = np.nan
    code, message = refused(lambda: infer(served, "A", x))
    assert code == "INVALID_ARGUMENT" and "NaN" in message
    big = np.zeros((MAX_BATCH + 1, 784), dtype=np.float32)
    code, message = refused(lambda: infer(served, "A", big))
    assert code == "RESOURCE_EXHAUSTED" and str(MAX_BATCH) in message


def test_malformed_tensors_are_invalid(served: Served) -> None:
    x = flat(served.probe[:1])
    short = request(x)
    del short.inputs[0].contents.fp32_contents[-1]
    assert raw_refused(served, short)[0] == "INVALID_ARGUMENT"
    both = request(x)
    both.raw_input_contents.append(x.tobytes())
    assert raw_refused(served, both)[0] == "INVALID_ARGUMENT"
    wrong_field = request(x)
    wrong_field.inputs[0].contents.int64_contents.append(1)
    assert raw_refused(served, wrong_field)[0] == "INVALID_ARGUMENT"
    too_big = request(served.probe[:1].reshape(1, -1), "UINT8")
    too_big.inputs[0].contents.uint_contents[0] = 256
    assert raw_refused(served, too_big)[0] == "INVALID_ARGUMENT"
    bytes_off = request(x)
    bytes_off.inputs[0].ClearField("contents")
    bytes_off.raw_input_contents.append(x.tobytes()[:-1])
    assert raw_refused(served, bytes_off)[0] == "INVALID_ARGUMENT"
    negative = request(x)
    negative.inputs[0].shape[:] = [-1, 784]
    assert raw_refused(served, negative)[0] == "INVALID_ARGUMENT"


def test_inference_needs_a_read_token(served: Served) -> None:
    x = triton.InferInput("x", [1, 784], "FP32")
    x.set_data_from_numpy(flat(served.probe[:1]))
    code, _ = refused(lambda: served.triton.infer("A", [x]))
    assert code == "UNAUTHENTICATED"
    code, _ = refused(lambda: served.triton.infer("A", [x], headers=served.write))
    assert code == "PERMISSION_DENIED"
    code, _ = refused(lambda: served.triton.get_model_metadata("A"))
    assert code == "UNAUTHENTICATED"


# ---- a task added while connected --------------------------------------------------------
def test_a_task_added_later_becomes_a_ready_model_and_the_others_do_not_change(
    served: Served,
) -> None:
    x = flat(served.probe)
    before = infer(served, "A", x).as_numpy("scores").tobytes()
    assert not served.triton.is_model_ready("C", headers=served.read)
    served.client.learn("C", digits(served.mnist, [4, 5], n=200), **FAST)
    assert served.triton.is_model_ready("C", headers=served.read)
    assert infer(served, "C", x).as_numpy("scores").tobytes() == (
        served.client.predict("C", x).scores.tobytes()
    )
    assert infer(served, "A", x).as_numpy("scores").tobytes() == before
