"""Fixtures for the dashboard's browser tests: a real ``conveyor serve`` subprocess on a
SQLite file (with an embedded worker running ``e2e_app``'s handlers and admin + read
tokens), and Debian's headless Chromium driven by Playwright.

Chromium is never downloaded by Playwright: it is ``/usr/bin/chromium`` (Debian's
package; ``scripts/ensure-services.sh`` installs it). Without it the tests skip, or
fail with ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "screenshots"
CHROMIUM = os.environ.get("CONVEYOR_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN_TOKEN = "e2e-admin-token"
READ_TOKEN = "e2e-read-token"
STARTUP_TIMEOUT = 60.0


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _missing(message: str) -> None:
    if _ci():
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    workdir: Path
    admin_token: str | None
    read_token: str | None

    def api(self, token: str | None = None) -> httpx.Client:
        token = token if token is not None else self.admin_token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def enqueue(self, topic: str, payload: Any = None, **options: Any) -> dict[str, Any]:
        with self.api() as http:
            response = http.post("/api/jobs", json={"topic": topic, "payload": payload, **options})
            assert response.status_code == 201, response.text
            job: dict[str, Any] = response.json()
            return job

    def job(self, job_id: str) -> dict[str, Any]:
        with self.api() as http:
            response = http.get(f"/api/jobs/{job_id}")
            assert response.status_code == 200, response.text
            job: dict[str, Any] = response.json()
            return job

    def wait_status(self, job_id: str, status: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        job = self.job(job_id)
        while job["status"] != status and time.monotonic() < deadline:
            time.sleep(0.1)
            job = self.job(job_id)
        assert job["status"] == status, f"job {job_id} is {job['status']}, expected {status}"
        return job


def start_server(workdir: Path, *, tokens: bool = True) -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["PYTHONUNBUFFERED"] = "1"
    if tokens:
        env["CONVEYOR_ADMIN_TOKEN"] = ADMIN_TOKEN
        env["CONVEYOR_READ_TOKENS"] = READ_TOKEN
    env["CONVEYOR_POLL_INTERVAL"] = "0.2"
    log = workdir / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "conveyor",
        "--url",
        f"sqlite:///{workdir / 'e2e.db'}",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--app",
        "tests.e2e.e2e_app:app",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(
        url=f"http://127.0.0.1:{port}",
        process=process,
        log=log,
        workdir=workdir,
        admin_token=ADMIN_TOKEN if tokens else None,
        read_token=READ_TOKEN if tokens else None,
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"conveyor serve exited with {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/api/health", timeout=1).status_code == 200:
                return server
        time.sleep(0.1)
    stop_server(server)
    raise RuntimeError(f"conveyor serve did not answer within {STARTUP_TIMEOUT}s:\n{log.read_text()}")


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=5)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("dashboard"))
    try:
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        _missing(f"Chromium not found at {CHROMIUM} (apt-get install chromium; scripts/ensure-services.sh does it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (empty sessionStorage) per test; page errors fail the test."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield pg
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path), full_page=True)
    return path
