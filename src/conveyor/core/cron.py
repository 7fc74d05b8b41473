"""Cron expressions (docs/schedules.md): parsing, validation and fire-time arithmetic. Pure.

Accepted forms (whitespace around and between fields is normalised):

* 5 fields ``minute hour day-of-month month day-of-week`` (``*/15 9-17 * * mon-fri``);
* 6 fields with the **seconds first** (``0 */5 * * * *``: every five minutes, at second 0);
* ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily`` (``@midnight``), ``@hourly``;
* ``@every <duration>`` (``@every 90s``, ``@every 5m``, ``@every 1h30m``): durations as in
  ``conveyor.core.duration``, at least one second, in whole milliseconds.

Field syntax (ranges, steps, names, ``L``, ``#``) is croniter's; nothing here parses a
cron field by hand.

Semantics, all computed on UTC instants:

* Cron fields are matched against the wall-clock time in the schedule's time zone.
* Daylight-saving gap (spring forward): a wall time that does not exist fires at the
  same offset after the gap (02:30 on the Berlin spring-forward day fires at 03:30 CEST),
  so a daily job is never skipped; when that instant coincides with another fire time
  it fires once.
* Daylight-saving overlap (fall back): a repeated wall time fires at its first
  occurrence only, so a daily job never fires twice; an expression whose *hour* field
  is ``*`` or ``*/n`` (``@hourly``, ``*/5 * * * *``) also fires in the second pass of the
  repeated hour, so it keeps its real-time rhythm.
* ``@every`` is epoch-aligned: it fires at every UTC instant that is a whole multiple
  of the period since 1970-01-01T00:00:00Z (``@every 5m`` at :00, :05, :10 …),
  regardless of the time zone or when the schedule was created. Every scheduler on
  every machine therefore computes the same instants, which is what makes firing
  exactly-once across schedulers a plain compare-and-set. Use ``daily()`` & co. for
  calendar days in a local time zone.

Must not import anything outside ``conveyor.core`` (croniter and zoneinfo are fine).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from conveyor.core.clock import ensure_utc
from conveyor.core.duration import parse_duration
from conveyor.core.errors import ValidationError

__all__ = [
    "Cron",
    "CronExpression",
    "daily",
    "every",
    "latest_fire_at_or_before",
    "monthly",
    "next_fire",
    "next_fires",
    "parse_cron",
    "validate_cron",
    "validate_timezone",
    "weekly",
    "zone",
]

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MAX_EXPRESSION_LENGTH = 200
MIN_EVERY_MS = 1000
# Beyond this the next instants leave the datetime range (year 9999).
MAX_EVERY_MS = 3650 * 86400 * 1000
# Wider than any UTC-offset change (DST shifts are 30 min to 2 h): the search margin that
# lets a wall-clock iteration see fire times whose order differs around a transition.
_SHIFT = timedelta(hours=3)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HELP = (
    "expected 5 fields (minute hour day month weekday), 6 fields with seconds first, "
    "@hourly, @daily, @weekly, @monthly, @yearly or '@every <duration>'"
)


class Cron(str):
    """A cron expression built by a helper (``every``, ``daily`` …); a plain ``str``
    everywhere a cron expression is accepted."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class CronExpression:
    """A validated expression.

    Attributes:
        text: the normalised expression (what is stored).
        fields: the croniter field string, or None for ``@every``.
        seconds_first: ``fields`` has 6 fields, seconds first.
        every_ms: the ``@every`` period in milliseconds, else None.
        repeat_in_overlap: fires in both passes of a repeated (fall-back) hour.
    """

    text: str
    fields: str | None
    seconds_first: bool = False
    every_ms: int | None = None
    repeat_in_overlap: bool = False

    def _iter(self, start: datetime, *, backwards: bool) -> Iterator[datetime]:
        """Naive wall-clock fire times strictly after (before) the naive ``start``."""
        assert self.fields is not None
        it = croniter(self.fields, start, ret_type=datetime, second_at_beginning=self.seconds_first)
        step = it.get_prev if backwards else it.get_next
        while True:
            try:
                value = step()
            except CroniterBadDateError:
                return
            assert isinstance(value, datetime)
            yield value


