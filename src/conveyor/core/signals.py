"""Outcomes a handler signals by raising: not failures of conveyor itself."""

from __future__ import annotations

from conveyor.core.duration import parse_duration


class PermanentError(Exception):
    """Raised by a handler to fail the job now, without retrying."""


class Snooze(Exception):
    """Raised by a handler to run the job again later without using up a retry."""

    def __init__(self, delay: float | str = 60.0) -> None:
        self.delay = parse_duration(delay, field="delay")
        super().__init__(f"snoozed for {self.delay:g}s")


class JobTimeout(Exception):
    """An attempt ran past the job's timeout."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"timeout: the attempt ran longer than {timeout:g}s")
        self.timeout = timeout
