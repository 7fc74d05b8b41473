"""WebSocket ``/api/ws``: live job events (docs/api.md).

One ``EventHub`` per app holds ONE subscription to ``client.events()`` (the backend's
cross-process channel: events from any worker, API server or client on the store) and
fans every event out to per-connection buffers. The hub never awaits a client: it only
appends to a bounded buffer. A client whose buffer (``buffer_size`` messages, default
1000) overflows because it does not read fast enough is disconnected with close code
1013 ("try again later") and a reason; its undelivered events are dropped. Other
clients and the server are never slowed down by it.

Protocol (client → server, JSON text frames):
``{"action": "auth", "token": "..."}`` (when no ``Authorization`` header was sent; must
be the first message, within 10 s), ``{"action": "subscribe", "filter": {"topics": [...],
"event_types": [...], "job_ids": [...]}}`` (``job_types`` is accepted for ``topics``; a
missing or empty list matches everything; no events are sent before a subscribe),
``{"action": "unsubscribe"}``, ``{"action": "ping"}`` → ``{"type": "pong"}``,
``{"action": "get_stats"}`` → ``{"type": "stats", "data": {...}}``. Errors are
``{"type": "error", "error": {"code", "message"}}``; an authentication failure closes
the connection with code 1008 (a later ``auth`` with a bad token too); a binary frame
closes it with code 1003 and a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, WebSocket

from conveyor.api.auth import READERS, Authenticator, bearer_token
from conveyor.client import AsyncConveyor
from conveyor.core import codec
from conveyor.core.errors import ConveyorError
from conveyor.core.events import EVENT_TYPES, Event

logger = logging.getLogger("conveyor.api")

AUTH_TIMEOUT = 10.0
DEFAULT_BUFFER = 1000
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003
MAX_FILTER_ITEMS = 10_000

router = APIRouter()


@dataclass(frozen=True, slots=True)
class EventFilter:
    topics: frozenset[str] = frozenset()
    event_types: frozenset[str] = frozenset()
    job_ids: frozenset[str] = frozenset()

    def matches(self, event: Event) -> bool:
        return (
            (not self.topics or event.topic in self.topics)
            and (not self.event_types or event.type in self.event_types)
            and (not self.job_ids or event.job_id in self.job_ids)
        )

    def to_dict(self) -> dict[str, list[str]]:
        return {
            "topics": sorted(self.topics),
            "event_types": sorted(self.event_types),
            "job_ids": sorted(self.job_ids),
        }


class FilterError(ValueError):
    pass


def parse_filter(raw: object) -> EventFilter:
    """A subscribe message's ``filter``; raises FilterError naming the bad key."""
    if raw is None:
        return EventFilter()
    if not isinstance(raw, dict):
        raise FilterError("filter: expected an object")

    def strings(key: str) -> frozenset[str]:
        value = raw.get(key)
        if value is None:
            return frozenset()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise FilterError(f"filter.{key}: expected a list of strings")
        if len(value) > MAX_FILTER_ITEMS:
            raise FilterError(f"filter.{key}: at most {MAX_FILTER_ITEMS} items")
        return frozenset(value)

    unknown = sorted(set(raw) - {"topics", "job_types", "event_types", "job_ids"})
    if unknown:
        raise FilterError(f"filter.{unknown[0]}: unknown key (use topics, event_types, job_ids)")
    event_types = strings("event_types")
    bad = sorted(event_types - EVENT_TYPES)
    if bad:
        raise FilterError(f"filter.event_types: unknown event type {bad[0]!r}; known: {', '.join(sorted(EVENT_TYPES))}")
    return EventFilter(
        topics=strings("topics") | strings("job_types"), event_types=event_types, job_ids=strings("job_ids")
    )


