"""``retry_count`` counts retries (attempts after the first), in events and job JSON."""

from __future__ import annotations

import asyncio

from conveyor import AsyncConveyor, Job
from conveyor.api.routes import job_json
from conveyor.settings import Settings


async def test_failed_and_retrying_events_count_retries_not_attempts() -> None:
    app = AsyncConveyor(settings=Settings(url="memory://", poll_interval=0.05, retry_delay=0, retention=0))

    @app.handler("boom", max_retries=1, backoff="none")
    def boom(job: Job) -> None:
        raise RuntimeError(f"boom {job.attempts}")

    events = await app.subscribe()
    try:
        job = await app.enqueue("boom")
        await app.start()
        seen: list[tuple[str, int]] = []

        async def collect() -> None:
            async for event in events:
                if event.job_id == job.id and event.type in ("job.failed", "job.retrying"):
                    seen.append((event.type, event.metadata["retry_count"]))
                    if event.metadata.get("final"):
                        return

        await asyncio.wait_for(collect(), timeout=10)
        assert seen == [("job.failed", 0), ("job.retrying", 0), ("job.failed", 1)]
        failed = await app.get(job.id)
        assert failed.attempts == 2
        assert job_json(failed, app.clock.now())["retry_count"] == 1
        assert job_json(job, app.clock.now())["retry_count"] == 0
    finally:
        await events.aclose()  # type: ignore[attr-defined]
        await app.close()
