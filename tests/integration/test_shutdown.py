"""Stopping ``conveyor worker`` with real processes and signals: the first SIGTERM/SIGINT
drains for the shutdown timeout, a second hands running jobs back at once (counted as
handed back, not snoozed), the drain is bounded by ``--shutdown-timeout`` /
``CONVEYOR_SHUTDOWN_TIMEOUT``, and a sync handler that is still running does not keep
the process alive after "stopped"."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Conveyor, JobStatus

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]

APP = """
import asyncio, os, time
from conveyor import Conveyor

app = Conveyor(os.environ["SHUTDOWN_TEST_URL"], poll_interval=0.05)

@app.handler("sync.sleep")
def sync_sleep(job):
    open(os.environ["SHUTDOWN_TEST_MARK"], "a").write(f"started {job.id}\\n")
    time.sleep(job.payload)
    return "slept"

@app.handler("sync.poll")
def sync_poll(job):
    open(os.environ["SHUTDOWN_TEST_MARK"], "a").write(f"started {job.id}\\n")
    deadline = time.monotonic() + job.payload
    while time.monotonic() < deadline and not job.cancel_requested:
        time.sleep(0.01)
    if job.cancel_requested:
        open(os.environ["SHUTDOWN_TEST_MARK"], "a").write(f"saw cancel_requested {job.id}\\n")
    return "polled"

@app.handler("async.sleep")
async def async_sleep(job):
    open(os.environ["SHUTDOWN_TEST_MARK"], "a").write(f"started {job.id}\\n")
    await asyncio.sleep(job.payload)
    return "slept"
"""


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    (tmp_path / "shutdown_app.py").write_text(textwrap.dedent(APP))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO / "src")])  # this checkout's code
    env["SHUTDOWN_TEST_URL"] = f"sqlite:///{tmp_path}/q.db"
    env["SHUTDOWN_TEST_MARK"] = str(tmp_path / "marks.txt")
    yield env


def start(env: dict[str, str], *args: str, extra: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor", "worker", "--app", "shutdown_app:app", *args],
        env={**env, **(extra or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_started(env: dict[str, str], n: int, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    mark = Path(env["SHUTDOWN_TEST_MARK"])
    deadline = time.monotonic() + timeout
    while not (mark.exists() and len(mark.read_text().splitlines()) >= n):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the jobs did not start"
        time.sleep(0.05)


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str, float]:
    """Wait for the process; (exit code, stderr, seconds it took)."""
    began = time.monotonic()
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the worker did not exit within {timeout}s:\n{err}")
    return proc.returncode, err, time.monotonic() - began


def enqueue(env: dict[str, str], *jobs: tuple[str, float]) -> list[str]:
    with Conveyor(env["SHUTDOWN_TEST_URL"]) as app:
        return [app.enqueue(topic, seconds).id for topic, seconds in jobs]


def jobs(env: dict[str, str], ids: list[str]) -> list[tuple[JobStatus, int, str | None]]:
    with Conveyor(env["SHUTDOWN_TEST_URL"]) as app:
        return [(j.status, j.attempts, j.last_error) for j in (app.get(i) for i in ids)]


def test_a_second_signal_stops_at_once_and_hands_running_jobs_back(env: dict[str, str]) -> None:
    ids = enqueue(env, ("sync.sleep", 120), ("async.sleep", 120))
    proc = start(env)
    wait_started(env, 2, proc)
    proc.send_signal(signal.SIGTERM)
    time.sleep(1.5)
    assert proc.poll() is None  # draining: up to 30 s by default
    proc.send_signal(signal.SIGINT)
    code, err, took = finish(proc, 20)
    assert code == 0, err
    assert took < 10  # not the 120 s of the sync handler, nor the 30 s drain
    assert "send SIGTERM again to stop now" in err
    assert "received SIGINT again: stopping now, handing 2 running jobs back" in err
    assert "stopped: 0 jobs processed, 2 handed back" in err
    assert err.count("handed back (the worker stopped before it finished)") == 2
    assert "snoozed" not in err
    # A sync handler's thread cannot be killed: the process says so and exits anyway.
    assert "1 sync handler still running after the worker stopped" in err
    for status, attempts, _ in jobs(env, ids):
        assert (status, attempts) == (JobStatus.PENDING, 0)  # back in the queue, attempt not counted


@pytest.mark.parametrize("http", ["true", "false"])
def test_a_second_signal_to_serve_hands_the_embedded_workers_jobs_back(env: dict[str, str], http: str) -> None:
    ids = enqueue(env, ("async.sleep", 120))
    run_serve_and_stop_twice(env, http, handed_back=1)
    [(status, attempts, _)] = jobs(env, ids)
    assert (status, attempts) == (JobStatus.PENDING, 0)  # back in the queue, attempt not counted


def test_serve_handing_sync_jobs_back_tells_their_handlers_and_does_not_wait_for_them(env: dict[str, str]) -> None:
    """A handed-back job may run elsewhere at once: its sync handler learns it
    (``cancel_requested``), and one that does not look does not keep serve alive."""
    ids = enqueue(env, ("sync.sleep", 120), ("sync.poll", 120))
    err = run_serve_and_stop_twice(env, "true", handed_back=2)
    assert "1 sync handler still running after the worker stopped" in err
    assert f"saw cancel_requested {ids[1]}" in Path(env["SHUTDOWN_TEST_MARK"]).read_text()
    assert [(status, attempts) for status, attempts, _ in jobs(env, ids)] == [(JobStatus.PENDING, 0)] * 2


def run_serve_and_stop_twice(env: dict[str, str], http: str, *, handed_back: int) -> str:
    """``serve`` with the jobs enqueued running, then SIGTERM twice; its stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "serve", "--app", "shutdown_app:app", "--port", "0"],
        env={**env, "CONVEYOR_HTTP_ENABLED": http},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_started(env, handed_back, proc)
    proc.send_signal(signal.SIGTERM)
    time.sleep(1.5)  # the drain has begun: the worker is stopping
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    code, err, took = finish(proc, 20)
    assert code == 0, err
    assert took < 10, err  # not the 30 s drain, nor a sync handler's 120 s
    assert f"received SIGTERM again: stopping now, handing {handed_back} running jobs back" in err
    assert f"stopped: 0 jobs processed, {handed_back} handed back" in err
    return err


