"""``ChannelListener``: one pub/sub channel (``P:wake`` or ``P:events``) read by a
background task through redis-py's PubSub, re-subscribed after any loss.

Imports nothing from conveyor but ``driver``. The task sleeps in the PubSub's read
until Redis sends something: no polling. Messages published while it was disconnected
are lost (pub/sub stores nothing), so ``on_subscribed`` runs after every
(re)subscription: the wake-up listener uses it to make idle workers look again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from conveyor.backends.redis import driver

log = logging.getLogger("conveyor.backends.redis")

_BACKOFF_MIN = 0.05
_BACKOFF_MAX = 2.0


class ChannelListener:
    """Listens on one channel in a background task until ``stop()``.

    Args:
        open_client: returns the redis-py client to subscribe with (called again after
            each loss: on a Cluster or behind a Sentinel the serving node may change).
        channel: the channel's name.
        on_message: called with each message's payload, on the event loop.
        on_subscribed: called after each (re)subscription.
    """

    def __init__(
        self,
        open_client: Callable[[], Awaitable[Any]],
        channel: str,
        *,
        on_message: Callable[[bytes], None],
        on_subscribed: Callable[[], None],
    ) -> None:
        self._open_client = open_client
        self._channel = channel
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._stopping = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"conveyor-redis:{self._channel}")

    async def wait_subscribed(self, timeout: float) -> bool:
        """Wait until the subscription is live (messages published from now on arrive)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout)
        return self._subscribed.is_set()

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=2.0)
            if not task.done():
                log.warning("redis pub/sub listener on %s did not stop", self._channel)

    async def _run(self) -> None:
        backoff = _BACKOFF_MIN
        while not self._stopping:
            pubsub: Any = None
            try:
                client = await self._open_client()
                pubsub = client.pubsub()
                await pubsub.subscribe(self._channel)
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    kind = message["type"]
                    if kind in ("message", b"message"):
                        self._deliver(message["data"])
                    elif kind in ("subscribe", b"subscribe"):
                        backoff = _BACKOFF_MIN
                        self._subscribed.set()
                        self._on_subscribed()
            except asyncio.CancelledError:
                raise
            except (*driver.ERRORS, ConnectionError) as exc:
                self._subscribed.clear()
                # An outage is reported once, by the worker's and server's own calls
                # (docs/logging.md); a refusal (e.g. an ACL without SUBSCRIBE) is not one.
                level = logging.DEBUG if driver.is_unavailable(exc) else logging.WARNING
                log.log(level, "redis pub/sub on %s: %s; retrying in %.2fs", self._channel, exc, backoff)
            except Exception:
                self._subscribed.clear()
                log.exception("redis pub/sub on %s failed; retrying in %.2fs", self._channel, backoff)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(pubsub.aclose())
            if self._stopping:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    def _deliver(self, data: bytes) -> None:
        try:
            self._on_message(data)
        except Exception:
            log.exception("redis pub/sub handler failed on %s", self._channel)
