"""No asyncio noise when a conveyor process ends, every way it can end: ``conveyor
worker`` and ``conveyor serve`` stopped by SIGINT, SIGTERM or two signals, once running
or while still starting (the app still importing), in text and JSON log formats; the
README's ``make run`` stopped by a terminal's Ctrl-C (SIGINT to the process group);
scripts that use ``AsyncConveyor`` as a context manager, forget to close it, or forget
to close the sync ``Conveyor`` with a worker running. Each runs in a real subprocess,
and its stderr must hold no "Task was destroyed", "Event loop is closed", "coroutine
... was never awaited" or traceback (and, in JSON, only JSON lines)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from conveyor import Conveyor, JobStatus
from tests import services

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
NOISE = re.compile(
    r"Task was destroyed|Event loop is closed|was never awaited|Traceback|KeyboardInterrupt|error: interrupted"
)

APP = """
import asyncio, os, time
from pathlib import Path

marks = Path(os.environ["EXIT_TEST_MARKS"])
if os.environ.get("EXIT_TEST_SLOW_IMPORT"):
    marks.joinpath("importing").touch()
    time.sleep(float(os.environ["EXIT_TEST_SLOW_IMPORT"]))

from conveyor import Conveyor

app = Conveyor(poll_interval=0.05)

@app.handler("async.sleep")
async def async_sleep(job):
    marks.joinpath(job.id).touch()
    await asyncio.sleep(job.payload)

@app.handler("sync.sleep")
def sync_sleep(job):
    marks.joinpath(job.id).touch()
    time.sleep(job.payload)
"""


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    (tmp_path / "exit_app.py").write_text(textwrap.dedent(APP))
    (tmp_path / "marks").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO / "src")])
    env["EXIT_TEST_MARKS"] = str(tmp_path / "marks")
    env["CONVEYOR_URL"] = f"sqlite:///{tmp_path}/q.db"
    yield env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: object, proc: subprocess.Popen[str], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert proc.poll() is None, f"exited before {what}: {proc.communicate()[1]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Stderr:
    """The lines of a process's stderr, read as they come (a signal is sent once the
    previous one was acted on: two signals that arrive together count as one)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    def text(self) -> str:
        self._reader.join(timeout=10)
        return "".join(self.lines)


def finish(proc: subprocess.Popen[str], stderr: Stderr | None = None, timeout: float = 60) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"did not exit within {timeout}s:\n{stderr.text() if stderr else err}")
    return proc.returncode, stderr.text() if stderr is not None else err


def assert_quiet(err: str, *, json_lines: bool = False) -> None:
    found = NOISE.search(err)
    assert found is None, f"{found.group(0)!r} on stderr:\n{err}"
    if json_lines:
        for line in err.splitlines():
            try:
                json.loads(line)
            except ValueError:
                pytest.fail(f"not a JSON line on stderr: {line!r}\n--- all of stderr:\n{err}")


def enqueue_running(env: dict[str, str], proc: subprocess.Popen[str]) -> list[str]:
    """Two jobs (one async, one sync) that run for 3 s; returns once both started."""
    with Conveyor(env["CONVEYOR_URL"]) as app:
        ids = [app.enqueue("async.sleep", 3).id, app.enqueue("sync.sleep", 3).id]
    marks = Path(env["EXIT_TEST_MARKS"])
    wait_for(lambda: all((marks / i).exists() for i in ids), proc, "the jobs to start")
    return ids


def statuses(env: dict[str, str], ids: list[str]) -> list[JobStatus]:
    with Conveyor(env["CONVEYOR_URL"]) as app:
        return [app.get(i).status for i in ids]


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def serve_args(port: int) -> list[str]:
    return ["serve", "--app", "exit_app:app", "--port", str(port)]


