"""Events nobody hears are not built (``conveyor.backends.presence``), on the stores
that keep a registry of event listeners: SQLite and PostgreSQL (``event_listeners``)
and Redis (``<prefix>:listeners``, one key in the namespace's slot on a Cluster)."""

from __future__ import annotations

import asyncio
import time

import pytest

from conveyor import AsyncConveyor
from conveyor.backends.presence import HEARD_FOR
from conveyor.core.options import JobDefaults, build_job

pytestmark = pytest.mark.parametrize("backend_url", ["sqlite", "postgres", "redis", "redis-cluster"], indirect=True)


async def until_nobody_listens(app: AsyncConveyor) -> None:
    store = app.backend
    deadline = time.monotonic() + 5
    while store.events_wanted():
        assert time.monotonic() < deadline, "the reading never found that nobody listens"
        await asyncio.sleep(0.01)


async def test_publishers_skip_building_events_while_nobody_listens(backend_url: str) -> None:
    """A publisher asks whether anyone listens before it builds events and trusts a
    "nobody" for HEARD_FOR: an enqueue then builds no job.scheduled event. A subscriber
    in another process waits that long in subscribe(), so the first enqueue after it
    returns carries its event; once that process closed, publishers find nobody again."""
    app = AsyncConveyor(backend_url)
    other = AsyncConveyor(backend_url)  # another process's subscriber
    try:
        store = await app.connect()
        assert store.events_wanted()  # not known yet: True, and a reading starts
        await until_nobody_listens(app)
        job = build_job("t", {"n": 1}, now=app.clock.now(), defaults=JobDefaults())
        assert app.events_with_insert(store, [job], None) == []  # nothing built

        started = time.monotonic()
        sub = await other.subscribe()
        assert time.monotonic() - started >= HEARD_FOR
        stored = await app.enqueue("t", {"n": 1})
        event = await asyncio.wait_for(anext(sub), 5)
        assert (event.type, event.job_id) == ("job.scheduled", stored.id)
        assert store.events_wanted()

        await other.close()  # its entry goes with it
        await until_nobody_listens(app)
    finally:
        await other.close()
        await app.close()
