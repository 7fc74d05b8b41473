"""The Redis registry of event listeners (``ListenerRegistry`` of
``conveyor.backends.presence``): ``P:listeners``, a sorted set of listener ids scored by
when their entry expires (µs since the epoch, by the writer's clock). Plain commands on
one key: on a Cluster it lives in the namespace's slot like every other key, and
``PUBSUB NUMSUB``, which counts the subscribers of one node only, is not needed.

Imports only ``conveyor.backends.presence``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from conveyor.backends.presence import now_us

Command = Callable[..., Awaitable[Any]]


class EventListeners:
    """Args:
    key: the sorted set (``Keys.listeners``).
    command: runs one Redis command, errors translated to conveyor's.
    """

    def __init__(self, key: str, command: Command) -> None:
        self._key = key
        self._command = command

    async def enter(self, listener_id: str, ttl: float) -> None:
        now = now_us()
        await self._command("ZADD", self._key, now + round(ttl * 1_000_000), listener_id)
        # Entries of processes that died without leaving: dropped by the next to enter.
        await self._command("ZREMRANGEBYSCORE", self._key, "-inf", f"({now}")

    async def remove(self, listener_id: str) -> None:
        await self._command("ZREM", self._key, listener_id)

    async def anyone(self) -> bool:
        return int(await self._command("ZCOUNT", self._key, now_us(), "+inf")) > 0
