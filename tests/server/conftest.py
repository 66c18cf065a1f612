"""A session-wide server with small limits, shared by the limits, validation and fuzz tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest

from client import Client
from sparse_engine.mnist import Mnist
from sparsecl.v1 import sparsecl_pb2_grpc as pb_grpc

from ..serving import FAST, ServerProcess, digits

MAX_EXAMPLES = 2000
MAX_BATCH = 100
LIMITS = [
    *("--max-examples", str(MAX_EXAMPLES), "--max-batch", str(MAX_BATCH), "--max-queue", "1"),
    *("--max-epochs", "1001"),  # test_limits' SLOW task trains 1000 epochs unless cancelled
]


@dataclass
class Limited:
    """A server whose limits are small; tasks A (0/1) and B (2/3) committed."""

    server: ServerProcess
    client: Client
    channel: grpc.Channel
    stub: pb_grpc.ContinualLearnerStub
    probe: np.ndarray
    mnist: Mnist

    def scores(self) -> tuple[bytes, bytes]:
        """A's and B's scores on the probe, as bytes for bit comparison."""
        a, b = (self.client.predict(t, self.probe).scores.tobytes() for t in ("A", "B"))
        return a, b

    def committed(self) -> list[tuple[str, int]]:
        return [(t.name, t.id) for t in self.client.tasks() if t.state == "committed"]


@pytest.fixture(scope="session")
def limited(tmp_path_factory: pytest.TempPathFactory, mnist: Mnist) -> Iterator[Limited]:
    server = ServerProcess(tmp_path_factory.mktemp("limited"), args=LIMITS).start()
    client = Client(server.address, timeout=120)
    client.learn("A", digits(mnist, [0, 1], n=200), **FAST)
    client.learn("B", digits(mnist, [2, 3], n=200), **FAST)
    channel = grpc.insecure_channel(server.address)
    probe = mnist.x_test[:MAX_BATCH]
    yield Limited(server, client, channel, pb_grpc.ContinualLearnerStub(channel), probe, mnist)
    channel.close()
    client.close()
    server.terminate()
