"""Event transport helpers: NOTIFY payload encoding and the subscriber iterator."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable
from typing import Any

from conveyor.core import codec
from conveyor.core.events import Event

# NOTIFY payloads must stay under 8000 bytes.
MAX_NOTIFY_PAYLOAD = 7900
SUBSCRIBER_QUEUE = 10_000


def encode_event(event: Event) -> bytes:
    """The event as JSON that fits a NOTIFY payload, shrunk below the 8000-byte limit if
    it must be (long values of ``data``/``metadata`` are cut, then dropped;
    ``metadata.truncated``)."""
    # orjson writes an Event (a slotted dataclass) exactly as Event.encode() does (same
    # keys in the same order, datetimes in ISO 8601), at half the cost.
    raw = codec.dumps(event) if event.__class__ is Event else event.encode()
    if len(raw) <= MAX_NOTIFY_PAYLOAD:
        return raw
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
    return raw


def encode_events(events: Iterable[Event]) -> list[str]:
    """The events packed into as few NOTIFY payloads as fit: a JSON array each. One
    pg_notify per ~30 events instead of one per event, for the server and every
    listener."""
    payloads: list[str] = []
    batch: list[bytes] = []
    size = 2
    for event in events:
        raw = encode_event(event)
        if batch and size + len(raw) + 1 > MAX_NOTIFY_PAYLOAD:
            payloads.append((b"[" + b",".join(batch) + b"]").decode())
            batch, size = [], 2
        batch.append(raw)
        size += len(raw) + 1
    if batch:
        payloads.append((b"[" + b",".join(batch) + b"]").decode())
    return payloads


def decode_events(payload: str) -> list[Event]:
    """The events of one NOTIFY payload (an array; a single object is accepted too)."""
    data = codec.loads(payload)
    items = data if isinstance(data, list) else [data]
    return [Event.from_dict(item) for item in items]


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
