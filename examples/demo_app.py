"""A demo conveyor app: a fast handler, a flaky one, a slow async one and a sync report.

Run a worker on it (the store is ``CONVEYOR_URL``, else ``./conveyor.db``)::

    conveyor worker --app examples.demo_app:app

and enqueue demo jobs from another shell with ``python -m examples.enqueue_demo``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, TypedDict

from conveyor import Conveyor, Job

app = Conveyor()
log = logging.getLogger("conveyor.demo")


class Email(TypedDict):
    to: str
    subject: str


@app.handler("email:send", timeout="30s")
def send_email(job: Job) -> dict[str, Any]:
    """Fast: pretend to send an email."""
    email = job.payload_as(Email)
    log.info("sending %r to %s", email["subject"], email["to"])
    return {"sent": True, "to": email["to"]}


@app.handler("webhook:deliver", timeout="10s", max_retries=4, retry_delay="2s", backoff="exponential")
async def deliver_webhook(job: Job) -> dict[str, Any]:
    """Flaky: fails about a third of the time; retried with backoff."""
    await asyncio.sleep(random.uniform(0.01, 0.2))
    failure_rate = float((job.payload or {}).get("failure_rate", 0.35))
    if random.random() < failure_rate:
        raise ConnectionError(f"endpoint {job.payload.get('url')} did not answer (attempt {job.attempts})")
    return {"status": 200}


@app.handler("video:transcode", timeout="2m")
async def transcode(job: Job) -> dict[str, Any]:
    """Slow: a few seconds of async work."""
    seconds = float((job.payload or {}).get("seconds", 3))
    await asyncio.sleep(seconds)
    return {"transcoded": job.payload.get("file"), "took_s": seconds}


@app.handler("report:daily", timeout="1m", priority=10)
def daily_report(job: Job) -> dict[str, Any]:
    """Sync and CPU-ish: runs in the worker's thread pool; stops early when cancelled."""
    rows = int((job.payload or {}).get("rows", 200_000))
    total = 0
    for i in range(rows):
        total += i * i
        if i % 50_000 == 0 and job.cancel_requested:
            return {"cancelled_at_row": i}
    time.sleep(0.5)
    return {"rows": rows, "checksum": total % 1_000_003}


@app.on_failure
def alert(job: Job, exc: BaseException) -> None:
    log.warning("job %s (%s) failed for good: %s", job.id, job.topic, exc)
