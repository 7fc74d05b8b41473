"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis):
valid and invalid requests to every operation of a real ``conveyor serve`` process on
SQLite. No response may be a 5xx, and every response must match the schema (status
code, content type and body)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

TOKEN = "fuzz-admin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["CONVEYOR_ADMIN_TOKEN"] = TOKEN
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "--url", f"sqlite:///{tmp}/fuzz.db", "serve", "--port", str(port)],
        cwd=tmp,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, "server exited"
            try:
                if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        # Some data for the read endpoints to return.
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for body in ({"topic": "fuzz", "payload": {"n": 1}}, {"name": "later", "delay": "1h"}):
            assert httpx.post(f"{base}/api/jobs", json=body, headers=auth).status_code == 201
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def api_schema(server: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{server}/api/openapi.json")


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


# schemathesis' own pytest plugin does not support this pytest yet: drive each operation's
# hypothesis strategy directly (valid and invalid requests alike).
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_never_answers_5xx_and_matches_its_schema(
    api_schema: schemathesis.BaseSchema, mode: GenerationMode
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    operations = [result.ok() for result in api_schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 20
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(headers=headers, timeout=30, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:
            # No invalid request exists for this operation (e.g. no parameters, no body).
            assert mode is GenerationMode.NEGATIVE
