"""The HTTP API (docs/api.md) over an in-process ASGI transport, on every backend that is
built: every endpoint and alias, each error status with its body shape, auth roles,
the original API's examples replayed verbatim."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.api import create_app
from conveyor.client import AsyncConveyor
from conveyor.core import lifecycle
from conveyor.core.errors import BackendUnavailable
from conveyor.settings import Settings
from tests import services

BACKENDS = ["memory", "sqlite", "postgres", "redis"]
ADMIN, ENQUEUER, READER = "admin-secret", "enqueue-secret", "read-secret"

ApiFactory = Callable[..., AbstractAsyncContextManager[tuple[AsyncConveyor, httpx.AsyncClient]]]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with services.isolated_store(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def make_api(store_url: str) -> ApiFactory:
    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[tuple[AsyncConveyor, httpx.AsyncClient]]:
        settings = Settings(url=store_url, poll_interval=0.05, retention=0).replace(**overrides)
        client = AsyncConveyor(settings=settings)
        app = create_app(client)
        try:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
                    yield client, http
        finally:
            await client.close()

    return factory


@pytest.fixture
async def api(make_api: ApiFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with make_api() as (_client, http):
        yield http


@pytest.fixture
async def secured(make_api: ApiFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with make_api(
        admin_token=ADMIN,
        enqueue_tokens=(ENQUEUER, "enqueue-2"),
        read_tokens=(READER,),
        allowed_topics=("email:*", "payment_check"),
    ) as (_client, http):
        yield http


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    error: dict[str, Any] = body["error"]
    return error


async def enqueue(http: httpx.AsyncClient, topic: str = "t", **body: Any) -> dict[str, Any]:
    r = await http.post("/api/jobs", json={"topic": topic, **body})
    assert r.status_code == 201, r.text
    job: dict[str, Any] = r.json()
    return job


# -- the original API's examples ---------------------------------------------------------


async def test_seed_payment_check_with_delay_is_pending_ten_minutes(api: httpx.AsyncClient) -> None:
    before = datetime.now(UTC)
    r = await api.post(
        "/api/jobs",
        json={
            "name": "payment_check",
            "delay": "10m",
            "payload": {"order_id": "ORD-2024-001", "amount": 199.99, "user_id": "U123456"},
            "max_retries": 3,
            "retry_delay": "5m",
        },
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["name"] == job["topic"] == "payment_check"
    assert job["status"] == "pending"
    assert job["next_run_in"] == "10m0s"
    assert job["retry_count"] == 0 and job["max_retries"] == 3
    assert job["retry_delay"] == 300.0
    assert job["payload"] == {"order_id": "ORD-2024-001", "amount": 199.99, "user_id": "U123456"}
    run_at = datetime.fromisoformat(job["trigger_at"])
    assert job["trigger_at"] == job["run_at"]
    assert before + timedelta(minutes=10) <= run_at <= datetime.now(UTC) + timedelta(minutes=10)
    for field in ("id", "created_at", "updated_at"):
        assert job[field]


async def test_seed_daily_report_with_cron_creates_a_schedule_and_its_first_job(api: httpx.AsyncClient) -> None:
    r = await api.post(
        "/api/jobs",
        json={
            "name": "daily_report",
            "cron_expr": "0 0 9 * * *",
            "is_repeat": True,
            "payload": {"report_type": "daily_sales", "recipients": ["admin@example.com"]},
        },
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["topic"] == "daily_report" and job["status"] == "pending"
    assert job["is_repeat"] is True and job["schedule"] == "daily_report"
    run_at = datetime.fromisoformat(job["run_at"])
    assert (run_at.hour, run_at.minute, run_at.second) == (9, 0, 0)
    assert timedelta(0) < run_at - datetime.now(UTC) <= timedelta(days=1)
    assert job["next_run_in"]
    schedule = (await api.get("/api/schedules/daily_report")).json()
    assert schedule["cron"] == "0 0 9 * * *" and schedule["topic"] == "daily_report"
    assert schedule["payload"] == {"report_type": "daily_sales", "recipients": ["admin@example.com"]}
    # Sent twice, the same instant is not armed twice.
    again = await api.post(
        "/api/jobs", json={"name": "daily_report", "cron_expr": "0 0 9 * * *", "is_repeat": True, "payload": {}}
    )
    assert again.status_code == 201
    page = (await api.get("/api/jobs", params={"topic": "daily_report"})).json()
    assert page["total"] == 1


# -- jobs: success cases -----------------------------------------------------------------


async def test_job_json_carries_the_attempt_history_and_snoozes(make_api: ApiFactory) -> None:
    async with make_api() as (client, http):
        r = await http.post("/api/jobs", json={"topic": "t", "max_snoozes": 7, "max_retries": 2, "retry_delay": 0})
        assert r.status_code == 201, r.text
        created = r.json()
        assert (created["errors"], created["snoozes"], created["max_snoozes"]) == ([], 0, 7)
        now = datetime.now(UTC)
        store = client.backend
        [running] = await store.claim(worker_id="w", topics=["t"], limit=1, now=now, locked_until=now)
        await store.finish(
            [lifecycle.failed(running, "w", "boom\nTraceback (most recent call last): ...", now)], now=now
        )
        [again] = await store.claim(worker_id="w", topics=["t"], limit=1, now=now, locked_until=now)
        await store.finish([lifecycle.snoozed(again, "w", 0, now)], now=now)
        job = (await http.get(f"/api/jobs/{created['id']}")).json()
        assert job["snoozes"] == 1 and job["attempts"] == 1
        [entry] = job["errors"]
        assert (entry["attempt"], entry["worker"]) == (1, "w") and entry["error"].startswith("boom\nTraceback")
        assert datetime.fromisoformat(entry["at"]) == now


@pytest.mark.parametrize("value", [-1, 1_000_001, "x", True])
async def test_enqueue_refuses_a_bad_max_snoozes_naming_it(api: httpx.AsyncClient, value: object) -> None:
    r = await api.post("/api/jobs", json={"topic": "t", "max_snoozes": value})
    assert r.status_code in (400, 422), r.text
    assert "max_snoozes" in r.text


async def test_enqueue_accepts_every_option_and_both_paths(api: httpx.AsyncClient) -> None:
    run_at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    r = await api.post(
        "/api/jobs/enqueue",
        json={
            "topic": "report",
            "payload": [1, "two"],
            "run_at": run_at.isoformat(),
            "priority": 10,
            "max_retries": 5,
            "retry_delay": "1m",
            "backoff": "exponential",
            "timeout": "10m",
            "metadata": {"who": "me"},
            "unique_key": "report:42",
        },
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert datetime.fromisoformat(job["run_at"]) == run_at
    assert (job["priority"], job["max_retries"], job["retry_delay"], job["timeout"]) == (10, 5, 60.0, 600.0)
    assert job["backoff"] == "exponential" and job["metadata"] == {"who": "me"}
    assert job["next_run_in"] in ("1h0m0s", "59m59s")
    # unique_key: the active job comes back instead of a new one
    again = await api.post("/api/jobs", json={"topic": "report", "unique_key": "report:42"})
    assert again.status_code == 201 and again.json()["id"] == job["id"]
    # trigger_at is the alias of run_at
    aliased = await enqueue(api, "report", trigger_at=run_at.isoformat())
    assert datetime.fromisoformat(aliased["run_at"]) == run_at


async def test_list_filters_pages_and_aliases(api: httpx.AsyncClient) -> None:
    for i in range(3):
        await enqueue(api, "a", payload=i)
    await enqueue(api, "b")
    page = (await api.get("/api/jobs")).json()
    assert (page["total"], page["limit"], page["offset"], len(page["items"])) == (4, 50, 0, 4)
    page = (await api.get("/api/jobs", params={"topic": "a", "limit": 2, "offset": 1})).json()
    assert (page["total"], len(page["items"]), page["limit"], page["offset"]) == (3, 2, 2, 1)
    assert all(j["topic"] == "a" for j in page["items"])
    assert (await api.get("/api/jobs", params={"name": "b"})).json()["total"] == 1
    assert (await api.get("/api/jobs", params={"status": "pending"})).json()["total"] == 4
    assert (await api.get("/api/jobs", params={"status": "completed", "limit": 100})).json()["total"] == 0
    assert (await api.get("/api/jobs", params={"status": "running"})).json()["total"] == 0
    assert all(j["next_run_in"] is not None for j in (await api.get("/api/jobs")).json()["items"])


async def test_list_keyset_pages_follow_next_and_prev(api: httpx.AsyncClient) -> None:
    ids = [(await enqueue(api, "a", payload=i))["id"] for i in range(5)][::-1]
    first = (await api.get("/api/jobs", params={"limit": 2})).json()
    assert [j["id"] for j in first["items"]] == ids[:2]
    assert (first["next"], first["prev"], first["total"], first["total_exact"]) == (ids[1], None, 5, True)
    second = (await api.get("/api/jobs", params={"limit": 2, "after": first["next"]})).json()
    assert [j["id"] for j in second["items"]] == ids[2:4]
    assert (second["next"], second["prev"], second["offset"]) == (ids[3], ids[2], 0)
    last = (await api.get("/api/jobs", params={"limit": 2, "after": second["next"]})).json()
    assert [j["id"] for j in last["items"]] == ids[4:] and last["next"] is None
    back = (await api.get("/api/jobs", params={"limit": 2, "before": second["prev"]})).json()
    assert back == first


async def test_stats_and_its_alias(api: httpx.AsyncClient) -> None:
    await enqueue(api, "a")
    await enqueue(api, "b")
    for path in ("/api/jobs/stats", "/api/stats"):
        stats = (await api.get(path)).json()
        assert stats["pending"] == 2 and stats["total"] == 2
        assert stats["by_status"]["pending"] == 2
        assert stats["by_topic"]["a"]["pending"] == 1
        assert stats["workers"] == 0 and stats["uptime"] >= 0


async def test_get_update_cancel_requeue_delete(make_api: ApiFactory) -> None:
    async with make_api() as (client, api):
        job = await enqueue(api, "t", delay="1h")
        path = f"/api/jobs/{job['id']}"
        assert (await api.get(path)).json()["id"] == job["id"]
        r = await api.patch(path, json={"payload": {"new": 1}, "priority": 3, "metadata": {"m": 1}})
        assert r.status_code == 200 and r.json()["payload"] == {"new": 1} and r.json()["priority"] == 3
        when = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
        r = await api.put(path, json={"trigger_at": when.isoformat(), "max_retries": 5})
        assert r.status_code == 200, r.text
        assert datetime.fromisoformat(r.json()["run_at"]) == when and r.json()["max_retries"] == 5
        r = await api.put(path, json={"delay": "10m"})
        assert r.json()["next_run_in"] in ("10m0s", "9m59s")
        r = await api.post(f"{path}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["next_run_in"] is None
        r = await api.post(f"{path}/requeue")
        assert r.status_code == 200 and r.json()["status"] == "pending"
        await client.fail(job["id"], "boom")
        r = await api.post(f"{path}/retry")
        assert r.status_code == 200 and r.json()["status"] == "pending" and r.json()["attempts"] == 0
        r = await api.delete(path)
        assert r.status_code == 204 and r.content == b""
        assert_error(await api.get(path), 404, "job_not_found")


async def test_workers_job_types_health_metrics_index_openapi(make_api: ApiFactory) -> None:
    async with make_api() as (client, api):

        @client.handler("email:send")
        def send(job: Any) -> None:
            return None

        await client.start(scheduler=False)
        try:
            workers = (await api.get("/api/workers")).json()
            assert len(workers) == 1
            w = workers[0]
            assert w["topics"] == ["email:send"] and w["pid"] > 0 and w["concurrency"] >= 1
            assert {"id", "host", "active_jobs", "last_heartbeat"} <= set(w)
            assert (await api.get("/api/job-types")).json() == ["email:send"]
        finally:
            await client.stop()
        health = await api.get("/api/health")
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "healthy" and body["version"] and body["backend"] == client.url.split(":")[0]
        datetime.fromisoformat(body["time"])
        metrics = await api.get("/metrics")
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
        names = {line.split("{")[0].split(" ")[0] for line in metrics.text.splitlines() if line and line[0] != "#"}
        assert names and all(n.startswith("conveyor_") for n in names)
        assert "conveyor_jobs_by_status" in names
        index = await api.get("/")
        assert index.status_code == 200 and "text/html" in index.headers["content-type"]
        schema = (await api.get("/api/openapi.json")).json()
        for path in ("/api/jobs", "/api/jobs/enqueue", "/api/jobs/{job_id}/retry", "/api/schedules/{name}/enable"):
            assert path in schema["paths"]


async def test_metrics_count_processed_jobs_by_outcome(make_api: ApiFactory) -> None:
    import asyncio

    async with make_api() as (client, api):

        @client.handler("ok")
        def ok(job: Any) -> int:
            return 1

        await client.start(scheduler=False)
        try:
            job = await enqueue(api, "ok")
            for _ in range(200):
                if (await api.get(f"/api/jobs/{job['id']}")).json()["status"] == "completed":
                    break
                await asyncio.sleep(0.02)
            for _ in range(200):
                text = (await api.get("/metrics")).text
                if 'conveyor_jobs_processed_total{outcome="completed",topic="ok"} 1.0' in text:
                    break
                await asyncio.sleep(0.02)
            assert 'conveyor_jobs_processed_total{outcome="completed",topic="ok"} 1.0' in text
            assert 'conveyor_job_duration_seconds_count{outcome="completed",topic="ok"} 1.0' in text
            assert 'conveyor_queue_latency_seconds_count{topic="ok"} 1.0' in text
        finally:
            await client.stop()


async def test_health_is_degraded_past_the_pending_threshold(make_api: ApiFactory) -> None:
    async with make_api(pending_threshold=1) as (_client, api):
        await enqueue(api)
        assert (await api.get("/api/health")).json()["status"] == "healthy"
        await enqueue(api)
        r = await api.get("/api/health")
        assert r.status_code == 200 and r.json()["status"] == "degraded"


async def test_health_is_503_when_the_store_is_unreachable(
    make_api: ApiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_api() as (client, api):

        async def down() -> None:
            raise BackendUnavailable("connection refused")

        monkeypatch.setattr(client.backend, "ping", down)
        r = await api.get("/api/health")
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "unhealthy" and body["error"]["code"] == "backend_unavailable"


async def test_a_store_error_on_an_endpoint_is_503(make_api: ApiFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    async with make_api() as (client, api):

        async def down(*_a: Any, **_k: Any) -> None:
            raise BackendUnavailable("connection refused")

        monkeypatch.setattr(client.backend, "get", down)
        assert_error(await api.get("/api/jobs/x"), 503, "backend_unavailable")


# -- jobs: errors --------------------------------------------------------------------------


async def test_unknown_ids_are_404_everywhere(api: httpx.AsyncClient) -> None:
    missing = "/api/jobs/no-such-job"
    for r in (
        await api.get(missing),
        await api.patch(missing, json={"priority": 1}),
        await api.put(missing, json={"priority": 1}),
        await api.delete(missing),
        await api.post(f"{missing}/cancel"),
        await api.post(f"{missing}/requeue"),
        await api.post(f"{missing}/retry"),
    ):
        assert_error(r, 404, "job_not_found")
    assert_error(await api.get("/api/nothing-here"), 404)
    assert_error(await api.get("/api/schedules/none"), 404, "schedule_not_found")


async def test_wrong_states_are_409(make_api: ApiFactory) -> None:
    async with make_api() as (client, api):
        job = await enqueue(api)
        path = f"/api/jobs/{job['id']}"
        assert_error(await api.post(f"{path}/requeue"), 409, "invalid_state")
        await api.post(f"{path}/cancel")
        assert_error(await api.post(f"{path}/cancel"), 409, "invalid_state")
        assert_error(await api.patch(path, json={"priority": 1}), 409, "invalid_state")
        done = await enqueue(api)
        await client.complete(done["id"], {"ok": True})
        assert_error(await api.post(f"/api/jobs/{done['id']}/cancel"), 409, "invalid_state")
        assert_error(await api.post(f"/api/jobs/{done['id']}/retry"), 409, "invalid_state")


async def test_payload_over_the_limit_is_413(make_api: ApiFactory) -> None:
    async with make_api(max_payload_size=1000) as (_client, api):
        error = assert_error(await api.post("/api/jobs", json={"topic": "t", "payload": "x" * 2000}), 413)
        assert "payload" in error["message"]
        job = await enqueue(api, payload="x" * 100)
        assert_error(await api.patch(f"/api/jobs/{job['id']}", json={"payload": "y" * 2000}), 413)
        # A huge raw body is refused from its Content-Length, before it is parsed.
        huge = b'{"topic": "t", "payload": "' + b"z" * 200_000 + b'"}'
        r = await api.post("/api/jobs", content=huge, headers={"content-type": "application/json"})
        assert_error(r, 413, "payload_too_large")

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(100):
                yield b"z" * 10_000

        r = await api.post("/api/jobs", content=chunks(), headers={"content-type": "application/json"})
        assert_error(r, 413, "payload_too_large")


async def test_a_payload_under_the_limit_sent_escaped_is_accepted(make_api: ApiFactory) -> None:
    # 20,000 characters stored as 20,002 bytes of JSON, sent as 120,000 bytes of \u escapes.
    async with make_api(max_payload_size=30_000) as (_client, api):
        escaped = b'{"topic": "t", "payload": "' + b"\\u0041" * 20_000 + b'"}'
        r = await api.post("/api/jobs", content=escaped, headers={"content-type": "application/json"})
        assert r.status_code == 201, r.text
        assert r.json()["payload"] == "A" * 20_000


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "field"),
    [
        ("POST", "/api/jobs", {"json": {"topic": "bad topic!"}}, "topic"),
        ("POST", "/api/jobs", {"json": {"payload": 1}}, "topic"),
        ("POST", "/api/jobs", {"json": {"topic": "t", "delay": "soon"}}, "delay"),
        ("POST", "/api/jobs", {"json": {"topic": "t", "delay": "1m", "run_at": "2030-01-01T00:00:00Z"}}, "run_at"),
        ("POST", "/api/jobs", {"json": {"topic": "t", "run_at": "yesterday"}}, "run_at"),
        ("POST", "/api/jobs", {"json": {"topic": "t", "priority": "high"}}, "priority"),
        ("POST", "/api/jobs", {"json": {"topic": "t", "max_retries": -1}}, "max_retries"),
        ("POST", "/api/jobs", {"json": {"topic": "t", "backoff": "sometimes"}}, "backoff"),
        ("POST", "/api/jobs", {"json": {"topic": "t", "colour": "red"}}, "colour"),
        ("POST", "/api/jobs", {"json": {"topic": "a", "name": "b"}}, "topic"),
        ("POST", "/api/jobs", {"json": {"topic": "t", "is_repeat": True}}, "cron"),
        ("POST", "/api/jobs", {"content": b"{not json", "headers": {"content-type": "application/json"}}, "body"),
        ("GET", "/api/jobs", {"params": {"limit": 0}}, "limit"),
        ("GET", "/api/jobs", {"params": {"limit": 101}}, "limit"),
        ("GET", "/api/jobs", {"params": {"offset": -1}}, "offset"),
        ("GET", "/api/jobs", {"params": {"status": "sleeping"}}, "status"),
        ("GET", "/api/jobs", {"params": {"limit": "many"}}, "limit"),
        ("GET", "/api/jobs", {"params": {"topic": "no spaces"}}, "topic"),
        ("GET", "/api/jobs", {"params": {"after": ""}}, "after"),
        ("GET", "/api/jobs", {"params": {"before": "x" * 201}}, "before"),
        ("GET", "/api/jobs", {"params": {"after": "a", "before": "b"}}, "before"),
        ("GET", "/api/jobs", {"params": {"after": "a", "offset": 5}}, "offset"),
    ],
)
async def test_bad_input_is_422_naming_the_field(
    api: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, Any], field: str
) -> None:
    error = assert_error(await api.request(method, path, **kwargs), 422, "validation_error")
    assert field in error["message"]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("delay", "-5s", "invalid duration '-5s': use seconds or units ms, s, m, h, d, w, e.g. '1h30m'"),
        ("delay", True, "expected a duration such as 30, '10s' or '1h30m', got True"),
        ("timeout", "soon", "invalid duration 'soon': use seconds or units ms, s, m, h, d, w, e.g. '1h30m'"),
        ("retry_delay", -1, "duration must not be negative"),
    ],
)
async def test_a_bad_duration_is_one_plain_reason_as_the_python_apis(
    api: httpx.AsyncClient, field: str, value: object, reason: str
) -> None:
    """Not one message per branch of the duration's union, naming pydantic's validators:
    the reason the Python API gives (``parse_duration``)."""
    error = assert_error(await api.post("/api/jobs", json={"topic": "t", field: value}), 422, "validation_error")
    assert error["message"] == f"{field}: {reason}"


async def test_a_spelling_only_python_accepts_is_refused_with_the_form_the_schema_states(
    api: httpx.AsyncClient,
) -> None:
    error = assert_error(await api.post("/api/jobs", json={"topic": "t", "delay": "1H 30M"}), 422, "validation_error")
    assert error["message"].startswith("delay: expected seconds (number) or a string such as '500ms'")


async def test_bad_update_is_422(api: httpx.AsyncClient) -> None:
    job = await enqueue(api, delay="1h")
    path = f"/api/jobs/{job['id']}"
    assert "delay" in assert_error(await api.patch(path, json={"delay": "later"}), 422)["message"]
    assert "topic" in assert_error(await api.patch(path, json={"topic": "x"}), 422)["message"]


async def test_wrong_method_is_405_with_the_error_shape(api: httpx.AsyncClient) -> None:
    assert_error(await api.delete("/api/stats"), 405, "method_not_allowed")


# -- auth ----------------------------------------------------------------------------------


async def test_missing_or_invalid_token_is_401(secured: httpx.AsyncClient) -> None:
    for headers in ({}, bearer("wrong"), {"Authorization": "Basic YTpi"}, {"Authorization": "Bearer"}):
        r = await secured.get("/api/jobs", headers=headers)
        assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
    assert_error(await secured.get("/metrics"), 401)
    assert_error(await secured.post("/api/jobs", json={"topic": "email:send"}), 401)


async def test_health_and_page_shell_need_no_token(secured: httpx.AsyncClient) -> None:
    assert (await secured.get("/api/health")).status_code == 200
    assert (await secured.get("/")).status_code == 200
    assert (await secured.get("/api/openapi.json")).status_code == 200


async def test_admin_may_do_everything(secured: httpx.AsyncClient) -> None:
    h = bearer(ADMIN)
    r = await secured.post("/api/jobs", json={"topic": "email:send"}, headers=h)
    assert r.status_code == 201
    path = f"/api/jobs/{r.json()['id']}"
    assert (await secured.get(path, headers=h)).status_code == 200
    assert (await secured.patch(path, json={"priority": 2}, headers=h)).status_code == 200
    assert (await secured.post(f"{path}/cancel", headers=h)).status_code == 200
    assert (await secured.delete(path, headers=h)).status_code == 204
    assert (await secured.get("/metrics", headers=h)).status_code == 200


async def test_read_role_may_only_read(secured: httpx.AsyncClient) -> None:
    job = (await secured.post("/api/jobs", json={"topic": "email:send"}, headers=bearer(ADMIN))).json()
    h = bearer(READER)
    for path in ("/api/jobs", f"/api/jobs/{job['id']}", "/api/stats", "/api/workers", "/api/job-types", "/metrics"):
        assert (await secured.get(path, headers=h)).status_code == 200, path
    forbidden = [
        await secured.post("/api/jobs", json={"topic": "email:send"}, headers=h),
        await secured.patch(f"/api/jobs/{job['id']}", json={"priority": 1}, headers=h),
        await secured.delete(f"/api/jobs/{job['id']}", headers=h),
        await secured.post(f"/api/jobs/{job['id']}/cancel", headers=h),
        await secured.post(f"/api/jobs/{job['id']}/requeue", headers=h),
        await secured.post("/api/schedules", json={"name": "s", "cron": "@daily", "topic": "email:x"}, headers=h),
    ]
    for r in forbidden:
        assert_error(r, 403, "forbidden")


async def test_enqueue_role_may_only_enqueue_allowed_topics(secured: httpx.AsyncClient) -> None:
    for token in (ENQUEUER, "enqueue-2"):
        h = bearer(token)
        r = await secured.post("/api/jobs", json={"topic": "email:send"}, headers=h)
        assert r.status_code == 201
        assert (await secured.post("/api/jobs/enqueue", json={"name": "payment_check"}, headers=h)).status_code == 201
        own = await secured.get(f"/api/jobs/{r.json()['id']}", headers=h)  # its id and status only
        assert own.status_code == 200 and own.json() == {"id": r.json()["id"], "status": "pending"}
        assert_error(await secured.delete(f"/api/jobs/{r.json()['id']}", headers=h), 403, "forbidden")
        assert_error(await secured.get("/api/jobs", headers=h), 403, "forbidden")
        assert (await secured.get("/metrics", headers=h)).status_code == 200
        r = await secured.post("/api/jobs", json={"topic": "sms:send"}, headers=h)
        assert_error(r, 403, "topic_not_allowed")


async def test_enqueue_role_creates_cron_schedules_but_may_not_change_one(secured: httpx.AsyncClient) -> None:
    enq, admin = bearer(ENQUEUER), bearer(ADMIN)
    body = {"topic": "email:digest", "cron": "0 9 * * *", "is_repeat": True, "payload": {"a": 1}, "priority": 2}
    first = await secured.post("/api/jobs", json=body, headers=enq)
    assert first.status_code == 201, first.text
    again = await secured.post("/api/jobs", json=body, headers=enq)  # the same request again: same job
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]
    for change in ({"cron": "* * * * *"}, {"payload": {"evil": 1}}, {"timezone": "Europe/Paris"}, {"priority": 3}):
        r = await secured.post("/api/jobs", json={**body, **change}, headers=enq)
        assert_error(r, 403, "forbidden")
    stored = (await secured.get("/api/schedules/email:digest", headers=admin)).json()
    assert (stored["cron"], stored["timezone"], stored["payload"]) == ("0 9 * * *", "UTC", {"a": 1})
    replaced = await secured.post("/api/jobs", json={**body, "payload": {"b": 2}}, headers=admin)
    assert replaced.status_code == 201
    assert (await secured.get("/api/schedules/email:digest", headers=admin)).json()["payload"] == {"b": 2}


async def test_enqueue_role_repeating_a_cron_enqueue_sees_only_id_and_status(secured: httpx.AsyncClient) -> None:
    enq, admin = bearer(ENQUEUER), bearer(ADMIN)
    body = {"topic": "email:weekly", "cron": "@weekly", "is_repeat": True, "payload": {"public": 1}}
    first = (await secured.post("/api/jobs", json=body, headers=enq)).json()
    assert first["payload"] == {"public": 1}  # the job this call armed: the caller's own data
    changed = {"payload": {"secret": "s3"}, "metadata": {"internal": "m"}}
    assert (await secured.patch(f"/api/jobs/{first['id']}", json=changed, headers=admin)).status_code == 200
    again = await secured.post("/api/jobs", json=body, headers=enq)
    assert again.status_code == 201 and again.json() == {"id": first["id"], "status": "pending"}
    seen = (await secured.post("/api/jobs", json=body, headers=admin)).json()  # a reader sees the job
    assert seen["id"] == first["id"] and seen["payload"] == {"secret": "s3"}


async def test_allowed_topics_apply_to_running_and_enabling_a_schedule(make_api: ApiFactory) -> None:
    async with make_api(admin_token=ADMIN, allowed_topics=("email:*",)) as (client, http):
        h = bearer(ADMIN)
        # Saved from code (or before the topic was disallowed): the API must not enqueue it.
        await client.schedule("other", cron="@daily", topic="sms:send", enabled=False)
        assert_error(await http.post("/api/schedules/other/run", headers=h), 403, "topic_not_allowed")
        assert_error(await http.post("/api/schedules/other/enable", headers=h), 403, "topic_not_allowed")
        assert (await client.get_schedule("other")).enabled is False
        assert (await client.list(topic="sms:send")).total == 0
        assert (await http.post("/api/schedules/other/disable", headers=h)).status_code == 200
        assert (await http.delete("/api/schedules/other", headers=h)).status_code == 204
        assert_error(await http.post("/api/schedules/other/run", headers=h), 404, "schedule_not_found")
        await client.schedule("mail", cron="@daily", topic="email:digest", enabled=False)
        assert (await http.post("/api/schedules/mail/enable", headers=h)).status_code == 200
        ran = await http.post("/api/schedules/mail/run", headers=h)
        assert ran.status_code == 201 and ran.json()["topic"] == "email:digest"


async def test_allowed_topics_apply_to_admin_too(secured: httpx.AsyncClient) -> None:
    h = bearer(ADMIN)
    assert_error(await secured.post("/api/jobs", json={"topic": "payment_check2"}, headers=h), 403)
    assert (await secured.post("/api/jobs", json={"topic": "email:"}, headers=h)).status_code == 201


# -- schedules -----------------------------------------------------------------------------


async def test_put_schedule_keeps_and_sets_max_snoozes(api: httpx.AsyncClient) -> None:
    body = {"name": "snoozy", "cron": "@daily", "topic": "report", "max_snoozes": 4, "priority": 1}
    assert (await api.post("/api/schedules", json=body)).json()["options"]["max_snoozes"] == 4
    kept = (await api.put("/api/schedules/snoozy", json={"enabled": False})).json()
    assert kept["options"]["max_snoozes"] == 4 and kept["options"]["priority"] == 1
    assert (await api.put("/api/schedules/snoozy", json={"max_snoozes": 7})).json()["options"]["max_snoozes"] == 7
    job = (await api.post("/api/schedules/snoozy/run")).json()
    assert job["max_snoozes"] == 7
    cleared = (await api.put("/api/schedules/snoozy", json={"max_snoozes": None})).json()
    assert "max_snoozes" not in cleared["options"]


async def test_schedule_endpoints(api: httpx.AsyncClient) -> None:
    r = await api.post(
        "/api/schedules",
        json={"name": "nightly", "cron": "0 3 * * *", "topic": "report", "payload": {"a": 1}, "priority": 2},
    )
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "nightly" and r.json()["enabled"] is True and r.json()["next_run_at"]
    assert [s["name"] for s in (await api.get("/api/schedules")).json()] == ["nightly"]
    assert (await api.get("/api/schedules/nightly")).json()["cron"] == "0 3 * * *"
    r = await api.put("/api/schedules/nightly", json={"cron_expr": "@hourly", "topic": "report", "timezone": "UTC"})
    assert r.status_code == 200 and r.json()["cron"] == "@hourly"
    r = await api.post("/api/schedules/nightly/disable")
    assert r.status_code == 200 and r.json()["enabled"] is False
    r = await api.post("/api/schedules/nightly/enable")
    assert r.status_code == 200 and r.json()["enabled"] is True
    assert (await api.delete("/api/schedules/nightly")).status_code == 204
    assert_error(await api.get("/api/schedules/nightly"), 404, "schedule_not_found")
    assert_error(await api.delete("/api/schedules/nightly"), 404, "schedule_not_found")
    assert_error(await api.post("/api/schedules/nightly/enable"), 404, "schedule_not_found")
    bad = await api.post("/api/schedules", json={"name": "x", "cron": "not a cron", "topic": "t"})
    assert "cron" in assert_error(bad, 422)["message"]
    assert_error(await api.post("/api/schedules", json={"name": "x", "topic": "t"}), 422)


async def test_api_workers_marks_the_maintenance_leader(make_api: ApiFactory) -> None:
    import asyncio

    async with make_api() as (client, api):
        client.handler("email:send")(lambda job: None)
        await client.start(worker_id="the-leader")
        try:
            for _ in range(200):
                workers = (await api.get("/api/workers")).json()
                if any(w["leader"] for w in workers):
                    break
                await asyncio.sleep(0.05)
            assert [(w["id"], w["leader"]) for w in workers] == [("the-leader", True)]
        finally:
            await client.stop()
