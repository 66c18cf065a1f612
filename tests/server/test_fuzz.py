"""Property-based: random and malformed messages to every RPC of a running server.

Whatever arrives, the server stays up, answers with a deliberate status code (never
INTERNAL or UNKNOWN), and the committed tasks A and B predict bit-identically. An oracle
knows which requests must be refused: an OK for a request that holds NaN/Inf, a malformed
tensor or a name that is not a task's fails the test, and so does a refusal of a valid one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sparsecl.v1 import sparsecl_pb2 as pb

from .conftest import MAX_BATCH, Limited

EXAMPLES = 50
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases every run: a failure reproduces
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SERVICE = "/sparsecl.v1.ContinualLearner/"
DELIBERATE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
}
ITEMSIZE = {1: 4, 2: 1, 3: 8, 4: 4, 5: 8}

names = st.one_of(
    st.sampled_from(["A", "B", "nope", "", "x" * 129, "A\n", "a b", "é", ".", "..", "backbone"]),
    st.sampled_from(["x" * 20_000, "é" * 5_000]),
    st.text(max_size=20),
)
dims = st.sampled_from([-1, 0, 1, 2, 3, 28, 784, 2**31, 2**40, 2**63 - 1])
TASKS = {"A", "B"}
VALID_DTYPES = {pb.DTYPE_UINT8: np.uint8, pb.DTYPE_FLOAT32: np.dtype("<f4")}


@st.composite
def tensors(draw: st.DrawFn) -> pb.Tensor:
    """Tensors of any dtype code and shape (zero, huge and many dimensions), with bytes that
    often (not always) fit the shape."""
    dtype = draw(st.integers(0, 6))
    shape = draw(st.one_of(st.lists(dims, max_size=3), st.lists(st.just(1), max_size=65)))
    want = math.prod(shape) * ITEMSIZE.get(dtype, 1) if shape and min(shape) >= 0 else -1
    if 0 <= want <= 8 * 784 and draw(st.booleans()):
        data = draw(st.binary(min_size=want, max_size=want))
    else:
        data = draw(st.binary(max_size=64))
    return pb.Tensor(shape=shape, dtype=dtype, data=data)  # type: ignore[arg-type]


@st.composite
def uploads(draw: st.DrawFn) -> list[bytes]:
    """An AddTask stream: a header (or not), chunks (valid-looking or not), garbage."""
    hp = pb.HyperParameters()
    for field, values in (
        ("density", st.floats(allow_nan=True, allow_infinity=True)),
        ("epochs", st.one_of(st.integers(-1, 1), st.integers(1000, 2**31 - 1))),
        ("retrain_epochs", st.one_of(st.integers(-1, 1), st.integers(1000, 2**31 - 1))),
        ("batch_size", st.one_of(st.integers(-1, 64), st.just(2**31 - 1))),
        ("lr", st.floats(allow_nan=True, allow_infinity=True)),
        ("optimizer", st.sampled_from(["sgd", "adam", "nope", ""])),
        ("prune_rounds", st.integers(-1, 2)),
        ("saliency", st.sampled_from(["magnitude", "obd", "taylor", "x"])),
        ("boost_strength", st.floats(allow_nan=True, allow_infinity=True)),
        ("seed", st.integers(-(2**63), 2**63 - 1)),
    ):
        if draw(st.booleans()):
            setattr(hp, field, draw(values))
    for _ in range(draw(st.integers(0, 2))):
        if draw(st.booleans()):
            hp.k.append(pb.KSize(count=draw(st.integers(-(2**63), 2**63 - 1))))
        else:
            hp.k.append(pb.KSize(fraction=draw(st.floats(allow_nan=True))))
    header = pb.AddTaskHeader(
        name=draw(names),
        hyper_parameters=hp,
        labels=draw(
            st.one_of(
                st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3),
                st.integers(0, 3000).map(lambda n: list(range(n))),
            )
        ),
        train_examples=draw(st.integers(-1, 8)),
    )
    messages: list[bytes] = []
    if draw(st.booleans()):
        messages.append(pb.AddTaskRequest(header=header).SerializeToString())
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            messages.append(draw(st.binary(max_size=32)))
        elif kind == 1:
            messages.append(pb.AddTaskRequest(header=header).SerializeToString())
        else:
            rows = draw(st.integers(1, 8))
            x = draw(st.one_of(tensors(), st.just(uint8_rows(rows, draw(st.binary())))))
            values = draw(st.lists(st.integers(-3, 3), min_size=rows, max_size=rows))
            y = draw(st.one_of(tensors(), st.just(labels(values))))
            split = draw(st.integers(0, 3))
            chunk = pb.ExampleChunk(split=split, x=x, y=y)  # type: ignore[arg-type]
            messages.append(pb.AddTaskRequest(chunk=chunk).SerializeToString())
    return messages


SPECIAL = st.sampled_from([math.nan, math.inf, -math.inf, 3e38, -3e38, 0.0, 0.5])


@st.composite
def batches(draw: st.DrawFn) -> pb.Tensor:
    """Well-formed inputs: uint8 or float32 rows of any values, NaN and ±Inf often, in all
    rows or in one value of one row."""
    rows = draw(st.integers(0, 8))
    if draw(st.booleans()):
        return uint8_rows(rows, draw(st.binary(max_size=4)))
    data = np.full((rows, 784), draw(st.floats(width=32)), np.float32)
    if rows and draw(st.booleans()):
        data[:] = 0.5
        data[draw(st.integers(0, rows - 1)), draw(st.integers(0, 783))] = draw(SPECIAL)
    return pb.Tensor(shape=[rows, 784], dtype=pb.DTYPE_FLOAT32, data=data.tobytes())


@st.composite
def plausible_uploads(draw: st.DrawFn) -> list[bytes]:
    """Uploads close to valid (a few uint8 examples, small hyper-parameters): some train."""
    rows = draw(st.integers(4, 8))
    hp = pb.HyperParameters(
        epochs=1,
        retrain_epochs=draw(st.integers(0, 1)),
        batch_size=draw(st.integers(1, 8)),
        density=draw(st.sampled_from([0.05, 0.1, 0.05, 0.1, 1.5, 0.0])),
        k=[draw(st.sampled_from([pb.KSize(count=8), pb.KSize(fraction=0.2), pb.KSize(count=65)]))],
        prune_rounds=draw(st.integers(1, 2)),
        saliency=draw(st.sampled_from(["magnitude", "obd", "taylor"])),
        retrain=draw(st.sampled_from(["finetune", "finetune", "rewind"])),
    )
    name = draw(st.from_regex(r"fz[a-z0-9]{1,8}", fullmatch=True))
    alternating = [i % 2 for i in range(rows)]
    values = draw(st.sampled_from([alternating, alternating[::-1], [0] * rows]))
    x = uint8_rows(rows, draw(st.binary(max_size=4)))
    split = draw(st.sampled_from([pb.SPLIT_TRAIN] * 4 + [pb.SPLIT_VAL]))
    head = pb.AddTaskRequest(header=pb.AddTaskHeader(name=name, hyper_parameters=hp))
    chunk = pb.AddTaskRequest(chunk=pb.ExampleChunk(split=split, x=x, y=labels(values)))
    return [head.SerializeToString(), chunk.SerializeToString()]


def uint8_rows(rows: int, seed: bytes) -> pb.Tensor:
    """``rows`` MNIST-shaped uint8 images (always well-formed)."""
    data = np.random.default_rng(list(seed) or 0).integers(0, 256, (rows, 784), np.uint8)
    return pb.Tensor(shape=[rows, 784], dtype=pb.DTYPE_UINT8, data=data.tobytes())


def labels(values: list[int]) -> pb.Tensor:
    return pb.Tensor(
        shape=[len(values)], dtype=pb.DTYPE_INT64, data=np.asarray(values, "<i8").tobytes()
    )


def valid_batch(tensor: pb.Tensor, max_rows: int) -> bool:
    """Whether ``tensor`` is inputs a task must accept: uint8 or float32, N × 784 with
    1 <= N <= ``max_rows``, bytes that fit, every value finite."""
    if tensor.dtype not in VALID_DTYPES or len(tensor.shape) < 2 or min(tensor.shape) < 0:
        return False
    if tensor.shape[0] < 1 or tensor.shape[0] > max_rows or math.prod(tensor.shape[1:]) != 784:
        return False
    dtype = np.dtype(VALID_DTYPES[tensor.dtype])
    if len(tensor.data) != math.prod(tensor.shape) * dtype.itemsize:
        return False
    return bool(np.isfinite(np.frombuffer(tensor.data, dtype).astype(np.float64)).all())


def overflows(tensor: pb.Tensor) -> bool:
    """Finite float32 inputs so large the network's scores may overflow (refusal allowed)."""
    if tensor.dtype != pb.DTYPE_FLOAT32:
        return False
    return bool((np.abs(np.frombuffer(tensor.data, "<f4")) > 1e30).any())


