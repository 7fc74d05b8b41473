"""Real worker processes on the Redis topologies the suite starts itself: the
3-master Cluster (exactly once across processes) and a Sentinel-watched primary that
fails over while two workers drain (every job completes, none is lost, no two attempts
of one job ever run at once; the API server and a sync client carry on too)."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conveyor import Conveyor, Job
from conveyor.core.errors import BackendUnavailable
from tests import services
from tests.integration._workers import Workers, check_exactly_once, ledger_lines, wait_until

pytestmark = pytest.mark.slow


def test_four_worker_processes_run_3000_jobs_exactly_once_on_a_cluster(
    redis_cluster: services.RedisClusterService, tmp_path: Path
) -> None:
    prefix = "t" + uuid.uuid4().hex[:12]
    try:
        check_exactly_once(f"{redis_cluster.url}/?prefix={prefix}", tmp_path / "ledger.txt", 3000, timeout=180)
    finally:
        services.delete_redis_prefix(prefix, redis_cluster.url)


def overlapping_attempts(ledger: Path) -> list[str]:
    """Jobs two of whose attempts were running at the same time, by the ledger."""
    spans: dict[str, dict[tuple[str, str], list[float]]] = defaultdict(dict)
    for parts in ledger_lines(ledger):
        if parts[0] in ("begin", "end"):
            spans[parts[1]].setdefault((parts[2], parts[3]), []).append(float(parts[4]))
    bad = []
    for job_id, attempts in spans.items():
        intervals = sorted((times[0], times[-1] if len(times) > 1 else float("inf")) for times in attempts.values())
        if any(later[0] < earlier[1] for earlier, later in itertools.pairwise(intervals)):
            bad.append(job_id)
    return bad


@contextlib.contextmanager
def serving(url: str, folder: Path) -> Iterator[Callable[[], int]]:
    """``conveyor serve`` (no worker) on ``url``; yields a probe of its /api/health status."""
    port = services.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    args = [sys.executable, "-m", "conveyor", "--url", url, "serve", "--port", str(port), "--no-worker"]
    with (folder / "serve.log").open("wb") as log:
        proc = subprocess.Popen(args, cwd=folder, env=env, stdout=log, stderr=log)

    def health() -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    try:
        yield health
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def enqueue_retrying(app: Conveyor) -> Job:
    for attempt in range(20):
        try:
            return app.enqueue("span", 0.01, retry_delay=0)
        except BackendUnavailable:
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("the client never reached the new primary")


def test_a_sentinel_failover_during_a_drain_loses_no_job_and_never_runs_one_twice_at_once(
    redis_sentinel: services.RedisSentinelService, tmp_path: Path
) -> None:
    url = f"{redis_sentinel.url}?prefix=t{uuid.uuid4().hex[:12]}"
    ledger = tmp_path / "ledger.txt"
    n = 2000
    app = Conveyor(url)
    try:
        jobs = []
        for _ in range(n // 500):
            jobs += app.enqueue_many([{"topic": "span", "payload": 0.05, "retry_delay": 0}] * 500)
        # Replicated before the failover: an enqueue acknowledged by the old primary but
        # not yet copied is what asynchronous replication may lose (docs/redis.md).
        assert redis_sentinel.current_primary().command("WAIT", 1, 5000) == 1
        with Workers(url, ledger) as workers, serving(url, tmp_path) as health:
            wait_until(lambda: health() == 200, 30, "the API server up")
            workers.start(lock=3.0, concurrency=10)
            workers.start(lock=3.0, concurrency=10)
            wait_until(lambda: sum(p[0] == "end" for p in ledger_lines(ledger)) >= n // 10, 60, "the drain to start")
            old = redis_sentinel.primary_port()
            new = redis_sentinel.failover()
            assert new != old
            done_at_failover = sum(p[0] == "end" for p in ledger_lines(ledger))
            assert done_at_failover < n, "the drain ended before the failover: make it longer"
            # The sync client carries on too: a call on a connection to the old primary
            # may fail once (BackendUnavailable), the next goes to the new one.
            for _ in range(50):
                jobs.append(enqueue_retrying(app))

            def all_completed() -> bool:
                try:
                    return app.stats()["completed"] == len(jobs)
                except Exception:
                    return False  # the client too rides out the failover

            wait_until(all_completed, 120, "every job completed after the failover", interval=0.2)
            assert all(w.poll() is None for w in workers.procs)  # both workers carried on
            wait_until(lambda: health() == 200, 30, "the API server on the new primary")
        # Every process dropped its connections to the old primary when the Sentinel said so.
        assert (tmp_path / "workers.log").read_text().count("switched the primary") == 2
        assert "switched the primary" in (tmp_path / "serve.log").read_text()
        ended = {p[1] for p in ledger_lines(ledger) if p[0] == "end"}
        assert ended == {j.id for j in jobs}  # none lost
        assert overlapping_attempts(ledger) == []
    finally:
        app.close()


def test_a_sync_client_busy_through_a_sentinel_failover_reaches_the_new_primary(
    redis_sentinel: services.RedisSentinelService,
) -> None:
    """A client whose held connection is never idle (an enqueue every 20 ms): after the
    failover that connection fails on the demoted primary, and the next calls must go
    where the Sentinels say, not back to the address it had (redis-py 7.4 reconnects a
    held connection there)."""
    url = f"{redis_sentinel.url}?prefix=t{uuid.uuid4().hex[:12]}"
    app = Conveyor(url)
    outcomes: list[tuple[float, bool]] = []
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            try:
                app.enqueue("t", None)
                outcomes.append((time.monotonic(), True))
            except BackendUnavailable:
                outcomes.append((time.monotonic(), False))
            time.sleep(0.02)

    thread = threading.Thread(target=busy)
    try:
        app.enqueue("t", None)
        thread.start()
        time.sleep(0.5)
        redis_sentinel.failover()
        failed_over = time.monotonic()
        wait_until(
            lambda: sum(ok for at, ok in outcomes if at > failed_over + 1) >= 20,
            60,
            "the busy client enqueuing on the new primary",
        )
    finally:
        stop.set()
        thread.join(10)
        app.close()
