"""A SIGKILL of the API server process loses no job it acknowledged with 201
(a real ``conveyor serve`` process on SQLite, killed while clients keep enqueuing)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conveyor.client import AsyncConveyor
from conveyor.core.errors import JobNotFound


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _producer(base: str, acknowledged: list[str], stop: threading.Event, n: int) -> None:
    with httpx.Client(base_url=base, timeout=5) as http:
        i = 0
        while not stop.is_set():
            try:
                r = http.post("/api/jobs", json={"topic": "crash", "payload": {"producer": n, "i": i}})
            except httpx.HTTPError:
                return  # the server is gone
            if r.status_code == 201:
                acknowledged.append(r.json()["id"])
            i += 1


@pytest.mark.slow
def test_sigkill_of_the_api_server_loses_no_acknowledged_job(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "--url", f"sqlite:///{db}", "serve", "--port", str(port), "--no-worker"],
        cwd=tmp_path,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            try:
                if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        acknowledged: list[str] = []
        stop = threading.Event()
        producers = [
            threading.Thread(target=_producer, args=(base, acknowledged, stop, n), daemon=True) for n in range(4)
        ]
        for t in producers:
            t.start()
        while len(acknowledged) < 300:
            assert proc.poll() is None
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # mid-stream: requests are in flight
        proc.wait(timeout=10)
        for t in producers:
            t.join(timeout=10)
        stop.set()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    async def missing() -> list[str]:
        client = AsyncConveyor(f"sqlite:///{db}")
        lost = []
        try:
            for job_id in acknowledged:
                try:
                    await client.get(job_id)
                except JobNotFound:
                    lost.append(job_id)
        finally:
            await client.close()
        return lost

    assert len(acknowledged) >= 300
    assert asyncio.run(missing()) == []
