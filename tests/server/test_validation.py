"""Input validation gaps not covered by test_service.py, against the shared limited server.

Each bad request gets its status code and a message naming the problem, and changes
nothing: the committed tasks and their predictions stay bit-identical.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import numpy as np
import pytest

from client import ClientError
from client.convert import tensor
from sparsecl.v1 import sparsecl_pb2 as pb

from ..serving import FAST, digits
from .conftest import MAX_BATCH, Limited

# a header this server accepts (its --max-batch is below the default batch size)
HEADER = pb.AddTaskHeader(name="C", hyper_parameters=pb.HyperParameters(batch_size=MAX_BATCH))


def invalid(s: Limited, call: Callable[[], object]) -> str:
    """Run a call that must fail with INVALID_ARGUMENT and change nothing; its message."""
    before = (s.committed(), s.scores())
    with pytest.raises((ClientError, grpc.RpcError)) as info:
        call()
    error = info.value
    if isinstance(error, ClientError):
        code, message = error.code, error.message
    else:
        code, message = error.code(), error.details()
    assert code == grpc.StatusCode.INVALID_ARGUMENT, message
    assert (s.committed(), s.scores()) == before
    return str(message)


def learn(s: Limited, name: str = "C", **hp: object) -> Callable[[], object]:
    return lambda: s.client.learn(name, digits(s.mnist, [4, 5], n=100), **{**FAST, **hp})


def test_empty_task_name_is_task_free_for_predict(limited: Limited) -> None:
    before = (limited.committed(), limited.scores())
    request = pb.PredictRequest(task="", x=tensor(limited.probe))
    reply = limited.stub.Predict(request, timeout=60)
    names = list(reply.task_names)  # in id order; tests sharing the server may add tasks
    assert names[:2] == ["A", "B"] and set(reply.tasks) <= set(names)
    assert len(reply.tasks) == len(limited.probe) and not reply.classes
    assert (limited.committed(), limited.scores()) == before


def test_too_long_task_name_is_invalid_for_get_task(limited: Limited) -> None:
    message = invalid(limited, lambda: limited.client.task("x" * 129))
    assert "1..128" in message


def test_non_printable_task_name_is_invalid(limited: Limited) -> None:
    invalid(limited, learn(limited, "bell\x07"))


def test_task_name_ending_in_a_newline_is_invalid(limited: Limited) -> None:
    invalid(limited, learn(limited, "C\n"))


def test_zero_epochs_are_invalid(limited: Limited) -> None:
    message = invalid(limited, learn(limited, epochs=0, retrain_epochs=0))
    assert "epochs" in message


def test_zero_density_is_invalid(limited: Limited) -> None:
    message = invalid(limited, learn(limited, density=0.0))
    assert "(0, 1]" in message


def test_nan_boost_strength_is_invalid(limited: Limited) -> None:
    message = invalid(limited, learn(limited, boost_strength=float("nan")))
    assert "boost_strength" in message


def test_infinite_training_inputs_are_invalid(limited: Limited) -> None:
    x = np.zeros((20, 784), np.float32)
    x[3, 7] = np.inf
    y = np.arange(20) % 2
    message = invalid(limited, lambda: limited.client.learn("C", (x, y), **FAST))
    assert "Inf" in message


def test_predict_with_no_examples_is_invalid(limited: Limited) -> None:
    request = pb.PredictRequest(task="A", x=tensor(np.zeros((0, 784), np.float32)))
    message = invalid(limited, lambda: limited.stub.Predict(request, timeout=30))
    assert "N >= 1" in message


def test_evaluate_with_float_labels_is_invalid(limited: Limited) -> None:
    x = limited.probe[:10]
    request = pb.EvaluateRequest(x=tensor(x), y=tensor(np.zeros(10, np.float32)))
    message = invalid(limited, lambda: limited.stub.Evaluate(request, timeout=30))
    assert "int64" in message


def test_evaluate_with_fewer_labels_than_inputs_is_invalid(limited: Limited) -> None:
    x, y = limited.probe[:10], limited.mnist.y_test[:9]
    message = invalid(limited, lambda: limited.client.evaluate(x, y))
    assert "10" in message and "9" in message


def test_chunk_without_a_split_is_invalid(limited: Limited) -> None:
    x, y = digits(limited.mnist, [4, 5], n=50)
    requests = [
        pb.AddTaskRequest(header=HEADER),
        pb.AddTaskRequest(chunk=pb.ExampleChunk(x=tensor(x), y=tensor(y))),
    ]
    message = invalid(limited, lambda: list(limited.stub.AddTask(iter(requests), timeout=30)))
    assert "SPLIT_TRAIN" in message


def test_second_header_is_invalid(limited: Limited) -> None:
    head = pb.AddTaskRequest(header=HEADER)
    invalid(limited, lambda: list(limited.stub.AddTask(iter([head, head]), timeout=30)))


def test_too_few_examples_to_hold_out_validation_of_every_class_are_invalid(
    limited: Limited,
) -> None:
    x, y = digits(limited.mnist, [4, 5], n=2)
    assert sorted(y) == [4, 5]
    message = invalid(limited, lambda: limited.client.learn("C", (x, y), **FAST))
    assert "validation" in message
