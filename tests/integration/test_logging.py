"""Logging of ``conveyor worker`` and ``conveyor serve``, read from real subprocesses:
the user's handler and hook logs shown, warnings and every other line valid JSON with
``CONVEYOR_LOG_FORMAT=json``, one INFO line per job, one WARNING per store outage and
one INFO when it ends (a private Redis stopped and restarted), no asyncio noise when
``serve`` stops on SIGINT; importing conveyor configures nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor import Conveyor

REPO = Path(__file__).resolve().parents[2]

APP = textwrap.dedent(
    """
    import asyncio
    import logging
    import warnings

    from conveyor import Conveyor

    app = Conveyor()
    log = logging.getLogger("myapp.handlers")


    @app.handler("greet")
    def greet(job):
        log.info("hello from the handler %s", job.payload)
        warnings.warn("a library warning", UserWarning)
        return {"ok": True}


    @app.handler("slow")
    async def slow(job):
        await asyncio.sleep(job.payload or 0.1)


    @app.on_success
    def done(job):
        log.info("hook saw %s", job.id)
    """
)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO / "src")])
    env.update(extra)
    return env


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "logapp.py").write_text(APP)
    return tmp_path


def _start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        _out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
    return proc.returncode, err


def _json_lines(err: str) -> list[dict[str, Any]]:
    records = []
    for line in err.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line on stderr: {line!r}\n--- all of stderr:\n{err}")
    return records


def _wait(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def _done(url: str, n: int) -> bool:
    with Conveyor(url) as app:
        return int(app.stats()["completed"]) >= n


def test_worker_json_logs_show_handler_hook_and_warning_lines_one_info_per_job(app_dir: Path) -> None:
    url = f"sqlite:///{app_dir}/jobs.db"
    with Conveyor(url) as app:
        app.enqueue_many([{"topic": "greet", "payload": i} for i in range(5)])
    proc = _start(
        ["worker", "--app", "logapp:app"], _env(app_dir, CONVEYOR_URL=url, CONVEYOR_LOG_FORMAT="json"), app_dir
    )
    _wait(lambda: _done(url, 5))
    code, err = _stop(proc)
    assert code == 0, err
    records = _json_lines(err)

    handler = [r for r in records if r["logger"] == "myapp.handlers" and r["message"].startswith("hello")]
    hooks = [r for r in records if r["logger"] == "myapp.handlers" and r["message"].startswith("hook saw")]
    assert len(handler) == 5 and len(hooks) == 5
    warned = [r for r in records if r["logger"] == "py.warnings"]
    assert warned and "a library warning" in warned[0]["message"] and warned[0]["level"] == "warning"
    per_job = [r for r in records if r["logger"] == "conveyor" and r.get("job_id") and r["level"] == "info"]
    assert len(per_job) == 5, per_job  # one line per job at INFO: its completion


@pytest.mark.parametrize(
    ("args", "extra", "code", "message"),
    [
        (["worker", "--app", "logapp:app", "--concurrency", "0"], {}, 2, "Invalid value for '--concurrency'"),
        (["worker", "--app", "logapp:app", "--url", "bogus://"], {}, 2, "Invalid value for '--url'"),
        (["worker", "--app", "logapp:app"], {"CONVEYOR_WORKERS": "0"}, 1, "invalid CONVEYOR_WORKERS='0'"),
        (["serve", "--port", "99999"], {}, 2, "Invalid value for '--port'"),
    ],
)
def test_worker_and_serve_in_json_mode_write_a_bad_start_up_as_one_json_line(
    app_dir: Path, args: list[str], extra: dict[str, str], code: int, message: str
) -> None:
    env = _env(app_dir, CONVEYOR_URL=f"sqlite:///{app_dir}/jobs.db", CONVEYOR_LOG_FORMAT="json", **extra)
    result = subprocess.run(
        [sys.executable, "-m", "conveyor", *args], cwd=app_dir, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == code, result.stderr
    [record] = _json_lines(result.stderr)
    assert record["event"] == "exit" and record["level"] == "error" and message in record["message"]


def test_worker_text_logs_show_handler_lines_and_debug_adds_per_job_detail(app_dir: Path) -> None:
    url = f"sqlite:///{app_dir}/jobs.db"
    with Conveyor(url) as app:
        job = app.enqueue("greet", "x")
    env = _env(app_dir, CONVEYOR_URL=url, CONVEYOR_LOG_LEVEL="DEBUG")
    proc = _start(["worker", "--app", "logapp:app"], env, app_dir)
    _wait(lambda: _done(url, 1))
    code, err = _stop(proc)
    assert code == 0, err
    assert "INFO    myapp.handlers: hello from the handler x" in err
    assert f"DEBUG   conveyor: job {job.id} started" in err
    assert "UserWarning: a library warning" in err


def test_importing_conveyor_configures_no_logging() -> None:
    code = (
        "import logging, conveyor, conveyor.client, conveyor.api;"
        "assert logging.getLogger().handlers == [], logging.getLogger().handlers;"
        "assert logging.getLogger('conveyor').handlers == [];"
        "assert logging.getLogger().level == logging.WARNING"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_env(REPO), timeout=60)


# -- a store outage ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test's own, which it can stop and start again (the data
    survives: append-only file)."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("redis-server is not installed (scripts/ensure-services.sh installs it)")
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path / "redis")
    server.workdir.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_store_outage_logs_one_warning_and_one_reconnected_line(app_dir: Path, private_redis: PrivateRedis) -> None:
    url = private_redis.url
    with Conveyor(url) as app:
        app.enqueue_many([{"topic": "slow", "payload": 0.2} for _ in range(60)])
    env = _env(app_dir, CONVEYOR_URL=url, CONVEYOR_LOG_FORMAT="json")
    proc = _start(["worker", "--app", "logapp:app", "--concurrency", "2", "--no-scheduler"], env, app_dir)
    _wait(lambda: _done(url, 2))
    private_redis.stop()
    time.sleep(4)
    private_redis.start()
    _wait(lambda: _done(url, 60), timeout=60)
    code, err = _stop(proc)
    assert code == 0, err
    records = _json_lines(err)
    warnings_ = [r for r in records if r["level"] in ("warning", "error", "critical")]
    assert len(warnings_) == 1, warnings_
    assert warnings_[0].get("event") == "store_unreachable"
    back = [r for r in records if r.get("event") == "store_reconnected"]
    assert len(back) == 1 and back[0]["level"] == "info", records


# -- serve stopping ----------------------------------------------------------------------


def test_serve_stops_on_sigint_without_asyncio_noise_every_line_json(app_dir: Path) -> None:
    port = _free_port()
    url = f"sqlite:///{app_dir}/jobs.db"
    env = _env(app_dir, CONVEYOR_URL=url, CONVEYOR_LOG_FORMAT="json")
    proc = _start(["serve", "--port", str(port), "--app", "logapp:app"], env, app_dir)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/api/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    _wait(up)
    with httpx.Client(base_url=base, timeout=10) as http:
        for _ in range(3):
            http.post("/api/jobs", json={"topic": "slow", "payload": 0.3})
        http.post("/api/jobs", json={"topic": "greet", "payload": 1})
        http.get("/")
        assert http.get("/api/dashboard/throughput").status_code == 200
    time.sleep(0.1)  # the slow jobs are running
    code, err = _stop(proc, signal.SIGINT)
    assert code == 0, err
    records = _json_lines(err)
    text = "\n".join(r["message"] + r.get("exception", "") for r in records)
    assert "Task was destroyed" not in text
    assert "Traceback" not in text
    assert not [r for r in records if r["level"] in ("error", "critical")], records


# -- a topic no worker handles -------------------------------------------------------------


async def test_enqueue_warns_once_per_topic_no_live_worker_handles(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from conveyor.backends.base import WorkerInfo
    from conveyor.client import AsyncConveyor

    async with AsyncConveyor(f"sqlite:///{tmp_path}/t.db") as client:
        store = await client.connect()
        now = client.clock.now()
        await store.save_worker(
            WorkerInfo(id="w1", host="h", pid=1, topics=["handled"], concurrency=1, started_at=now, last_heartbeat=now)
        )
        with caplog.at_level("WARNING", logger="conveyor"):
            await client.enqueue("handled")
            await client.enqueue("orphan")
            await client.enqueue("orphan")
            await client.enqueue_many([{"topic": "orphan"}, {"topic": "other"}])
            await client.unhandled_topics.wait()
    warned = [r for r in caplog.records if getattr(r, "event", None) == "topic_without_worker"]
    assert sorted(r.topic for r in warned) == ["orphan", "other"]  # type: ignore[attr-defined]
