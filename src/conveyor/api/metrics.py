"""Prometheus metrics served at ``/metrics`` (text format; every name starts with ``conveyor_``).

Gauges come from ``client.stats()`` at scrape time (the whole store, every process):
``conveyor_jobs{status,topic}``, ``conveyor_jobs_by_status{status}``,
``conveyor_workers``, ``conveyor_uptime_seconds``, ``conveyor_websocket_clients``.

Counters and histograms are fed by the app's event hub (the backend's cross-process
event channel), so they count what every worker on the store did while this server
was running: ``conveyor_jobs_scheduled_total{topic}``,
``conveyor_jobs_processed_total{topic,outcome}`` (outcome: completed, failed,
retried, cancelled), ``conveyor_job_duration_seconds{topic,outcome}`` and
``conveyor_queue_latency_seconds{topic}`` (run_at → start; known for jobs scheduled
while this server was subscribed). Like any Prometheus counter they restart at zero
with the server.

The ``topic`` label set is bounded: at most ``MAX_TOPIC_LABELS`` topics get their own
series (for the gauges, the topics with the most jobs; for counters and histograms,
the first ones seen); the rest are summed under ``topic="_other"``, so a flood of
distinct topics cannot grow the exposition (or a scrape's cost) without bound.
Rendering runs in a thread (``/metrics`` calls it off the event loop), under a lock.
"""

from __future__ import annotations

import heapq
import threading
from collections import OrderedDict
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from conveyor.core.events import Event
from conveyor.core.job import JobStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
# Due times of jobs seen scheduled, for the queue latency of their start (bounded).
MAX_TRACKED = 100_000
MAX_TOPIC_LABELS = 200
OTHER_TOPICS = "_other"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs = Gauge("conveyor_jobs", "Jobs in the store by status and topic", ["status", "topic"], registry=r)
        self.jobs_by_status = Gauge("conveyor_jobs_by_status", "Jobs in the store by status", ["status"], registry=r)
        self.workers = Gauge("conveyor_workers", "Live workers on the store", registry=r)
        self.uptime = Gauge("conveyor_uptime_seconds", "Seconds since this API server started", registry=r)
        self.ws_clients = Gauge("conveyor_websocket_clients", "Connected WebSocket clients", registry=r)
        self.scheduled = Counter(
            "conveyor_jobs_scheduled", "Jobs scheduled (enqueued, re-armed or requeued)", ["topic"], registry=r
        )
        self.processed = Counter(
            "conveyor_jobs_processed", "Job attempts finished, by outcome", ["topic", "outcome"], registry=r
        )
        self.duration = Histogram(
            "conveyor_job_duration_seconds",
            "Run time of job attempts",
            ["topic", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "conveyor_queue_latency_seconds",
            "Delay from a job's due time to the start of its attempt",
            ["topic"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._due: OrderedDict[str, datetime] = OrderedDict()
        self._labelled: set[str] = set()  # topics with series of their own (counters, histograms)
        self._render_lock = threading.Lock()

    def _topic(self, topic: str) -> str:
        """The label value of ``topic``: itself while fewer than ``MAX_TOPIC_LABELS`` have
        series, else ``_other``."""
        if topic in self._labelled:
            return topic
        if len(self._labelled) < MAX_TOPIC_LABELS:
            self._labelled.add(topic)
            return topic
        return OTHER_TOPICS

    def _track_due(self, job_id: str, value: object) -> None:
        if not isinstance(value, str):
            return
        try:
            due = datetime.fromisoformat(value)
        except ValueError:
            return
        self._due[job_id] = due
        self._due.move_to_end(job_id)
        while len(self._due) > MAX_TRACKED:
            self._due.popitem(last=False)

    def observe(self, event: Event) -> None:
        """Update counters and histograms from one job event."""
        topic = self._topic(event.topic)
        meta = event.metadata
        duration_ms = meta.get("duration_ms")
        if event.type == "job.scheduled":
            self.scheduled.labels(topic).inc()
            self._track_due(event.job_id, event.data.get("run_at"))
        elif event.type == "job.started":
            due = self._due.pop(event.job_id, None)
            if due is None and isinstance(event.data.get("run_at"), str):
                self._track_due(event.job_id, event.data["run_at"])
                due = self._due.pop(event.job_id, None)
            if due is not None:
                self.latency.labels(topic).observe(max(0.0, (event.timestamp - due).total_seconds()))
        elif event.type == "job.completed":
            self.processed.labels(topic, "completed").inc()
            self._observe_duration(topic, "completed", duration_ms)
        elif event.type == "job.failed":
            self._observe_duration(topic, "failed", duration_ms)
            if meta.get("final", True):
                self.processed.labels(topic, "failed").inc()
        elif event.type == "job.retrying":
            self.processed.labels(topic, "retried").inc()
            self._track_due(event.job_id, meta.get("next_retry_at"))
        elif event.type == "job.cancelled":
            self.processed.labels(topic, "cancelled").inc()

    def _observe_duration(self, topic: str, outcome: str, duration_ms: Any) -> None:
        if isinstance(duration_ms, int | float) and not isinstance(duration_ms, bool) and duration_ms >= 0:
            self.duration.labels(topic, outcome).observe(duration_ms / 1000.0)

    def render(self, stats: dict[str, Any], *, ws_clients: int) -> bytes:
        """The text exposition, with gauges refreshed from ``stats`` (``client.stats()``)."""
        with self._render_lock:
            return self._render(stats, ws_clients)

    def _render(self, stats: dict[str, Any], ws_clients: int) -> bytes:
        by_topic: dict[str, dict[str, int]] = stats.get("by_topic", {})
        kept = set(heapq.nlargest(MAX_TOPIC_LABELS, by_topic, key=lambda t: sum(by_topic[t].values())))
        rows: dict[str, dict[str, int]] = {}
        for topic, counts in by_topic.items():
            row = rows.setdefault(topic if topic in kept else OTHER_TOPICS, {})
            for status in JobStatus:
                row[status.value] = row.get(status.value, 0) + int(counts.get(status.value, 0))
        self.jobs.clear()
        for topic, counts in rows.items():
            for status in JobStatus:
                self.jobs.labels(status.value, topic).set(counts[status.value])
        for status in JobStatus:
            self.jobs_by_status.labels(status.value).set(int(stats.get("by_status", {}).get(status.value, 0)))
        self.workers.set(int(stats.get("workers", 0)))
        self.uptime.set(float(stats.get("uptime", 0.0)))
        self.ws_clients.set(ws_clients)
        return generate_latest(self.registry)
