"""Enqueue a mix of demo jobs for ``examples.demo_app`` (some delayed, some high priority).

Usage: ``python -m examples.enqueue_demo [COUNT]`` (store: ``CONVEYOR_URL``, else ``./conveyor.db``).
"""

from __future__ import annotations

import random
import sys
from typing import Any

from examples.demo_app import app


def demo_jobs(count: int) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            jobs.append({"topic": "email:send", "payload": {"to": f"user{i}@example.com", "subject": f"Hello #{i}"}})
        elif kind == 1:
            # Retries, backoff and timeout: the handler's defaults (examples/demo_app.py).
            jobs.append({"topic": "webhook:deliver", "payload": {"url": f"https://example.com/hook/{i}"}})
        elif kind == 2:
            jobs.append(
                {
                    "topic": "video:transcode",
                    "payload": {"file": f"clip{i}.mp4", "seconds": random.uniform(2, 5)},
                    "delay": f"{random.randint(5, 30)}s",
                }
            )
        else:
            jobs.append({"topic": "report:daily", "payload": {"rows": 100_000}})
    return jobs


def main(argv: list[str]) -> None:
    count = int(argv[0]) if argv else 20
    # The app that registers the handlers: its enqueues get their defaults.
    with app:
        for spec in demo_jobs(count):
            job = app.enqueue(spec.pop("topic"), spec.pop("payload"), **spec)
            when = "now" if job.run_at <= job.created_at else f"at {job.run_at:%H:%M:%S}"
            print(f"enqueued {job.id} {job.topic:<16} run {when}")
    print(f"{count} demo jobs enqueued")


if __name__ == "__main__":
    main(sys.argv[1:])
