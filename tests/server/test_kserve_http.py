"""The Open Inference Protocol (KServe v2) over HTTP/REST (`sparsecl serve --http-port`),
called by the real tritonclient.http and by plain JSON requests on a real server with
tokens: health, metadata, inference bit-identical to Predict (FP32 and UINT8, one example
and a batch, binary and JSON tensors), requested outputs, and every refusal with its HTTP
status and ``{"error": ...}``."""

from __future__ import annotations

import json
import re
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from client import Client
from sparse_engine.mnist import Mnist

from ..serving import FAST, ServerProcess, digits

MAX_BATCH = 100
URL = re.compile(r"sparsecl http on (http://\S+)")


@dataclass
class Served:
    server: ServerProcess
    client: Client
    triton: triton.InferenceServerClient
    url: str
    read: dict[str, str]
    write: dict[str, str]
    probe: np.ndarray

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """A plain JSON POST: the status and the JSON answer."""
        data = json.dumps(body).encode()
        given = {"Content-Type": "application/json", **(self.read if headers is None else headers)}
        call = urllib.request.Request(self.url + path, data=data, headers=given, method="POST")
        try:
            with urllib.request.urlopen(call, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, mnist: Mnist) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("kserve-http")
    read, write = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    tokens = folder / "tokens"
    tokens.write_text(f"read,write {read}\nwrite {write}\n")
    tokens.chmod(0o600)
    args = ["--tokens", str(tokens), "--max-batch", str(MAX_BATCH), "--http-port", "0"]
    server = ServerProcess(Path(folder / "store"), args=args).start()
    [url] = [m.group(1) for line in server.output if (m := URL.search(line))]
    client = Client(server.address, timeout=120, token=read)
    client.learn("A", digits(mnist, [0, 1], n=200), **FAST)
    inference = triton.InferenceServerClient(url.removeprefix("http://"))
    yield Served(
        server,
        client,
        inference,
        url,
        {"Authorization": f"Bearer {read}"},
        {"Authorization": f"Bearer {write}"},
        mnist.x_test[:MAX_BATCH],
    )
    inference.close()
    client.close()
    server.terminate()


def flat(images: np.ndarray) -> np.ndarray:
    return (images.reshape(len(images), -1) / np.float32(255)).astype(np.float32)


def infer(
    s: Served, x: np.ndarray, binary: bool = True, outputs: tuple[str, ...] = (), model: str = "A"
) -> triton.InferResult:
    datatype = {np.dtype(np.float32): "FP32", np.dtype(np.uint8): "UINT8"}[x.dtype]
    given = triton.InferInput("x", list(x.shape), datatype)
    given.set_data_from_numpy(x, binary_data=binary)
    asked = [triton.InferRequestedOutput(name, binary_data=binary) for name in outputs] or None
    # a copy: tritonclient adds the binary extension's header to the dict it is given
    return s.triton.infer(model, [given], outputs=asked, headers=dict(s.read))


def refused(call: Callable[[], object]) -> tuple[int, str]:
    with pytest.raises(InferenceServerException) as info:
        call()
    return int(str(info.value.status())), str(info.value.message())


def test_health_is_open_and_the_server_ready(served: Served) -> None:
    assert served.triton.is_server_live() and served.triton.is_server_ready()
    assert served.triton.is_model_ready("A", headers=served.read)
    assert not served.triton.is_model_ready("nope", headers=served.read)
    assert not served.triton.is_model_ready("A", "7", headers=served.read)


def test_metadata(served: Served) -> None:
    assert served.triton.get_server_metadata(headers=served.read)["name"] == "sparsecl"
    metadata = served.triton.get_model_metadata("A", headers=served.read)
    assert metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 784]}]
    assert metadata["outputs"] == [
        {"name": "scores", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "label", "datatype": "INT64", "shape": [-1]},
    ]
    assert served.triton.get_model_metadata("A", "1", headers=served.read) == metadata
    index = served.triton.get_model_repository_index(headers=served.read)
    assert [(m["name"], m["version"], m["state"]) for m in index] == [
        ("A", "1", "READY"),
        ("~taskfree", "", "READY"),  # the task-free model (tests/server/test_kserve_taskfree.py)
    ]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("n", [1, MAX_BATCH])
@pytest.mark.parametrize("uint8", [False, True], ids=["FP32", "UINT8"])
def test_inference_is_bit_identical_to_predict(
    served: Served, n: int, uint8: bool, binary: bool
) -> None:
    images = served.probe[:n]
    x = images.reshape(n, -1) if uint8 else flat(images)
    expected = served.client.predict("A", x)
    result = infer(served, x, binary, ("scores", "label") if not binary else ())
    assert result.as_numpy("scores").tobytes() == expected.scores.tobytes()
    assert result.as_numpy("label").tobytes() == expected.labels.tobytes()


def test_requested_outputs_are_honoured(served: Served) -> None:
    x = flat(served.probe[:3])
    result = infer(served, x, outputs=("label",))
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label"]
    assert result.as_numpy("label").tolist() == served.client.predict("A", x).labels.tolist()


def test_plain_json_requests_are_answered_in_json(served: Served) -> None:
    x = flat(served.probe[:2])
    body = {
        "id": "r1",
        "inputs": [{"name": "x", "shape": [2, 784], "datatype": "FP32", "data": x.tolist()}],
    }
    status, answer = served.post("/v2/models/A/infer", body)
    assert status == 200 and answer["id"] == "r1" and answer["model_version"] == "1"
    scores = next(o for o in answer["outputs"] if o["name"] == "scores")
    got = np.array(scores["data"], dtype=np.float32).reshape(scores["shape"])
    assert got.tobytes() == served.client.predict("A", x).scores.tobytes()


def test_refusals_have_their_http_status_and_an_error(served: Served) -> None:
    x = flat(served.probe[:1])
    code, message = refused(lambda: infer(served, x, model="nope"))
    assert code == 404 and "nope" in message
    code, _ = refused(lambda: infer(served, np.ascontiguousarray(x[:, :783])))
    assert code == 400
    wrong = triton.InferInput("x", [1, 784], "INT64")
    wrong.set_data_from_numpy(np.zeros((1, 784), np.int64))
    code, message = refused(lambda: served.triton.infer("A", [wrong], headers=dict(served.read)))
    assert code == 400 and "FP32 or UINT8" in message
    big = np.zeros((MAX_BATCH + 1, 784), np.float32)
    code, message = refused(lambda: infer(served, big))
    assert code == 413 and str(MAX_BATCH) in message
    code, _ = refused(lambda: served.triton.get_model_metadata("A"))
    assert code == 401
    code, _ = refused(lambda: served.triton.get_model_metadata("A", headers=served.write))
    assert code == 403
    for body in ([1, 2], {"inputs": "x"}, {"inputs": [{"name": "x", "datatype": "FP32"}]}):
        status, answer = served.post("/v2/models/A/infer", body)
        assert status == 400 and answer["error"], body
    status, answer = served.post("/v2/models/A/infer", {}, headers={})
    assert status == 401 and "token" in answer["error"]
