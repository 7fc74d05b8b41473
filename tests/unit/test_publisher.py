"""The event publisher's shutdown: what was emitted before ``close()`` is published, and
nothing runs after it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from datetime import UTC, datetime

from conveyor.backends.memory import MemoryBackend
from conveyor.core.errors import BackendUnavailable
from conveyor.core.events import Event
from conveyor.publisher import THREAD_WINDOW, EventPublisher


class RecordingBackend(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.published: list[Event] = []

    async def publish(self, events: Sequence[Event]) -> None:
        self.published += events


def an_event(n: int) -> Event:
    return Event("job.scheduled", f"job-{n}", "t", "pending", datetime.now(UTC))


def event_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "conveyor-events" and not t.done()]


async def test_events_a_thread_emitted_just_before_close_are_published_and_no_task_outlives_it() -> None:
    backend = RecordingBackend()
    publisher = EventPublisher(backend)
    loop = asyncio.get_running_loop()
    # A sync-facade caller's thread: its wake-up is due THREAD_WINDOW later, after close.
    thread = threading.Thread(target=publisher.emit_threadsafe, args=([an_event(1)], loop))
    thread.start()
    thread.join()
    await publisher.close()
    assert [e.job_id for e in backend.published] == ["job-1"]
    await asyncio.sleep(THREAD_WINDOW * 4)  # the thread's wake-up has fired by now
    assert event_tasks() == []
    publisher.emit([an_event(2)])  # ignored once closed
    assert event_tasks() == [] and len(backend.published) == 1


async def test_close_publishes_what_the_loop_emitted_and_stops_the_task() -> None:
    backend = RecordingBackend()
    publisher = EventPublisher(backend)
    publisher.emit([an_event(n) for n in range(3)])
    assert len(event_tasks()) == 1
    await publisher.close()
    assert [e.job_id for e in backend.published] == ["job-0", "job-1", "job-2"]
    assert event_tasks() == []


class DownBackend(MemoryBackend):
    async def publish(self, events: Sequence[Event]) -> None:
        raise BackendUnavailable("the store is down")


async def test_close_gives_up_after_its_timeout_while_the_store_is_down() -> None:
    publisher = EventPublisher(DownBackend())
    publisher.emit([an_event(1)])
    loop = asyncio.get_running_loop()
    started = loop.time()
    await publisher.close(timeout=0.2)
    assert 0.2 <= loop.time() - started < 2
    assert event_tasks() == []
