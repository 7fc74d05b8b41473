"""``conveyor serve`` start-up rules, through a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.cli.serve import is_loopback


def run_serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "conveyor", "--url", f"sqlite:///{tmp_path}/s.db", "serve", *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_refuses_a_public_interface_without_a_token(tmp_path: Path) -> None:
    result = run_serve(tmp_path, "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 1
    assert "refusing to listen on 0.0.0.0" in result.stderr and "CONVEYOR_ADMIN_TOKEN" in result.stderr


def test_serve_with_conveyor_disabled_starts_nothing(tmp_path: Path) -> None:
    result = run_serve(tmp_path, CONVEYOR_DISABLED="true")
    assert result.returncode == 0
    assert "disabled" in result.stderr


def test_serve_rejects_a_bad_environment_value_naming_it(tmp_path: Path) -> None:
    result = run_serve(tmp_path, CONVEYOR_HTTP_ENABLED="maybe")
    assert result.returncode == 1
    assert "CONVEYOR_HTTP_ENABLED" in result.stderr


def test_serve_never_prints_the_token(tmp_path: Path) -> None:
    result = run_serve(tmp_path, "--host", "0.0.0.0", CONVEYOR_ADMIN_TOKEN="top-secret-token", CONVEYOR_DISABLED="1")
    assert "top-secret-token" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
