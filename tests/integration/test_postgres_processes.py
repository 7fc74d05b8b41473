"""Real worker processes on one PostgreSQL schema: exactly-once across processes, crash
recovery after the lease, a server restart mid-drain, and LISTEN wake-up latency."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conveyor import Conveyor
from tests import services
from tests.integration._workers import (
    Workers,
    check_exactly_once,
    check_killed_worker_recovered,
    enqueue_ledger_jobs,
    ledger_lines,
    runs_per_job,
    wait_until,
)

pytestmark = pytest.mark.slow

# Slow polling on purpose: idle workers here are woken by LISTEN/NOTIFY, not by the poll.
POLL = 1.0


def test_four_processes_run_5000_jobs_exactly_once(pg_url: str, tmp_path: Path) -> None:
    check_exactly_once(pg_url, tmp_path / "ledger", 5000, timeout=180, poll=POLL)


def test_a_killed_worker_s_job_is_completed_by_another_after_the_lease(pg_url: str, tmp_path: Path) -> None:
    check_killed_worker_recovered(pg_url, tmp_path / "ledger", poll=POLL, started_within=20, recovered_within=60)


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
        # A job whose outcome the restart loses comes back after its lease as a retry:
        # no backoff, so the waits below do not race the 60 s default.
        jobs = enqueue_ledger_jobs(app, 5000, retry_delay=0)
    finally:
        app.close()
    with Workers(pg_url, ledger) as workers:
        worker = workers.start(lock=5.0, poll=0.5)
        wait_until(lambda: len(ledger_lines(ledger)) >= 1000, 120, "the drain to get going")
        _pg_ctl("restart")
        wait_until(lambda: len({p[1] for p in ledger_lines(ledger)}) >= 5000, 240, "every job after the restart")
        time.sleep(1)
        assert worker.poll() is None, "the worker survived"
    runs = runs_per_job(ledger)
    assert set(runs) == {j.id for j in jobs}
    twice = [job_id for job_id, n in runs.items() if n > 1]
    # Only jobs in flight at the restart (at most one claim batch per free slot) may run again.
    assert len(twice) <= 20, twice
    app = Conveyor(pg_url)
    try:
        wait_until(lambda: app.stats()["by_status"]["completed"] == 5000, 60, "every job completed")
    finally:
        app.close()


def test_an_idle_worker_with_a_5s_poll_starts_a_job_from_another_process_at_once(pg_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    app = Conveyor(pg_url)
    try:
        with Workers(pg_url, ledger) as workers:
            workers.start(poll=5.0)
            time.sleep(1.0)  # idle: waiting on LISTEN, next poll seconds away
            latencies = []
            for _ in range(5):
                before = len(ledger_lines(ledger))
                t0 = time.time()
                app.enqueue("ping", None)
                wait_until(lambda: len(ledger_lines(ledger)) > before, 4.0, "the job to start")  # noqa: B023
                latencies.append(float(ledger_lines(ledger)[-1][2]) - t0)
                time.sleep(0.3)
            assert max(latencies) < 0.5, latencies
    finally:
        app.close()
