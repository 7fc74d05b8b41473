"""Who listens for job events, so that events cost nothing when nobody listens: this
process's entry in its store's registry of event listeners while it has subscribers,
and publishers' cached reading of that registry. One implementation for every store
that other processes share; each supplies the registry itself (``ListenerRegistry``: a
table on SQLite and PostgreSQL, a sorted set on Redis).

The entry is written before ``subscribe()`` returns, renewed every ``RENEW_EVERY``
seconds while subscribers remain, and removed after the last one left (at the next
renewal) or when the backend closes. A process that dies keeps it until it expires
(``ENTRY_TTL``): events go to nobody meanwhile, which costs only their sending.

Publishers ask too, before they build events (``heard``): building and encoding them
costs a client more than sending them costs the server (bench/README.md, "What
changed the PostgreSQL figures"). An answer is trusted for ``HEARD_FOR`` seconds from
when it was asked, and a new entry waits that long before ``join`` returns, so that no
publisher still trusts a "nobody" read before the entry existed. A busy publisher asks
again before its answer runs out, in the background: at most one reading per half
``HEARD_FOR``, whether anyone listens or not, and no gap in which a "nobody" has run
out and events are built for nobody until the next answer comes.

Imports only ``conveyor.core``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Sized
from typing import Protocol

from conveyor.core.errors import BackendError

logger = logging.getLogger("conveyor.backends")

ENTRY_TTL = 60.0
RENEW_EVERY = 20.0
# How long "nobody listens" is trusted: the wait of a new listener, and at most one
# reading per this many seconds per publishing process while nobody listens.
HEARD_FOR = 0.25


def now_us() -> int:
    """This process's clock in microseconds since the epoch: the expiry of the entries
    of registries that store it (SQLite, Redis; PostgreSQL uses the server's)."""
    return time.time_ns() // 1000


class ListenerRegistry(Protocol):
    """A store's registry of the processes that listen for events (conveyor's errors only)."""

    async def enter(self, listener_id: str, ttl: float) -> None:
        """Add or renew ``listener_id``'s entry, live for ``ttl`` seconds."""

    async def remove(self, listener_id: str) -> None:
        """Remove ``listener_id``'s entry."""

    async def anyone(self) -> bool:
        """Whether some entry is live."""


class Presence:
    """Args:
    registry: the store's registry of listeners.
    subscriptions: this process's subscriptions to the store's events (its entry is
        kept while there are some).
    """

    def __init__(self, registry: ListenerRegistry, subscriptions: Sized) -> None:
        self._registry = registry
        self._subscriptions = subscriptions
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._task: asyncio.Task[None] | None = None
        # heard(): the last reading's answer (someone may listen) and until when it is
        # trusted (monotonic time); one tuple, replaced whole, for callers' threads.
        self._answer: tuple[bool, float] = (True, 0.0)
        self._reading = False
        self._reader: asyncio.Task[None] | None = None

    async def join(self) -> None:
        """Listen for events from now on (raises the store's error if it cannot)."""
        if self._task is not None and not self._task.done():
            return  # listed already, and kept listed while subscribers remain
        await self._registry.enter(self.id, ENTRY_TTL)
        self._task = asyncio.get_running_loop().create_task(self._renew(), name="conveyor-presence")
        # Until then a publisher may still trust a "nobody" read before our entry.
        await asyncio.sleep(HEARD_FOR)

    def heard(self, loop: asyncio.AbstractEventLoop | None) -> bool:
        """Whether some process may listen for events (``Backend.events_wanted``): True
        while this process has subscribers; else the answer of a reading younger than
        HEARD_FOR, or True when there is none. A new reading starts on ``loop`` once
        the answer is older than half HEARD_FOR. Callable from any thread."""
        if len(self._subscriptions):
            return True
        anyone, until = self._answer
        now = time.monotonic()
        if now >= until - HEARD_FOR / 2:
            self._read_on(loop)
        return anyone if now < until else True

    def _read_on(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Start a reading on ``loop`` unless one is under way."""
        if not self._reading and loop is not None and not loop.is_closed():
            self._reading = True
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                self._start_reading()
            else:
                with contextlib.suppress(RuntimeError):  # closed meanwhile
                    loop.call_soon_threadsafe(self._start_reading)

    def _start_reading(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="conveyor-events-heard")

    async def _read(self) -> None:
        asked = time.monotonic()  # before the store reads: the answer is at least this fresh
        try:
            self._answer = (await self._registry.anyone(), asked + HEARD_FOR)
        except BackendError as exc:  # unknown: the last answer runs out, then events are built
            logger.debug("reading the event listener entries failed: %s", exc)
        finally:
            self._reading = False

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY)
            try:
                if not len(self._subscriptions):
                    await self._registry.remove(self.id)
                    return
                await self._registry.enter(self.id, ENTRY_TTL)
            except BackendError as exc:  # the store is down: the next renewal tries again
                logger.debug("renewing the event listener entry failed: %s", exc)

    async def leave(self) -> None:
        """Stop listening and asking (the backend closes)."""
        reader, self._reader = self._reader, None
        if reader is not None and not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(BackendError):
            await self._registry.remove(self.id)
