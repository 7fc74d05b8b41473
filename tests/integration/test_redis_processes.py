"""Real worker processes on Redis: exactly-once across 4 processes, a worker killed
mid-job, a paused worker fenced off, a Redis restart (AOF on) while a worker drains,
and a worker and ``serve`` started while Redis is down.

The restart and outage tests run their OWN redis-server on a free port (the shared one
on 6379 is never restarted); they are skipped when ``redis-server`` is not installed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conveyor import Conveyor
from tests.integration._workers import (
    Workers,
    check_exactly_once,
    check_killed_worker_recovered,
    check_paused_worker_fenced,
    enqueue_ledger_jobs,
    ledger_lines,
    runs_per_job,
    wait_until,
)

pytestmark = pytest.mark.slow


def test_four_worker_processes_run_5000_jobs_exactly_once(redis_url: str, tmp_path: Path) -> None:
    check_exactly_once(redis_url, tmp_path / "ledger.txt", 5000, timeout=180)


def test_a_killed_worker_s_job_is_completed_by_another_after_the_lease(redis_url: str, tmp_path: Path) -> None:
    check_killed_worker_recovered(redis_url, tmp_path / "ledger.txt")


def test_a_worker_paused_past_its_lease_cannot_overwrite_its_successor(redis_url: str, tmp_path: Path) -> None:
    check_paused_worker_fenced(redis_url, tmp_path / "ledger.txt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnRedis:
    """A private redis-server with AOF (fsync always), restartable on the same port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = f"--port {self.port} --bind 127.0.0.1 --appendonly yes --appendfsync always --dir {self.folder}"
        self.proc = subprocess.Popen(
            ["redis-server", *args.split(), "--save", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_every_job_completes_across_a_redis_restart(tmp_path: Path) -> None:
    server = OwnRedis(tmp_path)
    server.start()
    url = f"redis://127.0.0.1:{server.port}/0"
    ledger = tmp_path / "ledger.txt"
    try:
        app = Conveyor(url)
        n = 3000
        # Jobs whose completion the crash loses come back after their lease as a retry:
        # no backoff, so the test does not wait a minute for them.
        jobs = enqueue_ledger_jobs(app, n, batch=500, retry_delay=0)
        app.close()
        with Workers(url, ledger) as workers:
            worker = workers.start(lock=2.0)
            wait_until(lambda: len(ledger_lines(ledger)) >= n // 5, 60, "the drain to get going")
            server.kill()  # a crash: nothing is flushed beyond what AOF already has
            time.sleep(1.0)
            server.start()
            app = Conveyor(url)
            wait_until(lambda: app.stats()["completed"] == n, 120, "every job completed", interval=0.2)
            assert worker.poll() is None  # the worker rode out the outage
            runs = runs_per_job(ledger)
            assert set(runs) == {j.id for j in jobs}
            # Only jobs in flight at the crash may have run twice (their completion was lost).
            assert sum(v - 1 for v in runs.values()) <= 50
            app.close()
    finally:
        server.kill()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_a_worker_started_while_redis_is_down_runs_jobs_once_it_is_up(tmp_path: Path) -> None:
    server = OwnRedis(tmp_path)  # not started yet: nothing listens on its port
    url = f"redis://127.0.0.1:{server.port}/0"
    ledger = tmp_path / "ledger.txt"
    try:
        with Workers(url, ledger) as workers:
            worker = workers.start(lock=2.0)
            time.sleep(1.5)
            assert worker.poll() is None  # waiting for the store, not dead
            server.start()
            app = Conveyor(url)
            jobs = enqueue_ledger_jobs(app, 50, batch=50)
            wait_until(lambda: app.stats()["completed"] == 50, 60, "every job completed", interval=0.2)
            assert set(runs_per_job(ledger)) == {j.id for j in jobs}
            app.close()
    finally:
        server.kill()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_serve_started_while_redis_is_down_answers_503_then_recovers(tmp_path: Path) -> None:
    server = OwnRedis(tmp_path)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    url = f"redis://127.0.0.1:{server.port}/0"
    args = [sys.executable, "-m", "conveyor", "--url", url, "serve", "--port", str(port), "--no-worker"]
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=log, stderr=log)
    try:

        def health() -> int:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                    return int(r.status)
            except urllib.error.HTTPError as exc:
                return exc.code
            except OSError:
                return 0

        wait_until(lambda: health() == 503, 30, "health 503 while Redis is down", interval=0.2)
        assert proc.poll() is None
        server.start()
        wait_until(lambda: health() == 200, 30, "health 200 once Redis is up", interval=0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        server.kill()
