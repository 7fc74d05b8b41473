"""Server-side bounds on what one request may ask of the workers (amplification):

- ``max_retries`` at most ``CONVEYOR_MAX_RETRIES_LIMIT`` (default 100), every role;
- for callers without the admin role: ``retry_delay`` at least
  ``CONVEYOR_MIN_RETRY_DELAY`` (default 1s) and no ``backoff: none`` (a zero delay),
  and a schedule they create fires at most once per ``CONVEYOR_MIN_SCHEDULE_INTERVAL``
  (default 1m).

Violations are ``ValidationError`` (422) naming the field. Imports ``core`` and
``settings`` only.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

from conveyor.core.backoff import parse_backoff
from conveyor.core.cron import next_fires
from conveyor.core.duration import format_duration, parse_duration
from conveyor.core.errors import ValidationError
from conveyor.settings import Settings

# Fire times compared to find a schedule's shortest gap (a cron's gaps vary: "0,1 * * * *").
SCHEDULE_SAMPLES = 64


def check_max_retries(value: int | None, settings: Settings) -> None:
    if value is not None and value > settings.max_retries_limit:
        raise ValidationError(
            "max_retries", f"must be at most {settings.max_retries_limit} (CONVEYOR_MAX_RETRIES_LIMIT), got {value}"
        )


def check_retry_options(options: dict[str, Any], settings: Settings, *, admin: bool) -> None:
    """``options``: the job options of a request (``max_retries``, ``retry_delay``, ``backoff``)."""
    check_max_retries(options.get("max_retries"), settings)
    if admin or settings.min_retry_delay <= 0:
        return
    minimum = format_duration(settings.min_retry_delay)
    if options.get("retry_delay") is not None:
        seconds = parse_duration(options["retry_delay"], field="retry_delay")
        if seconds < settings.min_retry_delay:
            raise ValidationError(
                "retry_delay", f"must be at least {minimum} for this token (CONVEYOR_MIN_RETRY_DELAY)"
            )
    if options.get("backoff") is not None:
        strategy, _jitter = parse_backoff(options["backoff"])
        if strategy.value == "none":
            raise ValidationError("backoff", f"none retries at once: this token's retries wait at least {minimum}")


def check_schedule_interval(cron: str, timezone: str | None, now: datetime, settings: Settings) -> None:
    """A schedule made by a non-admin caller fires at most once per the minimum interval."""
    if settings.min_schedule_interval <= 0:
        return
    fires = next_fires(cron, timezone or "UTC", now, SCHEDULE_SAMPLES)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(fires)]
    if gaps and min(gaps) < settings.min_schedule_interval:
        raise ValidationError(
            "cron",
            f"fires every {format_duration(min(gaps))}: this token's schedules fire at most every "
            f"{format_duration(settings.min_schedule_interval)} (CONVEYOR_MIN_SCHEDULE_INTERVAL)",
        )


def document_limits(schema: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The OpenAPI ``schema`` with this server's ``max_retries`` bound on every request
    model, so that the schema promises exactly what the server accepts."""
    for model in schema.get("components", {}).get("schemas", {}).values():
        prop = model.get("properties", {}).get("max_retries")
        if prop is None or model.get("title", "").endswith("Out"):
            continue
        for variant in (prop, *prop.get("anyOf", ())):
            if variant.get("type") == "integer":
                variant["maximum"] = settings.max_retries_limit
    return schema
