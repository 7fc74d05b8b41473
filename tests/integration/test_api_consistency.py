"""HTTP API details a new user trips on: a form body, an enqueue token following its job,
a partial schedule update, replacing an armed cron schedule, retry_count."""

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

ADMIN, ENQUEUER, READER = "admin-token-0123456789", "enqueue-token-0123456789", "read-token-0123456789"


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with services.isolated_store(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def env(store_url: str) -> AsyncIterator[tuple[AsyncConveyor, httpx.AsyncClient]]:
    settings = Settings(
        url=store_url,
        retention=0,
        admin_token=ADMIN,
        enqueue_tokens=(ENQUEUER,),
        read_tokens=(READER,),
        allowed_topics=("allowed.*",),
    )
    client = AsyncConveyor(settings=settings)
    app = create_app(client)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
                yield client, http
    finally:
        await client.close()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_form_encoded_body_is_a_400_saying_to_send_json(env: tuple[AsyncConveyor, httpx.AsyncClient]) -> None:
    _, http = env
    response = await http.post("/api/jobs", data={"topic": "allowed.a"}, headers=auth(ADMIN))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "bad_request"
    assert "content-type: application/json" in error["message"]
    assert "application/x-www-form-urlencoded" in error["message"]


@pytest.mark.parametrize("path", ["/api/jobs", "/api/jobs/bulk/cancel"])
async def test_a_body_without_a_content_type_is_a_400_saying_to_send_json(
    env: tuple[AsyncConveyor, httpx.AsyncClient], path: str
) -> None:
    _, http = env
    response = await http.post(path, content=b'{"status": "pending"}', headers=auth(ADMIN))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error == {
        "code": "bad_request",
        "message": "body: expected a JSON body sent with content-type: application/json, got no content-type",
    }
    missing = await http.post("/api/jobs", headers=auth(ADMIN))  # no body at all: the usual 422
    assert missing.status_code == 422 and missing.json()["error"]["message"] == "body: Field required"


async def test_invalid_json_is_a_422_naming_the_body(env: tuple[AsyncConveyor, httpx.AsyncClient]) -> None:
    _, http = env
    response = await http.post(
        "/api/jobs", content=b"{nope", headers={**auth(ADMIN), "content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("body")


async def test_an_enqueue_token_reads_the_id_and_status_of_its_job(
    env: tuple[AsyncConveyor, httpx.AsyncClient],
) -> None:
    client, http = env
    created = await http.post(
        "/api/jobs", json={"topic": "allowed.a", "payload": {"secret": 1}}, headers=auth(ENQUEUER)
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]

    mine = await http.get(f"/api/jobs/{job_id}", headers=auth(ENQUEUER))
    assert mine.status_code == 200
    assert mine.json() == {"id": job_id, "status": "pending"}
    full = await http.get(f"/api/jobs/{job_id}", headers=auth(READER))
    assert full.json()["payload"] == {"secret": 1}

    other = await client.enqueue("internal", {"x": 1})  # a topic this server does not allow
    assert (await http.get(f"/api/jobs/{other.id}", headers=auth(ENQUEUER))).status_code == 404
    assert (await http.get(f"/api/jobs/{other.id}", headers=auth(READER))).status_code == 200
    assert (await http.get("/api/jobs", headers=auth(ENQUEUER))).status_code == 403  # still no listing


async def test_put_schedule_keeps_the_fields_it_does_not_name(env: tuple[AsyncConveyor, httpx.AsyncClient]) -> None:
    _, http = env
    body: dict[str, Any] = {
        "cron": "0 9 * * *",
        "topic": "allowed.report",
        "payload": {"kind": "sales"},
        "timezone": "Europe/Berlin",
        "priority": 5,
        "timeout": "1m",
    }
    assert (await http.put("/api/schedules/daily", json=body, headers=auth(ADMIN))).status_code == 200

    response = await http.put("/api/schedules/daily", json={"enabled": False, "timeout": None}, headers=auth(ADMIN))
    assert response.status_code == 200, response.text
    stored = response.json()
    assert stored["enabled"] is False
    assert (stored["cron"], stored["topic"], stored["timezone"]) == ("0 9 * * *", "allowed.report", "Europe/Berlin")
    assert stored["payload"] == {"kind": "sales"}
    assert stored["options"].get("priority") == 5 and "timeout" not in stored["options"]

    response = await http.put("/api/schedules/daily", json={"cron_expr": "0 10 * * *"}, headers=auth(ADMIN))
    assert response.json()["cron"] == "0 10 * * *" and response.json()["enabled"] is False


async def test_put_of_a_new_schedule_needs_cron_and_topic(env: tuple[AsyncConveyor, httpx.AsyncClient]) -> None:
    _, http = env
    response = await http.put("/api/schedules/fresh", json={"topic": "allowed.x"}, headers=auth(ADMIN))
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("cron")


async def test_replacing_a_cron_schedule_replaces_its_armed_job(env: tuple[AsyncConveyor, httpx.AsyncClient]) -> None:
    client, http = env
    body = {"topic": "allowed.sync", "cron": "0 3 * * *", "is_repeat": True, "payload": {"v": 1}}
    first = (await http.post("/api/jobs", json=body, headers=auth(ADMIN))).json()
    again = (await http.post("/api/jobs", json=body, headers=auth(ADMIN))).json()
    assert again["id"] == first["id"]  # the same definition: the same armed job

    second = (await http.post("/api/jobs", json={**body, "payload": {"v": 2}}, headers=auth(ADMIN))).json()
    assert second["id"] != first["id"]
    assert second["run_at"] == first["run_at"] and second["payload"] == {"v": 2}
    assert (await http.get(f"/api/jobs/{first['id']}", headers=auth(ADMIN))).status_code == 404
    pending = (await client.list(status="pending", topic="allowed.sync")).items
    assert [j.id for j in pending] == [second["id"]]


async def test_replacing_an_armed_schedule_from_python_re_arms_its_instant(
    env: tuple[AsyncConveyor, httpx.AsyncClient],
) -> None:
    client, _ = env
    armed = await client.arm_schedule("nightly", "0 3 * * *", "allowed.n", {"v": 1})
    await client.schedule("nightly", "0 3 * * *", "allowed.n", {"v": 2})
    pending = (await client.list(status="pending", topic="allowed.n")).items
    assert [(j.payload, j.run_at) for j in pending] == [({"v": 2}, armed.run_at)]


async def test_job_json_retry_count_counts_retries(env: tuple[AsyncConveyor, httpx.AsyncClient]) -> None:
    client, http = env
    job = await client.enqueue("allowed.x", max_retries=0)
    await client.fail(job.id, "boom")
    got = (await http.get(f"/api/jobs/{job.id}", headers=auth(READER))).json()
    assert got["retry_count"] == 0
