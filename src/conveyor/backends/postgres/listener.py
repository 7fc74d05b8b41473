"""The PostgreSQL backend's dedicated LISTEN connection: NOTIFYs on the jobs channel
wake local waiters, NOTIFYs on the events channel feed the subscribers. It reconnects
with backoff when the server goes away.

Imports only ``conveyor.core`` and this package.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from conveyor.backends.postgres import queries as q
from conveyor.backends.postgres.subscription import Subscription, decode_events

logger = logging.getLogger("conveyor.backends.postgres")

_LISTEN_CHECK_INTERVAL = 15.0
_MAX_LISTEN_BACKOFF = 5.0


class Listener:
    """``run()`` is the backend's listener task.

    Args:
        conninfo, connect_kwargs: how to connect (the pool's settings, autocommit).
        jobs_channel, events_channel: the schema's NOTIFY channels.
        listening: set while the connection listens, cleared while it is down.
        wake: wakes local waiters for jobs.
        subscriptions: the backend's live subscribers.
        closed: whether the backend is closed (then the loop ends instead of reconnecting).
    """

    def __init__(
        self,
        conninfo: str,
        connect_kwargs: Mapping[str, Any],
        *,
        jobs_channel: str,
        events_channel: str,
        listening: asyncio.Event,
        wake: Callable[[], None],
        subscriptions: weakref.WeakSet[Subscription],
        closed: Callable[[], bool],
    ) -> None:
        self._conninfo = conninfo
        self._connect_kwargs = connect_kwargs
        self._jobs_channel = jobs_channel
        self._events_channel = events_channel
        self._listening = listening
        self._wake = wake
        self._subscriptions = subscriptions
        self._closed = closed

    async def run(self) -> None:
        delay = 0.05
        while not self._closed():
            conn: psycopg.AsyncConnection[TupleRow] | None = None
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True, **self._connect_kwargs)
                await conn.execute(f"LISTEN {q.quote_ident(self._jobs_channel)}")
                await conn.execute(f"LISTEN {q.quote_ident(self._events_channel)}")
                self._listening.set()
                # Jobs may have been enqueued while nobody listened.
                self._wake()
                if delay > 0.05:
                    logger.info("LISTEN connection to PostgreSQL restored")
                delay = 0.05
                while True:
                    async for note in conn.notifies(timeout=_LISTEN_CHECK_INTERVAL):
                        self._dispatch(note.channel, note.payload)
                    await conn.execute(q.QUERIES["ping"])  # a quiet connection may be a dead one
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._listening.clear()
                if not self._closed():
                    logger.warning("LISTEN connection to PostgreSQL lost (%s); reconnecting in %.2fs", exc, delay)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            if self._closed():
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_LISTEN_BACKOFF)

    def _dispatch(self, channel: str, payload: str) -> None:
        if channel == self._jobs_channel:
            self._wake()
        elif channel == self._events_channel and self._subscriptions:
            try:
                events = decode_events(payload)
            except Exception as exc:
                logger.warning("undecodable event on %s: %s", channel, exc)
                return
            for sub in list(self._subscriptions):
                for event in events:
                    sub.offer(event)
