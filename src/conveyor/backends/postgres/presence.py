"""This process's entry in ``event_listeners`` (migration 0009) while it has event
subscribers: the statements that publish events send them only while some entry is
live, so events cost nothing when nobody listens.

The entry is written before ``subscribe()`` returns, renewed every ``RENEW_EVERY``
seconds while subscribers remain, and removed after the last one left (at the next
renewal) or when the backend closes. A process that dies keeps it until it expires
(``ENTRY_TTL``): events go to nobody meanwhile, which costs only their sending.

Imports only ``conveyor.core`` and this package.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
import weakref

from conveyor.backends.postgres.db import Database
from conveyor.backends.postgres.subscription import Subscription
from conveyor.core.errors import BackendError

logger = logging.getLogger("conveyor.backends.postgres")

ENTRY_TTL = 60.0
RENEW_EVERY = 20.0


class Presence:
    def __init__(self, db: Database, subscriptions: weakref.WeakSet[Subscription]) -> None:
        self._db = db
        self._subscriptions = subscriptions
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._task: asyncio.Task[None] | None = None

    async def join(self) -> None:
        """Listen for events from now on (raises the store's error if it cannot)."""
        if self._task is not None and not self._task.done():
            return  # listed already, and kept listed while subscribers remain
        await self._db.execute("listen_for_events", {"id": self.id, "ttl": ENTRY_TTL})
        self._task = asyncio.get_running_loop().create_task(self._renew(), name="conveyor-pg-presence")

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY)
            try:
                if not self._subscriptions:
                    await self._db.execute("stop_listening_for_events", {"id": self.id})
                    return
                await self._db.execute("listen_for_events", {"id": self.id, "ttl": ENTRY_TTL})
            except BackendError as exc:  # the store is down: the next renewal tries again
                logger.debug("renewing the event listener entry failed: %s", exc)

    async def leave(self) -> None:
        """Stop listening (the backend closes)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(BackendError):
            await self._db.execute("stop_listening_for_events", {"id": self.id})
