"""The ``events`` table as a transport between processes: building and appending event
rows, pruning old ones, and tailing the table by id for ``subscribe()`` iterators.
Imports only ``conveyor.core`` and the SQLite backend's own helpers."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from conveyor.backends.sqlite import queries as q
from conveyor.backends.sqlite._setup import is_busy
from conveyor.core import codec
from conveyor.core.events import Event

if TYPE_CHECKING:
    from conveyor.backends.sqlite.backend import SqliteBackend

# The backend module's logger: log records keep the name they had before the split.
log = logging.getLogger("conveyor.backends.sqlite.backend")

_SUBSCRIBER_QUEUE = 10_000
_READ_EVENTS_BATCH = 1_000
# Event rows are only a transport: keep ~10 minutes, at most this many rows.
EVENTS_KEEP_SECONDS = 600.0
EVENTS_KEEP_ROWS = 100_000
EVENTS_PRUNE_EVERY = 30.0
# Rows one prune may delete: this many, plus twice the rows its transaction appends (so
# that pruning outpaces even a writer that only ever appends).
EVENTS_PRUNE_BATCH = 2_000


def event_rows(events: Sequence[Event], wall: float | None = None) -> list[tuple[int, bytes]]:
    created = int((time.time() if wall is None else wall) * 1_000_000)
    # orjson writes an Event (a slotted dataclass) exactly as Event.encode() does
    # (the same keys in the same order, datetimes in ISO 8601) at half the cost.
    dumps = codec.dumps
    return [(created, dumps(e) if e.__class__ is Event else e.encode()) for e in events]


def write_events(db: sqlite3.Connection, rows: list[tuple[int, bytes]], pruned_at: float) -> float:
    """Append event rows in the current transaction; now and then drop old ones (the
    table is a short replay window for other processes, not a history). Returns when
    the table was last pruned: ``pruned_at``, or now if this call pruned it; a prune
    that deleted a full batch leaves the next one due at once (more may be old)."""
    db.executemany(q.PUBLISH_EVENT, rows)
    wall = time.time()
    if wall - pruned_at >= EVENTS_PRUNE_EVERY:
        batch = EVENTS_PRUNE_BATCH + 2 * len(rows)
        cutoff = int((wall - EVENTS_KEEP_SECONDS) * 1_000_000)
        deleted = db.execute(q.PRUNE_EVENTS, (cutoff, EVENTS_KEEP_ROWS, batch)).rowcount
        # A rolled-back prune just runs again next window.
        return wall - EVENTS_PRUNE_EVERY if deleted >= batch else wall
    return pruned_at


class Subscription:
    """The async iterator ``subscribe()`` returns. Registered at once (so nothing published
    after ``subscribe()`` returns is missed) and held weakly: dropping it unsubscribes."""

    __slots__ = ("__weakref__", "_backend", "_done", "position", "queue")

    def __init__(self, backend: SqliteBackend, position: int | None) -> None:
        self._backend = backend
        self.position = position
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(_SUBSCRIBER_QUEUE)
        self._done = False

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        if self._done:
            raise StopAsyncIteration
        if self.position is None:
            self.position = await self._backend._last_event_id()
        self._backend._wakeups.watch()
        event = await self.queue.get()
        if event is None:
            await self.aclose()
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        self._done = True
        self._backend._subscribers.discard(self)


def end_subscribers(subscribers: Iterable[Subscription]) -> None:
    """Put the end marker in every queue, dropping the oldest events if it is full."""
    for sub in list(subscribers):
        while sub.queue.full():
            sub.queue.get_nowait()  # make room for the end marker
        sub.queue.put_nowait(None)


def tail_events(db: sqlite3.Connection | None, subscribers: Iterable[Subscription], path: str) -> None:
    """Read the event rows past the lowest subscriber position (on the watch connection)
    and hand each one to the subscribers that have not seen it yet."""
    subs = [s for s in subscribers if s.position is not None]
    if db is None or not subs:
        return
    position = min(s.position for s in subs if s.position is not None)
    while True:
        try:
            rows = db.execute(q.READ_EVENTS, (position, _READ_EVENTS_BATCH)).fetchall()
        except sqlite3.Error as exc:
            if not is_busy(exc):
                log.warning("SQLite store %s: reading events failed: %s", path, exc)
            return
        for event_id, body in rows:
            try:
                event = Event.decode(body)
            except Exception:
                log.exception("SQLite store %s: undecodable event row %s", path, event_id)
                continue
            for sub in subs:
                if sub.position is not None and event_id > sub.position:
                    sub.position = event_id
                    if not sub.queue.full():  # a stalled subscriber loses events, never stalls us
                        sub.queue.put_nowait(event)
        if len(rows) < _READ_EVENTS_BATCH:
            return
        position = rows[-1][0]
