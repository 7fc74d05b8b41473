"""``LocalWakeup``: how a backend wakes this process's idle workers at once.

Shared by backends (imports nothing from conveyor). Cross-process wake-ups (LISTEN,
pub/sub, data_version) end in ``notify()`` too.
"""

from __future__ import annotations

import asyncio


class LocalWakeup:
    """An edge-triggered wake-up: a ``notify()`` while nobody waits is kept for the next
    ``wait()``, so no wake-up is lost between two waits."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def _get(self) -> asyncio.Event:
        # Created lazily, inside the loop that waits.
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True if woken (or a wake-up was pending)."""
        event = self._get()
        if event.is_set():
            event.clear()
            return True
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        event.clear()
        return True

    @property
    def in_use(self) -> bool:
        """Whether anybody has waited on it (a wake-up from another thread is worth sending)."""
        return self._event is not None

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()

    def reset(self) -> None:
        """Forget the event (e.g. before use in another event loop)."""
        self._event = None
