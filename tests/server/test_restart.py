"""Kill the server with SIGKILL in the middle of training, start it again on the same store.

Committed tasks must answer bit for bit as before; the task cut off is reported failed,
never half-committed, and its name can be learned again.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest

from client import Client, ClientError
from sparse_engine.mnist import Mnist

from ..serving import FAST, ServerProcess, digits


@dataclass
class Restarted:
    server: ServerProcess
    client: Client
    probe: np.ndarray
    before: dict[str, bytes]  # scores of A and B on the probe before the kill
    plans: dict[str, int]  # A's and B's plan bytes before the kill
    mnist: Mnist


def wait_for_state(client: Client, name: str, state: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.task(name).state == state:
                return
        except ClientError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"task {name!r} never reached state {state!r}")


@pytest.fixture(scope="module")
def restarted(tmp_path_factory: pytest.TempPathFactory, mnist: Mnist) -> Iterator[Restarted]:
    server = ServerProcess(tmp_path_factory.mktemp("store")).start()
    probe = mnist.x_test[:300]
    with Client(server.address, timeout=120) as client:
        client.learn("A", digits(mnist, [0, 1]), **FAST)
        client.learn("B", digits(mnist, [2, 3]), **FAST)
        before = {n: client.predict(n, probe).scores.tobytes() for n in ("A", "B")}
        plans = {n: client.task(n).plan_bytes for n in ("A", "B")}
        events = client.add_task("C", digits(mnist, [4, 5], n=2000), **{**FAST, "epochs": 20})

        def follow() -> None:
            with contextlib.suppress(ClientError):  # cut off by the kill
                list(events)

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()  # the upload runs in this thread; the server cuts it off when killed
        wait_for_state(client, "C", "training")
        time.sleep(0.5)
        server.kill()  # while the client still follows C: closing it first would cancel C
    server.start()
    client = Client(server.address, timeout=120)
    yield Restarted(server, client, probe, before, plans, mnist)
    client.close()
    server.terminate()


def test_committed_tasks_answer_bit_identically_after_sigkill_and_restart(
    restarted: Restarted,
) -> None:
    after = {n: restarted.client.predict(n, restarted.probe).scores.tobytes() for n in ("A", "B")}
    assert after == restarted.before


def test_committed_tasks_report_the_same_plan_after_restart(restarted: Restarted) -> None:
    assert {n: restarted.client.task(n).plan_bytes for n in ("A", "B")} == restarted.plans
    assert all(b > 0 for b in restarted.plans.values())


def test_task_cut_off_mid_training_is_reported_failed(restarted: Restarted) -> None:
    tasks = {t.name: t for t in restarted.client.tasks()}
    assert [(n, t.state, t.id) for n, t in tasks.items()][:2] == [
        ("A", "committed", 1),
        ("B", "committed", 2),
    ]
    assert tasks["C"].state == "failed" and tasks["C"].id == 0
    assert "interrupted" in tasks["C"].error
    assert restarted.client.backbone().tasks == 2


def test_predicting_a_failed_task_is_failed_precondition(restarted: Restarted) -> None:
    with pytest.raises(ClientError) as info:
        restarted.client.predict("C", restarted.probe)
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "failed" in info.value.message


def test_the_name_of_a_failed_task_can_be_learned_again(restarted: Restarted) -> None:
    info = restarted.client.learn("C", digits(restarted.mnist, [4, 5]), **FAST)
    assert (info.state, info.id) == ("committed", 3)
    after = {n: restarted.client.predict(n, restarted.probe).scores.tobytes() for n in ("A", "B")}
    assert after == restarted.before


def test_sigterm_shuts_down_gracefully(restarted: Restarted) -> None:
    assert restarted.server.terminate() == 0
    assert any("shutting down" in line for line in restarted.server.output)