class Subscriber:
    """One connection's bounded outgoing buffer (events and replies, in order)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.filter: EventFilter | None = None  # None: not subscribed yet
        self._items: deque[str] = deque()
        self._wake = asyncio.Event()
        self.ended = asyncio.Event()
        self.close_code = 1000
        self.close_reason = ""

    def push(self, text: str) -> None:
        if self.ended.is_set():
            return
        if len(self._items) >= self.limit:
            self._items.clear()
            self.end(CLOSE_TRY_AGAIN, f"client too slow: more than {self.limit} undelivered messages")
            return
        self._items.append(text)
        self._wake.set()

    def offer(self, event: Event, text: str) -> None:
        if self.filter is not None and self.filter.matches(event):
            self.push(text)

    def end(self, code: int, reason: str) -> None:
        if not self.ended.is_set():
            self.close_code, self.close_reason = code, reason
            self.ended.set()
            self._wake.set()

    async def next(self) -> str | None:
        """The next message to send, or None once the connection is ending."""
        while not self._items:
            if self.ended.is_set():
                return None
            self._wake.clear()
            await self._wake.wait()
        return self._items.popleft()


def event_json(event: Event) -> str:
    body = event.to_dict()
    body["job_name"] = event.topic  # the original API's name for the topic
    return codec.dumps_str(body)


class EventHub:
    """One ``client.events()`` subscription per app, fanned out to every connection and
    to in-process listeners (the metrics)."""

    def __init__(self, client: AsyncConveyor, *, buffer_size: int = DEFAULT_BUFFER) -> None:
        self.client = client
        self.buffer_size = buffer_size
        self.listeners: list[Callable[[Event], None]] = []
        self._subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def subscribers(self) -> Iterable[Subscriber]:
        return tuple(self._subscribers)

    async def start(self) -> None:
        """Subscribe now (so no event after start-up is missed), then follow in a task."""
        if self._task is not None and not self._task.done():
            return
        stream: AsyncIterator[Event] | None = None
        try:
            stream = await self.client.subscribe()
        except (ConveyorError, OSError) as exc:
            self.client.outage.failed("event subscription", exc)
        self._task = asyncio.get_running_loop().create_task(self._run(stream), name="conveyor-api-events")

    def add(self, sub: Subscriber) -> None:
        self._subscribers.add(sub)

    def remove(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    def dispatch(self, event: Event) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("event listener failed on %s of job %s", event.type, event.job_id)
        if self._subscribers:
            text = event_json(event)
            for sub in tuple(self._subscribers):
                sub.offer(event, text)

    async def _run(self, stream: AsyncIterator[Event] | None) -> None:
        delay = 0.1
        while True:
            try:
                if stream is None:
                    stream = await self.client.subscribe()
                try:
                    async for event in stream:
                        self.dispatch(event)
                        delay = 0.1
                        self.client.outage.ok()
                finally:
                    await stream.aclose()  # type: ignore[attr-defined]
                    stream = None
                return
            except asyncio.CancelledError:
                raise
            except (ConveyorError, OSError) as exc:
                self.client.outage.failed("event subscription", exc, retry_in=delay)
            except Exception:
                logger.exception("event subscription failed; retrying in %.1fs", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def close(self) -> None:
        for sub in tuple(self._subscribers):
            sub.end(CLOSE_GOING_AWAY, "server shutting down")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _error(code: str, message: str) -> str:
    return codec.dumps_str({"type": "error", "error": {"code": code, "message": message}})


@router.websocket("/api/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    hub: EventHub = websocket.app.state.hub
    auth: Authenticator = websocket.app.state.auth
    await hub.start()
    await websocket.accept()
    authed = not auth.enabled
    header = websocket.headers.get("authorization")
    if auth.enabled and header is not None:
        role = auth.role_of(bearer_token(header))
        if role is None or role not in READERS:
            reason = "invalid token" if role is None else f"the {role.value} role may not subscribe"
            await websocket.send_text(_error("unauthorized" if role is None else "forbidden", reason))
            await websocket.close(CLOSE_POLICY, reason)
            return
        authed = True
    sub = Subscriber(hub.buffer_size)
    hub.add(sub)
    sender = asyncio.ensure_future(_send_loop(websocket, sub))
    receiver = asyncio.ensure_future(_receive_loop(websocket, sub, hub, auth, authed))
    ended = asyncio.ensure_future(sub.ended.wait())
    try:
        await asyncio.wait({sender, receiver, ended}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hub.remove(sub)
        for task in (sender, receiver, ended):
            task.cancel()
        for task in (sender, receiver, ended):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if sub.ended.is_set() and not receiver_disconnected(receiver):
        if sub.close_code != 1000:
            logger.warning("closing a WebSocket client: %s", sub.close_reason)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(websocket.close(sub.close_code, sub.close_reason), 2.0)


def receiver_disconnected(task: asyncio.Future[Any]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None and task.result() == "disconnected"


async def _send_loop(websocket: WebSocket, sub: Subscriber) -> None:
    while True:
        text = await sub.next()
        if text is None:
            return
        await websocket.send_text(text)


async def _receive_loop(websocket: WebSocket, sub: Subscriber, hub: EventHub, auth: Authenticator, authed: bool) -> str:
    while True:
        try:
            if authed:
                frame = await websocket.receive()
            else:
                frame = await asyncio.wait_for(websocket.receive(), AUTH_TIMEOUT)
        except TimeoutError:
            sub.end(CLOSE_POLICY, "authentication timeout")
            return "timeout"
        if frame["type"] == "websocket.disconnect":
            sub.end(1000, "")
            return "disconnected"
        raw = frame.get("text")
        if raw is None:
            sub.push(_error("bad_message", "binary frames are not supported: send JSON text frames"))
            sub.end(CLOSE_UNSUPPORTED, "binary frames are not supported: send JSON text frames")
            return "binary"
        try:
            message = codec.loads(raw)
        except Exception:
            sub.push(_error("bad_message", "expected a JSON object"))
            continue
        action = message.get("action") if isinstance(message, dict) else None
        if not authed:
            token = message.get("token") if isinstance(message, dict) and action == "auth" else None
            role = auth.role_of(token if isinstance(token, str) else None)
            if role is None or role not in READERS:
                if action != "auth":
                    reason = 'authenticate first: send {"action": "auth", "token": "..."}'
                    code = "unauthorized"
                elif role is None:
                    reason, code = "invalid token", "unauthorized"
                else:
                    reason, code = f"the {role.value} role may not subscribe", "forbidden"
                sub.push(_error(code, reason))
                sub.end(CLOSE_POLICY, reason)
                return "unauthorized"
            authed = True
            sub.push(codec.dumps_str({"type": "authenticated", "role": role.value}))
            continue
        if action == "auth" and auth.enabled:
            # A later auth must hold a reader token too: a bad one ends the connection.
            token = message.get("token")
            role = auth.role_of(token if isinstance(token, str) else None)
            if role is None or role not in READERS:
                reason = "invalid token" if role is None else f"the {role.value} role may not subscribe"
                sub.push(_error("unauthorized" if role is None else "forbidden", reason))
                sub.end(CLOSE_POLICY, reason)
                return "unauthorized"
            sub.push(codec.dumps_str({"type": "authenticated", "role": role.value}))
            continue
        await _handle(message, action, sub, hub)


async def _handle(message: Any, action: Any, sub: Subscriber, hub: EventHub) -> None:
    if action == "subscribe":
        try:
            sub.filter = parse_filter(message.get("filter"))
        except FilterError as exc:
            sub.push(_error("invalid_filter", str(exc)))
            return
        sub.push(codec.dumps_str({"type": "subscribed", "filter": sub.filter.to_dict()}))
    elif action == "unsubscribe":
        sub.filter = None
        sub.push(codec.dumps_str({"type": "unsubscribed"}))
    elif action == "ping":
        sub.push(codec.dumps_str({"type": "pong", "timestamp": _now()}))
    elif action == "get_stats":
        try:
            stats = await hub.client.stats()
        except ConveyorError as exc:
            sub.push(_error("stats_unavailable", str(exc)))
            return
        sub.push(codec.dumps_str({"type": "stats", "timestamp": _now(), "data": stats}))
    elif action == "auth":
        sub.push(codec.dumps_str({"type": "authenticated"}))
    else:
        sub.push(_error("unknown_action", f"unknown action {action!r}: use subscribe, unsubscribe, ping, get_stats"))
