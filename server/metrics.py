"""Prometheus metrics of one server (``sparsecl serve --metrics-port N``), on its own HTTP
port: requests and their latency per RPC, status code and task; tasks by state; training
jobs by state; free capacity per backbone layer; bytes of each task's inference plan.

The request metrics are recorded by the servicer's ``answered`` (service.py); the rest is
read from the data plane at each scrape. A task label is given only for a task the server
knows, so a client sending made-up names cannot grow the series without bound.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .dataplane import DataPlane

STATES = ("queued", "training", "committed", "failed", "damaged", "deleted")
# latency buckets (seconds): a one-sample Predict takes well under a millisecond
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60)


class Metrics:
    """One server's registry: the request metrics, and its data plane's state at a scrape."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self.registry = CollectorRegistry()
        labels = ("method", "code", "task")
        self.requests = Counter(
            "sparsecl_requests", "RPCs answered", labels, registry=self.registry
        )
        self.latency = Histogram(
            "sparsecl_request_seconds",
            "seconds from an RPC's start to its answer",
            labels,
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.registry.register(PlaneCollector(plane))

    def observe(self, method: str, code: str, task: str, seconds: float) -> None:
        """One answered RPC; ``task`` is kept only when the server knows it."""
        known = task if task and self.plane.knows(task) else ""
        self.requests.labels(method, code, known).inc()
        self.latency.labels(method, code, known).observe(seconds)

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` over HTTP on a daemon thread; returns the bound port."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)


class PlaneCollector(Collector):
    """Gauges read from the data plane when Prometheus scrapes."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def collect(self) -> Iterator[Metric]:
        tasks = GaugeMetricFamily("sparsecl_tasks", "tasks by state", labels=["state"])
        counts = Tally(view.state for view in self.plane.tasks())
        for state in STATES:
            tasks.add_metric([state], counts[state])
        yield tasks
        trainer = self.plane.trainer
        jobs = GaugeMetricFamily(
            "sparsecl_training_jobs", "jobs waiting or training", labels=["state"]
        )
        counts = Tally(job.state for job in trainer.active())
        for state in ("queued", "training"):
            jobs.add_metric([state], counts[state])
        yield jobs
        ended = CounterMetricFamily(
            "sparsecl_training_jobs_finished", "jobs ended since the start", labels=["state"]
        )
        for state in ("committed", "failed"):
            ended.add_metric([state], trainer.finished[state])
        yield ended
        backbone = self.plane.backbone()
        free = GaugeMetricFamily(
            "sparsecl_free_capacity", "fraction of a layer's weights no task owns", labels=["layer"]
        )
        for i, (layer, n) in enumerate(
            zip(backbone.spec.layers, backbone.free_weights, strict=True)
        ):
            free.add_metric([str(i)], n / layer.numel)
        yield free
        plans = GaugeMetricFamily(
            "sparsecl_plan_bytes", "bytes of a task's inference plan", labels=["task"]
        )
        for name, memory in self.plane.model.engine.memory().items():
            plans.add_metric([name], memory.total_bytes)
        yield plans
