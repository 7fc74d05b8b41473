"""Operator searches: the pending views (due, scheduled, retrying), the jobs of a
schedule, an id or its end, payload text; the client on every backend,
``GET /api/jobs/search``, and the CLI taking the id suffix the dashboard shows."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from conveyor import Conveyor
from conveyor.api import create_app
from conveyor.client import AsyncConveyor
from conveyor.core import lifecycle
from conveyor.core.errors import JobNotFound, ValidationError
from conveyor.settings import Settings
from tests import services
from tests.integration.test_cli import run_cli


@pytest.fixture(params=["memory", "sqlite", "postgres", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with services.isolated_store(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def client(store_url: str) -> AsyncIterator[AsyncConveyor]:
    async with AsyncConveyor(settings=Settings(url=store_url, retention=0)) as c:
        yield c


async def _retrying(client: AsyncConveyor) -> str:
    """A job pending again after a failed attempt."""
    job = await client.enqueue("r", {"kind": "retry"})
    store = await client.connect()
    now = client.clock.now()
    (claimed,) = await store.claim(
        worker_id="w", topics=["r"], limit=1, now=now, locked_until=now + timedelta(minutes=5)
    )
    (done,) = await store.finish([lifecycle.failed(claimed, "w", "boom", now)], now=now)
    assert done is not None and done.attempts == 1
    return job.id


async def test_pending_views_split_due_scheduled_and_retrying(client: AsyncConveyor) -> None:
    due = await client.enqueue("t", {"kind": "due"})
    later = await client.enqueue("t", {"kind": "later"}, delay="1h")
    retrying = await _retrying(client)

    async def ids(view: str) -> list[str]:
        return [j.id for j in (await client.find_jobs(view=view)).items]  # type: ignore[arg-type]

    assert await ids("due") == [due.id]
    assert await ids("scheduled") == [later.id]
    assert await ids("retrying") == [retrying]


async def test_search_by_id_suffix_payload_text_and_schedule(client: AsyncConveyor) -> None:
    a = await client.enqueue("t", {"email": "Alice@example.com"})
    b = await client.enqueue("t", {"email": "bob@example.com"})
    found = await client.find_jobs(text="alice@")
    assert [j.id for j in found.items] == [a.id]
    assert [j.id for j in (await client.find_jobs(id_suffix=b.id[-10:])).items] == [b.id]
    assert (await client.find_jobs(schedule="nightly")).items == []
    assert await client.resolve_job_id(b.id[-10:]) == b.id
    with pytest.raises(JobNotFound):
        await client.resolve_job_id("ffffffffff")


async def test_search_pages_with_a_cursor_and_bounds_its_scan(client: AsyncConveyor) -> None:
    await client.enqueue_many([{"topic": "t", "payload": {"n": i}} for i in range(12)])
    first = await client.find_jobs(text='"n"', limit=5)
    assert len(first.items) == 5 and first.next == first.items[-1].id
    second = await client.find_jobs(text='"n"', limit=5, after=first.next)
    assert {j.id for j in first.items}.isdisjoint(j.id for j in second.items)
    bounded = await client.find_jobs(text="nothing matches", scan=4)
    assert bounded.items == [] and bounded.scanned == 4 and bounded.next is not None


async def test_search_totals_are_exact_when_cheap_else_estimates_until_asked(client: AsyncConveyor) -> None:
    # 12 jobs of topic t, every third about "apple"; 3 of topic u.
    await client.enqueue_many(
        [{"topic": "t", "payload": {"fruit": "apple" if i % 3 == 0 else "pear"}} for i in range(12)]
    )
    await client.enqueue_many([{"topic": "u", "payload": {"fruit": "apple"}} for _ in range(3)])
    # Status and topic only: the store's counts, exact, whatever was read.
    by_topic = await client.find_jobs(topic="t", limit=1, scan=1)
    assert (by_topic.total, by_topic.total_exact, by_topic.scanned) == (12, True, 1)
    # Every job of the topic read (from the newest, to the end): the matches counted.
    whole = await client.find_jobs(topic="t", text="apple", limit=2)
    assert (whole.total, whole.total_exact, len(whole.items), whole.scanned) == (4, True, 2, 12)
    # A bounded read: an estimate from the share of matches among the jobs read ...
    part = await client.find_jobs(text="apple", scan=5)
    assert part.total_exact is False and part.scanned == 5
    newest_five = (await client.list(limit=5)).items
    matched = sum(j.payload["fruit"] == "apple" for j in newest_five)
    assert part.total == round(15 * matched / 5)
    # ... exact when asked, reading past the scan bound; the page itself is unchanged.
    exact = await client.find_jobs(text="apple", scan=5, exact_total=True)
    assert (exact.total, exact.total_exact) == (7, True)
    assert [j.id for j in exact.items] == [j.id for j in part.items] and exact.next == part.next
    # From a cursor, the jobs newer than it are not read: an estimate again.
    older = await client.find_jobs(topic="t", text="apple", after=whole.next)
    assert older.total_exact is False
    assert (await client.find_jobs(topic="t", text="apple", after=whole.next, exact_total=True)).total == 4
    assert (await client.find_jobs(text="no such fruit", exact_total=True)).to_dict()["total"] == 0


async def test_search_validates_its_filters(client: AsyncConveyor) -> None:
    with pytest.raises(ValidationError) as info:
        await client.find_jobs(view="soon")  # type: ignore[arg-type]
    assert info.value.field == "view"
    with pytest.raises(ValidationError):
        await client.find_jobs(view="due", status="failed")
    with pytest.raises(ValidationError):
        await client.find_jobs(text="   ")


async def test_http_search(tmp_path: Path) -> None:
    client = AsyncConveyor(settings=Settings(url=f"sqlite:///{tmp_path}/s.db"))
    app = create_app(client)
    try:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http,
        ):
            job = await client.enqueue("t", {"order": "ORD-42"}, delay="1h")
            r = await http.get("/api/jobs/search", params={"id": job.id[-10:]})
            assert r.status_code == 200, r.text
            assert [j["id"] for j in r.json()["items"]] == [job.id]
            r = await http.get("/api/jobs/search", params={"id": job.id})
            assert [j["id"] for j in r.json()["items"]] == [job.id]
            r = await http.get("/api/jobs/search", params={"text": "ord-42", "view": "scheduled"})
            assert [j["id"] for j in r.json()["items"]] == [job.id]
            assert r.json()["items"][0]["next_run_in"]
            r = await http.get("/api/jobs/search", params={"view": "due"})
            assert r.json()["items"] == []
            assert (r.json()["total"], r.json()["total_exact"]) == (0, True)
            await client.enqueue_many([{"topic": "t", "payload": {"order": f"ORD-{i}"}} for i in range(9)])
            r = await http.get("/api/jobs/search", params={"text": "ord-1", "scan": 4})
            assert r.json()["total_exact"] is False and r.json()["scanned"] == 4
            r = await http.get("/api/jobs/search", params={"text": "ord-1", "scan": 4, "exact_total": "true"})
            assert (r.json()["total"], r.json()["total_exact"]) == (1, True)
            schema = (await http.get("/api/openapi.json")).json()
            params = schema["paths"]["/api/jobs/search"]["get"]["parameters"]
            assert "exact_total" in {p["name"] for p in params}
            found = schema["components"]["schemas"]["FoundOut"]["properties"]
            assert {"total", "total_exact"} <= set(found)
            r = await http.get("/api/jobs/search", params={"view": "later"})
            assert r.status_code == 422
    finally:
        await client.close()


def test_cli_accepts_the_id_suffix_the_dashboard_shows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    with Conveyor(url) as app:
        job = app.enqueue("t", {"x": 1})
    r = run_cli("--url", url, "jobs", "get", job.id[-10:], "--json")
    assert r.json()["id"] == job.id
    r = run_cli("--url", url, "jobs", "update", job.id[-10:], "--priority", "7", "--json")
    assert (r.json()["id"], r.json()["priority"]) == (job.id, 7)
    r = run_cli("--url", url, "jobs", "run-now", f"…{job.id[-10:]}", "--json")
    assert r.json()["id"] == job.id
    r = run_cli("--url", url, "jobs", "cancel", f"…{job.id[-10:]}", "--json")
    assert r.json()["status"] == "cancelled"
    r = run_cli("--url", url, "jobs", "delete", job.id[-12:])
    assert r.code == 0 and job.id in r.out
    missing = run_cli("--url", url, "jobs", "get", "abcdef1234")
    assert missing.code == 1


def test_cli_search_shows_an_estimate_as_about_and_counts_on_request(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    with Conveyor(url) as app:
        app.enqueue_many([{"topic": "t", "payload": {"n": "x" if i % 2 else "y"}} for i in range(10)])
    r = run_cli("--url", url, "jobs", "search", "--text", '"x"', "--scan", "4")
    assert r.code == 0, r.err
    assert "2 found of about 5 matching; 4 jobs read (--exact-total to count every match)" in r.out
    r = run_cli("--url", url, "jobs", "search", "--text", '"x"', "--scan", "4", "--exact-total", "--json")
    assert (r.json()["total"], r.json()["total_exact"], len(r.json()["items"])) == (5, True, 2)
    r = run_cli("--url", url, "jobs", "search", "--view", "due", "--limit", "3")
    assert "3 found of 10 matching; 10 jobs read; older: --after" in r.out
