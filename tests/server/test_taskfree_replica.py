"""Task-free answers of an inference replica are the trainer's, bit for bit: the trainer
scores with the identity models it fitted (float16, rounded when fitted), the replica with
those it loaded from the store (an `mlflow server`, sqlite, proxied artifacts); over
Predict and over the Open Inference Protocol's ``~taskfree`` model."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as triton

from client import Client, ClientError
from server.dataplane import TASK_FREE_MODEL
from sparse_engine.mnist import Mnist

from ..serving import FAST, ServerProcess, digits, trainer_and_replica


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with trainer_and_replica(tmp_path_factory.mktemp("taskfree-replica"), 0.5) as servers:
        yield servers


def test_a_replica_answers_task_free_as_the_trainer_bit_for_bit(
    servers: tuple[ServerProcess, ServerProcess], mnist: Mnist
) -> None:
    trainer, replica = servers
    trainer.start()
    replica.start()
    x = mnist.x_test[np.isin(mnist.y_test, [0, 1, 2, 3])][:200]
    with Client(trainer.address, timeout=120) as learner, Client(replica.address) as reader:
        learner.learn("A", digits(mnist, [0, 1], n=200), **FAST)
        learner.learn("B", digits(mnist, [2, 3], n=200), **FAST)
        deadline = time.monotonic() + 60
        while True:  # the replica follows the trainer's commits
            try:
                if reader.task("B").state == "committed":
                    break
            except ClientError:
                pass
            assert time.monotonic() < deadline, "the replica did not follow in time"
            time.sleep(0.2)
        mine, theirs = learner.predict(None, x), reader.predict(None, x)
    assert set(mine.tasks) == {"A", "B"}  # both tasks are picked: the identity models matter
    assert mine.tasks.tolist() == theirs.tasks.tolist()
    assert mine.labels.tobytes() == theirs.labels.tobytes()
    assert mine.confidence.tobytes() == theirs.confidence.tobytes()
    assert mine.task_probs.tobytes() == theirs.task_probs.tobytes()
    given = triton.InferInput("x", [len(x), 784], "UINT8")
    given.set_data_from_numpy(x.reshape(len(x), -1))
    inference = triton.InferenceServerClient(replica.address)
    try:
        result = inference.infer(TASK_FREE_MODEL, [given])
    finally:
        inference.close()
    assert result.as_numpy("confidence").tobytes() == mine.confidence.tobytes()
    assert result.as_numpy("label").tobytes() == mine.labels.tobytes()