def validate_cron(expr: object) -> str:
    """Validate ``expr`` and return its normalised text.

    Raises:
        ValidationError: ``field == "cron"``, the message says what is wrong.
    """
    return parse_cron(expr).text


def parse_cron(expr: object) -> CronExpression:
    """Parse ``expr`` (see the module docstring for the forms).

    Raises:
        ValidationError: ``field == "cron"``, the message says what is wrong.
    """
    if not isinstance(expr, str):
        raise ValidationError("cron", f"expected a cron expression string, got {type(expr).__name__}")
    return _parse(" ".join(expr.split()))


@lru_cache(maxsize=512)
def _parse(text: str) -> CronExpression:
    if not text:
        raise ValidationError("cron", f"must not be empty; {_HELP}")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ValidationError("cron", f"must be at most {MAX_EXPRESSION_LENGTH} characters")
    lowered = text.lower()
    if lowered.startswith("@every"):
        return _parse_every(text)
    if text.startswith("@"):
        if lowered not in ALIASES:
            raise ValidationError("cron", f"unknown shortcut {text!r}; {_HELP}")
        fields = ALIASES[lowered]
        return CronExpression(text=lowered, fields=fields, repeat_in_overlap=_hour_is_wildcard(fields, False))
    parts = text.split(" ")
    if len(parts) not in (5, 6):
        raise ValidationError("cron", f"invalid expression {text!r}: it has {len(parts)} fields; {_HELP}")
    seconds_first = len(parts) == 6
    try:
        it = croniter(text, datetime(2000, 1, 1), ret_type=datetime, second_at_beginning=seconds_first)
        it.get_next()
    except CroniterBadDateError:
        raise ValidationError("cron", f"expression {text!r} never matches a date (e.g. February 30)") from None
    except (CroniterError, ValueError, KeyError, IndexError) as exc:
        detail = str(exc).replace("[" + text + "] ", "") or type(exc).__name__
        raise ValidationError("cron", f"invalid expression {text!r}: {detail}; {_HELP}") from None
    return CronExpression(
        text=text, fields=text, seconds_first=seconds_first, repeat_in_overlap=_hour_is_wildcard(text, seconds_first)
    )


def _parse_every(text: str) -> CronExpression:
    rest = text[len("@every") :].strip()
    if not rest or not text[len("@every") :].startswith(" "):
        raise ValidationError("cron", f"invalid expression {text!r}: expected '@every <duration>', e.g. '@every 5m'")
    try:
        seconds = parse_duration(rest, field="cron", allow_zero=False)
    except ValidationError as exc:
        raise ValidationError("cron", f"invalid @every period {rest!r}: {exc.reason}") from None
    ms = round(seconds * 1000)
    if ms < MIN_EVERY_MS:
        raise ValidationError("cron", f"@every period must be at least 1s, got {rest!r}")
    if ms > MAX_EVERY_MS:
        raise ValidationError("cron", f"@every period must be at most 10 years (3650d), got {rest!r}")
    if abs(ms - seconds * 1000) > 1e-6:
        raise ValidationError("cron", f"@every period must be a whole number of milliseconds, got {rest!r}")
    return CronExpression(text=f"@every {_format_ms(ms)}", fields=None, every_ms=ms)


def _format_ms(ms: int) -> str:
    if ms % 1000:
        return f"{ms}ms"
    seconds = ms // 1000
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            out += f"{n}{unit}"
    return out


def _hour_is_wildcard(fields: str, seconds_first: bool) -> bool:
    hour = fields.split(" ")[2 if seconds_first else 1]
    return hour == "*" or hour.startswith("*/")


def validate_timezone(name: object) -> str:
    """Validate an IANA time zone name (``"UTC"``, ``"Europe/Berlin"``) and return it.

    Raises:
        ValidationError: ``field == "timezone"``.
    """
    zone(name)
    assert isinstance(name, str)
    return name


