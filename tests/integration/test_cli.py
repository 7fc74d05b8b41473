"""The ``conveyor`` CLI end to end: real subprocesses (``python -m conveyor``) against a
SQLite file in ``tmp_path``; exit codes, ``--json`` output, one-line error messages,
environment validation and a worker that drains on SIGTERM.

Every subprocess gets the test runner's environment minus ``CONVEYOR_*`` (plus what a
test sets on purpose).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conveyor import AsyncConveyor, Conveyor
from conveyor.core import lifecycle

REPO = Path(__file__).resolve().parents[2]
CLI_TIMEOUT = 60


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(extra or {})
    return env


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, f"exit {self.code}: {self.err}"
        return json.loads(self.out)

    def error_line(self) -> str:
        """The stderr of a failed command: exactly one ``error: ...`` line, no traceback."""
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got: {self.err!r}"
        assert lines[0].startswith("error: "), lines[0]
        return lines[0]


Run = Callable[..., Result]


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO, stdin: str | None = None) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        cwd=cwd,
        env=clean_env(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/x.db"


@pytest.fixture
def cli(url: str) -> Run:
    """Run ``conveyor --url <sqlite file> ARGS...``."""

    def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
        return run_cli("--url", url, *args, env=env, stdin=stdin)

    return run


def enqueue(cli: Run, topic: str = "email:send", payload: Any = None, *options: str) -> dict[str, Any]:
    payload = {"to": "a@example.com", "subject": "hi"} if payload is None else payload
    job: dict[str, Any] = cli("enqueue", topic, json.dumps(payload), *options, "--json").json()
    return job


def wait_for(predicate: Callable[[], bool], *, timeout: float = 90.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# -- enqueue ------------------------------------------------------------------------------


def test_enqueue_prints_the_job_as_json(cli: Run) -> None:
    result = cli(
        "enqueue",
        "report:daily",
        '{"rows": 10}',
        "--priority",
        "5",
        "--max-retries",
        "7",
        "--retry-delay",
        "30s",
        "--backoff",
        "linear",
        "--timeout",
        "1m",
        "--metadata",
        '{"owner": "ops"}',
        "--unique-key",
        "report:1",
        "--json",
    )
    job = result.json()
    assert job["topic"] == "report:daily"
    assert job["payload"] == {"rows": 10}
    assert job["status"] == "pending"
    assert job["priority"] == 5
    assert job["max_retries"] == 7
    assert job["retry_delay"] == 30
    assert job["backoff"] == "linear"
    assert job["timeout"] == 60
    assert job["metadata"] == {"owner": "ops"}
    assert job["unique_key"] == "report:1"
    assert job["attempts"] == 0


def test_enqueue_without_payload_stores_null(cli: Run) -> None:
    job = cli("enqueue", "ping", "--json").json()
    assert job["payload"] is None


def test_enqueue_reads_the_payload_from_stdin(cli: Run) -> None:
    job = cli("enqueue", "ping", "-", "--json", stdin='[1, 2, "three"]').json()
    assert job["payload"] == [1, 2, "three"]


def test_enqueue_delay_sets_run_at_in_the_future(cli: Run) -> None:
    job = enqueue(cli, "email:send", None, "--delay", "1h30m")
    created = _time(job["created_at"])
    assert abs((_time(job["run_at"]) - created) - 5400) < 1
    assert job["next_run_in"].startswith("1h29m") or job["next_run_in"].startswith("1h30m")


def test_enqueue_at_takes_an_iso_time_and_naive_means_utc(cli: Run) -> None:
    job = enqueue(cli, "email:send", None, "--at", "2030-01-02T03:04:05")
    assert job["run_at"] == "2030-01-02T03:04:05+00:00"


def test_enqueue_unique_key_returns_the_active_job(cli: Run) -> None:
    first = enqueue(cli, "email:send", None, "--unique-key", "k1")
    second = enqueue(cli, "email:send", None, "--unique-key", "k1")
    assert second["id"] == first["id"]
    assert cli("jobs", "list", "--json").json()["total"] == 1


def test_enqueue_without_json_flag_prints_the_job(cli: Run) -> None:
    result = cli("enqueue", "ping", '{"a": 1}')
    assert result.code == 0
    job = json.loads(result.out)
    assert (job["status"], job["topic"], job["payload"]) == ("pending", "ping", {"a": 1})
    assert cli("jobs", "get", job["id"], "--json").json()["payload"] == {"a": 1}


# -- jobs get / list / cancel / requeue / delete --------------------------------------------


def test_jobs_get_returns_the_enqueued_job(cli: Run) -> None:
    job = enqueue(cli)
    got = cli("jobs", "get", job["id"], "--json").json()
    assert got["id"] == job["id"]
    assert got["payload"] == job["payload"]
    assert got["status"] == "pending"


def test_jobs_get_without_json_prints_a_summary(cli: Run) -> None:
    job = enqueue(cli)
    result = cli("jobs", "get", job["id"])
    assert result.code == 0
    assert "id:" in result.out and job["id"] in result.out
    assert "status:" in result.out and "pending" in result.out
    assert "email:send" in result.out


def test_jobs_get_unknown_id_exits_1(cli: Run) -> None:
    result = cli("jobs", "get", "no-such-job", "--json")
    assert result.code == 1
    assert result.out == ""
    assert result.error_line() == "error: job no-such-job not found"


def test_jobs_list_filters_by_status_and_topic_with_total(cli: Run) -> None:
    a = enqueue(cli, "email:send")
    enqueue(cli, "email:send")
    enqueue(cli, "report:daily", {"rows": 1})
    assert cli("jobs", "cancel", a["id"]).code == 0

    page = cli("jobs", "list", "--json").json()
    assert page["total"] == 3
    assert len(page["items"]) == 3

    pending_email = cli("jobs", "list", "--status", "pending", "--topic", "email:send", "--json").json()
    assert pending_email["total"] == 1
    assert [j["topic"] for j in pending_email["items"]] == ["email:send"]

    cancelled = cli("jobs", "list", "--status", "cancelled", "--json").json()
    assert [j["id"] for j in cancelled["items"]] == [a["id"]]


def test_jobs_list_pages_with_limit_and_offset(cli: Run) -> None:
    ids = {enqueue(cli)["id"] for _ in range(3)}
    first = cli("jobs", "list", "--limit", "2", "--json").json()
    second = cli("jobs", "list", "--limit", "2", "--offset", "2", "--json").json()
    assert (first["total"], first["limit"], first["offset"]) == (3, 2, 0)
    assert len(first["items"]) == 2 and len(second["items"]) == 1
    assert {j["id"] for j in first["items"] + second["items"]} == ids


def test_jobs_list_pages_with_after_and_before(cli: Run) -> None:
    ids = [enqueue(cli)["id"] for _ in range(3)][::-1]
    first = cli("jobs", "list", "--limit", "2", "--json").json()
    assert [j["id"] for j in first["items"]] == ids[:2] and first["next"] == ids[1]
    older = cli("jobs", "list", "--limit", "2", "--after", first["next"], "--json").json()
    assert [j["id"] for j in older["items"]] == ids[2:] and older["next"] is None and older["prev"] == ids[2]
    newer = cli("jobs", "list", "--limit", "2", "--before", older["prev"], "--json").json()
    assert [j["id"] for j in newer["items"]] == ids[:2]
    text = cli("jobs", "list", "--limit", "1", "--after", ids[0])
    assert text.out.splitlines()[-1] == f"1 job of 3; older: --after {ids[1]}; newer: --before {ids[1]}"
    both = cli("jobs", "list", "--after", ids[0], "--before", ids[2])
    assert both.code == 2 and both.error_line().startswith("error: Invalid value for '--before': ")


def test_jobs_list_without_json_prints_a_table(cli: Run) -> None:
    job = enqueue(cli)
    result = cli("jobs", "list")
    assert result.code == 0
    header, row, *rest = result.out.splitlines()
    assert header.split()[:3] == ["ID", "TOPIC", "STATUS"]
    assert row.split()[:3] == [job["id"], "email:send", "pending"]
    assert rest[-1] == "jobs 1-1 of 1"


def test_jobs_list_bad_limit_exits_2_naming_the_option(cli: Run) -> None:
    result = cli("jobs", "list", "--limit", "0")
    assert result.code == 2
    assert result.error_line().startswith("error: Invalid value for '--limit': must be between 1 and 100")


def test_jobs_cancel_a_pending_job(cli: Run) -> None:
    job = enqueue(cli)
    cancelled = cli("jobs", "cancel", job["id"], "--json").json()
    assert cancelled["status"] == "cancelled"
    assert cli("jobs", "get", job["id"], "--json").json()["status"] == "cancelled"


def test_jobs_cancel_twice_exits_1_with_invalid_state(cli: Run) -> None:
    job = enqueue(cli)
    assert cli("jobs", "cancel", job["id"]).code == 0
    result = cli("jobs", "cancel", job["id"])
    assert result.code == 1
    assert result.error_line() == f"error: cannot cancel job {job['id']}: it is cancelled"


def test_jobs_cancel_unknown_id_exits_1(cli: Run) -> None:
    result = cli("jobs", "cancel", "nope")
    assert result.code == 1
    assert result.error_line() == "error: job nope not found"


def test_jobs_requeue_a_cancelled_job_makes_it_pending(cli: Run) -> None:
    job = enqueue(cli, "email:send", None, "--delay", "1h")
    cli("jobs", "cancel", job["id"])
    requeued = cli("jobs", "requeue", job["id"], "--json").json()
    assert requeued["status"] == "pending"
    assert requeued["attempts"] == 0
    assert _time(requeued["run_at"]) < _time(job["run_at"])


def test_jobs_requeue_a_pending_job_exits_1(cli: Run) -> None:
    job = enqueue(cli)
    result = cli("jobs", "requeue", job["id"])
    assert result.code == 1
    assert result.error_line() == f"error: cannot requeue job {job['id']}: it is pending"


def test_jobs_retry_is_an_alias_of_requeue(cli: Run) -> None:
    job = enqueue(cli)
    cli("jobs", "cancel", job["id"])
    assert cli("jobs", "retry", job["id"], "--json").json()["status"] == "pending"


def test_jobs_delete_removes_the_job(cli: Run) -> None:
    job = enqueue(cli)
    assert cli("jobs", "delete", job["id"], "--json").json() == {"id": job["id"], "deleted": True}
    assert cli("jobs", "get", job["id"]).code == 1
    assert cli("jobs", "list", "--json").json()["total"] == 0


def test_jobs_delete_unknown_id_exits_1(cli: Run) -> None:
    result = cli("jobs", "delete", "nope")
    assert result.code == 1
    assert result.error_line() == "error: job nope not found"


# -- stats, migrate -----------------------------------------------------------------------


def test_stats_counts_jobs_per_status_and_topic(cli: Run) -> None:
    a = enqueue(cli, "email:send")
    enqueue(cli, "email:send")
    enqueue(cli, "report:daily", {"rows": 1})
    cli("jobs", "cancel", a["id"])
    stats = cli("stats", "--json").json()
    assert stats["by_status"]["pending"] == 2
    assert stats["by_status"]["cancelled"] == 1
    assert stats["total"] == 3
    assert stats["by_topic"]["email:send"]["pending"] == 1
    assert stats["by_topic"]["report:daily"]["pending"] == 1
    assert stats["workers"] == 0


def test_stats_without_json_prints_a_summary(cli: Run) -> None:
    enqueue(cli)
    result = cli("stats")
    assert result.code == 0
    assert "pending     1" in result.out
    assert "email:send" in result.out


def test_migrate_exits_0_and_is_idempotent(cli: Run) -> None:
    first = cli("migrate", "--json").json()
    second = cli("migrate", "--json").json()
    assert first["applied"] >= 0
    assert second["applied"] == 0
    assert cli("migrate").code == 0


# -- usage errors (exit 2) ------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["jobs", "list", "--bogus"],
        ["enqueue"],
        ["jobs", "get"],
        ["no-such-command"],
        ["enqueue", "t", "--priority", "high"],
        ["jobs", "list", "--status", "sleeping"],
        ["worker"],
        ["worker", "--app", "examples.demo_app:app", "--concurrency", "0"],
    ],
)
def test_bad_usage_exits_2(cli: Run, args: list[str]) -> None:
    result = cli(*args)
    assert result.code == 2, result.err
    # One line, with where to find help (not click's usage block).
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert result.err.startswith("error: ") and "--help'" in result.err


@pytest.mark.parametrize("args", [[], ["jobs"], ["schedules"]])
def test_a_bare_group_prints_its_help(args: list[str]) -> None:
    result = run_cli(*args)
    text = result.out + result.err
    assert result.code == 2 and "Usage: conveyor" in text and "Commands:" in text
    assert "error:" not in text


def test_help_exits_0() -> None:
    result = run_cli("--help")
    assert result.code == 0
    for command in ("worker", "enqueue", "jobs", "stats", "migrate"):
        assert command in result.out


# -- bad input (exit 2, usage: one line naming the option or argument as typed) ------------------------------------------


def test_enqueue_bad_topic_names_the_field(cli: Run) -> None:
    result = cli("enqueue", "a b", "{}")
    assert result.code == 2
    assert result.error_line() == (
        "error: Invalid value for 'TOPIC': invalid topic 'a b': only letters, digits and _ . : - are allowed "
        "(see 'conveyor enqueue --help')"
    )


def test_enqueue_oversize_payload_is_rejected(cli: Run) -> None:
    result = cli("enqueue", "t", json.dumps({"blob": "x" * 200}), env={"CONVEYOR_MAX_PAYLOAD_SIZE": "100"})
    assert result.code == 2
    assert result.error_line().startswith(
        "error: Invalid value for '[PAYLOAD_JSON]' (payload): encoded size 211 bytes exceeds the limit of 100 bytes"
    )


def test_enqueue_bad_duration_names_the_option(cli: Run) -> None:
    result = cli("enqueue", "t", "{}", "--delay", "5x")
    assert result.code == 2
    assert result.error_line().startswith("error: Invalid value for '--delay': invalid duration '5x'")


def test_enqueue_bad_retry_delay_names_the_option(cli: Run) -> None:
    result = cli("enqueue", "t", "{}", "--retry-delay", "soon")
    assert result.code == 2
    assert result.error_line().startswith(
        "error: Invalid value for '--retry-delay' (retry_delay): invalid duration 'soon'"
    )


def test_enqueue_bad_json_payload_is_rejected(cli: Run) -> None:
    result = cli("enqueue", "t", "{not json")
    assert result.code == 2
    assert result.error_line().startswith("error: Invalid value for '[PAYLOAD_JSON]' (payload): invalid JSON (")


def test_enqueue_metadata_must_be_an_object(cli: Run) -> None:
    result = cli("enqueue", "t", "{}", "--metadata", "[1]")
    assert result.code == 2
    assert result.error_line().startswith("error: Invalid value for '--metadata': expected an object, got list")


def test_enqueue_delay_and_at_together_are_rejected(cli: Run) -> None:
    result = cli("enqueue", "t", "{}", "--delay", "1m", "--at", "2030-01-01T00:00:00Z")
    assert result.code == 2
    assert "mutually exclusive" in result.error_line()


def test_enqueue_bad_time_is_rejected(cli: Run) -> None:
    result = cli("enqueue", "t", "{}", "--at", "tomorrow")
    assert result.code == 2
    assert result.error_line().startswith(
        "error: Invalid value for '--at' / '--run-at' (run_at): invalid ISO 8601 time 'tomorrow'"
    )


def test_rejected_enqueue_stores_nothing(cli: Run) -> None:
    cli("enqueue", "a b", "{}")
    cli("enqueue", "t", "{}", "--delay", "5x")
    assert cli("jobs", "list", "--json").json()["total"] == 0


# -- environment -------------------------------------------------------------------------


BAD_ENV = [
    ("CONVEYOR_WORKERS", "abc", "error: invalid CONVEYOR_WORKERS='abc': expected an integer"),
    ("CONVEYOR_POLL_INTERVAL", "-1s", "error: invalid CONVEYOR_POLL_INTERVAL='-1s': "),
    ("CONVEYOR_URL", "ftp://x", "error: invalid CONVEYOR_URL='ftp://x': expected memory://"),
    ("CONVEYOR_LOG_FORMAT", "xml", "error: invalid CONVEYOR_LOG_FORMAT='xml': expected one of text, json"),
]


@pytest.mark.parametrize(("variable", "value", "message"), BAD_ENV)
def test_bad_environment_value_stops_with_the_variable_named(cli: Run, variable: str, value: str, message: str) -> None:
    result = cli("stats", env={variable: value})
    assert result.code == 1
    assert result.error_line().startswith(message)


@pytest.mark.parametrize(
    "command",
    [
        ["enqueue", "t", "{}"],
        ["jobs", "list"],
        ["jobs", "cancel", "some-id"],
        ["migrate"],
        ["worker", "--app", "examples.demo_app:app"],
    ],
)
def test_every_store_command_validates_the_environment_first(cli: Run, command: list[str]) -> None:
    result = cli(*command, env={"CONVEYOR_WORKERS": "abc"})
    assert result.code == 1
    assert result.error_line() == "error: invalid CONVEYOR_WORKERS='abc': expected an integer"


def test_conveyor_url_is_used_without_url_flag(url: str) -> None:
    env = {"CONVEYOR_URL": url}
    job = run_cli("enqueue", "t", "{}", "--json", env=env).json()
    assert run_cli("jobs", "get", job["id"], "--json", env=env).json()["id"] == job["id"]


def test_url_flag_wins_over_conveyor_url(cli: Run, tmp_path: Path) -> None:
    other = f"sqlite:///{tmp_path}/other.db"
    job = cli("enqueue", "t", "{}", "--json", env={"CONVEYOR_URL": other}).json()
    assert cli("jobs", "get", job["id"], "--json").json()["id"] == job["id"]
    assert run_cli("jobs", "get", job["id"], env={"CONVEYOR_URL": other}).code == 1


def test_unreachable_store_exits_1_with_one_line(tmp_path: Path) -> None:
    result = run_cli("--url", f"sqlite:///{tmp_path}/missing/dir/x.db", "stats")
    assert result.code == 1
    result.error_line()


# -- worker -------------------------------------------------------------------------------


@pytest.fixture
def start_worker(url: str, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        log = (tmp_path / f"worker{len(procs)}.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "--url", url, "worker", *args],
            cwd=cwd,
            env=clean_env({"CONVEYOR_POLL_INTERVAL": "100ms", **(env or {})}),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        log.close()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _log(tmp_path: Path, index: int = 0) -> str:
    return (tmp_path / f"worker{index}.log").read_text()


def seed_emails(url: str, n: int) -> None:
    """Enqueue ``n`` demo emails through the Python API (faster than n CLI processes)."""
    with Conveyor(url) as app:
        app.enqueue_many(
            [{"topic": "email:send", "payload": {"to": f"u{i}@example.com", "subject": "hi"}} for i in range(n)]
        )


def _count(cli: Run, status: str) -> int:
    total: int = cli("jobs", "list", "--status", status, "--json").json()["total"]
    return total


def test_worker_processes_jobs_and_exits_cleanly_on_sigterm(
    cli: Run, start_worker: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    ids = [enqueue(cli, "email:send", {"to": f"u{i}@example.com", "subject": "hi"})["id"] for i in range(5)]
    worker = start_worker("--app", "examples.demo_app:app", "--concurrency", "4")
    wait_for(lambda: _count(cli, "completed") == 5, what="5 completed jobs")
    done = cli("jobs", "list", "--status", "completed", "--json").json()["items"]
    assert sorted(j["id"] for j in done) == sorted(ids)
    assert all(j["result"]["sent"] is True and j["attempts"] == 1 for j in done)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, _log(tmp_path)
    assert "Traceback" not in _log(tmp_path)


def test_worker_drains_a_running_job_on_sigterm(
    cli: Run, start_worker: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    job = enqueue(cli, "video:transcode", {"file": "a.mp4", "seconds": 3})
    # A job's start is logged at DEBUG.
    worker = start_worker("--app", "examples.demo_app:app", env={"CONVEYOR_LOG_LEVEL": "DEBUG"})
    # The worker's own log says when the job started (polling through the CLI may miss it).
    wait_for(lambda: f"job {job['id']} started" in _log(tmp_path), what="the job to start")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, _log(tmp_path)
    done = cli("jobs", "get", job["id"], "--json").json()
    assert done["status"] == "completed"
    assert done["result"]["transcoded"] == "a.mp4"


def test_worker_only_claims_the_topics_asked_for(
    cli: Run, start_worker: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    email = enqueue(cli, "email:send")
    report = enqueue(cli, "report:daily", {"rows": 10})
    worker = start_worker("--app", "examples.demo_app:app", "--topics", "report:daily")
    wait_for(lambda: cli("jobs", "get", report["id"], "--json").json()["status"] == "completed", what="the report")
    assert cli("jobs", "get", email["id"], "--json").json()["status"] == "pending"
    worker.send_signal(signal.SIGINT)
    assert worker.wait(30) == 0, _log(tmp_path)


def test_worker_with_several_processes_shares_the_work(
    url: str, cli: Run, start_worker: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    seed_emails(url, 20)
    worker = start_worker("--app", "examples.demo_app:app", "--processes", "2", "--concurrency", "2")
    wait_for(lambda: _count(cli, "completed") == 20, what="20 completed jobs")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, _log(tmp_path)
    log = _log(tmp_path)
    assert log.count("started: topics=") == 2
    assert log.count(" stopped: ") == 2


def test_worker_processes_stop_when_their_supervisor_is_killed(
    start_worker: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    worker = start_worker("--app", "examples.demo_app:app", "--processes", "2")
    wait_for(lambda: _log(tmp_path).count("started: topics=") == 2, what="2 worker processes")
    children = [
        int(p) for p in subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True).stdout.split()
    ]
    assert len(children) == 2
    worker.kill()
    worker.wait(10)

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # a zombie until reaped by init counts as gone
            return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
        except FileNotFoundError:
            return True

    wait_for(lambda: all(gone(pid) for pid in children), what="the orphaned workers to stop")


def test_worker_url_flag_wins_over_the_apps_own_url(
    cli: Run, start_worker: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    # The app module lives in the current directory, which the worker puts on sys.path.
    project = tmp_path / "project"
    project.mkdir()
    (project / "myapp.py").write_text(
        textwrap.dedent(
            f"""
            from conveyor import Conveyor

            app = Conveyor("sqlite:///{tmp_path}/app-own.db")

            @app.handler("double")
            def double(job):
                return job.payload * 2
            """
        )
    )
    job = enqueue(cli, "double", 21)
    worker = start_worker("--app", "myapp:app", cwd=project)
    wait_for(lambda: cli("jobs", "get", job["id"], "--json").json()["status"] == "completed", what="the job")
    assert cli("jobs", "get", job["id"], "--json").json()["result"] == 42
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, _log(tmp_path)


def test_worker_runs_an_async_app(cli: Run, start_worker: Callable[..., subprocess.Popen[str]], tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "async_app.py").write_text(
        textwrap.dedent(
            """
            import asyncio

            from conveyor import AsyncConveyor

            app = AsyncConveyor()

            @app.handler("greet")
            async def greet(job):
                await asyncio.sleep(0.01)
                return f"hello {job.payload}"
            """
        )
    )
    job = enqueue(cli, "greet", "world")
    worker = start_worker("--app", "async_app:app", cwd=project)
    wait_for(lambda: cli("jobs", "get", job["id"], "--json").json()["status"] == "completed", what="the job")
    assert cli("jobs", "get", job["id"], "--json").json()["result"] == "hello world"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, _log(tmp_path)


def test_worker_logs_json_lines_when_asked(
    cli: Run, start_worker: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    job = enqueue(cli)
    worker = start_worker("--app", "examples.demo_app:app", env={"CONVEYOR_LOG_FORMAT": "json"})
    wait_for(lambda: f'"job_id":"{job["id"]}"' in _log(tmp_path) and "completed" in _log(tmp_path), what="the job")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, _log(tmp_path)
    entries = [json.loads(line) for line in _log(tmp_path).splitlines()]
    events = {(e.get("event"), e.get("job_id")) for e in entries}
    assert ("completed", job["id"]) in events
    assert ("started", job["id"]) not in events  # a job's start is logged at DEBUG
    assert all(e["level"] in ("debug", "info", "warning", "error") for e in entries)


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("no_such_module:app", "error: app: cannot import module 'no_such_module': no module named 'no_such_module'"),
        ("examples.demo_app:missing", "error: app: module 'examples.demo_app' has no attribute 'missing'"),
        ("examples.demo_app:log", "error: app: examples.demo_app:log is a Logger, not a Conveyor or AsyncConveyor app"),
    ],
)
def test_worker_bad_app_exits_1(cli: Run, app: str, message: str) -> None:
    result = cli("worker", "--app", app)
    assert result.code == 1
    assert result.error_line() == message


def test_worker_topic_without_handler_exits_2(cli: Run) -> None:
    result = cli("worker", "--app", "examples.demo_app:app", "--topics", "nobody:handles")
    assert result.code == 2
    assert (
        result.err.strip()
        .splitlines()[-1]
        .startswith("error: Invalid value for '--topics': no handler is registered for topic 'nobody:handles'")
    )


def test_worker_bad_poll_interval_exits_2(cli: Run) -> None:
    result = cli("worker", "--app", "examples.demo_app:app", "--poll-interval", "fast")
    assert result.code == 2
    assert result.error_line().startswith(
        "error: Invalid value for '--poll-interval' (poll_interval): invalid duration 'fast'"
    )


def _time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# -- schedules -----------------------------------------------------------------------


def test_schedules_add_list_next_disable_enable_remove(cli: Run) -> None:
    added = cli(
        "schedules", "add", "nightly", "0 3 * * *", "report:daily", '{"kind": "full"}', "--tz", "Europe/Paris", "--json"
    ).json()
    assert (added["name"], added["cron"], added["topic"], added["timezone"]) == (
        "nightly",
        "0 3 * * *",
        "report:daily",
        "Europe/Paris",
    )
    assert added["payload"] == {"kind": "full"} and added["enabled"] is True
    listed = cli("schedules", "list", "--json").json()
    assert [s["name"] for s in listed["items"]] == ["nightly"] and listed["total"] == 1
    upcoming = cli("schedules", "next", "nightly", "-n", "3", "--json").json()
    assert len(upcoming["next_runs"]) == 3
    assert cli("schedules", "disable", "nightly", "--json").json()["enabled"] is False
    assert cli("schedules", "next", "nightly", "--json").json()["next_runs"] == []
    assert cli("schedules", "enable", "nightly", "--json").json()["enabled"] is True
    assert cli("schedules", "remove", "nightly", "--json").json() == {"name": "nightly", "removed": True}
    assert cli("schedules", "list", "--json").json()["total"] == 0


def test_schedules_add_reads_the_payload_from_stdin(cli: Run) -> None:
    added = cli("schedules", "add", "s", "@every 10s", "t", "-", "--json", stdin='{"a": 1}').json()
    assert added["payload"] == {"a": 1}


def test_schedules_add_rejects_bad_input_naming_the_field(cli: Run) -> None:
    bad_cron = cli("schedules", "add", "s", "61 * * * *", "t")
    assert bad_cron.code == 2 and bad_cron.error_line().startswith("error: Invalid value for 'CRON': ")
    bad_tz = cli("schedules", "add", "s", "* * * * *", "t", "--tz", "Mars/Olympus")
    assert bad_tz.code == 2 and bad_tz.error_line().startswith(
        "error: Invalid value for '--timezone' / '--tz' (timezone):"
    )
    nan = cli("schedules", "add", "s", "* * * * *", "t", '{"x": NaN}')
    assert nan.code == 2 and nan.error_line().startswith(
        "error: Invalid value for '[PAYLOAD_JSON]' (payload): invalid JSON ("
    )
    assert cli("schedules", "list", "--json").json()["total"] == 0  # nothing stored by a refused add


def test_schedules_on_an_unknown_name_fail(cli: Run) -> None:
    result = cli("schedules", "remove", "nope")
    assert result.code != 0
    assert "nope" in result.error_line()


def test_workers_lists_live_workers_and_marks_the_maintenance_leader(
    cli: Run, start_worker: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    assert cli("workers").out.strip() == "no live workers"
    first = start_worker("--app", "examples.demo_app:app")
    second = start_worker("--app", "examples.demo_app:app", "--no-scheduler")

    def listed() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = cli("workers", "--json").json()
        return rows

    wait_for(lambda: len(listed()) == 2 and any(w["leader"] for w in listed()), what="two workers, one leading")
    rows = {w["pid"]: w for w in listed()}
    # --no-scheduler workers never stand for the maintenance leader.
    assert rows[first.pid]["leader"] is True and rows[second.pid]["leader"] is False
    assert {"id", "host", "pid", "topics", "concurrency", "active_jobs", "last_heartbeat"} <= set(rows[first.pid])
    text = cli("workers").out
    assert "LEADER" in text.splitlines()[0]
    [leader_line] = [line for line in text.splitlines() if line.rstrip().endswith("yes")]
    assert str(first.pid) in leader_line


def test_enqueue_takes_max_snoozes_and_show_lists_failed_attempts(cli: Run, url: str) -> None:
    job = enqueue(cli, "t", {"n": 1}, "--max-snoozes", "4", "--max-retries", "0")
    assert (job["max_snoozes"], job["snoozes"], job["errors"]) == (4, 0, [])

    async def fail_once() -> None:
        async with AsyncConveyor(url) as app:
            now = datetime.now(UTC)
            [running] = await app.backend.claim(worker_id="w-cli", topics=["t"], limit=1, now=now, locked_until=now)
            await app.backend.finish([lifecycle.failed(running, "w-cli", "boom\nTraceback ...", now)], now=now)

    asyncio.run(fail_once())
    shown = cli("jobs", "get", job["id"])
    assert shown.code == 0, shown.err
    assert "errors (1 failed attempts kept, oldest first):" in shown.out
    assert "attempt 1 at" in shown.out and "on w-cli: boom" in shown.out
    bad = cli("enqueue", "t", "--max-snoozes", "-1")
    assert bad.code != 0 and "max_snoozes" in bad.err


WORKER_POOL = [sys.executable, "-m", "conveyor"]


def test_ctrl_c_to_a_process_pool_drains_its_running_jobs(url: str, cli: Run, tmp_path: Path) -> None:
    # A terminal's Ctrl-C sends SIGINT to the whole foreground process group: the
    # supervisor forwards it once to its children, who must see one signal (a drain),
    # not two (stop now, handing the job back).
    job = enqueue(cli, "video:transcode", {"file": "a.mp4", "seconds": 3})
    log_path = tmp_path / "pool.log"
    with log_path.open("w") as log:
        pool = subprocess.Popen(
            [*WORKER_POOL, "--url", url, "worker", "--app", "examples.demo_app:app", "--processes", "2"],
            cwd=REPO,
            env=clean_env({"CONVEYOR_POLL_INTERVAL": "100ms", "CONVEYOR_LOG_LEVEL": "DEBUG"}),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a shell job
        )
    try:
        wait_for(lambda: f"job {job['id']} started" in log_path.read_text(), what="the job to start")
        wait_for(lambda: log_path.read_text().count("started: topics=") == 2, what="both worker processes")
        os.killpg(pool.pid, signal.SIGINT)
        assert pool.wait(60) == 0, log_path.read_text()
    finally:
        if pool.poll() is None:
            os.killpg(pool.pid, signal.SIGKILL)
            pool.wait(10)
    done = cli("jobs", "get", job["id"], "--json").json()
    assert done["status"] == "completed", log_path.read_text()
    assert "stopping now" not in log_path.read_text()
