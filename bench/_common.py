"""Shared helpers of the bench scripts: child processes, percentiles, tables.

Every measurement runs in a fresh child process (``python <script> --child ...``) that
prints one ``RESULT {json}`` line, so that one system's threads, caches and garbage
never slow down the next one's figures.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

RESULT = "RESULT "
READY = "READY"


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of ``values``."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def emit_result(**fields: Any) -> None:
    """Print the child's one result line and flush it."""
    sys.stdout.write(RESULT + json.dumps(fields) + "\n")
    sys.stdout.flush()


def emit_ready() -> None:
    sys.stdout.write(READY + "\n")
    sys.stdout.flush()


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    # A user's CONVEYOR_* settings must not change the workload.
    for key in list(env):
        if key.startswith("CONVEYOR_"):
            del env[key]
    return env


def child_command(script: str, args: Sequence[str]) -> list[str]:
    return [sys.executable, script, "--child", *args]


def parse_result(stdout: str, what: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT):
            data: dict[str, Any] = json.loads(line[len(RESULT) :])
            return data
    raise RuntimeError(f"{what}: the child printed no result")


def run_child(script: str, args: Sequence[str], *, timeout: float, what: str) -> dict[str, Any]:
    """Run a child to completion; return its result (raises with its stderr on failure)."""
    proc = subprocess.run(
        child_command(script, args), capture_output=True, text=True, timeout=timeout, env=child_env(), check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{what}: exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return parse_result(proc.stdout, what)


class Child:
    """A long-running child (a worker) that says READY, then later prints its result."""

    def __init__(self, script: str, args: Sequence[str], *, what: str) -> None:
        self.what = what
        self.proc = subprocess.Popen(
            child_command(script, args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.strip() == READY:
                return
        self.kill()
        raise RuntimeError(f"{self.what}: not ready: {self._stderr()}")

    def result(self, timeout: float) -> dict[str, Any]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"{self.what}: timed out after {timeout:.0f}s") from None
        if self.proc.returncode != 0:
            raise RuntimeError(f"{self.what}: exit {self.proc.returncode}: {err.strip()[-2000:]}")
        return parse_result(out, self.what)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _stderr(self) -> str:
        self.kill()
        assert self.proc.stderr is not None
        return self.proc.stderr.read().strip()[-2000:]


def fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def fmt_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [
        "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True))),
        "  ".join("-" * w for w in widths),
    ]
    for row in rows:
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
    return "\n".join(lines)
