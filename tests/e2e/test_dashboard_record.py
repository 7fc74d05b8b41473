"""The dashboard's per-minute activity record and its endpoint (no browser)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from conveyor.api import create_app, dashboard
from conveyor.api.dashboard import ThroughputRecord
from conveyor.client import AsyncConveyor
from conveyor.core.events import Event
from conveyor.settings import Settings

NOW = datetime(2026, 1, 1, 12, 30, 30, tzinfo=UTC)


def event(kind: str, job_id: str, at: datetime, data: dict[str, object] | None = None) -> Event:
    return Event(type=kind, job_id=job_id, topic="t", status="", timestamp=at, data=data or {})


def test_record_counts_outcomes_per_minute_and_queue_latency() -> None:
    record = ThroughputRecord(clock=NOW.timestamp)
    earlier = NOW - timedelta(minutes=2)
    record.observe(event("job.scheduled", "a", earlier, data={"run_at": earlier.isoformat()}))
    record.observe(event("job.started", "a", earlier + timedelta(milliseconds=250)))
    record.observe(event("job.failed", "a", earlier + timedelta(seconds=1)))
    record.observe(event("job.retrying", "a", earlier + timedelta(seconds=1)))
    record.observe(event("job.completed", "b", NOW))
    record.observe(event("job.completed", "c", NOW))

    snap = record.snapshot()
    rows = snap["buckets"]
    assert len(rows) == dashboard.WINDOW
    assert rows[-1]["t"] == "2026-01-01T12:30:00+00:00"
    assert rows[-1]["completed"] == 2
    assert rows[-3] | {"t": None} == {
        "t": None,
        "completed": 0,
        "failed": 1,
        "retried": 1,
        "cancelled": 0,
        "scheduled": 1,
        "latency_ms_p50": 250.0,
    }


def test_record_forgets_minutes_older_than_an_hour() -> None:
    clock = [NOW.timestamp()]
    record = ThroughputRecord(clock=lambda: clock[0])
    record.observe(event("job.completed", "a", NOW))
    clock[0] += 3600 + 60
    record.observe(event("job.completed", "b", NOW + timedelta(hours=1, minutes=1)))
    snap = record.snapshot()
    assert sum(row["completed"] for row in snap["buckets"]) == 1


async def test_throughput_endpoint_needs_a_reader_and_counts_live_events() -> None:
    client = AsyncConveyor("memory://")
    app = create_app(client, Settings(admin_token="adm", read_tokens=("rd",)))
    app.include_router(dashboard.router)
    async with app.router.lifespan_context(app):
        await client.enqueue("t", {})
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.get("/api/dashboard/throughput")).status_code == 401
            for _ in range(100):
                response = await http.get("/api/dashboard/throughput", headers={"Authorization": "Bearer rd"})
                assert response.status_code == 200
                if sum(row["scheduled"] for row in response.json()["buckets"]) == 1:
                    break
                await asyncio.sleep(0.02)
            assert sum(row["scheduled"] for row in response.json()["buckets"]) == 1
    await client.close()


async def test_throughput_endpoint_keeps_the_hour_across_a_server_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/restart.db"

    async def completed_per_minute() -> int:
        client = AsyncConveyor(url)
        app = create_app(client, Settings(url=url, admin_token="adm"))
        try:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                    response = await http.get("/api/dashboard/throughput", headers={"Authorization": "Bearer adm"})
                    assert response.status_code == 200
                    body = response.json()
                    assert body["source"] == "store"
                    return sum(row["completed"] + row["failed"] for row in body["buckets"])
        finally:
            await client.close()

    async with AsyncConveyor(url) as client:
        for i in range(3):
            job = await client.enqueue("t", {"i": i})
            if i < 2:
                await client.complete(job.id, {"ok": True})
            else:
                await client.fail(job.id, "boom")
    # A new server (an empty record in memory) still shows the three finished jobs.
    assert await completed_per_minute() == 3
    assert await completed_per_minute() == 3
