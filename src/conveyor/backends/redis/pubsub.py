"""Pub/sub listeners of the Redis backend: wake-ups and cross-process job events.

Imports only ``conveyor.core`` (and redis-py). One ``ChannelListener`` owns one
dedicated pub/sub connection subscribed to one channel; when the connection breaks
(Redis restarted, network blip) it logs, backs off and subscribes again, and reports
every (re)subscription so that the backend can wake local waiters: messages published
while it was away are gone, so whoever waits must look at the store again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("conveyor.backends.redis")

_BACKOFF_MIN = 0.05
_BACKOFF_MAX = 2.0


class ChannelListener:
    """Listens on one channel in a background task until ``stop()``."""

    def __init__(
        self,
        client: Redis,
        channel: str,
        *,
        on_message: Callable[[bytes], None],
        on_subscribed: Callable[[], None],
    ) -> None:
        self._client = client
        self._channel = channel
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"conveyor-redis:{self._channel}")

    async def wait_subscribed(self, timeout: float) -> bool:
        """Wait until the subscription is live (messages published from now on arrive)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout)
        return self._subscribed.is_set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        backoff = _BACKOFF_MIN
        while True:
            pubsub: Any = self._client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    kind = message["type"]
                    if kind == "message":
                        self._on_message(message["data"])
                    elif kind == "subscribe":
                        # First subscription, or redis-py's own resubscription after a
                        # reconnect: either way messages may have been missed.
                        backoff = _BACKOFF_MIN
                        self._subscribed.set()
                        self._on_subscribed()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._subscribed.clear()
                log.warning("redis pub/sub on %s lost (%s); retrying in %.2fs", self._channel, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
            except Exception:
                self._subscribed.clear()
                log.exception("redis pub/sub on %s failed; retrying in %.2fs", self._channel, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
