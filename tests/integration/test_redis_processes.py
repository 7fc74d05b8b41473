"""Real worker processes on Redis: exactly-once across 4 processes, a worker killed
mid-job, a paused worker fenced off, and a Redis restart (AOF on) while a worker drains.

The restart test runs its OWN redis-server on a free port (the shared one on 6379 is
never restarted); it is skipped when ``redis-server`` is not installed.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from conveyor import Conveyor, JobStatus
from tests.integration.test_processes import ledger_lines, start_worker, stop, wait_until

pytestmark = pytest.mark.slow


def test_four_worker_processes_run_5000_jobs_exactly_once(redis_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    app = Conveyor(redis_url)
    n = 5000
    jobs = []
    for start in range(0, n, 1000):
        jobs += app.enqueue_many([{"topic": "ledger", "payload": i} for i in range(start, start + 1000)])
    workers = [start_worker(redis_url, ledger, "--concurrency", "10") for _ in range(4)]
    try:
        wait_until(lambda: len(ledger_lines(ledger)) >= n, timeout=180)
        wait_until(lambda: app.stats()["completed"] == n, timeout=30)
    finally:
        for w in workers:
            stop(w)
    runs = Counter(parts[1] for parts in ledger_lines(ledger))
    assert set(runs) == {j.id for j in jobs}
    assert max(runs.values()) == 1, [k for k, v in runs.items() if v > 1][:5]
    assert len({parts[2] for parts in ledger_lines(ledger)}) > 1  # the work was shared
    app.close()


def test_a_killed_worker_s_job_is_completed_by_another_after_the_lease(redis_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    app = Conveyor(redis_url)
    job = app.enqueue("slow", {"seconds": 60}, retry_delay=0)
    first = start_worker(redis_url, ledger, "--lock-duration", "1")
    wait_until(lambda: any(p[0] == "start" for p in ledger_lines(ledger)))
    stop(first, signal.SIGKILL)
    assert app.get(job.id).status is JobStatus.PROCESSING
    second = start_worker(redis_url, ledger, "--lock-duration", "1")
    try:
        wait_until(lambda: app.get(job.id).status is JobStatus.COMPLETED, timeout=30)
    finally:
        stop(second)
    final = app.get(job.id)
    assert final.attempts == 2
    assert final.result["pid"] == second.pid
    assert "worker lost" in (final.last_error or "")
    app.close()


def test_a_worker_paused_past_its_lease_cannot_overwrite_its_successor(redis_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    app = Conveyor(redis_url)
    job = app.enqueue("slow", {"seconds": 2}, retry_delay=0)
    paused = start_worker(redis_url, ledger, "--lock-duration", "1")
    wait_until(lambda: any(p[0] == "start" for p in ledger_lines(ledger)))
    paused.send_signal(signal.SIGSTOP)
    successor = start_worker(redis_url, ledger, "--lock-duration", "1")
    try:
        wait_until(lambda: app.get(job.id).status is JobStatus.COMPLETED, timeout=30)
        paused.send_signal(signal.SIGCONT)
        wait_until(lambda: any(p[0] == "done" and p[2] == str(paused.pid) for p in ledger_lines(ledger)), timeout=30)
        time.sleep(0.5)  # its late completion has been sent (and refused)
    finally:
        paused.send_signal(signal.SIGCONT)
        stop(paused)
        stop(successor)
    final = app.get(job.id)
    assert final.status is JobStatus.COMPLETED
    assert final.result == {"pid": successor.pid, "attempt": 2}
    app.close()


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
    worker = None
    try:
        app = Conveyor(url)
        n = 3000
        jobs = []
        for start in range(0, n, 500):
            jobs += app.enqueue_many([{"topic": "ledger", "payload": i} for i in range(start, start + 500)])
        app.close()
        worker = start_worker(url, ledger, "--concurrency", "10", "--lock-duration", "2")
        wait_until(lambda: len(ledger_lines(ledger)) >= n // 5, timeout=60)
        server.kill()  # a crash: nothing is flushed beyond what AOF already has
        time.sleep(1.0)
        server.start()
        app = Conveyor(url)
        wait_until(lambda: app.stats()["completed"] == n, timeout=120, interval=0.2)
        assert worker.poll() is None  # the worker rode out the outage
        runs = Counter(parts[1] for parts in ledger_lines(ledger))
        assert set(runs) == {j.id for j in jobs}
        # Only jobs in flight at the crash may have run twice (their completion was lost).
        assert sum(v - 1 for v in runs.values()) <= 50
        app.close()
    finally:
        if worker is not None:
            stop(worker)
        server.kill()
