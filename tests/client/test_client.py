"""The client's call deadlines: every call has one by default (issue 13)."""

from __future__ import annotations

import math

import pytest

from client import Client
from client.client import CALL_TIMEOUT, LEARN_TIMEOUT


def test_calls_have_a_deadline_by_default() -> None:
    with Client("127.0.0.1:9") as client:
        assert client._deadline() == CALL_TIMEOUT
        assert client._deadline(learning=True) == LEARN_TIMEOUT


def test_a_given_timeout_applies_to_every_call() -> None:
    with Client("127.0.0.1:9", timeout=5) as client:
        assert client._deadline() == client._deadline(learning=True) == 5


def test_an_infinite_timeout_means_no_deadline() -> None:
    with Client("127.0.0.1:9", timeout=math.inf) as client:
        assert client._deadline() is None


@pytest.mark.parametrize("timeout", [0, -1, math.nan])
def test_a_timeout_that_is_not_positive_is_refused(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        Client("127.0.0.1:9", timeout=timeout)
