"""The README's Python examples run as written (the quick start, then its schedules), on a
SQLite file in ``tmp_path``; ``app.run_worker()`` (it blocks) becomes start, wait, stop."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

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
