"""Backoff strategies (README.md, Backoff). Pure: randomness for jitter is injected."""

from __future__ import annotations

import random
from collections.abc import Callable
from enum import StrEnum

from conveyor.core.duration import MAX_DURATION_SECONDS
from conveyor.core.errors import ValidationError


class Backoff(StrEnum):
    NONE = "none"
    CONSTANT = "constant"
    LINEAR = "linear"
    EXPONENTIAL = "exponential"
    QUADRATIC = "quadratic"


DEFAULT_BACKOFF = Backoff.QUADRATIC


def parse_backoff(value: object, *, field: str = "backoff") -> tuple[Backoff, bool]:
    """Parse ``"exponential"`` or ``"exponential+jitter"`` into (strategy, jitter)."""
    if isinstance(value, Backoff):
        return value, False
    if isinstance(value, str) and value in _PARSED:
        return _PARSED[value]
    if not isinstance(value, str):
        raise ValidationError(field, f"expected one of {', '.join(b.value for b in Backoff)}")
    name, _, suffix = value.strip().lower().partition("+")
    if suffix not in ("", "jitter"):
        raise ValidationError(field, f"unknown modifier {suffix!r}: only '+jitter' is allowed")
    try:
        return Backoff(name), suffix == "jitter"
    except ValueError:
        raise ValidationError(
            field, f"unknown backoff {value!r}: expected one of {', '.join(b.value for b in Backoff)}"
        ) from None


def backoff_delay(
    strategy: Backoff | str,
    base: float,
    retry: int,
    *,
    jitter: bool = False,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before the ``retry``-th retry (1-based).

    With jitter the delay is drawn uniformly from [delay/2, delay*3/2): the mean is kept.
    """
    n = max(1, retry)
    strategy = Backoff(strategy)
    if strategy is Backoff.NONE:
        delay = 0.0
    elif strategy is Backoff.CONSTANT:
        delay = base
    elif strategy is Backoff.LINEAR:
        delay = base * n
    elif strategy is Backoff.EXPONENTIAL:
        delay = base * 2.0 ** min(n - 1, 62)
    else:
        delay = base * n * n
    # Capped at the longest duration accepted (a retry_delay may be that long): exponential
    # growth cannot overflow a datetime, and a constant base is never cut short.
    delay = min(delay, MAX_DURATION_SECONDS)
    if jitter and delay > 0:
        delay = delay * (0.5 + rand())
    return delay


# Every valid spelling in canonical form, parsed once (enqueue's hot path).
_PARSED: dict[str, tuple[Backoff, bool]] = {
    b.value + suffix: (b, suffix == "+jitter") for b in Backoff for suffix in ("", "+jitter")
}
