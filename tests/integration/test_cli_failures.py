"""Every CLI failure is exit 1 (runtime) or 2 (usage) with one clear line on stderr, and
no password reaches the output: a port in use, bad JSON (deep, huge, non-finite),
overflowing times, a bad URL; plus ``serve``'s slow-client timeouts, its log with a
PostgreSQL ``?password=``, and SQLite files created 0600 (real subprocesses)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import services


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    out.update(extra)
    return out


def conveyor(*args: str, cwd: Path, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        cwd=cwd,
        env=env(**extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr and "unexpected error" not in result.stderr, result.stderr
    return errors[0]


def test_serve_on_a_port_in_use_is_one_line_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = conveyor(
            "--url", f"sqlite:///{tmp_path}/a.db", "serve", "--port", str(port), "--no-worker", cwd=tmp_path
        )
    assert result.returncode == 1, result.stderr
    assert "already in use" in one_error_line(result)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("[" * 3000 + "]" * 3000, "invalid JSON"),
        ("9" * 5000, "invalid JSON"),
        ('{"a": NaN}', "invalid JSON"),
        ("1e400", "invalid JSON"),
        ('{"n": 18446744073709551616}', "outside the 64-bit range"),
    ],
)
def test_enqueue_with_bad_json_is_one_line(tmp_path: Path, payload: str, reason: str) -> None:
    result = conveyor("--url", f"sqlite:///{tmp_path}/a.db", "enqueue", "t", payload, cwd=tmp_path)
    assert result.returncode == 2, result.stderr  # a bad argument: usage
    line = one_error_line(result)
    assert line.startswith("error: Invalid value for '[PAYLOAD_JSON]' (payload): ") and reason in line


@pytest.mark.parametrize(
    ("option", "value", "field"),
    [("--delay", "99999999999999d", "delay"), ("--at", "9999-12-31T23:59:59-14:00", "run_at")],
)
def test_enqueue_with_an_overflowing_time_is_one_line(tmp_path: Path, option: str, value: str, field: str) -> None:
    result = conveyor("--url", f"sqlite:///{tmp_path}/a.db", "enqueue", "t", "{}", option, value, cwd=tmp_path)
    assert result.returncode in (1, 2), result.stderr
    assert field in one_error_line(result)


def test_a_bad_url_is_not_echoed_with_its_password(tmp_path: Path) -> None:
    result = conveyor("stats", cwd=tmp_path, CONVEYOR_URL="mysql://app:s3cret@db/app")
    assert result.returncode in (1, 2)
    assert "CONVEYOR_URL" in one_error_line(result)
    assert "s3cret" not in result.stderr + result.stdout


def test_sqlite_files_are_created_private(tmp_path: Path) -> None:
    result = conveyor("--url", f"sqlite:///{tmp_path}/private.db", "enqueue", "t", "{}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    files = [p for p in tmp_path.iterdir() if p.name.startswith("private.db")]
    assert files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    with services.isolated_store("postgres", tmp_path) as url:
        yield url


def test_serve_logs_no_postgres_password_and_times_out_slow_clients(tmp_path: Path, pg_url: str) -> None:
    port = free_port()
    sep = "&" if "?" in pg_url else "?"
    url = f"{pg_url}{sep}password=s3cret"
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "--url", url, "serve", "--port", str(port), "--no-worker"],
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code in (200, 503):
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        # A client that never finishes its headers is cut off (10 s), not held forever.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
            slow.sendall(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\n")
            started = time.monotonic()
            for _ in range(8):
                time.sleep(1)
                try:
                    slow.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    break
            slow.settimeout(30)
            assert slow.recv(1024) == b""  # closed by the server
            assert time.monotonic() - started < 25
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert "s3cret" not in output
    assert "password=***" in output
