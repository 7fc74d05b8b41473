"""Bad input over HTTP is a 422 naming the field on every backend, never a 500 or
silently changed data: non-JSON numbers, NUL in unique keys, datetimes and durations
that overflow, booleans where integers go, parser-level errors (named ``body``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.api import create_app
from conveyor.client import AsyncConveyor
from conveyor.settings import Settings
from tests import services

BACKENDS = ["memory", "sqlite", "postgres", "redis"]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with services.isolated_store(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def api(store_url: str) -> AsyncIterator[httpx.AsyncClient]:
    client = AsyncConveyor(settings=Settings(url=store_url, retention=0))
    app = create_app(client)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
                yield http
    finally:
        await client.close()


def assert_422(response: httpx.Response, field: str) -> str:
    assert response.status_code == 422, response.text
    message: str = response.json()["error"]["message"]
    assert message.startswith(field), message
    return message


async def post_raw(api: httpx.AsyncClient, path: str, body: bytes, method: str = "POST") -> httpx.Response:
    return await api.request(method, path, content=body, headers={"content-type": "application/json"})


async def total(api: httpx.AsyncClient) -> int:
    count: int = (await api.get("/api/jobs")).json()["total"]
    return count


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
@pytest.mark.parametrize("template", ['{"topic": "t", "payload": {"x": %s}}', '{"topic": "t", "metadata": {"m": %s}}'])
async def test_enqueue_refuses_non_json_numbers(api: httpx.AsyncClient, literal: str, template: str) -> None:
    response = await post_raw(api, "/api/jobs", (template % literal).encode())
    message = assert_422(response, "body")
    assert "invalid JSON" in message
    assert await total(api) == 0


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "1e400"])
async def test_update_refuses_non_json_numbers(api: httpx.AsyncClient, literal: str) -> None:
    job = (await api.post("/api/jobs", json={"topic": "t", "payload": {"x": 1}})).json()
    response = await post_raw(api, f"/api/jobs/{job['id']}", f'{{"payload": [{literal}]}}'.encode(), "PATCH")
    assert_422(response, "body")
    assert (await api.get(f"/api/jobs/{job['id']}")).json()["payload"] == {"x": 1}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[" * 5000 + b"]" * 5000, "depth"),
        (b'{"topic": "t", "payload": ' + b"9" * 4300 + b"}", "number"),
        (b'{"topic": "t", "payload": "\xff\xfe"}', "UTF-8"),
    ],
)
async def test_parser_level_errors_name_the_body(api: httpx.AsyncClient, body: bytes, reason: str) -> None:
    message = assert_422(await post_raw(api, "/api/jobs", body), "body")
    assert reason in message


@pytest.mark.parametrize("literal", ["18446744073709551616", "-9223372036854775809", "99999999999999999999999"])
async def test_integers_outside_64_bits_are_refused_not_rounded(api: httpx.AsyncClient, literal: str) -> None:
    body = f'{{"topic": "t", "payload": {{"order": {literal}}}}}'.encode()
    message = assert_422(await post_raw(api, "/api/jobs", body), "body")
    assert "outside the 64-bit range" in message
    assert await total(api) == 0
    kept = await post_raw(api, "/api/jobs", b'{"topic": "t", "payload": {"order": 18446744073709551615}}')
    assert kept.status_code == 201 and kept.json()["payload"] == {"order": 2**64 - 1}


async def test_a_payload_nested_too_deep_to_store_names_the_payload(api: httpx.AsyncClient) -> None:
    body = b'{"topic": "t", "payload": ' + b"[" * 300 + b"]" * 300 + b"}"
    message = assert_422(await post_raw(api, "/api/jobs", body), "payload")
    assert "nested deeper than 254 levels" in message
    assert await total(api) == 0


async def test_unique_key_with_nul_is_a_422(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/jobs", json={"topic": "t", "unique_key": "a\u0000b"})
    message = assert_422(response, "unique_key")
    assert "NUL" in message
    assert await total(api) == 0


@pytest.mark.parametrize("field", ["run_at", "trigger_at"])
@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
async def test_run_at_outside_the_datetime_range_is_a_422(api: httpx.AsyncClient, field: str, value: str) -> None:
    response = await api.post("/api/jobs", json={"topic": "t", field: value})
    assert_422(response, field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"topic": "t", "delay": "99999999999999d"}, "delay"),
        ({"topic": "t", "retry_delay": "99999999999999d"}, "retry_delay"),
        ({"topic": "t", "cron": "@every 99999999999999d", "is_repeat": True}, "cron"),
    ],
)
async def test_huge_durations_are_a_422(api: httpx.AsyncClient, body: dict[str, Any], field: str) -> None:
    assert_422(await api.post("/api/jobs", json=body), field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"topic": "t", "priority": True}, "priority"),
        ({"topic": "t", "max_retries": False}, "max_retries"),
        ({"topic": "t", "timeout": True}, "timeout"),
        ({"topic": "t", "is_repeat": 1, "cron": "@daily"}, "is_repeat"),
    ],
)
async def test_booleans_are_not_integers(api: httpx.AsyncClient, body: dict[str, Any], field: str) -> None:
    assert_422(await api.post("/api/jobs", json=body), field)
    assert await total(api) == 0


async def test_update_refuses_a_boolean_priority(api: httpx.AsyncClient) -> None:
    job = (await api.post("/api/jobs", json={"topic": "t"})).json()
    assert_422(await api.patch(f"/api/jobs/{job['id']}", json={"priority": True}), "priority")


@pytest.mark.parametrize("param", ["after", "before"])
async def test_a_cursor_with_nul_is_a_422_not_a_store_error(api: httpx.AsyncClient, param: str) -> None:
    response = await api.get(f"/api/jobs?{param}=a%00b")
    assert_422(response, param)
    assert "PostgreSQL" not in response.text and "UTF8" not in response.text
