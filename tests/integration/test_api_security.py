"""Browser-facing protections of the API (in-process, memory://): loopback-only ``Host``
without tokens, cross-site state changes and WebSocket handshakes refused, security
headers on every response, HEAD where GET works, and the WebSocket's auth and frame
rules."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning
from starlette.websockets import WebSocketDisconnect

with warnings.catch_warnings():
    # Starlette prefers its httpx2 fork for the test client; httpx works the same here.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from conveyor.api import create_app
from conveyor.client import AsyncConveyor
from conveyor.settings import Settings

ADMIN, READER = "sec-admin", "sec-reader"


def _client(**settings: Any) -> Iterator[TestClient]:
    client = AsyncConveyor(settings=Settings(url="memory://", **settings))
    with TestClient(create_app(client), base_url="http://localhost:8000") as http:
        yield http


@pytest.fixture
def open_api() -> Iterator[TestClient]:
    """No token configured: the API is open, loopback only."""
    yield from _client()


@pytest.fixture
def secured_api() -> Iterator[TestClient]:
    yield from _client(admin_token=ADMIN, read_tokens=(READER,))


def _enqueue(http: TestClient, **headers: str) -> dict[str, Any]:
    response = http.post("/api/jobs", json={"topic": "t"}, headers=headers)
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


@pytest.mark.parametrize("host", ["evil.example", "attacker.test:8000", "10.0.0.5:8000", "127.evil.example"])
def test_open_api_refuses_a_foreign_host(open_api: TestClient, host: str) -> None:
    response = open_api.get("/api/jobs", headers={"host": host})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert "host" in response.json()["error"]["message"]


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1:8000", "[::1]:8000", "app.localhost", "127.0.0.2"])
def test_open_api_answers_loopback_hosts(open_api: TestClient, host: str) -> None:
    assert open_api.get("/api/jobs", headers={"host": host}).status_code == 200


def test_a_server_with_tokens_answers_any_host(secured_api: TestClient) -> None:
    response = secured_api.get("/api/jobs", headers={"host": "queue.example.com", "authorization": f"Bearer {READER}"})
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["cancel", "requeue", "retry"])
def test_cross_site_bodiless_post_is_refused_and_changes_nothing(open_api: TestClient, path: str) -> None:
    job = _enqueue(open_api)
    response = open_api.post(f"/api/jobs/{job['id']}/{path}", headers={"origin": "https://evil.example"})
    assert response.status_code == 403
    assert "cross-origin" in response.json()["error"]["message"]
    assert open_api.get(f"/api/jobs/{job['id']}").json()["status"] == "pending"


def test_sec_fetch_site_cross_site_is_refused(open_api: TestClient) -> None:
    job = _enqueue(open_api)
    response = open_api.delete(f"/api/jobs/{job['id']}", headers={"sec-fetch-site": "cross-site"})
    assert response.status_code == 403
    assert open_api.get(f"/api/jobs/{job['id']}").status_code == 200


def test_null_origin_is_refused(open_api: TestClient) -> None:
    response = open_api.post("/api/jobs", json={"topic": "t"}, headers={"origin": "null"})
    assert response.status_code == 403


def test_same_origin_state_change_is_allowed(open_api: TestClient) -> None:
    job = _enqueue(open_api, origin="http://localhost:8000", **{"sec-fetch-site": "same-origin"})
    response = open_api.post(f"/api/jobs/{job['id']}/cancel", headers={"origin": "http://localhost:8000"})
    assert response.status_code == 200, response.text


def test_cross_site_get_is_not_refused_by_origin(secured_api: TestClient) -> None:
    # Reads need a bearer token a foreign page cannot send; CORS keeps the answer from it.
    headers = {"origin": "https://grafana.example", "authorization": f"Bearer {READER}"}
    assert secured_api.get("/api/jobs", headers=headers).status_code == 200


@pytest.mark.parametrize("path", ["/", "/api/health", "/static/app.js", "/api/nope"])
def test_every_response_carries_the_security_headers(open_api: TestClient, path: str) -> None:
    response = open_api.get(path)
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"


def test_dashboard_page_has_no_inline_script_or_style(open_api: TestClient) -> None:
    page = open_api.get("/").text
    assert "<script>" not in page and "<style" not in page and " style=" not in page
    assert 'src="/static/app.js"' in page


def test_api_docs_page_needs_no_cdn(open_api: TestClient) -> None:
    # The Swagger page (assets from a CDN) is gone; the schema itself is served.
    assert open_api.get("/api/docs").status_code == 404
    assert "cdn" not in open_api.get("/").text.lower()
    assert open_api.get("/api/openapi.json").status_code == 200


@pytest.mark.parametrize("path", ["/api/jobs", "/api/health", "/api/jobs/stats", "/", "/static/app.js"])
def test_head_is_answered_where_get_is(open_api: TestClient, path: str) -> None:
    get = open_api.get(path)
    head = open_api.head(path)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


def test_ws_from_a_foreign_origin_is_refused(open_api: TestClient) -> None:
    with (
        pytest.raises(WebSocketDisconnect),
        open_api.websocket_connect("/api/ws", headers={"origin": "https://evil.example", "host": "localhost:8000"}),
    ):
        pass


def test_ws_from_the_same_origin_is_accepted(open_api: TestClient) -> None:
    with open_api.websocket_connect(
        "/api/ws", headers={"origin": "http://localhost:8000", "host": "localhost:8000"}
    ) as ws:
        ws.send_json({"action": "ping"})
        assert ws.receive_json()["type"] == "pong"


def test_ws_second_auth_with_a_bad_token_is_refused(secured_api: TestClient) -> None:
    with secured_api.websocket_connect("/api/ws") as ws:
        ws.send_json({"action": "auth", "token": ADMIN})
        assert ws.receive_json() == {"type": "authenticated", "role": "admin"}
        ws.send_json({"action": "auth", "token": "wrong"})
        reply = ws.receive_json()
        assert reply["type"] == "error" and reply["error"]["code"] == "unauthorized"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1008


def test_ws_binary_frame_is_closed_with_a_reason(secured_api: TestClient) -> None:
    with secured_api.websocket_connect("/api/ws", headers={"authorization": f"Bearer {READER}"}) as ws:
        ws.send_bytes(b"\x00\x01")
        reply = ws.receive_json()
        assert reply["type"] == "error" and "binary" in reply["error"]["message"]
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1003
        assert "binary" in closed.value.reason


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/api/jobs/abc", "DELETE, GET, HEAD, PATCH, PUT"),
        ("/api/schedules", "GET, HEAD, POST"),
        ("/api/schedules/nightly", "DELETE, GET, HEAD, PUT"),
        ("/api/jobs/stats", "GET, HEAD"),
    ],
)
def test_unsupported_method_names_every_allowed_one(open_api: TestClient, path: str, allowed: str) -> None:
    response = open_api.options(path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed


def test_openapi_states_the_single_field_rules(open_api: TestClient) -> None:
    schema = open_api.get("/api/openapi.json").json()
    enqueue = schema["components"]["schemas"]["EnqueueRequest"]
    assert {"required": ["topic"], "properties": {"topic": {"type": "string"}}} in enqueue["anyOf"]
    delay = [v for v in enqueue["properties"]["delay"]["anyOf"] if v.get("type") == "string"]
    assert delay and delay[0]["pattern"].startswith("^")
    params = schema["paths"]["/api/schedules/{name}"]["get"]["parameters"]
    assert params[0]["schema"]["pattern"] == "^[A-Za-z0-9_.:\\-]{1,200}$"


@pytest.mark.parametrize("delay", ["1H", "1h 30m", -5])
def test_durations_outside_the_schema_are_refused(open_api: TestClient, delay: object) -> None:
    response = open_api.post("/api/jobs", json={"topic": "t", "delay": delay})
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("delay")
