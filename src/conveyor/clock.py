"""Clocks that sleep: ``SystemClock`` (the wall clock, asyncio sleeps) and
``FakeClock`` (time moves only when a test moves it; sleeps end when it passes their
deadline), and ``sleep_unless``, the interruptible wait the worker's loops use. The
protocol is ``conveyor.core.clock.Clock``."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from conveyor.core.clock import Clock, ensure_utc
from conveyor.core.duration import parse_duration


def _no_op() -> None:
    return None


class SystemClock:
    """The wall clock (UTC)."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        return _no_op  # the wall clock never jumps


class FakeClock:
    """A clock for tests: ``now()`` stays put until ``advance()`` or ``set()`` moves it,
    and ``sleep(s)`` returns once the clock has been moved ``s`` seconds past the call.
    Usable from any thread and event loop (a sleeper is woken on its own loop).

    Args:
        start: the initial time (naive = UTC); default the current wall time.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = ensure_utc(start) if start is not None else datetime.now(UTC)
        self._lock = threading.Lock()
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._watchers: dict[int, Callable[[], None]] = {}

    def now(self) -> datetime:
        return self._now

    def advance(self, duration: float | str | timedelta) -> datetime:
        """Move the clock forward by ``duration`` (seconds, ``"5m"`` or a timedelta)."""
        delta = duration if isinstance(duration, timedelta) else timedelta(seconds=parse_duration(duration))
        if delta < timedelta(0):
            raise ValueError("a clock only moves forward")
        return self.set(self._now + delta)

    def set(self, when: datetime) -> datetime:
        """Move the clock to ``when`` (naive = UTC); sleepers whose deadline passed wake."""
        when = ensure_utc(when)
        with self._lock:
            if when < self._now:
                raise ValueError("a clock only moves forward")
            self._now = when
            due: list[asyncio.Future[None]] = []
            while self._sleepers and self._sleepers[0][0] <= when:
                due.append(heapq.heappop(self._sleepers)[2])
            watchers = list(self._watchers.values())
        for fut in due:
            if not fut.done():
                fut.get_loop().call_soon_threadsafe(_wake, fut)
        for callback in watchers:
            callback()
        return when

    @property
    def sleeping(self) -> int:
        """How many sleeps are waiting for the clock to move."""
        with self._lock:
            return sum(1 for *_, fut in self._sleepers if not fut.done())

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            heapq.heappush(self._sleepers, (self._now + timedelta(seconds=seconds), next(self._order), fut))
        await fut

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        key = next(self._order)
        with self._lock:
            self._watchers[key] = callback

        def stop() -> None:
            with self._lock:
                self._watchers.pop(key, None)

        return stop


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def sleep_unless(clock: Clock, event: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` on ``clock`` unless ``event`` is set first; True if it was."""
    if event.is_set():
        return True
    if seconds <= 0:
        await asyncio.sleep(0)
        return event.is_set()
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait((sleeper, waiter), return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
        waiter.cancel()
    return event.is_set()
