"""Real worker processes on one PostgreSQL schema: exactly-once across processes, crash
recovery after the lease, a server restart mid-drain, and LISTEN wake-up latency."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Conveyor
from tests import services

pytestmark = pytest.mark.slow

WORKER = """
    import os, sys, time
    from conveyor import Conveyor, Job

    url, ledger, poll, lock, concurrency = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    app = Conveyor(url, poll_interval=poll, lock_duration=lock, retry_delay=0, retention=0)

    def write(line):
        fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\\n").encode())
        finally:
            os.close(fd)

    @app.handler("ledger")
    def ledger_job(job: Job) -> None:
        write(f"run {job.id} {os.getpid()}")

    @app.handler("ping")
    def ping(job: Job) -> None:
        write(f"start {job.id} {time.time()}")

    @app.handler("slow")
    def slow(job: Job) -> None:
        write(f"start {job.id} {os.getpid()} {job.attempts}")
        if job.attempts == 1:
            time.sleep(float(job.payload["seconds"]))
        write(f"done {job.id} {os.getpid()} {job.attempts}")

    print("ready", flush=True)
    app.run_worker(concurrency=concurrency)
    app.close()
"""


@pytest.fixture
def pg_url() -> Iterator[str]:
    services.check_postgres()
    url, schema = services.new_postgres_url()
    yield url
    services.drop_postgres_schema(schema)


def start_worker(
    url: str, ledger: Path, *, poll: float = 1.0, lock: float = 30.0, concurrency: int = 10
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WORKER), url, str(ledger), str(poll), str(lock), str(concurrency)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def stop(*procs: subprocess.Popen[str]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if p.stdout is not None:
            p.stdout.close()


def lines(ledger: Path) -> list[list[str]]:
    if not ledger.exists():
        return []
    return [line.split() for line in ledger.read_text().splitlines() if line]


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_four_processes_run_5000_jobs_exactly_once(pg_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    app = Conveyor(pg_url)
    try:
        jobs = app.enqueue_many([{"topic": "ledger", "payload": {"i": i}} for i in range(5000)])
        workers = [start_worker(pg_url, ledger) for _ in range(4)]
        try:
            wait_for(lambda: len(lines(ledger)) >= 5000, 180, "5000 executions")
            time.sleep(0.5)  # a duplicate would show up now
        finally:
            stop(*workers)
        runs = Counter(parts[1] for parts in lines(ledger))
        assert set(runs) == {j.id for j in jobs}
        assert max(runs.values()) == 1
        assert len({parts[2] for parts in lines(ledger)}) > 1, "the work was shared between processes"
        assert app.stats()["by_status"]["completed"] == 5000
    finally:
        app.close()


def test_a_killed_worker_s_job_is_completed_by_another_after_the_lease(pg_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    app = Conveyor(pg_url)
    try:
        first = start_worker(pg_url, ledger, lock=1.0)
        job = app.enqueue("slow", {"seconds": 60}, retry_delay=0)
        wait_for(lambda: any(p[0] == "start" for p in lines(ledger)), 20, "the first attempt")
        first.send_signal(signal.SIGKILL)
        stop(first)
        second = start_worker(pg_url, ledger, lock=1.0)
        try:
            wait_for(lambda: app.get(job.id).status.value == "completed", 60, "the second worker to complete it")
        finally:
            stop(second)
        done = [p for p in lines(ledger) if p[0] == "done"]
        assert [(p[2], p[3]) for p in done] == [(str(second.pid), "2")]
        stored = app.get(job.id)
        assert stored.attempts == 2
    finally:
        app.close()


def _pg_ctl(action: str) -> None:
    versions = os.listdir("/etc/postgresql") if os.path.isdir("/etc/postgresql") else []
    if not versions or shutil.which("pg_ctlcluster") is None:
        pytest.skip("needs a local PostgreSQL cluster managed by pg_ctlcluster")
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main", action],
        check=True,
        capture_output=True,
        timeout=120,
    )


def test_a_worker_rides_out_a_postgres_restart_mid_drain(pg_url: str, tmp_path: Path) -> None:
    if not services.POSTGRES_URL.startswith(("postgresql://postgres@127.0.0.1", "postgresql://postgres@localhost")):
        pytest.skip("restarts only the local test cluster")
    ledger = tmp_path / "ledger"
    app = Conveyor(pg_url)
    try:
        jobs = app.enqueue_many([{"topic": "ledger", "payload": {"i": i}} for i in range(5000)])
    finally:
        app.close()
    worker = start_worker(pg_url, ledger, lock=5.0, poll=0.5)
    try:
        wait_for(lambda: len(lines(ledger)) >= 1000, 120, "the drain to get going")
        _pg_ctl("restart")
        wait_for(lambda: len({p[1] for p in lines(ledger)}) >= 5000, 240, "every job after the restart")
        time.sleep(1)
        assert worker.poll() is None, "the worker survived"
    finally:
        stop(worker)
    runs = Counter(p[1] for p in lines(ledger))
    assert set(runs) == {j.id for j in jobs}
    twice = [job_id for job_id, n in runs.items() if n > 1]
    # Only jobs in flight at the restart (at most one claim batch per free slot) may run again.
    assert len(twice) <= 20, twice
    app = Conveyor(pg_url)
    try:
        wait_for(lambda: app.stats()["by_status"]["completed"] == 5000, 60, "every job completed")
    finally:
        app.close()


def test_an_idle_worker_with_a_5s_poll_starts_a_job_from_another_process_at_once(pg_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    app = Conveyor(pg_url)
    worker = start_worker(pg_url, ledger, poll=5.0)
    try:
        time.sleep(1.0)  # idle: waiting on LISTEN, next poll seconds away
        latencies = []
        for _ in range(5):
            before = len(lines(ledger))
            t0 = time.time()
            app.enqueue("ping", None)
            wait_for(lambda: len(lines(ledger)) > before, 4.0, "the job to start")  # noqa: B023
            latencies.append(float(lines(ledger)[-1][2]) - t0)
            time.sleep(0.3)
        assert max(latencies) < 0.5, latencies
    finally:
        stop(worker)
        app.close()
