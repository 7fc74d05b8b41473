"""Handlers for the dashboard's end-to-end tests (``conveyor serve --app tests.e2e.e2e_app:app``).

The store comes from ``--url``; nothing here runs at import but handler registration.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from conveyor import Conveyor, Job

app = Conveyor()


@app.handler("e2e:ok")
def ok(job: Job) -> dict[str, Any]:
    """Completes at once, echoing its payload."""
    return {"echo": job.payload}


@app.handler("e2e:slow")
def slow(job: Job) -> dict[str, Any]:
    """Runs for ``payload.seconds`` (default 1 s)."""
    time.sleep(float((job.payload or {}).get("seconds", 1)))
    return {"slept": True}


class FirstRunError(RuntimeError):
    pass


@app.handler("e2e:flaky")
def flaky(job: Job) -> dict[str, Any]:
    """Fails the first time it runs for a marker file (``payload.marker``), succeeds after.

    The marker survives a requeue (which resets ``attempts``), so a job that failed for
    good can be retried by hand and then completes.
    """
    marker = Path(job.payload["marker"])
    if not marker.exists():
        marker.write_text("failed once")
        raise FirstRunError(f"simulated failure on the first run (marker {marker.name})")
    return {"recovered": True}