def health(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


SIGNALS = {
    "sigint": [signal.SIGINT],
    "sigterm": [signal.SIGTERM],
    "sigint-twice": [signal.SIGINT, signal.SIGINT],
    "sigterm-twice": [signal.SIGTERM, signal.SIGTERM],
}


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("how", sorted(SIGNALS))
@pytest.mark.parametrize("command", ["worker", "serve"])
def test_a_running_worker_or_server_stops_on_signals_without_noise(
    env: dict[str, str], command: str, how: str, log_format: str
) -> None:
    env["CONVEYOR_LOG_FORMAT"] = log_format
    port = free_port()
    proc = start(env, *(["worker", "--app", "exit_app:app"] if command == "worker" else serve_args(port)))
    stderr = Stderr(proc)
    if command == "serve":
        wait_for(lambda: health(port), proc, "the server")
    ids = enqueue_running(env, proc)
    for n, sig in enumerate(SIGNALS[how], start=1):
        proc.send_signal(sig)
        wait_for(lambda n=n: stderr.count("received SIG") >= n, proc, f"signal {n} to reach the worker")
    code, err = finish(proc, stderr)
    assert code == 0, err
    assert_quiet(err, json_lines=log_format == "json")
    twice = len(SIGNALS[how]) > 1
    # One signal drains (the jobs complete); a second hands them back at once.
    expected = JobStatus.PENDING if twice else JobStatus.COMPLETED
    assert statuses(env, ids) == [expected, expected], err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
@pytest.mark.parametrize("command", ["worker", "serve"])
def test_a_signal_while_the_app_still_imports_stops_cleanly_once_started(
    env: dict[str, str], command: str, sig: int
) -> None:
    env["EXIT_TEST_SLOW_IMPORT"] = "1.5"
    port = free_port()
    proc = start(env, *(["worker", "--app", "exit_app:app"] if command == "worker" else serve_args(port)))
    marks = Path(env["EXIT_TEST_MARKS"])
    wait_for(lambda: (marks / "importing").exists(), proc, "the app's import")
    proc.send_signal(sig)
    code, err = finish(proc)
    assert code == 0, err
    assert_quiet(err)
    assert "stopped" in err, err


def test_make_run_stops_on_a_terminals_ctrl_c_without_noise(tmp_path: Path) -> None:
    """The README's quick start, as a terminal runs it: Ctrl-C sends SIGINT to make and
    to the server alike (one process group). ``install-run`` is taken as done
    (``-o``): this venv has what it installs."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["CONVEYOR_URL"] = f"sqlite:///{tmp_path}/demo.db"
    proc = subprocess.Popen(
        ["make", "-o", "install-run", "run", f"VENV={sys.prefix}", f"PORT={port}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for(lambda: health(port), proc, "the quick start's server")
    os.killpg(proc.pid, signal.SIGINT)
    _code, err = finish(proc)
    # make reports that it was interrupted (its own line, whatever the server did).
    ours = "\n".join(line for line in err.splitlines() if not line.startswith("make: "))
    assert_quiet(ours)
    assert "stopped" in ours, err


SCRIPT_WITH = """
import asyncio, os
from conveyor import AsyncConveyor

async def main():
    async with AsyncConveyor(os.environ["EXIT_TEST_URL"], poll_interval=0.05) as app:
        @app.handler("t")
        async def handle(job):
            return job.payload
        await app.start()
        events = await app.subscribe()  # before the enqueue: its job may finish at once
        job = await app.enqueue("t", 1)
        async for event in events:
            if event.type == "job.completed" and event.job_id == job.id:
                break

asyncio.run(main())
"""

SCRIPT_ASYNC_NO_CLOSE = """
import asyncio, os
from conveyor import AsyncConveyor

async def main():
    app = AsyncConveyor(os.environ["EXIT_TEST_URL"], poll_interval=0.05)
    @app.handler("t")
    async def handle(job):
        return job.payload
    await app.start()
    for i in range(50):
        await app.enqueue("t", i)
    await app.enqueue("unhandled.topic", 1)

asyncio.run(main())
"""

# A script that never closes its sync client, a worker running a long job at exit. The
# client is a function's local; with KEEP_CLIENT = True the script keeps it to the end,
# else it is collected long before the end.
SCRIPT_SYNC_NO_CLOSE = """
import asyncio, gc, os, threading
from conveyor import Conveyor

KEEP_CLIENT = {keep}
started = threading.Event()
kept = []

def enqueue_and_start():
    app = Conveyor(os.environ["EXIT_TEST_URL"], poll_interval=0.05)

    @app.handler("long")
    async def long(job):
        started.set()
        await asyncio.sleep(60)

    app.start()
    for i in range(50):
        app.enqueue("other", i)
    job = app.enqueue("long", None)
    assert started.wait(30)
    if KEEP_CLIENT:
        kept.append(app)
    return job.id

print(enqueue_and_start())
gc.collect()
"""


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with services.isolated_store(request.param, tmp_path) as store_url:
        yield store_url


def run_script(source: str, url: str, tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(source))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["EXIT_TEST_URL"] = url
    env["PYTHONPATH"] = str(REPO / "src")
    done = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert_quiet(done.stderr)
    return done.stdout, done.stderr


@pytest.mark.parametrize("script", ["context-manager", "async-no-close"])
def test_async_scripts_exit_without_noise(url: str, tmp_path: Path, script: str) -> None:
    run_script(SCRIPT_WITH if script == "context-manager" else SCRIPT_ASYNC_NO_CLOSE, url, tmp_path)


@pytest.mark.parametrize("script", ["kept", "dropped"])
def test_a_sync_script_that_forgets_close_hands_its_running_job_back_at_exit(
    url: str, tmp_path: Path, script: str
) -> None:
    out, err = run_script(SCRIPT_SYNC_NO_CLOSE.format(keep=script == "kept"), url, tmp_path)
    with Conveyor(url) as app:
        job = app.get(out.strip())
    # Not left ``processing`` until its lease expires: back to pending, attempt not counted.
    assert (job.status, job.attempts) == (JobStatus.PENDING, 0), err