def zone(name: object) -> ZoneInfo:
    """The ``ZoneInfo`` for ``name``.

    Raises:
        ValidationError: ``field == "timezone"``: not a known IANA time zone.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("timezone", f"expected an IANA time zone name such as 'Europe/Berlin', got {name!r}")
    try:
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(
            "timezone", f"unknown time zone {name!r}: use an IANA name such as 'UTC' or 'Europe/Berlin'"
        ) from None


@lru_cache(maxsize=128)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _expr(expr: str | CronExpression) -> CronExpression:
    return expr if isinstance(expr, CronExpression) else parse_cron(expr)


def _instants(wall: datetime, tz: ZoneInfo, repeat: bool) -> list[datetime]:
    """UTC instants of a naive wall time: one normally, the post-gap instant in a DST
    gap, and the second pass of an overlap too when ``repeat``."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if second > first and repeat:  # an overlap: the wall time happens twice
        return [first, second]
    return [first]  # normal, overlap (first pass only) or gap (fold=0 lands after the gap)


def _offset(instant: datetime, tz: ZoneInfo) -> timedelta:
    return instant.astimezone(tz).utcoffset() or timedelta(0)


def _steady(instant: datetime, tz: ZoneInfo) -> bool:
    """No UTC-offset change within the DST margin around ``instant``: wall-clock order
    equals instant order there, so the first match found is the answer."""
    return _offset(instant - _SHIFT, tz) == _offset(instant, tz) == _offset(instant + _SHIFT, tz)


def _naive_wall(instant: datetime, offset: timedelta) -> datetime:
    return (instant + offset).replace(tzinfo=None)


