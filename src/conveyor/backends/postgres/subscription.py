"""Event transport helpers: NOTIFY payload encoding and the subscriber iterator."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from conveyor.core import codec
from conveyor.core.events import Event

# NOTIFY payloads must stay under 8000 bytes.
MAX_NOTIFY_PAYLOAD = 7900
SUBSCRIBER_QUEUE = 10_000


def encode_event(event: Event) -> str:
    """The event as a NOTIFY payload, shrunk below the 8000-byte limit if it must be
    (long values of ``data``/``metadata`` are cut, then dropped; ``metadata.truncated``)."""
    raw = event.encode()
    if len(raw) <= MAX_NOTIFY_PAYLOAD:
        return raw.decode()
    d = event.to_dict()
    for section in ("data", "metadata"):
        shrunk: dict[str, Any] = {}
        for key, value in (d.get(section) or {}).items():
            if len(codec.dumps(value)) > 512:
                value = value[:500] + "… [truncated]" if isinstance(value, str) else "[truncated]"
            shrunk[key] = value
        d[section] = shrunk
    d["metadata"]["truncated"] = True
    raw = codec.dumps(d)
    if len(raw) > MAX_NOTIFY_PAYLOAD:
        d["data"] = {}
        d["metadata"] = {"truncated": True}
        raw = codec.dumps(d)
    return raw.decode()


class Subscription:
    """Async iterator of events, registered at creation (not at first ``__anext__``) so
    that events published right after ``subscribe()`` returns are not missed."""

    def __init__(self, subscriptions: weakref.WeakSet[Subscription], closed: bool) -> None:
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscriptions = subscriptions
        self._done = closed
        if not closed:
            subscriptions.add(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        if self._done and self._queue.empty():
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is None:
            self._done = True
            self._subscriptions.discard(self)
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        self._done = True
        self._subscriptions.discard(self)

    def offer(self, event: Event) -> None:
        if not self._queue.full():  # a stalled subscriber loses events rather than stalling others
            self._queue.put_nowait(event)

    def end(self) -> None:
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)
