"""Bulk operations (requeue, cancel, delete every job of a status and topic): the
client method on every backend, ``POST /api/jobs/bulk/{action}`` (validation, admin
only) and ``conveyor jobs requeue|cancel|delete --status S [--topic T]`` in a real
subprocess, with the 2,000-job figure on SQLite."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from conveyor import Conveyor
from conveyor.api import create_app
from conveyor.client import AsyncConveyor
from conveyor.core.events import Event
from conveyor.core.job import JobStatus
from conveyor.settings import Settings
from tests import services
from tests.integration.test_cli import run_cli

ADMIN, READER = "admin-secret", "read-secret"


@pytest.fixture(params=["memory", "sqlite", "postgres", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with services.isolated_store(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def client(store_url: str) -> AsyncIterator[AsyncConveyor]:
    async with AsyncConveyor(settings=Settings(url=store_url, retention=0)) as c:
        yield c


async def failed_jobs(client: AsyncConveyor, topic: str, n: int) -> list[str]:
    jobs = await client.enqueue_many([{"topic": topic, "payload": {"i": i}} for i in range(n)])
    for job in jobs:
        await client.fail(job.id, "boom")
    return [j.id for j in jobs]


async def test_bulk_requeue_requeues_only_the_matching_jobs(client: AsyncConveyor) -> None:
    mine = await failed_jobs(client, "a", 7)
    other = await failed_jobs(client, "b", 3)
    untouched = await client.enqueue("a")

    assert await client.bulk_requeue(status="failed", topic="a") == 7

    for job_id in mine:
        job = await client.get(job_id)
        assert job.status is JobStatus.PENDING and job.attempts == 0
    assert {(await client.get(i)).status for i in other} == {JobStatus.FAILED}
    assert (await client.get(untouched.id)).status is JobStatus.PENDING
    assert await client.bulk_requeue(status="failed", topic="a") == 0


async def test_bulk_cancel_and_delete_cover_more_than_one_batch(
    client: AsyncConveyor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("conveyor.bulk.BULK_BATCH", 4)
    jobs = await client.enqueue_many([{"topic": "t"} for _ in range(10)])

    assert await client.bulk_cancel(status="pending") == 10
    assert (await client.stats())["cancelled"] == 10
    assert await client.bulk_delete(status="cancelled", topic="t") == 10
    assert (await client.list()).total == 0
    assert len(jobs) == 10


async def test_bulk_cancel_of_running_jobs_requests_cancellation(client: AsyncConveyor) -> None:
    await client.enqueue_many([{"topic": "t"} for _ in range(3)])
    store = await client.connect()
    now = client.clock.now()
    until = now.replace(year=now.year + 1)
    claimed = await store.claim(worker_id="w", topics=["t"], limit=3, now=now, locked_until=until)
    assert len(claimed) == 3

    assert await client.bulk_cancel(status="running") == 3

    for job in claimed:
        assert (await client.get(job.id)).cancel_requested


async def test_bulk_operations_publish_what_the_single_ones_do(client: AsyncConveyor) -> None:
    failed = await failed_jobs(client, "ev", 2)
    pending = await client.enqueue("ev")
    store = await client.connect()
    subscription = await store.subscribe()

    assert await client.bulk_requeue(status="failed", topic="ev") == 2
    assert await client.bulk_cancel(status="pending", topic="ev") == 3

    seen: list[Event] = []
    while len(seen) < 5:  # the events of failed_jobs may come first
        event = await asyncio.wait_for(anext(subscription), 10)
        if event.type == "job.cancelled" or event.data.get("requeued"):
            seen.append(event)
    await subscription.aclose()
    assert {e.job_id for e in seen if e.type == "job.scheduled"} == set(failed)
    cancelled = {e.job_id for e in seen if e.type == "job.cancelled"}
    assert cancelled == {*failed, pending.id}


async def test_bulk_rejects_a_status_the_action_never_applies_to(client: AsyncConveyor) -> None:
    from conveyor.core.errors import ValidationError

    with pytest.raises(ValidationError) as info:
        await client.bulk_requeue(status="pending")
    assert info.value.field == "status"
    with pytest.raises(ValidationError):
        await client.bulk_delete(status="processing")
    with pytest.raises(ValidationError):
        await client.bulk_delete(status="nope")


# -- HTTP ----------------------------------------------------------------------------------


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[tuple[AsyncConveyor, httpx.AsyncClient]]:
    settings = Settings(url=f"sqlite:///{tmp_path}/api.db", admin_token=ADMIN, read_tokens=(READER,), retention=0)
    client = AsyncConveyor(settings=settings)
    app = create_app(client)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as h:
                yield client, h
    finally:
        await client.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_http_bulk_requeue_answers_the_count(http: tuple[AsyncConveyor, httpx.AsyncClient]) -> None:
    client, h = http
    await failed_jobs(client, "mail", 5)
    await failed_jobs(client, "other", 2)

    r = await h.post("/api/jobs/bulk/requeue", json={"status": "failed", "topic": "mail"}, headers=bearer(ADMIN))
    assert r.status_code == 200, r.text
    assert r.json() == {"count": 5}
    assert (await client.stats())["by_topic"]["mail"].get("failed", 0) == 0

    r = await h.post("/api/jobs/bulk/delete", json={"status": "success"}, headers=bearer(ADMIN))
    assert r.json() == {"count": 0}


async def test_http_bulk_is_admin_only_and_validates(http: tuple[AsyncConveyor, httpx.AsyncClient]) -> None:
    _client, h = http
    r = await h.post("/api/jobs/bulk/requeue", json={"status": "failed"}, headers=bearer(READER))
    assert r.status_code == 403
    r = await h.post("/api/jobs/bulk/requeue", json={"status": "pending"}, headers=bearer(ADMIN))
    assert r.status_code == 422 and "status" in r.json()["error"]["message"]
    r = await h.post("/api/jobs/bulk/requeue", json={}, headers=bearer(ADMIN))
    assert r.status_code == 422 and "status" in r.json()["error"]["message"]
    r = await h.post("/api/jobs/bulk/explode", json={"status": "failed"}, headers=bearer(ADMIN))
    assert r.status_code == 422 and "action" in r.json()["error"]["message"]
    r = await h.post("/api/jobs/bulk/requeue", json={"status": "failed", "topic": "bad topic"}, headers=bearer(ADMIN))
    assert r.status_code == 422 and "topic" in r.json()["error"]["message"]


async def test_http_bulk_requeue_of_2000_jobs_is_fast_on_sqlite(http: tuple[AsyncConveyor, httpx.AsyncClient]) -> None:
    client, h = http
    await failed_jobs(client, "t", 2000)
    started = time.perf_counter()
    r = await h.post("/api/jobs/bulk/requeue", json={"status": "failed"}, headers=bearer(ADMIN))
    took = time.perf_counter() - started
    assert r.json() == {"count": 2000}
    # About 0.1 s on an idle machine, several times that with the cores shared by test suites:
    # the bound only catches a per-job cost gone wrong (a request or a sleep per job).
    assert took < 10.0, took


# -- CLI -----------------------------------------------------------------------------------


def test_cli_bulk_operations_print_the_count(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    with Conveyor(url) as app:
        for job in app.enqueue_many([{"topic": "mail"} for _ in range(4)] + [{"topic": "other"}]):
            app.fail(job.id, "boom")

    r = run_cli("--url", url, "jobs", "requeue", "--status", "failed", "--topic", "mail")
    assert r.code == 0, r.err
    assert r.out.strip() == "4 failed jobs of topic mail requeued"

    r = run_cli("--url", url, "jobs", "cancel", "--status", "pending", "--json")
    assert r.json()["count"] == 4

    r = run_cli("--url", url, "jobs", "delete", "--status", "cancelled", "--json")
    assert r.json()["count"] == 4
    r = run_cli("--url", url, "jobs", "retry", "--status", "failed")
    assert r.out.strip() == "1 failed job requeued"
    # The seed's names: success for completed, running for processing.
    r = run_cli("--url", url, "jobs", "delete", "--status", "success", "--json")
    assert r.json()["count"] == 0 and r.json()["status"] == "success"
    r = run_cli("--url", url, "jobs", "cancel", "--status", "running")
    assert r.code == 0 and "0 running jobs" in r.out


def test_cli_bulk_usage_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    both = run_cli("--url", url, "jobs", "requeue", "0190abcd", "--status", "failed")
    assert both.code == 2 and "not both" in both.err
    neither = run_cli("--url", url, "jobs", "delete")
    assert neither.code == 2 and "--status" in neither.err
    topic_only = run_cli("--url", url, "jobs", "cancel", "--topic", "t")
    assert topic_only.code == 2 and "--topic needs --status" in topic_only.err
    wrong = run_cli("--url", url, "jobs", "requeue", "--status", "pending")
    assert wrong.code == 2  # a bad value of --status: usage
    assert wrong.error_line().startswith("error: Invalid value for '--status': requeue applies to cancelled, failed")
