"""The SQLite registry of event listeners (``ListenerRegistry`` of
``conveyor.backends.presence``): the ``event_listeners`` table of migration 0007.

Imports only ``conveyor.backends.presence`` and the SQLite backend's own helpers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from conveyor.backends.presence import now_us
from conveyor.backends.sqlite import queries as q

# The backend's ``_run(write, fn, *args)``: fn(db, *args) in a transaction when write.
Run = Callable[..., Awaitable[Any]]


def _enter(db: sqlite3.Connection, listener_id: str, expires_at: int, now: int) -> None:
    db.execute(q.FORGET_EXPIRED_LISTENERS, (now,))
    db.execute(q.LISTEN_FOR_EVENTS, (listener_id, expires_at))


class EventListeners:
    def __init__(self, run: Run) -> None:
        self._run = run

    async def enter(self, listener_id: str, ttl: float) -> None:
        now = now_us()
        await self._run(True, _enter, listener_id, now + int(ttl * 1_000_000), now)

    async def remove(self, listener_id: str) -> None:
        await self._run(True, lambda db: db.execute(q.STOP_LISTENING_FOR_EVENTS, (listener_id,)))

    async def anyone(self) -> bool:
        now = now_us()
        return bool(await self._run(False, lambda db: db.execute(q.EVENTS_HEARD, (now,)).fetchone()[0]))