def test_shutdown_timeout_bounds_the_drain(env: dict[str, str]) -> None:
    [quick, slow] = enqueue(env, ("async.sleep", 0.5), ("sync.sleep", 120))
    proc = start(env, "--shutdown-timeout", "2s")
    wait_started(env, 2, proc)
    proc.send_signal(signal.SIGTERM)
    code, err, took = finish(proc, 30)
    assert code == 0, err
    assert 1.5 < took < 12
    assert "get up to 2s to finish" in err
    assert "the shutdown timeout of 2s passed; handing 1 running jobs back" in err
    assert "stopped: 1 jobs processed, 1 handed back" in err
    [(quick_status, _, _), (slow_status, slow_attempts, _)] = jobs(env, [quick, slow])
    assert quick_status is JobStatus.COMPLETED
    assert (slow_status, slow_attempts) == (JobStatus.PENDING, 0)


def test_the_shutdown_timeout_comes_from_the_environment_too(env: dict[str, str]) -> None:
    [slow] = enqueue(env, ("async.sleep", 120))
    proc = start(env, extra={"CONVEYOR_SHUTDOWN_TIMEOUT": "1"})
    wait_started(env, 1, proc)
    proc.send_signal(signal.SIGTERM)
    code, err, took = finish(proc, 30)
    assert code == 0, err
    assert took < 10 and "the shutdown timeout of 1s passed" in err
    assert jobs(env, [slow])[0][:2] == (JobStatus.PENDING, 0)


@pytest.mark.parametrize(
    ("args", "extra", "message", "exit_code"),
    [
        (("--shutdown-timeout", "soon"), {}, "'--shutdown-timeout' (shutdown_timeout): invalid duration", 2),
        (("--shutdown-timeout", "2d"), {}, "'--shutdown-timeout' (shutdown_timeout): must be at most 1d", 2),
        ((), {"CONVEYOR_SHUTDOWN_TIMEOUT": "-5"}, "CONVEYOR_SHUTDOWN_TIMEOUT", 1),
    ],
)
def test_a_bad_shutdown_timeout_stops_start_up_naming_it(
    env: dict[str, str], args: tuple[str, ...], extra: dict[str, str], message: str, exit_code: int
) -> None:
    proc = start(env, *args, extra=extra)
    code, err, _ = finish(proc, 30)
    assert code == exit_code and message in err, err  # a bad option: usage; a bad variable: failure
