"""Pub/sub listeners of the Redis backend: wake-ups and cross-process job events.

Imports nothing from conveyor but this package. One ``ChannelListener`` owns one
dedicated connection subscribed to one channel, driven by an ``asyncio.Protocol``:
messages are pushed to a callback as they arrive, so nothing ever blocks in a read
and stopping is just closing the transport. When the connection breaks (Redis
restarted, network blip) the listener logs, backs off and subscribes again, and
reports every (re)subscription so that the backend can wake local waiters: messages
published while it was away are gone, so whoever waits must look at the store again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any

import hiredis

from conveyor.backends.redis.connection import Endpoint, no_delay

log = logging.getLogger("conveyor.backends.redis")

_BACKOFF_MIN = 0.05
_BACKOFF_MAX = 2.0


def _pack(args: tuple[Any, ...]) -> bytes:
    packed: bytes = hiredis.pack_command(args)
    return packed


class _SubscriberProtocol(asyncio.Protocol):
    def __init__(self, endpoint: Endpoint, channel: str, listener: ChannelListener) -> None:
        self.endpoint = endpoint
        self.channel = channel
        self.listener = listener
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        no_delay(transport)
        ep = self.endpoint
        if ep.password is not None:
            auth = ("AUTH", ep.username, ep.password) if ep.username else ("AUTH", ep.password)
            transport.write(_pack(auth))
        transport.write(_pack(("SUBSCRIBE", self.channel)))

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                log.warning("redis pub/sub protocol error on %s: %s", self.channel, exc)
                self._abort()
                return
            if reply is False:
                return
            if isinstance(reply, hiredis.ReplyError):
                log.warning("redis refused the subscription to %s: %s", self.channel, reply)
                self._abort()
                return
            if not isinstance(reply, list) or len(reply) < 3:
                continue  # +OK of AUTH
            kind = reply[0]
            if kind == b"message":
                self.listener.message(reply[2])
            elif kind == b"subscribe":
                self.listener.subscribed()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.lost.done():
            self.lost.set_result(None)

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class ChannelListener:
    """Listens on one channel in a background task until ``stop()``."""

    def __init__(
        self,
        endpoint: Endpoint,
        channel: str,
        *,
        on_message: Callable[[bytes], None],
        on_subscribed: Callable[[], None],
        connect_timeout: float = 5.0,
    ) -> None:
        self._endpoint = endpoint
        self._channel = channel
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._connect_timeout = connect_timeout
        self._task: asyncio.Task[None] | None = None
        self._proto: _SubscriberProtocol | None = None
        self._subscribed = asyncio.Event()
        self._backoff = _BACKOFF_MIN
        self._stopping = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"conveyor-redis:{self._channel}")

    @property
    def is_subscribed(self) -> bool:
        return self._subscribed.is_set()

    async def wait_subscribed(self, timeout: float) -> bool:
        """Wait until the subscription is live (messages published from now on arrive)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout)
        return self._subscribed.is_set()

    def message(self, data: bytes) -> None:
        try:
            self._on_message(data)
        except Exception:
            log.exception("redis pub/sub handler failed on %s", self._channel)

    def subscribed(self) -> None:
        self._backoff = _BACKOFF_MIN
        self._subscribed.set()
        self._on_subscribed()

    async def stop(self) -> None:
        # Closing the connection ends the task even where a cancellation could be lost
        # (Python 3.11's wait_for may swallow one that races with the connect).
        self._stopping = True
        proto = self._proto
        if proto is not None and proto.transport is not None:
            proto.transport.close()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=2.0)
            if not task.done():
                log.warning("redis pub/sub listener on %s did not stop", self._channel)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        ep = self._endpoint
        context = ssl.create_default_context() if ep.tls else None
        while not self._stopping:
            proto: _SubscriberProtocol | None = None
            try:
                _, connected = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _SubscriberProtocol(ep, self._channel, self), ep.host, ep.port, ssl=context
                    ),
                    self._connect_timeout,
                )
                proto = self._proto = connected
                if self._stopping:
                    return
                await connected.lost
                self._subscribed.clear()
                log.warning("redis pub/sub on %s lost; reconnecting", self._channel)
            except (OSError, TimeoutError) as exc:
                self._subscribed.clear()
                log.warning("redis pub/sub on %s: %s; retrying in %.2fs", self._channel, exc, self._backoff)
            finally:
                if proto is not None and proto.transport is not None:
                    proto.transport.close()
                    # Let the transport release its socket before the loop may close.
                    with contextlib.suppress(BaseException):
                        await asyncio.wait_for(asyncio.shield(proto.lost), 1.0)
            if self._stopping:
                return
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, _BACKOFF_MAX)
