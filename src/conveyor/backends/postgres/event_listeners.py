"""The PostgreSQL registry of event listeners (``ListenerRegistry`` of
``conveyor.backends.presence``): the ``event_listeners`` table of migration 0009, whose
live rows the statements that publish events check too (``events_heard()``).

Imports only this package.
"""

from __future__ import annotations

from conveyor.backends.postgres.db import Database


class EventListeners:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def enter(self, listener_id: str, ttl: float) -> None:
        await self._db.execute("listen_for_events", {"id": listener_id, "ttl": ttl})

    async def remove(self, listener_id: str) -> None:
        await self._db.execute("stop_listening_for_events", {"id": listener_id})

    async def anyone(self) -> bool:
        rows = await self._db.fetch("events_heard")
        return bool(rows[0]["heard"])
