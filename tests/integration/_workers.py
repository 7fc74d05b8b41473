"""The harness of the multi-process crash tests, shared by every backend.

Real worker processes (``tests.integration.worker_proc``) append one line per side
effect to a ledger file, so the tests count executions by what happened, not by the
status the store reports. The three ``check_*`` scenarios are the ones every store must
pass; the backend test files add only what is specific to them (server restarts, LISTEN
latency, how many jobs).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from conveyor import Conveyor, Job, JobStatus

ROOT = Path(__file__).resolve().parents[2]


def ledger_lines(ledger: Path) -> list[list[str]]:
    """The ledger's lines split into words, e.g. ``["run", job_id, pid]``."""
    if not ledger.exists():
        return []
    return [line.split() for line in ledger.read_text().splitlines() if line]


def runs_per_job(ledger: Path) -> Counter[str]:
    """How many times each job id was executed, by the ledger."""
    return Counter(parts[1] for parts in ledger_lines(ledger))


def wait_until(predicate: Callable[[], object], timeout: float, what: str, *, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def enqueue_ledger_jobs(app: Conveyor, n: int, *, batch: int = 1000, retry_delay: float | None = None) -> list[Job]:
    """``n`` jobs for the ``ledger`` handler, enqueued ``batch`` at a time."""
    options = {} if retry_delay is None else {"retry_delay": retry_delay}
    jobs: list[Job] = []
    for start in range(0, n, batch):
        jobs += app.enqueue_many(
            [{"topic": "ledger", "payload": i, **options} for i in range(start, min(start + batch, n))]
        )
    return jobs


def start_worker(
    url: str,
    ledger: Path,
    *,
    concurrency: int = 10,
    lock: float = 30.0,
    poll: float = 0.05,
    extra_env: Mapping[str, str] | None = None,
) -> subprocess.Popen[str]:
    """A worker process on ``url``, returned once it is ready to claim; ``extra_env``:
    CONVEYOR_* settings for it."""
    # The developer's CONVEYOR_* settings must not reach the worker.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])  # this checkout's code, as the test's
    env["CONVEYOR_LOG_LEVEL"] = "WARNING"
    env.update(extra_env or {})
    args = [str(ledger), "--concurrency", str(concurrency), "--lock-duration", str(lock), "--poll-interval", str(poll)]
    log = ledger.parent / "workers.log"
    # stderr goes to a file: an unread pipe would block a chatty worker once it fills up.
    with log.open("ab") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.worker_proc", url, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        stop(proc, sig=signal.SIGKILL)
        pytest.fail(f"worker did not start:\n{log.read_text()}")
    return proc


def stop(*procs: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """Send ``sig`` to every process still running and wait for all of them; one that
    outlives ``timeout`` is killed and fails the test (a worker must shut down cleanly)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(sig)
            proc.send_signal(signal.SIGCONT)  # a SIGSTOPped worker would never act on it
    late = []
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            late.append(proc.pid)
            proc.kill()
            proc.wait()
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
    assert not late, f"workers {late} did not exit within {timeout}s of signal {sig}"


class Workers:
    """The worker processes of one test: whatever happens, none outlives the ``with``
    block (a leftover worker would keep claiming from a store being torn down)."""

    def __init__(self, url: str, ledger: Path, extra_env: Mapping[str, str] | None = None) -> None:
        self.url = url
        self.ledger = ledger
        self.extra_env = extra_env
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *, concurrency: int = 10, lock: float = 30.0, poll: float = 0.05) -> subprocess.Popen[str]:
        proc = start_worker(
            self.url, self.ledger, concurrency=concurrency, lock=lock, poll=poll, extra_env=self.extra_env
        )
        self.procs.append(proc)
        return proc

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        stop(*self.procs)


def check_exactly_once(
    url: str,
    ledger: Path,
    n: int,
    *,
    timeout: float,
    poll: float = 0.05,
    extra_env: Mapping[str, str] | None = None,
    woken_within: float | None = None,
) -> None:
    """Four worker processes share ``n`` jobs and run each exactly once; ``woken_within``:
    then, idle, they run one more job within that many seconds."""
    app = Conveyor(url)
    try:
        app.migrate()
        with Workers(url, ledger, extra_env) as workers:
            for _ in range(4):
                workers.start(poll=poll)
            # All four registered before the jobs exist: on a loaded machine the first
            # process to come up could otherwise drain everything alone.
            wait_until(lambda: len(app.workers()) >= 4, 60, "4 live workers")
            jobs = enqueue_ledger_jobs(app, n)
            wait_until(lambda: len(ledger_lines(ledger)) >= n, timeout, f"{n} executions")
            wait_until(lambda: app.stats()["completed"] == n, 30, f"{n} completions")
            time.sleep(0.5)  # a duplicate would show up now
            if woken_within is not None:
                late = enqueue_ledger_jobs(app, 1)
                jobs += late
                n += 1
                wait_until(lambda: len(ledger_lines(ledger)) >= n, woken_within, "the idle workers' wake-up")
        runs = runs_per_job(ledger)
        assert set(runs) == {j.id for j in jobs}
        assert max(runs.values()) == 1, [k for k, v in runs.items() if v > 1][:5]
        assert len({parts[2] for parts in ledger_lines(ledger)}) > 1, "the work was shared between processes"
        assert app.stats()["completed"] == n
    finally:
        app.close()


def check_killed_worker_recovered(
    url: str, ledger: Path, *, poll: float = 0.05, started_within: float = 60.0, recovered_within: float = 30.0
) -> None:
    """A worker SIGKILLed mid-job leaves it PROCESSING; another worker takes it over once
    the 1s lease has expired and completes it as attempt 2."""
    app = Conveyor(url)
    try:
        app.migrate()
        job = app.enqueue("slow", {"seconds": 60}, retry_delay=0)
        with Workers(url, ledger) as workers:
            first = workers.start(lock=1.0, poll=poll)
            wait_until(lambda: any(p[0] == "start" for p in ledger_lines(ledger)), started_within, "the first attempt")
            stop(first, sig=signal.SIGKILL)
            assert app.get(job.id).status is JobStatus.PROCESSING  # nobody released it: the process died
            second = workers.start(lock=1.0, poll=poll)
            wait_until(lambda: app.get(job.id).status is JobStatus.COMPLETED, recovered_within, "the takeover")
        done = [p for p in ledger_lines(ledger) if p[0] == "done"]
        assert [(p[2], p[3]) for p in done] == [(str(second.pid), "2")]
        final = app.get(job.id)
        assert final.attempts == 2
        assert final.result["pid"] == second.pid
        assert "worker lost" in (final.last_error or "")
    finally:
        app.close()


def check_paused_worker_fenced(url: str, ledger: Path) -> None:
    """A worker SIGSTOPped past its 1s lease loses the job to a successor; once resumed,
    it finishes the job too, but its late result must not overwrite the successor's."""
    app = Conveyor(url)
    try:
        app.migrate()
        job = app.enqueue("slow", {"seconds": 2}, retry_delay=0)
        with Workers(url, ledger) as workers:
            paused = workers.start(lock=1.0)
            wait_until(lambda: any(p[0] == "start" for p in ledger_lines(ledger)), 60, "the first attempt")
            paused.send_signal(signal.SIGSTOP)
            successor = workers.start(lock=1.0)
            wait_until(lambda: app.get(job.id).status is JobStatus.COMPLETED, 30, "the successor's result")
            assert app.get(job.id).result["pid"] == successor.pid
            paused.send_signal(signal.SIGCONT)
            # The paused worker wakes, finishes its sleep and tries to store its result.
            wait_until(
                lambda: any(p[0] == "done" and p[2] == str(paused.pid) for p in ledger_lines(ledger)),
                30,
                "the paused worker to finish",
            )
            time.sleep(0.5)  # its late completion has been sent (and refused)
        final = app.get(job.id)
        assert final.status is JobStatus.COMPLETED
        assert final.result == {"pid": successor.pid, "attempt": 2}
    finally:
        app.close()


def check_leader_takeover(url: str, ledger: Path, *, lock: float = 2.0) -> None:
    """Two workers: exactly one leads maintenance. SIGKILL the leader while it holds
    jobs; the other takes the lease over within one lock duration (plus its renewal
    interval and slack for a loaded machine), recovers the dead leader's expired job
    leases and fires the next schedule instant, exactly once per instant."""
    from datetime import UTC, datetime

    from conveyor import every

    app = Conveyor(url)
    try:
        app.migrate()
        app.schedule("tick", every("1s"), "ping")
        with Workers(url, ledger) as workers:
            procs = {
                p.pid: p for p in (workers.start(concurrency=2, lock=lock), workers.start(concurrency=2, lock=lock))
            }

            def leaders() -> list[int]:
                live = app.workers()
                return [w.pid for w in live if w.leader] if {w.pid for w in live} == set(procs) else []

            wait_until(lambda: len(leaders()) == 1, 30, "one leader among the two live workers")
            # Four slow jobs fill both workers' two slots: the leader holds two of them (the
            # survivor runs them once its own two are done).
            jobs = [app.enqueue("slow", {"seconds": 8}, retry_delay=0) for _ in range(4)]
            wait_until(lambda: sum(p[0] == "start" for p in ledger_lines(ledger)) == 4, 60, "four running jobs")
            [leader_pid] = leaders()
            held = {
                j.id for j in jobs if app.get(j.id).locked_by and f":{leader_pid}:" in (app.get(j.id).locked_by or "")
            }
            assert len(held) == 2
            stop(procs[leader_pid], sig=signal.SIGKILL)
            killed_at = datetime.now(UTC)
            survivor = next(pid for pid in procs if pid != leader_pid)
            within = lock + lock / 3 + 3.0  # one lock duration, and slack: a loaded machine, the registry
            wait_until(lambda: leaders() == [survivor] or _leader_pid(app) == survivor, within + 2, "the takeover")
            # The dead leader's jobs: leases expired, recovered by the new leader, run again.
            wait_until(lambda: all(app.get(j).status is JobStatus.COMPLETED for j in held), 30, "the recovered jobs")
            for job_id in held:
                final = app.get(job_id)
                assert final.attempts == 2 and "worker lost" in (final.last_error or "")

            # The next schedule instant after the kill was fired within one lock duration.
            def fired_after_kill() -> list[Job]:
                return [
                    j for j in app.list(topic="ping", limit=100).items if j.schedule == "tick" and j.run_at > killed_at
                ]

            wait_until(lambda: fired_after_kill(), within, "a schedule instant fired by the new leader")
            first = min(fired_after_kill(), key=lambda j: j.run_at)
            assert (first.created_at - killed_at).total_seconds() <= within
            ticks = [j.run_at for j in app.list(topic="ping", limit=1000).items if j.schedule == "tick"]
            assert len(ticks) == len(set(ticks)), "an instant fired twice"
    finally:
        app.close()


def _leader_pid(app: Conveyor) -> int | None:
    return next((w.pid for w in app.workers() if w.leader), None)
