"""Duration parsing and formatting: ``500ms``, ``10s``, ``1h30m``, ``2d`` or plain seconds."""

from __future__ import annotations

import re

from conveyor.core.errors import ValidationError

# The longest duration accepted anywhere (delays, retry delays, retention): 10 years.
MAX_DURATION_SECONDS = 10 * 365 * 86400.0

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def parse_duration(value: object, *, field: str = "duration", allow_zero: bool = True) -> float:
    """Parse a duration into seconds.

    Args:
        value: seconds as an int/float/numeric string, or a string of ``<number><unit>``
            parts (units ms, s, m, h, d, w), e.g. ``"1h30m"``.
        field: the name used in the error message.
        allow_zero: whether 0 is accepted.

    Raises:
        ValidationError: the value is not a valid, non-negative duration.
    """
    if isinstance(value, bool):
        raise ValidationError(field, f"expected a duration such as 30, '10s' or '1h30m', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        else:
            parts = _PART.findall(text)
            if not text or "".join(n + u for n, u in parts) != text:
                raise ValidationError(
                    field, f"invalid duration {value!r}: use seconds or units ms, s, m, h, d, w, e.g. '1h30m'"
                )
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    else:
        raise ValidationError(field, f"expected a duration such as 30, '10s' or '1h30m', got {type(value).__name__}")
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ValidationError(field, "duration must be finite")
    if seconds < 0:
        raise ValidationError(field, "duration must not be negative")
    if seconds == 0 and not allow_zero:
        raise ValidationError(field, "duration must be greater than 0")
    return seconds


def format_duration(seconds: float) -> str:
    """Format seconds as the original API does: ``5m30s``, ``1h0m0s``, ``250ms``."""
    if seconds < 0:
        seconds = 0.0
    if seconds < 1:
        ms = int(round(seconds * 1000))
        return f"{ms}ms" if ms else "0s"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
