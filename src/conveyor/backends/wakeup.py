"""``LocalWakeup``: how a backend wakes this process's idle workers at once.

Shared by backends (imports nothing from conveyor). Cross-process wake-ups (LISTEN,
pub/sub, data_version) end in ``notify()`` too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class LocalWakeup:
    """An edge-triggered wake-up: a ``notify()`` while nobody waits is kept for the next
    ``wait()``, so no wake-up is lost between two waits.

    Plain futures and one timer, not ``asyncio.wait_for(event.wait())``: that wraps each
    wait in a task, and a wake-up is on the path of every idle worker's next job."""

    def __init__(self) -> None:
        self._pending = False
        self._waiters: list[asyncio.Future[bool]] = []
        self._used = False

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True if woken (or a wake-up was pending)."""
        self._used = True
        if self._pending:
            self._pending = False
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        timer = loop.call_later(max(timeout, 0.0), _expire, waiter)
        self._waiters.append(waiter)
        try:
            return await waiter
        finally:
            timer.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    @property
    def in_use(self) -> bool:
        """Whether anybody has waited on it (a wake-up from another thread is worth sending)."""
        return self._used

    def notify(self) -> None:
        """Wake every waiter; with none, keep the wake-up for the next ``wait()``.
        Call it from the waiters' event loop."""
        woke = False
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(True)
                woke = True
        self._waiters.clear()
        if not woke:
            self._pending = True

    def reset(self) -> None:
        """Forget waiters and state (e.g. before use in another event loop)."""
        self._pending = False
        self._waiters = []
        self._used = False


def hand_over(
    loop: asyncio.AbstractEventLoop | None,
    wakeup: LocalWakeup,
    deliver: Callable[[list[Any]], None] | None = None,
    items: Sequence[Any] = (),
) -> None:
    """From a thread outside ``loop`` (the sync facade's caller, after an insert): give
    ``items`` to ``deliver`` and wake ``wakeup``'s waiters, inside the loop. One
    cross-thread call (a syscall that wakes the loop), and none when nobody listens
    (``deliver`` None: no subscribers)."""
    handed = list(items) if deliver is not None else []
    if loop is None or not (handed or wakeup.in_use):
        return

    def run() -> None:
        if deliver is not None and handed:
            deliver(handed)
        wakeup.notify()

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens any more
        loop.call_soon_threadsafe(run)
