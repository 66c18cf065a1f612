"""Task-free inference over the Open Inference Protocol (KServe v2): the reserved model
``~taskfree``, on gRPC ModelInfer and HTTP/REST infer of one real server, called by the
real tritonclient and by raw messages: per example the inferred task (BYTES), its label
(INT64), confidence (FP32) and p(task | x) per committed task (FP32, columns named by
``task_names``), with the rule that answered as a response parameter, bit for bit the
task-free Predict's; its metadata, its entry in the repository index; refused with a clear
error while no task is committed."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from client import Client
from client.client import TaskFreePrediction
from server.dataplane import TASK_FREE_MODEL, check_task_name
from sparse_engine.errors import InvalidInputError
from sparse_engine.mnist import Mnist

from ..serving import FAST, ServerProcess, digits

URL = re.compile(r"sparsecl http on (http://\S+)")
PERMUTATION = np.random.default_rng(0).permutation(784)
OUTPUTS = [
    {"name": "task", "datatype": "BYTES", "shape": [-1]},
    {"name": "label", "datatype": "INT64", "shape": [-1]},
    {"name": "confidence", "datatype": "FP32", "shape": [-1]},
    {"name": "task_probs", "datatype": "FP32", "shape": [-1, -1]},
    {"name": "task_names", "datatype": "BYTES", "shape": [-1]},
]
NAMES = tuple(output["name"] for output in OUTPUTS)


@dataclass
class Served:
    server: ServerProcess
    client: Client
    grpc: tgrpc.InferenceServerClient
    http: thttp.InferenceServerClient
    stub: service_pb2_grpc.GRPCInferenceServiceStub
    url: str
    x: np.ndarray  # uint8: 50 plain test digits 0-2, then the same 50 permuted
    before: dict[str, Any]  # what each transport answered while no task was committed

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        """A plain JSON POST: the status and the JSON answer."""
        call = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(call, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


def refused(call: Callable[[], object]) -> tuple[str, str]:
    """The status (gRPC code name or HTTP status) and message of a call that must fail."""
    with pytest.raises(InferenceServerException) as info:
        call()
    return str(info.value.status()).removeprefix("StatusCode."), str(info.value.message())


def grpc_infer(s: Served, x: np.ndarray, outputs: tuple[str, ...] = ()) -> tgrpc.InferResult:
    given = tgrpc.InferInput("x", list(x.shape), "UINT8" if x.dtype == np.uint8 else "FP32")
    given.set_data_from_numpy(x)
    asked = [tgrpc.InferRequestedOutput(name) for name in outputs] or None
    return s.grpc.infer(TASK_FREE_MODEL, [given], outputs=asked)


def http_infer(s: Served, x: np.ndarray, binary: bool) -> thttp.InferResult:
    given = thttp.InferInput("x", list(x.shape), "UINT8" if x.dtype == np.uint8 else "FP32")
    given.set_data_from_numpy(x, binary_data=binary)
    asked = [thttp.InferRequestedOutput(name, binary_data=binary) for name in NAMES]
    return s.http.infer(TASK_FREE_MODEL, [given], outputs=asked)


def text(tasks: np.ndarray) -> list[str]:
    """BYTES elements as text (tritonclient gives bytes, or str from JSON)."""
    return [t.decode() if isinstance(t, bytes) else str(t) for t in tasks.ravel()]


def same(result: Any, expected: TaskFreePrediction, rule: str) -> None:
    """A task-free model's outputs and rule are bit for bit the task-free Predict's."""
    assert text(result.as_numpy("task")) == expected.tasks.tolist()
    assert result.as_numpy("label").dtype == np.int64
    assert result.as_numpy("label").tobytes() == expected.labels.tobytes()
    assert result.as_numpy("confidence").dtype == np.float32
    assert result.as_numpy("confidence").tobytes() == expected.confidence.tobytes()
    probs = result.as_numpy("task_probs")
    assert probs.dtype == np.float32 and probs.shape == expected.task_probs.shape
    assert probs.tobytes() == expected.task_probs.tobytes()
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert tuple(text(result.as_numpy("task_names"))) == expected.task_names
    assert rule == expected.rule == "identity"


def grpc_rule(result: tgrpc.InferResult) -> str:
    """The response parameter ``rule`` of a gRPC answer."""
    return str(result.get_response().parameters["rule"].string_param)


def http_rule(result: thttp.InferResult) -> str:
    """The response parameter ``rule`` of an HTTP answer."""
    return str(result.get_response()["parameters"]["rule"])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, mnist: Mnist) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("kserve-taskfree")
    server = ServerProcess(Path(folder / "store"), args=["--http-port", "0"]).start()
    [url] = [m.group(1) for line in server.output if (m := URL.search(line))]
    client = Client(server.address, timeout=120)
    channel = grpc.insecure_channel(server.address)
    s = Served(
        server,
        client,
        tgrpc.InferenceServerClient(server.address),
        thttp.InferenceServerClient(url.removeprefix("http://")),
        service_pb2_grpc.GRPCInferenceServiceStub(channel),
        url,
        np.zeros((0,), np.uint8),
        {},
    )
    probe = mnist.x_test[:2].reshape(2, -1)
    s.before = {
        "grpc": refused(lambda: grpc_infer(s, probe)),
        "http": refused(lambda: http_infer(s, probe, True)),
        "grpc_ready": s.grpc.is_model_ready(TASK_FREE_MODEL),
        "http_ready": s.http.is_model_ready(TASK_FREE_MODEL),
        "index": s.grpc.get_model_repository_index(as_json=True).get("models", []),
    }
    x, y = digits(mnist, [0, 1, 2], n=300)
    client.learn("plain", (x, y), **FAST)
    client.learn("permuted", (permuted(x), y), **FAST)
    test = mnist.x_test[np.isin(mnist.y_test, [0, 1, 2])][:50]
    s.x = np.concatenate([test, permuted(test)]).reshape(100, -1)
    yield s
    s.grpc.close()
    s.http.close()
    channel.close()
    client.close()
    server.terminate()


def permuted(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)[:, PERMUTATION].reshape(x.shape)


def flat(images: np.ndarray) -> np.ndarray:
    return (images.reshape(len(images), -1) / np.float32(255)).astype(np.float32)


def test_the_reserved_name_can_never_be_a_task() -> None:
    with pytest.raises(InvalidInputError):
        check_task_name(TASK_FREE_MODEL)


def test_without_a_committed_task_it_is_refused_clearly(served: Served) -> None:
    before = served.before
    assert before["grpc"][0] == "FAILED_PRECONDITION"
    assert before["http"][0] == "503"
    for _, message in (before["grpc"], before["http"]):
        assert TASK_FREE_MODEL in message and "no committed task" in message
    assert not before["grpc_ready"] and not before["http_ready"]
    assert before["index"] == [
        {
            "name": TASK_FREE_MODEL,
            "state": "UNAVAILABLE",
            "reason": "no committed task to infer from yet",
        }
    ]


@pytest.mark.parametrize("uint8", [False, True], ids=["FP32", "UINT8"])
def test_grpc_answers_bit_for_bit_as_task_free_predict(served: Served, uint8: bool) -> None:
    x = served.x if uint8 else flat(served.x)
    expected = served.client.predict(None, x)
    assert (expected.tasks == np.array(["plain"] * 50 + ["permuted"] * 50)).mean() >= 0.95
    assert expected.task_names == ("plain", "permuted")
    result = grpc_infer(served, x)
    same(result, expected, grpc_rule(result))
    response = result.get_response()
    assert (response.model_name, response.model_version) == (TASK_FREE_MODEL, "")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("task", "BYTES", [100]),
        ("label", "INT64", [100]),
        ("confidence", "FP32", [100]),
        ("task_probs", "FP32", [100, 2]),
        ("task_names", "BYTES", [2]),
    ]


def test_grpc_typed_contents_are_answered_typed(served: Served) -> None:
    x = flat(served.x[:7])
    tensor = service_pb2.ModelInferRequest.InferInputTensor(
        name="x", datatype="FP32", shape=list(x.shape)
    )
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    request = service_pb2.ModelInferRequest(model_name=TASK_FREE_MODEL, inputs=[tensor])
    response = served.stub.ModelInfer(request, timeout=30)
    assert not response.raw_output_contents
    task, label, confidence, probs, names = response.outputs
    expected = served.client.predict(None, x)
    assert [t.decode() for t in task.contents.bytes_contents] == expected.tasks.tolist()
    assert list(label.contents.int64_contents) == expected.labels.tolist()
    got = np.array(confidence.contents.fp32_contents, dtype=np.float32)
    assert got.tobytes() == expected.confidence.tobytes()
    assert list(probs.shape) == [7, 2]
    got = np.array(probs.contents.fp32_contents, dtype=np.float32).reshape(7, 2)
    assert got.tobytes() == expected.task_probs.tobytes()
    assert tuple(n.decode() for n in names.contents.bytes_contents) == expected.task_names
    assert response.parameters["rule"].string_param == expected.rule


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_answers_bit_for_bit_as_task_free_predict(served: Served, binary: bool) -> None:
    x = flat(served.x)
    result = http_infer(served, x, binary)
    same(result, served.client.predict(None, x), http_rule(result))


def test_plain_json_request(served: Served) -> None:
    x = flat(served.x[48:52])
    body = {"inputs": [{"name": "x", "shape": [4, 784], "datatype": "FP32", "data": x.tolist()}]}
    status, answer = served.post(f"/v2/models/{TASK_FREE_MODEL}/infer", body)
    assert status == 200 and answer["model_name"] == TASK_FREE_MODEL
    outputs = {o["name"]: o for o in answer["outputs"]}
    expected = served.client.predict(None, x)
    assert outputs["task"]["datatype"] == "BYTES"
    assert outputs["task"]["data"] == expected.tasks.tolist()
    assert outputs["label"]["data"] == expected.labels.tolist()
    got = np.array(outputs["confidence"]["data"], dtype=np.float32)
    assert got.tobytes() == expected.confidence.tobytes()
    assert outputs["task_probs"]["shape"] == [4, 2]
    got = np.array(outputs["task_probs"]["data"], dtype=np.float32).reshape(4, 2)
    assert got.tobytes() == expected.task_probs.tobytes()
    assert tuple(outputs["task_names"]["data"]) == expected.task_names
    assert answer["parameters"] == {"rule": expected.rule}


def test_requested_outputs_are_honoured(served: Served) -> None:
    x = flat(served.x[:5])
    only = grpc_infer(served, x, ("confidence", "task"))
    assert [o.name for o in only.get_response().outputs] == ["confidence", "task"]
    assert only.as_numpy("label") is None
    probs = grpc_infer(served, x, ("task_names", "task_probs"))
    assert [o.name for o in probs.get_response().outputs] == ["task_names", "task_probs"]
    assert probs.as_numpy("task") is None and probs.as_numpy("confidence") is None
    expected = served.client.predict(None, x)
    assert probs.as_numpy("task_probs").tobytes() == expected.task_probs.tobytes()
    assert tuple(text(probs.as_numpy("task_names"))) == expected.task_names
    assert grpc_rule(probs) == expected.rule  # whatever outputs are asked for
    given = thttp.InferInput("x", list(x.shape), "FP32")
    given.set_data_from_numpy(x)
    http = served.http.infer(
        TASK_FREE_MODEL, [given], outputs=[thttp.InferRequestedOutput("task_probs")]
    )
    assert [o["name"] for o in http.get_response()["outputs"]] == ["task_probs"]
    assert http.as_numpy("task_probs").tobytes() == expected.task_probs.tobytes()
    assert http_rule(http) == expected.rule
    code, message = refused(lambda: grpc_infer(served, x, ("scores",)))
    assert code == "INVALID_ARGUMENT"
    assert "task, label, confidence, task_probs, task_names" in message


def test_metadata_index_and_readiness_describe_it(served: Served) -> None:
    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 784]}]
    http = served.http.get_model_metadata(TASK_FREE_MODEL)
    assert http == {
        "name": TASK_FREE_MODEL,
        "versions": [],
        "platform": "sparsecl",
        "inputs": inputs,
        "outputs": OUTPUTS,
    }
    grpc_meta = served.grpc.get_model_metadata(TASK_FREE_MODEL, as_json=True)
    assert grpc_meta["outputs"] == [
        {**o, "shape": [str(size) for size in o["shape"]]} for o in OUTPUTS
    ]
    assert served.grpc.is_model_ready(TASK_FREE_MODEL)
    assert served.http.is_model_ready(TASK_FREE_MODEL)
    assert not served.grpc.is_model_ready(TASK_FREE_MODEL, "1")
    index = served.http.get_model_repository_index()
    assert [(m["name"], m["state"]) for m in index] == [
        ("plain", "READY"),
        ("permuted", "READY"),
        (TASK_FREE_MODEL, "READY"),
    ]
    code, message = refused(lambda: served.grpc.get_model_metadata(TASK_FREE_MODEL, "1"))
    assert code == "NOT_FOUND" and "no version" in message
