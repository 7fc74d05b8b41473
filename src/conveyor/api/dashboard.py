"""The dashboard's own endpoint: the last hour of activity, per minute.

``GET /api/dashboard/throughput`` (read or admin token) returns, for each of the last 60
minutes, the jobs that completed, failed and were cancelled, the attempts retried, the
jobs scheduled, and the median queue latency (due time → start) of the attempts that
started.

Completed, cancelled and failed jobs are counted in the STORE (``Backend.count_finished``:
finished_at per minute, through the index ``prune`` uses), so the chart keeps its hour
across a server restart and counts every worker on the store. What the store does not
keep per minute (failed attempts that were retried, jobs scheduled, pickup latency) comes
from this server's record, fed by the app's event hub (the store's cross-process event
channel) since it started; ``failed`` is the larger of the store's final failures and
the record's failed attempts.

Mounting: ``app.include_router(dashboard.router)`` in ``create_app``; the router's
lifespan attaches a ``ThroughputRecord`` to ``app.state.hub.listeners``. The page
falls back to the job list and its own live events when the endpoint is absent.
Imports only ``api``, ``core`` and FastAPI.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from conveyor.api.auth import READERS, Role, require
from conveyor.api.jsonbody import StrictJsonRoute
from conveyor.core.errors import ConveyorError
from conveyor.core.events import Event

BUCKET_SECONDS = 60
WINDOW = 60  # buckets kept: one hour
MAX_TRACKED = 100_000  # due times of scheduled jobs awaiting their start
MAX_SAMPLES = 2_000  # latency samples kept per minute (the first ones; enough for a median)


@dataclass
class Bucket:
    completed: int = 0
    failed: int = 0
    retried: int = 0
    cancelled: int = 0
    scheduled: int = 0
    latencies_ms: list[float] = field(default_factory=list)


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class ThroughputRecord:
    """Per-minute counts of job events over a sliding hour. Not thread-safe: it is fed
    from the event loop only (the hub's listeners run there)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.started_at = clock()
        self._buckets: dict[int, Bucket] = {}
        self._due: OrderedDict[str, datetime] = OrderedDict()

    def _bucket(self, when: datetime) -> Bucket:
        key = int(when.timestamp()) // BUCKET_SECONDS
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket()
            oldest = int(self._clock()) // BUCKET_SECONDS - WINDOW
            for stale in [k for k in self._buckets if k <= oldest]:
                del self._buckets[stale]
        return bucket

    def _track_due(self, job_id: str, due: datetime | None) -> None:
        if due is None:
            return
        self._due[job_id] = due
        self._due.move_to_end(job_id)
        while len(self._due) > MAX_TRACKED:
            self._due.popitem(last=False)

    def observe(self, event: Event) -> None:
        """Count one job event (a hub listener)."""
        at = event.timestamp if event.timestamp.tzinfo else event.timestamp.replace(tzinfo=UTC)
        kind = event.type
        if kind == "job.scheduled":
            self._bucket(at).scheduled += 1
            due = _parse(event.data.get("run_at"))
            self._track_due(event.job_id, max(due, at) if due else at)
        elif kind == "job.started":
            due = self._due.pop(event.job_id, None) or _parse(event.data.get("run_at"))
            bucket = self._bucket(at)
            if due is not None and len(bucket.latencies_ms) < MAX_SAMPLES:
                bucket.latencies_ms.append(max(0.0, (at - due).total_seconds() * 1000))
        elif kind == "job.completed":
            self._bucket(at).completed += 1
        elif kind == "job.failed":
            self._bucket(at).failed += 1
        elif kind == "job.retrying":
            self._bucket(at).retried += 1
            self._track_due(event.job_id, _parse(event.metadata.get("next_retry_at")))
        elif kind == "job.cancelled":
            self._bucket(at).cancelled += 1

    def snapshot(self) -> dict[str, Any]:
        """The last ``WINDOW`` minutes, oldest first (empty minutes included)."""
        now = self._clock()
        last = int(now) // BUCKET_SECONDS
        rows = []
        for key in range(last - WINDOW + 1, last + 1):
            b = self._buckets.get(key) or Bucket()
            rows.append(
                {
                    "t": datetime.fromtimestamp(key * BUCKET_SECONDS, UTC).isoformat(),
                    "completed": b.completed,
                    "failed": b.failed,
                    "retried": b.retried,
                    "cancelled": b.cancelled,
                    "scheduled": b.scheduled,
                    "latency_ms_p50": round(statistics.median(b.latencies_ms), 1) if b.latencies_ms else None,
                }
            )
        return {
            "bucket_seconds": BUCKET_SECONDS,
            "since": datetime.fromtimestamp(self.started_at, UTC).isoformat(),
            "now": datetime.fromtimestamp(now, UTC).isoformat(),
            "buckets": rows,
        }


def merge_store_counts(snapshot: dict[str, Any], rows: list[tuple[datetime, str, int]]) -> dict[str, Any]:
    """The record's ``snapshot`` with the store's finished jobs per minute
    (``count_finished`` rows) in place of the record's own completed and cancelled
    counts, and ``failed`` at least the store's final failures."""
    stored: dict[str, dict[str, int]] = {}
    for start, status, count in rows:
        at = start if start.tzinfo else start.replace(tzinfo=UTC)
        per = stored.setdefault(at.astimezone(UTC).isoformat(), {})
        per[status] = per.get(status, 0) + count
    for row in snapshot["buckets"]:
        counts = stored.get(row["t"], {})
        row["completed"] = counts.get("completed", 0)
        row["cancelled"] = counts.get("cancelled", 0)
        row["failed"] = max(row["failed"], counts.get("failed", 0))
    snapshot["source"] = "store"
    return snapshot


def record_of(app: FastAPI) -> ThroughputRecord:
    """The app's record, created and attached to its event hub on first use."""
    record: ThroughputRecord | None = getattr(app.state, "throughput", None)
    if record is None:
        record = app.state.throughput = ThroughputRecord()
        hub = getattr(app.state, "hub", None)
        if hub is not None:
            hub.listeners.append(record.observe)
    return record


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Attach at startup, so the hour is counted from the server's start, not from the
    # first dashboard visit.
    record_of(app)
    yield


router = APIRouter(lifespan=_lifespan, route_class=StrictJsonRoute)
ReadRole = Annotated[Role, Depends(require(READERS))]


@router.get("/api/dashboard/throughput", tags=["dashboard"], summary="Per-minute activity over the last hour")
async def throughput(request: Request, _role: ReadRole) -> JSONResponse:
    """Jobs completed, failed and cancelled per minute (from the store: they survive a
    restart), attempts retried, jobs scheduled and the median queue latency (from this
    server's record, since it started)."""
    snapshot = record_of(request.app).snapshot()
    client = request.app.state.client
    since = datetime.fromisoformat(snapshot["buckets"][0]["t"])
    try:
        store = await client.connect()
        rows = await store.count_finished(since=since, bucket_seconds=BUCKET_SECONDS)
    except ConveyorError:
        snapshot["source"] = "server record"  # the store is down: this server's memory only
        return JSONResponse(snapshot)
    return JSONResponse(merge_store_counts(snapshot, rows))
