"""Real worker processes against one store: exactly-once across processes, a worker
killed mid-job, and a paused worker that must not overwrite its successor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Conveyor, JobStatus
from tests import services

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with services.isolated_store(request.param, tmp_path) as url:
        yield url


def start_worker(url: str, ledger: Path, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["PYTHONPATH"] = str(ROOT)
    env["CONVEYOR_LOG_LEVEL"] = "WARNING"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.worker_proc", url, str(ledger), *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def ledger_lines(ledger: Path) -> list[list[str]]:
    if not ledger.exists():
        return []
    return [line.split() for line in ledger.read_text().splitlines() if line]


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def test_four_worker_processes_run_every_job_exactly_once(store_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    app = Conveyor(store_url)
    app.migrate()
    n = 2000
    jobs = app.enqueue_many([{"topic": "ledger", "payload": i} for i in range(n)])
    workers = [start_worker(store_url, ledger, "--concurrency", "10") for _ in range(4)]
    try:
        wait_until(lambda: len(ledger_lines(ledger)) >= n, timeout=120)
        wait_until(lambda: app.stats()["completed"] == n, timeout=30)
    finally:
        for w in workers:
            stop(w)
    runs = Counter(parts[1] for parts in ledger_lines(ledger))
    assert set(runs) == {j.id for j in jobs}
    assert max(runs.values()) == 1, [k for k, v in runs.items() if v > 1][:5]
    pids = {parts[2] for parts in ledger_lines(ledger)}
    assert len(pids) > 1  # the work was actually shared
    app.close()


def test_a_killed_worker_s_job_is_completed_by_another_after_the_lease(store_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    app = Conveyor(store_url)
    app.migrate()
    job = app.enqueue("slow", {"seconds": 60}, retry_delay=0)
    first = start_worker(store_url, ledger, "--lock-duration", "1")
    wait_until(lambda: any(p[0] == "start" for p in ledger_lines(ledger)))
    stop(first, signal.SIGKILL)
    assert app.get(job.id).status is JobStatus.PROCESSING  # nobody released it: the process died
    second = start_worker(store_url, ledger, "--lock-duration", "1")
    try:
        wait_until(lambda: app.get(job.id).status is JobStatus.COMPLETED, timeout=30)
    finally:
        stop(second)
    final = app.get(job.id)
    assert final.attempts == 2
    assert final.result["pid"] == second.pid
    assert "worker lost" in (final.last_error or "")
    app.close()


def test_a_paused_worker_cannot_overwrite_the_result_of_its_successor(store_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    app = Conveyor(store_url)
    app.migrate()
    job = app.enqueue("slow", {"seconds": 2}, retry_delay=0)
    paused = start_worker(store_url, ledger, "--lock-duration", "1")
    wait_until(lambda: any(p[0] == "start" for p in ledger_lines(ledger)))
    paused.send_signal(signal.SIGSTOP)
    successor = start_worker(store_url, ledger, "--lock-duration", "1")
    try:
        wait_until(lambda: app.get(job.id).status is JobStatus.COMPLETED, timeout=30)
        assert app.get(job.id).result["pid"] == successor.pid
        paused.send_signal(signal.SIGCONT)
        # The paused worker wakes, finishes its sleep and tries to store its result.
        wait_until(lambda: any(p[0] == "done" and p[2] == str(paused.pid) for p in ledger_lines(ledger)), timeout=30)
        time.sleep(0.5)
    finally:
        paused.send_signal(signal.SIGCONT)
        stop(paused)
        stop(successor)
    final = app.get(job.id)
    assert final.status is JobStatus.COMPLETED
    assert final.result == {"pid": successor.pid, "attempt": 2}
    app.close()