def code_of(call: Any, *args: Any) -> grpc.StatusCode:
    """Run a call to the end; its status code."""
    try:
        result = call(*args, timeout=60)
        if isinstance(result, Iterator):
            list(result)
    except grpc.RpcError as e:
        return e.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def before(limited: Limited) -> tuple[bytes, bytes]:
    return limited.scores()


def unary(s: Limited, method: str) -> Any:
    return s.channel.unary_unary(SERVICE + method)


def settled(s: Limited, before: tuple[bytes, bytes]) -> None:
    """The server is alive and A and B still predict bit-identically."""
    assert s.server.process is not None and s.server.process.poll() is None
    assert s.scores() == before


@FUZZ
@given(request=st.builds(pb.PredictRequest, task=names, x=st.one_of(tensors(), batches())))
def test_predict_never_fails_internally(
    limited: Limited, before: tuple[bytes, bytes], request: pb.PredictRequest
) -> None:
    code = code_of(unary(limited, "Predict"), request.SerializeToString())
    event(code.name)
    assert code in DELIBERATE, request
    # an empty name is task-free inference over A and B
    valid = request.task in TASKS | {""} and valid_batch(request.x, MAX_BATCH)
    if code == grpc.StatusCode.OK:
        assert valid, request  # the oracle: nothing invalid is ever answered
    elif valid:  # a valid request is answered, unless its huge values overflow the network
        assert code == grpc.StatusCode.INVALID_ARGUMENT and overflows(request.x), (code, request)
    settled(limited, before)


