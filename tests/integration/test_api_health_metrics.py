"""``/api/health`` tells an anonymous caller only its status (no store error text, no
full stats query); ``/metrics`` keeps a bounded topic label set and renders off the
event loop (in-process, memory://)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from conveyor.api import create_app
from conveyor.api.metrics import MAX_TOPIC_LABELS, Metrics
from conveyor.client import AsyncConveyor
from conveyor.core.errors import BackendUnavailable
from conveyor.settings import Settings

ADMIN = "hm-admin"
SECRET_URL = "postgresql://app:s3cret@db.internal:5432/app"


@pytest.fixture
async def stack() -> AsyncIterator[tuple[AsyncConveyor, httpx.AsyncClient]]:
    client = AsyncConveyor(settings=Settings(url="memory://", admin_token=ADMIN))
    app = create_app(client)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
                yield client, http
    finally:
        await client.close()


def store_down(client: AsyncConveyor, monkeypatch: pytest.MonkeyPatch) -> None:
    async def down() -> None:
        raise BackendUnavailable(f"cannot reach {SECRET_URL} (/var/run/postgresql)")

    monkeypatch.setattr(client.backend, "ping", down)


async def test_anonymous_health_of_a_down_store_says_only_unhealthy(
    stack: tuple[AsyncConveyor, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, http = stack
    store_down(client, monkeypatch)
    response = await http.get("/api/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert set(body) <= {"status", "time", "version", "backend"}
    assert "db.internal" not in response.text and "/var/run" not in response.text


async def test_health_with_a_token_gives_the_error_with_passwords_hidden(
    stack: tuple[AsyncConveyor, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, http = stack
    store_down(client, monkeypatch)
    response = await http.get("/api/health", headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "backend_unavailable"
    assert "s3cret" not in response.text and "app:***@db.internal" in response.text


async def test_health_never_runs_the_full_stats_query(
    stack: tuple[AsyncConveyor, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, http = stack
    await client.enqueue("t", {})

    async def no_stats() -> Any:
        raise AssertionError("stats() called by /api/health")

    monkeypatch.setattr(client.backend, "stats", no_stats)
    for headers in ({}, {"Authorization": f"Bearer {ADMIN}"}):
        response = await http.get("/api/health", headers=headers)
        assert response.status_code == 200 and response.json()["status"] == "healthy"
    assert (await http.get("/api/health", headers={"Authorization": f"Bearer {ADMIN}"})).json()["pending"] == 1


async def test_metrics_topic_labels_are_bounded(stack: tuple[AsyncConveyor, httpx.AsyncClient]) -> None:
    client, http = stack
    await client.enqueue_many([{"topic": f"topic-{i}"} for i in range(MAX_TOPIC_LABELS + 300)])
    response = await http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200
    series = [line for line in response.text.splitlines() if line.startswith("conveyor_jobs{")]
    topics = {line.split('topic="', 1)[1].split('"', 1)[0] for line in series}
    assert len(topics) == MAX_TOPIC_LABELS + 1 and "_other" in topics
    other = [line for line in series if 'topic="_other"' in line and 'status="pending"' in line]
    assert other and float(other[0].rsplit(" ", 1)[1]) == 300
    scheduled = [line for line in response.text.splitlines() if line.startswith("conveyor_jobs_scheduled_total{")]
    assert len(scheduled) <= MAX_TOPIC_LABELS + 1


async def test_metrics_render_off_the_event_loop(
    stack: tuple[AsyncConveyor, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    _client, http = stack
    threads: list[threading.Thread] = []
    original = Metrics.render

    def spy(self: Metrics, stats: dict[str, Any], *, ws_clients: int) -> bytes:
        threads.append(threading.current_thread())
        return original(self, stats, ws_clients=ws_clients)

    monkeypatch.setattr(Metrics, "render", spy)
    assert (await http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})).status_code == 200
    assert threads and threads[0] is not threading.current_thread()
