"""`sparsecl serve --metrics-port`: Prometheus metrics of requests, tasks, training jobs,
free capacity and plan memory, scraped over HTTP from a real server."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from client import Client, ClientError
from sparse_engine.mnist import Mnist

from ..serving import FAST, ServerProcess, digits

URL = re.compile(r"metrics (http://\S+/metrics)")


@dataclass
class Scraped:
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


def scrape(url: str) -> Scraped:
    with urllib.request.urlopen(url, timeout=30) as reply:
        text = reply.read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return Scraped(samples)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, mnist: Mnist) -> Iterator[tuple[str, Client]]:
    server = ServerProcess(tmp_path_factory.mktemp("metrics"), args=["--metrics-port", "0"])
    server.start()
    match = URL.search("".join(server.output))
    assert match, "".join(server.output)
    client = Client(server.address, timeout=120)
    client.learn("A", digits(mnist, [0, 1], n=200), **FAST)
    yield match.group(1), client
    client.close()
    server.terminate()


def test_requests_are_counted_per_method_code_and_task(
    served: tuple[str, Client], mnist: Mnist
) -> None:
    url, client = served
    before = scrape(url)
    for _ in range(3):
        client.predict("A", mnist.x_test[:4])
    with pytest.raises(ClientError):
        client.predict("made-up", mnist.x_test[:4])
    after = scrape(url)
    ok = {"method": "Predict", "code": "OK", "task": "A"}
    assert (
        after.value("sparsecl_requests_total", **ok) - before.value("sparsecl_requests_total", **ok)
        == 3
    )
    assert after.value("sparsecl_request_seconds_count", **ok) >= 3
    # an unknown task is counted without its name: made-up names add no series
    missing = {"method": "Predict", "code": "NOT_FOUND", "task": ""}
    assert after.value("sparsecl_requests_total", **missing) == 1
    assert not any("made-up" in str(labels) for _, labels in after.samples)
    learned = {"method": "AddTask", "code": "OK", "task": ""}
    assert after.value("sparsecl_requests_total", **learned) == 1


def test_tasks_jobs_capacity_and_plans_are_reported(served: tuple[str, Client]) -> None:
    url, client = served
    scraped = scrape(url)
    assert scraped.value("sparsecl_tasks", state="committed") == 1
    assert scraped.value("sparsecl_tasks", state="failed") == 0
    assert scraped.value("sparsecl_training_jobs", state="queued") == 0
    assert scraped.value("sparsecl_training_jobs_finished_total", state="committed") == 1
    assert scraped.value("sparsecl_training_jobs_finished_total", state="failed") == 0
    backbone = client.backbone()
    for i, layer in enumerate(backbone.layers):
        assert scraped.value("sparsecl_free_capacity", layer=str(i)) == pytest.approx(
            layer.free_capacity
        )
    assert scraped.value("sparsecl_plan_bytes", task="A") == client.task("A").plan_bytes > 0


def test_a_bad_metrics_port_stops_the_server_before_the_store(tmp_path: Path) -> None:
    from ..serving import sparsecl

    done = sparsecl("serve", "--port", "0", "--data-dir", tmp_path, "--metrics-port", "70000")
    assert done.returncode == 2 and "metrics_port must lie in 0..65535" in done.stderr
    assert not (tmp_path / "mlflow.db").exists()