@FUZZ
@given(request=st.builds(pb.PredictRequest, task=st.sampled_from(sorted(TASKS)), x=batches()))
def test_predict_on_a_task_answers_exactly_the_valid_inputs(
    limited: Limited, before: tuple[bytes, bytes], request: pb.PredictRequest
) -> None:
    """Known tasks, well-formed tensors: the oracle decides on the values alone."""
    test_predict_never_fails_internally.hypothesis.inner_test(limited, before, request)  # type: ignore[attr-defined]


@FUZZ
@given(
    request=st.builds(
        pb.EvaluateRequest,
        task=names,
        x=st.one_of(tensors(), batches()),
        y=st.one_of(tensors(), st.lists(st.integers(0, 3), max_size=8).map(labels)),
    )
)
def test_evaluate_never_fails_internally(
    limited: Limited, before: tuple[bytes, bytes], request: pb.EvaluateRequest
) -> None:
    code = code_of(unary(limited, "Evaluate"), request.SerializeToString())
    event(code.name)
    assert code in DELIBERATE, request
    if code == grpc.StatusCode.OK:  # the oracle: only known tasks and valid inputs
        assert request.task in TASKS | {""} and valid_batch(request.x, MAX_BATCH), request
    settled(limited, before)


@FUZZ
@given(name=names)
def test_get_task_never_fails_internally(
    limited: Limited, before: tuple[bytes, bytes], name: str
) -> None:
    code = code_of(unary(limited, "GetTask"), pb.GetTaskRequest(name=name).SerializeToString())
    assert code in DELIBERATE, name
    settled(limited, before)


@FUZZ
@given(
    method=st.sampled_from(["Predict", "ListTasks", "GetTask", "GetBackbone", "Evaluate"]),
    data=st.binary(max_size=64),
)
def test_garbage_bytes_are_refused_or_read_as_defaults(
    limited: Limited, before: tuple[bytes, bytes], method: str, data: bytes
) -> None:
    code = code_of(unary(limited, method), data)
    assert code in DELIBERATE, (method, data)
    settled(limited, before)


@FUZZ
@given(messages=st.one_of(uploads(), plausible_uploads()))
def test_add_task_never_fails_internally(
    limited: Limited, before: tuple[bytes, bytes], messages: list[bytes]
) -> None:
    call = limited.channel.stream_stream(SERVICE + "AddTask")
    code = code_of(call, iter(messages))
    event(code.name)
    assert code in DELIBERATE, messages
    if code == grpc.StatusCode.OK:  # the oracle: only a sound upload is ever learned
        assert sound_upload(messages), messages
    settled(limited, before)


def sound_upload(messages: list[bytes]) -> bool:
    """Whether an upload may be accepted: a header first with a valid name and epochs within
    the server's cap, then chunks whose inputs are valid (finite, N × 784) and labels int."""
    requests = []
    for m in messages:
        request = pb.AddTaskRequest()
        try:
            request.ParseFromString(m)
        except Exception:
            return False
        requests.append(request)
    if not requests or requests[0].WhichOneof("item") != "header":
        return False
    header = requests[0].header
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,128}", header.name) or not header.name.strip("."):
        return False
    hp = header.hyper_parameters
    if hp.epochs > 1000 or hp.retrain_epochs > 1000 or len(set(header.labels)) > 1000:
        return False
    chunks = [r.chunk for r in requests[1:]]
    return (
        bool(chunks)
        and all(r.WhichOneof("item") == "chunk" for r in requests[1:])
        and all(valid_batch(c.x, 10**6) for c in chunks)
    )
