"""The Python examples of the README and docs/ run as written: the README's quick start,
then its schedules, on a SQLite file in ``tmp_path`` (``app.run_worker()``, which blocks,
becomes start, wait, stop); every other complete block on its own."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from conveyor import Conveyor
from tests import services

REPO = Path(__file__).resolve().parents[2]

WAIT = """
import time as _time

def _wait_until_done(app, job):
    deadline = _time.monotonic() + 30
    while app.get(job.id).status.value != "completed" and _time.monotonic() < deadline:
        _time.sleep(0.05)
"""


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_readme_quick_start_and_schedules_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_URL", f"sqlite:///{tmp_path}/readme.db")
    quick_start, schedules = python_blocks(REPO / "README.md")[:2]
    assert "app.run_worker()" in quick_start
    code = WAIT + quick_start.replace("app.run_worker()", "app.start(); _wait_until_done(app, job); app.stop()")
    namespace: dict[str, Any] = {"__name__": "readme"}
    exec(compile(code + schedules, "README.md", "exec"), namespace)
    app = namespace["app"]
    try:
        done = app.get(namespace["job"].id)
        assert done.status.value == "completed" and done.result == {"sent": True, "to": "a@b.c"}
        assert {s.name for s in app.schedules()} == {"daily-report", "heartbeat"}
        assert not app.get_schedule("heartbeat").enabled
    finally:
        app.close()


def doc_blocks() -> list[tuple[str, str]]:
    """Every Python block of the README and docs/ but the README's first two (run above,
    the second continues the first) and fragments (``...`` stands for the reader's
    code; ``tests/unit/test_public_api.py`` compiles those)."""
    found = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for i, block in enumerate(python_blocks(path)):
            if (path.name == "README.md" and i < 2) or "..." in block:
                continue
            found.append((f"{path.relative_to(REPO)}#{i}", block))
    return found


@pytest.fixture
def scratch_database() -> Iterator[str]:
    """A PostgreSQL database of its own (a schema URL would not do: the docs hand the same
    URL to ``psycopg.connect``)."""
    import psycopg

    services.check_postgres()
    name = "docs_" + uuid.uuid4().hex[:12]
    with psycopg.connect(services.POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        with psycopg.connect(_database_url(name)) as conn:
            conn.execute("CREATE TABLE orders (id int PRIMARY KEY, total int)")
        yield _database_url(name)
    finally:
        with psycopg.connect(services.POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _database_url(name: str) -> str:
    base = urlsplit(services.POSTGRES_URL)
    return urlunsplit(base._replace(path=f"/{name}"))


@pytest.mark.parametrize(("where", "block"), doc_blocks(), ids=[w for w, _ in doc_blocks()])
def test_every_python_block_of_the_docs_runs_as_written(
    where: str, block: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch_database: str
) -> None:
    """Each block runs on its own, as a reader pastes it; only the store it names for
    ``localhost`` becomes a scratch database (other URLs are only parsed: no
    connection opens before first use)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONVEYOR_URL", f"sqlite:///{tmp_path}/docs.db")
    code = block.replace("postgresql://localhost/app", scratch_database)
    namespace: dict[str, Any] = {"__name__": "docs"}
    try:
        exec(compile(code, where, "exec"), namespace)
    finally:
        for value in namespace.values():
            if isinstance(value, Conveyor):
                value.close()
    clients = [v for v in namespace.values() if isinstance(v, Conveyor)]
    assert clients, f"{where} makes no client"


def readme_cli_lines() -> list[str]:
    """The ``conveyor`` commands of the README's shell blocks, comments cut."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S):
        for line in block.splitlines():
            command = line.split("  #")[0].strip()
            if command.startswith("conveyor "):
                found.append(command)
    return found


def test_the_readmes_cli_examples_run(tmp_path: Path) -> None:
    """Each one-shot command of the README, in its order, on a store holding what the
    commands name: a failed job for ``<id>`` (requeued, then updated and run now) and the
    schedule ``daily-report``. Long-running ones (``worker``) have their own tests."""
    url = f"sqlite:///{tmp_path}/cli.db"
    with Conveyor(url) as app:
        job = app.enqueue("email:send", {"to": "a@b.c"})
        app.fail(job.id, "the example's failure")
        app.schedule("daily-report", "0 9 * * *", "report")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["CONVEYOR_URL"] = url
    commands = [c for c in readme_cli_lines() if not c.startswith(("conveyor worker", "conveyor serve"))]
    assert len(commands) >= 10, commands
    for command in commands:
        argv = shlex.split(command.replace("<id>", job.id).replace("postgresql://localhost/app", url))
        done = subprocess.run(
            [sys.executable, "-m", "conveyor", *argv[1:]], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"{command}: {done.stderr}"
        assert "Traceback" not in done.stderr, f"{command}: {done.stderr}"
