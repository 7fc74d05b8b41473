"""Server-side bounds against amplification by a token (max_retries, retry delay,
schedule interval; configurable, validated, documented in the OpenAPI schema) and what
a caller without the read role learns through a unique key (in-process, memory://)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from conveyor.api import create_app
from conveyor.client import AsyncConveyor
from conveyor.core.errors import ConfigurationError
from conveyor.settings import Settings

ADMIN, ENQUEUER, READER = "lim-admin", "lim-enqueue", "lim-read"


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(url="memory://", admin_token=ADMIN, enqueue_tokens=(ENQUEUER,), read_tokens=(READER,))
    client = AsyncConveyor(settings=settings)
    app = create_app(client)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
                yield http
    finally:
        await client.close()


def as_(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_422(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"].startswith(field), response.text


@pytest.mark.parametrize("token", [ADMIN, ENQUEUER])
async def test_max_retries_is_bounded_for_every_role(api: httpx.AsyncClient, token: str) -> None:
    response = await api.post("/api/jobs", json={"topic": "t", "max_retries": 1_000_000}, headers=as_(token))
    assert_422(response, "max_retries")
    ok = await api.post("/api/jobs", json={"topic": "t", "max_retries": 100}, headers=as_(token))
    assert ok.status_code == 201


@pytest.mark.parametrize("body", [{"retry_delay": 0}, {"retry_delay": "500ms"}, {"backoff": "none"}])
async def test_an_enqueue_token_cannot_retry_without_delay(api: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await api.post("/api/jobs", json={"topic": "t", **body}, headers=as_(ENQUEUER))
    assert_422(response, next(iter(body)))
    admin = await api.post("/api/jobs", json={"topic": "t", **body}, headers=as_(ADMIN))
    assert admin.status_code == 201, admin.text


@pytest.mark.parametrize("cron", ["@every 1s", "* * * * * *", "*/10 * * * * *", "0,30 * * * * *"])
async def test_an_enqueue_token_cannot_create_a_frequent_schedule(api: httpx.AsyncClient, cron: str) -> None:
    body = {"topic": "t", "cron": cron, "is_repeat": True, "schedule": "s"}
    assert_422(await api.post("/api/jobs", json=body, headers=as_(ENQUEUER)), "cron")
    assert (await api.get("/api/schedules", headers=as_(ADMIN))).json() == []
    body["cron"] = "@every 5m"
    assert (await api.post("/api/jobs", json=body, headers=as_(ENQUEUER))).status_code == 201


async def test_openapi_documents_the_max_retries_bound(api: httpx.AsyncClient) -> None:
    schema = (await api.get("/api/openapi.json")).json()
    prop = schema["components"]["schemas"]["EnqueueRequest"]["properties"]["max_retries"]
    assert {"type": "integer", "minimum": 0, "maximum": 100} in [
        {k: v for k, v in variant.items() if k in ("type", "minimum", "maximum")} for variant in prop["anyOf"]
    ]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CONVEYOR_MAX_RETRIES_LIMIT", "-1"),
        ("CONVEYOR_MIN_RETRY_DELAY", "abc"),
        ("CONVEYOR_MIN_SCHEDULE_INTERVAL", "2d"),
    ],
)
def test_limit_settings_are_validated(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        Settings.from_env({variable: value})


def test_limit_settings_are_configurable() -> None:
    settings = Settings.from_env(
        {"CONVEYOR_MAX_RETRIES_LIMIT": "7", "CONVEYOR_MIN_RETRY_DELAY": "5s", "CONVEYOR_MIN_SCHEDULE_INTERVAL": "1h"}
    )
    assert (settings.max_retries_limit, settings.min_retry_delay, settings.min_schedule_interval) == (7, 5.0, 3600.0)


async def test_a_unique_key_tells_an_enqueue_token_only_id_and_status(api: httpx.AsyncClient) -> None:
    secret = {"topic": "t", "payload": {"card": "4242"}, "metadata": {"owner": "x"}, "unique_key": "k"}
    held = (await api.post("/api/jobs", json=secret, headers=as_(ADMIN))).json()
    response = await api.post("/api/jobs", json={"topic": "t", "unique_key": "k"}, headers=as_(ENQUEUER))
    assert response.status_code == 201
    assert response.json() == {"id": held["id"], "status": "pending"}
    # A reader (here the admin) gets the holder in full.
    full = await api.post("/api/jobs", json={"topic": "t", "unique_key": "k"}, headers=as_(ADMIN))
    assert full.json()["payload"] == {"card": "4242"}


async def test_an_enqueue_token_gets_its_own_new_job_in_full(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/jobs", json={"topic": "t", "payload": {"a": 1}, "unique_key": "new"}, headers=as_(ENQUEUER)
    )
    assert response.status_code == 201 and response.json()["payload"] == {"a": 1}
