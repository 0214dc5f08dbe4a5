"""Prometheus metrics, one registry per app (no process globals, so tests stay independent)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from taskfleet.core.models import Task, TaskStatus


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.tasks = Gauge("taskfleet_tasks", "Tasks by status", ["status"], registry=self.registry)
        self.claims = Counter("taskfleet_claims", "Tasks claimed by agents", registry=self.registry)
        self.dispatch_latency = Histogram(
            "taskfleet_dispatch_latency_seconds",
            "From a task's submission to its first claim",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.connected_agents = Gauge(
            "taskfleet_connected_agents", "Agents holding a connection", registry=self.registry
        )
        self.requests = Counter(
            "taskfleet_http_requests",
            "HTTP requests by status class",
            ["code"],
            registry=self.registry,
        )

    def claimed(self, task: Task) -> None:
        self.claims.inc()
        if task.attempt == 1 and task.claimed_at is not None:
            self.dispatch_latency.observe(max(0.0, task.claimed_at - task.created_at))

    def render(self, counts: dict[TaskStatus, int]) -> bytes:
        for status in TaskStatus:
            self.tasks.labels(status=status.value).set(counts.get(status, 0))
        return generate_latest(self.registry)
