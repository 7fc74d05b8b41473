"""WebSocket ``/api/ws`` end to end: a real ``conveyor serve`` process (no embedded
worker) and a worker in ANOTHER process, sharing one SQLite file; plus the slow-client
overflow rule on an in-process server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from conveyor.api import create_app
from conveyor.client import AsyncConveyor
from conveyor.core.events import Event

ADMIN, READER, ENQUEUER = "ws-admin", "ws-reader", "ws-enqueuer"

WORKER_APP = """
from conveyor import Conveyor

app = Conveyor()


@app.handler("ok")
def ok(job):
    return {"ok": True}


@app.handler("boom")
def boom(job):
    raise RuntimeError("boom " + str(job.attempts))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(extra)
    return env


def wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not become healthy")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Stack:
    base: str
    ws: str
    db: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``conveyor serve --no-worker`` and ``conveyor worker`` as two processes on one SQLite file."""
    tmp = tmp_path_factory.mktemp("ws")
    (tmp / "wsapp.py").write_text(WORKER_APP)
    db = tmp / "shared.db"
    url = f"sqlite:///{db}"
    port = free_port()
    env = clean_env(
        CONVEYOR_ADMIN_TOKEN=ADMIN,
        CONVEYOR_READ_TOKENS=READER,
        CONVEYOR_ENQUEUE_TOKENS=ENQUEUER,
        CONVEYOR_POLL_INTERVAL="0.05",
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "--url", url, "serve", "--port", str(port), "--no-worker"],
        cwd=tmp,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, server)
        worker = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "--url", url, "worker", "--app", "wsapp:app", "--no-scheduler"],
            cwd=tmp,
            env=env,
        )
        try:
            yield Stack(base=base, ws=f"ws://127.0.0.1:{port}/api/ws", db=db)
        finally:
            stop(worker)
    finally:
        stop(server)


async def receive(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


async def until(ws: ClientConnection, predicate: Any, timeout: float = 20.0) -> list[dict[str, Any]]:
    """Messages received until (and including) the first one matching ``predicate``."""
    seen: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise AssertionError(f"no matching message; got {seen}")
        message = await receive(ws, left)
        seen.append(message)
        if predicate(message):
            return seen


async def subscribe(ws: ClientConnection, flt: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps({"action": "subscribe", "filter": flt}))
    reply = await receive(ws)
    assert reply["type"] == "subscribed", reply
    return reply


async def enqueue(stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.base, headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        r = await http.post("/api/jobs", json=body)
        assert r.status_code == 201, r.text
        job: dict[str, Any] = r.json()
        return job


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_ws_ping_pong_and_get_stats(stack: Stack) -> None:
    async with connect(stack.ws, additional_headers=headers(READER)) as ws:
        await ws.send(json.dumps({"action": "ping"}))
        pong = await receive(ws)
        assert pong["type"] == "pong"
        datetime.fromisoformat(pong["timestamp"])
        await ws.send(json.dumps({"action": "get_stats"}))
        stats = await receive(ws)
        assert stats["type"] == "stats"
        assert {"pending", "processing", "completed", "failed", "cancelled", "by_topic", "workers"} <= set(
            stats["data"]
        )


async def test_ws_authenticates_by_first_message(stack: Stack) -> None:
    async with connect(stack.ws) as ws:
        await ws.send(json.dumps({"action": "auth", "token": READER}))
        assert (await receive(ws)) == {"type": "authenticated", "role": "read"}
        await ws.send(json.dumps({"action": "ping"}))
        assert (await receive(ws))["type"] == "pong"


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ({"action": "auth", "token": "wrong"}, "unauthorized"),
        ({"action": "ping"}, "unauthorized"),
        ({"action": "auth", "token": ENQUEUER}, "forbidden"),
    ],
)
async def test_ws_without_a_valid_reader_token_is_closed_1008(stack: Stack, first: dict[str, Any], code: str) -> None:
    async with connect(stack.ws) as ws:
        await ws.send(json.dumps(first))
        error = await receive(ws)
        assert error["type"] == "error" and error["error"]["code"] == code
        with pytest.raises(ConnectionClosed):
            await receive(ws)
        assert ws.close_code == 1008


async def test_ws_bad_header_token_is_closed_1008(stack: Stack) -> None:
    async with connect(stack.ws, additional_headers=headers("nope")) as ws:
        assert (await receive(ws))["error"]["code"] == "unauthorized"
        with pytest.raises(ConnectionClosed):
            await receive(ws)
        assert ws.close_code == 1008


async def test_ws_bad_messages_get_errors_and_the_connection_stays(stack: Stack) -> None:
    async with connect(stack.ws, additional_headers=headers(ADMIN)) as ws:
        await ws.send("not json")
        assert (await receive(ws))["error"]["code"] == "bad_message"
        await ws.send(json.dumps({"action": "dance"}))
        assert (await receive(ws))["error"]["code"] == "unknown_action"
        await ws.send(json.dumps({"action": "subscribe", "filter": {"event_types": ["job.exploded"]}}))
        assert (await receive(ws))["error"]["code"] == "invalid_filter"
        await ws.send(json.dumps({"action": "ping"}))
        assert (await receive(ws))["type"] == "pong"


async def test_ws_filtered_subscription_receives_only_matching_events(stack: Stack) -> None:
    async with connect(stack.ws, additional_headers=headers(READER)) as ws:
        reply = await subscribe(ws, {"job_types": ["ok"], "event_types": ["job.completed"]})
        assert reply["filter"]["topics"] == ["ok"]
        failing = await enqueue(stack, {"name": "boom", "max_retries": 0})
        # Wait until the non-matching job has run to the end in the worker process.
        async with httpx.AsyncClient(base_url=stack.base, headers=headers(READER)) as http:
            for _ in range(400):
                if (await http.get(f"/api/jobs/{failing['id']}")).json()["status"] == "failed":
                    break
                await asyncio.sleep(0.05)
        job = await enqueue(stack, {"topic": "ok"})
        seen = await until(ws, lambda m: m.get("job_id") == job["id"])
        assert all(m["topic"] == "ok" and m["type"] == "job.completed" for m in seen), seen
        assert seen[-1]["status"] == "completed"
        assert seen[-1]["metadata"]["duration_ms"] >= 0


async def test_ws_job_ids_filter(stack: Stack) -> None:
    async with connect(stack.ws, additional_headers=headers(READER)) as ws:
        first = await enqueue(stack, {"topic": "ok", "delay": "1h"})
        await subscribe(ws, {"job_ids": [first["id"]]})
        await enqueue(stack, {"topic": "ok"})
        async with httpx.AsyncClient(base_url=stack.base, headers=headers(ADMIN)) as http:
            assert (await http.post(f"/api/jobs/{first['id']}/cancel")).status_code == 200
        seen = await until(ws, lambda m: m.get("type") == "job.cancelled")
        assert all(m["job_id"] == first["id"] for m in seen), seen


async def test_ws_failing_job_in_another_process_emits_retrying_then_failed(stack: Stack) -> None:
    async with connect(stack.ws, additional_headers=headers(READER)) as ws:
        await subscribe(ws, {"topics": ["boom"]})
        job = await enqueue(stack, {"topic": "boom", "max_retries": 1, "retry_delay": 0, "backoff": "none"})
        seen = await until(
            ws, lambda m: m.get("job_id") == job["id"] and m["type"] == "job.failed" and m["metadata"].get("final")
        )
        # job.scheduled comes from the API server's process, the rest from the worker's:
        # across processes only the worker's own events are in order.
        if not any(m["type"] == "job.scheduled" and m["job_id"] == job["id"] for m in seen):
            await until(ws, lambda m: m.get("job_id") == job["id"] and m["type"] == "job.scheduled")
        mine = [m for m in seen if m["job_id"] == job["id"] and m["type"] != "job.scheduled"]
        types = [m["type"] for m in mine]
        assert types == [
            "job.started",
            "job.failed",
            "job.retrying",
            "job.started",
            "job.failed",
        ], types
        first_failure, retrying, final = mine[1], mine[2], mine[4]
        assert first_failure["metadata"]["final"] is False
        assert first_failure["metadata"]["retry_count"] == 0  # not retried yet
        assert first_failure["data"]["error"] and "boom 1" in first_failure["data"]["error"]
        assert retrying["metadata"]["next_retry_at"] and retrying["status"] == "pending"
        assert final["status"] == "failed" and final["metadata"]["retry_count"] == 1  # retried once
        assert final["metadata"]["max_retries"] == 1
        for m in mine:
            assert set(m) >= {"type", "job_id", "topic", "status", "timestamp", "data", "metadata"}
        assert mine[0]["metadata"]["attempt"] == 1 and mine[3]["metadata"]["attempt"] == 2


@pytest.fixture
def lone_server(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``conveyor serve`` with no token (loopback only) and its embedded worker."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "--url", f"sqlite:///{tmp_path}/x.db", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=clean_env(),
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        yield port, proc
    finally:
        stop(proc)


async def test_ws_is_closed_cleanly_when_the_server_stops(lone_server: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, proc = lone_server
    async with connect(f"ws://127.0.0.1:{port}/api/ws") as ws:
        await subscribe(ws, {})
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed):
            while True:
                await receive(ws, 20)
        assert ws.close_code in (1001, 1012)
    assert await asyncio.to_thread(proc.wait, 30) == 0


# -- slow clients (in-process server) ----------------------------------------------------


@pytest.fixture
async def small_buffer_server() -> AsyncIterator[tuple[str, AsyncConveyor]]:
    client = AsyncConveyor("memory://")
    app = create_app(client, ws_buffer=5)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"ws://127.0.0.1:{port}/api/ws", client
    finally:
        server.should_exit = True
        await task
        await client.close()


def fake_event(job_id: str, topic: str = "bulk") -> Event:
    return Event(type="job.scheduled", job_id=job_id, topic=topic, status="pending", timestamp=datetime.now(UTC))


async def test_ws_slow_client_is_disconnected_and_others_keep_receiving(
    small_buffer_server: tuple[str, AsyncConveyor],
) -> None:
    url, client = small_buffer_server
    async with connect(url) as greedy, connect(url) as calm:
        await subscribe(greedy, {})
        await subscribe(calm, {"job_ids": ["special"]})
        store = await client.connect()
        # 50 events reach the hub in one burst: more than the 5 a client may have pending.
        await store.publish([fake_event(f"j{i}") for i in range(50)] + [fake_event("special", "other")])
        with pytest.raises(ConnectionClosed):
            while True:
                await receive(greedy)
        assert greedy.close_code == 1013
        assert greedy.close_reason and "too slow" in greedy.close_reason
        got = await receive(calm)
        assert got["job_id"] == "special"
        await calm.send(json.dumps({"action": "ping"}))
        assert (await receive(calm))["type"] == "pong"


async def test_ws_events_carry_the_seed_fields(small_buffer_server: tuple[str, AsyncConveyor]) -> None:
    url, client = small_buffer_server
    async with connect(url) as ws:
        await subscribe(ws, {"event_types": ["job.scheduled"]})
        job = await client.enqueue("seeded", {"x": 1})
        event = await receive(ws)
        assert event["type"] == "job.scheduled" and event["job_id"] == job.id
        assert event["job_name"] == event["topic"] == "seeded"
        assert event["status"] == "pending"
        run_at = job.run_at.isoformat()
        assert event["data"]["run_at"] == event["metadata"]["trigger_at"] == run_at
        assert event["metadata"]["is_repeat"] is False
