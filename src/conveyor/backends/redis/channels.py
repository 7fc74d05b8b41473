"""``Channels``: one process's side of the Redis backend's pub/sub: wake-ups of its idle
workers (``P:wake``), job events for its subscribers (``P:events``) and, behind a
Sentinel, the failover announcements that make it drop its connections to the old
primary.

Imports only ``conveyor.core``, ``conveyor.backends.wakeup`` and this package. The
listeners belong to one event loop in one process: ``same_loop()`` forgets them when
the caller runs in another (the sync facade's loop, a forked child).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from conveyor.backends.redis import driver
from conveyor.backends.redis.keys import Keys
from conveyor.backends.redis.listener import ChannelListener
from conveyor.backends.wakeup import LocalWakeup
from conveyor.core import codec
from conveyor.core.errors import BackendUnavailable
from conveyor.core.events import Event

log = logging.getLogger("conveyor.backends.redis")

_SUBSCRIBER_QUEUE = 10_000
# How long subscribe() waits for the events channel before giving up.
_SUBSCRIBE_TIMEOUT = 10.0


class _Subscription:
    """The iterator ``subscribe()`` returns: registered at once, so that events published
    right after ``subscribe()`` returns are not missed by a slow first ``__anext__``."""

    def __init__(self, channels: Channels) -> None:
        self._channels = channels
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(_SUBSCRIBER_QUEUE)
        self._done = False
        channels.subscribers.append(self)
        channels.start_events_listener()

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> Event:
        if self._done:
            raise StopAsyncIteration
        self._channels.start_events_listener()
        event = await self.queue.get()
        if event is None:
            self._finish()
            raise StopAsyncIteration
        return event

    def _finish(self) -> None:
        self._done = True
        with contextlib.suppress(ValueError):
            self._channels.subscribers.remove(self)

    async def aclose(self) -> None:
        self._finish()


class Channels:
    """Args:
    target: where the backend's URL points.
    keys: the namespace's key and channel names.
    client: this event loop's asyncio client (the backend's).
    reconnect: drops every connection of the backend (after a Sentinel failover).
    """

    def __init__(
        self,
        target: driver.Target,
        keys: Keys,
        *,
        client: Callable[[], Any],
        reconnect: Callable[[], None],
    ) -> None:
        self._target = target
        self._keys = keys
        self._client = client
        self._reconnect = reconnect
        # Tags this process's event messages so that its own listener skips them: local
        # subscribers already got them directly from publish().
        self.origin = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.envelope_head = b'{"o":' + codec.dumps(self.origin) + b',"e":['  # envelope()'s opening
        self.wakeup = LocalWakeup()
        self.subscribers: list[_Subscription] = []
        self._wake: ChannelListener | None = None
        self._events: ChannelListener | None = None
        self._failover: ChannelListener | None = None
        self.bound: tuple[asyncio.AbstractEventLoop, int] | None = None
        self.closed = False

    def same_loop(self) -> None:
        """Forget pub/sub state made in another event loop or before a fork: it belongs
        to a loop that is not running here (the sync facade makes a new one per process)."""
        here = (asyncio.get_running_loop(), os.getpid())
        if self.bound is not None and self.bound != here:
            self.wakeup.reset()
            self._wake = self._events = self._failover = None
        self.bound = here

    def _subscriber_client(self, channel: str) -> Callable[[], Awaitable[Any]]:
        async def open_client() -> Any:
            client = self._client()
            if self._target.kind == "cluster":
                await client.initialize()  # the slot map (a no-op once known)
            return driver.pubsub_client(self._target, client, channel)

        return open_client

    # -- wake-ups --------------------------------------------------------------------

    async def wait(self, timeout: float) -> bool:
        self.same_loop()
        if self._wake is None and not self.closed:
            # After each (re)subscription idle workers look again: messages published
            # while this process was not subscribed are gone.
            self._wake = ChannelListener(
                self._subscriber_client(self._keys.wake),
                self._keys.wake,
                on_message=lambda _data: self.wakeup.notify(),
                on_subscribed=self.wakeup.notify,
            )
            self._wake.start()
        return await self.wakeup.wait(timeout)

    # -- failover (Sentinel) ---------------------------------------------------------

    def watch_failover(self) -> None:
        """Behind a Sentinel, listen for ``+switch-master`` (from this loop on)."""
        if self._target.kind != "sentinel" or self._failover is not None or self.closed:
            return
        self._failover = ChannelListener(
            driver.sentinel_clients(self._target),
            driver.SWITCH_MASTER,
            on_message=self._primary_switched,
            on_subscribed=lambda: None,
        )
        self._failover.start()

    def _primary_switched(self, message: bytes) -> None:
        """A Sentinel announced a failover: drop every connection to the old primary at
        once, so that no command of this process keeps writing there (those writes would
        be lost when it rejoins as a replica); the next ones go to the new primary."""
        if message.split(b" ", 1)[0].decode() != self._target.service:
            return
        log.warning(
            "redis at %s: the Sentinels switched the primary (%s); reconnecting",
            self._target.display,
            message.decode(),
        )
        self._reconnect()
        self.wakeup.notify()  # idle workers claim again, from the new primary

    # -- events ----------------------------------------------------------------------

    def envelope(self, events: Sequence[Event]) -> bytes:
        """``{"o": origin, "e": [event, ...]}``: events tagged with this process (whose
        listener skips them: they were delivered here already)."""
        return self.envelope_head + b",".join(codec.dumps(e) for e in events) + b"]}"

    def deliver(self, events: Sequence[Event]) -> None:
        for sub in list(self.subscribers):
            for event in events:
                if sub.queue.full():
                    break  # a stalled subscriber loses events rather than stalling workers
                sub.queue.put_nowait(event)

    def _on_events_message(self, data: bytes) -> None:
        try:
            envelope = codec.loads(data)
            if envelope.get("o") == self.origin:
                return
            events = [Event.decode(codec.dumps(e)) for e in envelope["e"]]
        except Exception:
            log.exception("undecodable event message on %s", self._keys.events)
            return
        self.deliver(events)

    def start_events_listener(self) -> None:
        if self.closed:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # started by the first __anext__ instead
        self.same_loop()
        if self._events is not None:
            return
        self._events = ChannelListener(
            self._subscriber_client(self._keys.events),
            self._keys.events,
            on_message=self._on_events_message,
            on_subscribed=lambda: None,
        )
        self._events.start()

    async def events_ready(self, timeout: float) -> bool:
        self.start_events_listener()
        if self._events is None:
            return False
        return await self._events.wait_subscribed(timeout)

    async def subscribe(self) -> _Subscription:
        """A subscription that receives every event published after this returns:
        events of other processes arrive through the pub/sub connection, so wait until
        it has subscribed."""
        sub = _Subscription(self)
        if not self.closed and not await self.events_ready(_SUBSCRIBE_TIMEOUT):
            await sub.aclose()
            raise BackendUnavailable(f"redis at {self._target.display}: the events channel could not be subscribed")
        return sub

    async def close(self) -> None:
        self.closed = True
        for listener in (self._wake, self._events, self._failover):
            if listener is not None:
                await listener.stop()
        self._wake = self._events = self._failover = None
        for sub in list(self.subscribers):
            if sub.queue.full():
                sub.queue.get_nowait()
            sub.queue.put_nowait(None)
        self.subscribers.clear()
