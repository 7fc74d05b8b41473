"""The ``Clock`` protocol: the only source of "now", and of the waits measured against
it, for code that must be testable. Implementations (which sleep, so use asyncio) live
in ``conveyor.clock``; this module stays pure."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed on this clock."""

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (not a coroutine) whenever this clock jumps (a test clock
        moved by hand); returns the function that stops watching. Waits that are not
        ``sleep`` (e.g. a worker's wait for new jobs) use it to re-check what is due."""


def ensure_utc(value: datetime) -> datetime:
    """Naive datetimes are UTC; aware ones are converted."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