def next_fire(expr: str | CronExpression, tz: str, after: datetime) -> datetime | None:
    """The first fire instant strictly after ``after`` (UTC), or None if there is none.

    Raises:
        ValidationError: a bad expression or time zone.
    """
    parsed = _expr(expr)
    zi = zone(tz)
    after = ensure_utc(after)
    if parsed.every_ms is not None:
        elapsed = _ms_since_epoch(after)
        return _from_ms((elapsed // parsed.every_ms + 1) * parsed.every_ms)
    # Start the wall-clock search at the smallest offset around ``after``: a wall time
    # before ``after``'s own (the second pass of a repeated hour, a time in a DST gap)
    # may still map to a later instant.
    offset = min(_offset(after + k * _SHIFT, zi) for k in (-1, 0, 1))
    best: datetime | None = None
    for wall in parsed._iter(_naive_wall(after, offset), backwards=False):
        if best is not None and (_steady(best, zi) or wall > _naive_wall(best, _offset(best, zi)) + _SHIFT):
            break
        for instant in _instants(wall, zi, parsed.repeat_in_overlap):
            if instant > after and (best is None or instant < best):
                best = instant
    return best


def next_fires(expr: str | CronExpression, tz: str, after: datetime, n: int) -> list[datetime]:
    """The first ``n`` fire instants strictly after ``after`` (fewer if the expression ends)."""
    parsed = _expr(expr)
    out: list[datetime] = []
    current = ensure_utc(after)
    for _ in range(n):
        nxt = next_fire(parsed, tz, current)
        if nxt is None:
            break
        out.append(nxt)
        current = nxt
    return out


def latest_fire_at_or_before(
    expr: str | CronExpression, tz: str, now: datetime, since: datetime | None = None
) -> datetime | None:
    """The latest fire instant ``t`` with ``since < t <= now`` (catch-up after downtime:
    older missed instants are skipped), or None.

    Raises:
        ValidationError: a bad expression or time zone.
    """
    parsed = _expr(expr)
    zi = zone(tz)
    now = ensure_utc(now)
    since = ensure_utc(since) if since is not None else None
    if parsed.every_ms is not None:
        latest = _from_ms(_ms_since_epoch(now) // parsed.every_ms * parsed.every_ms)
        return latest if since is None or latest > since else None
    offset = max(_offset(now + k * _SHIFT, zi) for k in (-1, 0, 1))
    start = _naive_wall(now, offset) + timedelta(seconds=1)
    best: datetime | None = None
    for wall in parsed._iter(start, backwards=True):
        if best is not None and (_steady(best, zi) or wall < _naive_wall(best, _offset(best, zi)) - _SHIFT):
            break
        if best is None and since is not None and wall < _naive_wall(since, _offset(since, zi)) - _SHIFT:
            break  # nothing later than ``since`` is left
        for instant in _instants(wall, zi, parsed.repeat_in_overlap):
            if instant <= now and (since is None or instant > since) and (best is None or instant > best):
                best = instant
    return best


def _ms_since_epoch(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


# -- helpers building expressions -------------------------------------------------------

_WEEKDAYS = {name.lower(): i for i, name in enumerate(calendar.day_name)} | {
    name.lower(): i for i, name in enumerate(calendar.day_abbr)
}


def every(
    period: float | str | timedelta | None = None,
    *,
    seconds: float = 0,
    minutes: float = 0,
    hours: float = 0,
    days: float = 0,
) -> Cron:
    """``@every <period>``, epoch-aligned (see the module docstring).

    ``every("5m")``, ``every(90)`` (seconds), ``every(timedelta(hours=1))`` or
    ``every(minutes=5)``.

    Raises:
        ValidationError: no period, both forms given, or a period under one second.
    """
    keywords = timedelta(seconds=seconds, minutes=minutes, hours=hours, days=days)
    if period is None and not keywords:
        raise ValidationError("cron", "every() needs a period, e.g. every('5m') or every(minutes=5)")
    if period is not None and keywords:
        raise ValidationError("cron", "give every() a period or keyword units, not both")
    if period is None:
        total = keywords.total_seconds()
    elif isinstance(period, timedelta):
        total = period.total_seconds()
    else:
        total = parse_duration(period, field="cron", allow_zero=False)
    ms = round(total * 1000)
    if ms < MIN_EVERY_MS:
        raise ValidationError("cron", f"the every() period must be at least 1s, got {total}s")
    if abs(ms - total * 1000) > 1e-6:
        raise ValidationError("cron", f"the every() period must be a whole number of milliseconds, got {total}s")
    return Cron(f"@every {_format_ms(ms)}")


def _clock(hour: object, minute: object, second: object) -> str:
    h = _int_in(hour, "hour", 0, 23)
    m = _int_in(minute, "minute", 0, 59)
    s = _int_in(second, "second", 0, 59)
    return f"{m} {h}" if s == 0 else f"{s} {m} {h}"


def _int_in(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError("cron", f"{name} must be an integer from {low} to {high}, got {value!r}")
    return value


def daily(hour: int = 0, minute: int = 0, second: int = 0) -> Cron:
    """Every day at ``hour:minute[:second]`` in the schedule's time zone."""
    return Cron(f"{_clock(hour, minute, second)} * * *")


def weekly(weekday: int | str, hour: int = 0, minute: int = 0, second: int = 0) -> Cron:
    """Every week on ``weekday`` at ``hour:minute[:second]``.

    Args:
        weekday: Python's numbering (``calendar.MONDAY`` = 0 … ``calendar.SUNDAY`` = 6)
            or an English name (``"mon"``, ``"Monday"``).
    """
    if isinstance(weekday, str):
        key = weekday.strip().lower()
        if key not in _WEEKDAYS:
            raise ValidationError("cron", f"unknown weekday {weekday!r}: use 'mon' … 'sun' or 0 (Monday) … 6 (Sunday)")
        day = _WEEKDAYS[key]
    else:
        day = _int_in(weekday, "weekday (0 = Monday … 6 = Sunday)", 0, 6)
    return Cron(f"{_clock(hour, minute, second)} * * {(day + 1) % 7}")  # cron: 0 = Sunday


def monthly(day: int | str = 1, hour: int = 0, minute: int = 0, second: int = 0) -> Cron:
    """Every month on ``day`` (1 to 31, or ``"last"``) at ``hour:minute[:second]``.

    A month without that day (the 31st in April) has no fire time; use ``"last"`` for
    the last day of every month.
    """
    last = isinstance(day, str) and day.strip().lower() in ("last", "l")
    dom = "L" if last else str(_int_in(day, "day", 1, 31))
    return Cron(f"{_clock(hour, minute, second)} {dom} * *")
