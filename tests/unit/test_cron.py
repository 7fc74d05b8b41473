"""Cron expressions: parsing, validation, fire times, DST and the helpers. Pure: no sleeping."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.core.cron import (
    Cron,
    daily,
    every,
    latest_fire_at_or_before,
    monthly,
    next_fire,
    next_fires,
    parse_cron,
    validate_cron,
    validate_timezone,
    weekly,
    zone,
)
from conveyor.core.errors import ValidationError

BERLIN = "Europe/Berlin"
T0 = datetime(2024, 1, 1, 0, 0, 0, tzinfo=UTC)  # a Monday


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(value: datetime, tz: str = BERLIN) -> str:
    return value.astimezone(zone(tz)).strftime("%Y-%m-%d %H:%M:%S%z")


@pytest.mark.parametrize(
    ("expr", "normalised"),
    [
        ("*/5 * * * *", "*/5 * * * *"),
        ("  0   9 * *   mon-fri ", "0 9 * * mon-fri"),
        ("0 */5 * * * *", "0 */5 * * * *"),
        ("@hourly", "@hourly"),
        ("@DAILY", "@daily"),
        ("@weekly", "@weekly"),
        ("@monthly", "@monthly"),
        ("@yearly", "@yearly"),
        ("@midnight", "@midnight"),
        ("@every 90s", "@every 1m30s"),
        ("@every 5m", "@every 5m"),
        ("@every 1h30m", "@every 1h30m"),
        ("@every 1500ms", "@every 1500ms"),
        ("@every 60", "@every 1m"),
    ],
)
def test_cron_valid_forms_normalise(expr: str, normalised: str) -> None:
    assert validate_cron(expr) == normalised


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("", "must not be empty"),
        ("* * * *", "it has 4 fields"),
        ("1 2 3 4 5 6 7", "it has 7 fields"),
        ("61 * * * *", "out of range"),
        ("* 24 * * *", "out of range"),
        ("*/0 * * * *", "step"),
        ("a b c d e", "invalid expression"),
        ("@often", "unknown shortcut"),
        ("@every", "expected '@every <duration>'"),
        ("@everyday", "expected '@every <duration>'"),
        ("@every 0s", "greater than 0"),
        ("@every 500ms", "at least 1s"),
        ("@every soon", "invalid @every period"),
        ("0 0 30 2 *", "never matches"),
    ],
)
def test_cron_invalid_expression_says_what_is_wrong(expr: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_cron(expr)
    assert info.value.field == "cron"
    assert fragment in info.value.reason


def test_cron_rejects_non_string() -> None:
    with pytest.raises(ValidationError, match="cron: expected a cron expression string"):
        parse_cron(5)


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"])
def test_timezone_valid(tz: str) -> None:
    assert validate_timezone(tz) == tz


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "   ", None, 3, "../etc/passwd"])
def test_timezone_invalid_raises(tz: object) -> None:
    with pytest.raises(ValidationError) as info:
        validate_timezone(tz)
    assert info.value.field == "timezone"


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("*/5 * * * *", utc(2024, 1, 1, 0, 2), utc(2024, 1, 1, 0, 5)),
        ("*/5 * * * *", utc(2024, 1, 1, 0, 5), utc(2024, 1, 1, 0, 10)),  # strictly after
        ("0 */5 * * * *", utc(2024, 1, 1, 0, 0, 1), utc(2024, 1, 1, 0, 5)),
        ("*/10 * * * * *", utc(2024, 1, 1, 0, 0, 1), utc(2024, 1, 1, 0, 0, 10)),
        ("@hourly", utc(2024, 1, 1, 0, 30), utc(2024, 1, 1, 1)),
        ("@daily", utc(2024, 1, 1, 0, 30), utc(2024, 1, 2)),
        ("@weekly", T0, utc(2024, 1, 7)),  # Sunday
        ("@monthly", T0, utc(2024, 2, 1)),
        ("@yearly", T0, utc(2025, 1, 1)),
        ("0 9 * * mon-fri", utc(2024, 1, 5, 10), utc(2024, 1, 8, 9)),
        ("0 0 L * *", utc(2024, 2, 1), utc(2024, 2, 29)),
    ],
)
def test_next_fire_utc(expr: str, after: datetime, expected: datetime) -> None:
    assert next_fire(expr, "UTC", after) == expected


def test_next_fire_reads_fields_in_the_time_zone() -> None:
    # 09:00 in Berlin is 08:00 UTC in winter, 07:00 UTC in summer.
    assert next_fire("0 9 * * *", BERLIN, utc(2024, 1, 10)) == utc(2024, 1, 10, 8)
    assert next_fire("0 9 * * *", BERLIN, utc(2024, 7, 10)) == utc(2024, 7, 10, 7)


def test_next_fire_naive_after_means_utc() -> None:
    assert next_fire("@hourly", "UTC", datetime(2024, 1, 1, 0, 30)) == utc(2024, 1, 1, 1)


def test_every_is_epoch_aligned() -> None:
    # 90 s periods since 1970-01-01T00:00:00Z; 2024-01-01T00:00:00Z is a multiple of 90 s.
    assert next_fires("@every 90s", "UTC", utc(2024, 1, 1, 0, 0, 10), 3) == [
        utc(2024, 1, 1, 0, 1, 30),
        utc(2024, 1, 1, 0, 3),
        utc(2024, 1, 1, 0, 4, 30),
    ]
    # The time zone does not move @every instants.
    assert next_fire("@every 5m", BERLIN, utc(2024, 1, 1, 0, 1)) == utc(2024, 1, 1, 0, 5)


def test_every_fractional_second_period() -> None:
    assert next_fires("@every 1500ms", "UTC", T0, 2) == [T0 + timedelta(seconds=1.5), T0 + timedelta(seconds=3)]


def test_next_fires_counts() -> None:
    assert next_fires("@daily", "UTC", T0, 3) == [utc(2024, 1, 2), utc(2024, 1, 3), utc(2024, 1, 4)]
    assert next_fires("@daily", "UTC", T0, 0) == []


@pytest.mark.parametrize(
    ("expr", "now", "since", "expected"),
    [
        ("@hourly", utc(2024, 1, 1, 5, 30), None, utc(2024, 1, 1, 5)),
        ("@hourly", utc(2024, 1, 1, 5, 0), None, utc(2024, 1, 1, 5)),  # at or before
        ("@hourly", utc(2024, 1, 1, 5, 30), utc(2024, 1, 1, 2), utc(2024, 1, 1, 5)),  # older ones skipped
        ("@hourly", utc(2024, 1, 1, 5, 30), utc(2024, 1, 1, 5), None),  # already fired
        ("@every 10s", utc(2024, 1, 1, 0, 0, 25), None, utc(2024, 1, 1, 0, 0, 20)),
        ("@every 10s", utc(2024, 1, 1, 0, 0, 25), utc(2024, 1, 1, 0, 0, 20), None),
        ("0 0 1 * *", utc(2024, 3, 15), utc(2023, 12, 1), utc(2024, 3, 1)),
    ],
)
def test_latest_fire_at_or_before(expr: str, now: datetime, since: datetime | None, expected: datetime | None) -> None:
    assert latest_fire_at_or_before(expr, "UTC", now, since) == expected


# -- daylight saving time: Europe/Berlin springs forward 2024-03-31 02:00 → 03:00 and
# falls back 2024-10-27 03:00 → 02:00.


def test_dst_spring_forward_daily_in_the_gap_is_not_skipped() -> None:
    fires = next_fires("30 2 * * *", BERLIN, utc(2024, 3, 29, 12), 4)
    assert [local(f) for f in fires] == [
        "2024-03-30 02:30:00+0100",
        "2024-03-31 03:30:00+0200",  # 02:30 does not exist: fires just after the gap
        "2024-04-01 02:30:00+0200",
        "2024-04-02 02:30:00+0200",
    ]


def test_dst_spring_forward_hourly_never_fires_twice() -> None:
    fires = next_fires("@hourly", BERLIN, utc(2024, 3, 30, 23, 30), 4)
    assert [local(f) for f in fires] == [
        "2024-03-31 01:00:00+0100",
        "2024-03-31 03:00:00+0200",
        "2024-03-31 04:00:00+0200",
        "2024-03-31 05:00:00+0200",
    ]
    assert len(set(fires)) == len(fires)


def test_dst_spring_forward_steps_inside_the_gap() -> None:
    fires = next_fires("*/30 2 * * *", BERLIN, utc(2024, 3, 30, 12), 4)
    assert [local(f) for f in fires] == [
        "2024-03-31 03:00:00+0200",
        "2024-03-31 03:30:00+0200",
        "2024-04-01 02:00:00+0200",
        "2024-04-01 02:30:00+0200",
    ]


def test_dst_fall_back_daily_fires_once() -> None:
    fires = next_fires("30 2 * * *", BERLIN, utc(2024, 10, 25, 12), 4)
    assert [local(f) for f in fires] == [
        "2024-10-26 02:30:00+0200",
        "2024-10-27 02:30:00+0200",  # first pass only
        "2024-10-28 02:30:00+0100",
        "2024-10-29 02:30:00+0100",
    ]


def test_dst_fall_back_hourly_keeps_real_time_rhythm() -> None:
    fires = next_fires("@hourly", BERLIN, utc(2024, 10, 26, 22, 30), 4)
    assert [local(f) for f in fires] == [
        "2024-10-27 01:00:00+0200",
        "2024-10-27 02:00:00+0200",
        "2024-10-27 02:00:00+0100",  # the repeated hour is a real hour later
        "2024-10-27 03:00:00+0100",
    ]
    assert [b - a for a, b in itertools.pairwise(fires)] == [timedelta(hours=1)] * 3


def test_dst_fall_back_fixed_hour_fires_first_pass_only() -> None:
    fires = next_fires("*/30 2 * * *", BERLIN, utc(2024, 10, 26, 12), 3)
    assert [local(f) for f in fires] == [
        "2024-10-27 02:00:00+0200",
        "2024-10-27 02:30:00+0200",
        "2024-10-28 02:00:00+0100",
    ]


def test_dst_daily_over_a_year_one_fire_per_day() -> None:
    fires = next_fires("30 2 * * *", BERLIN, utc(2023, 12, 31, 12), 366)
    days = [f.astimezone(zone(BERLIN)).date() for f in fires]
    assert len(set(days)) == 366
    assert days[0].isoformat() == "2024-01-01" and days[-1].isoformat() == "2024-12-31"


@pytest.mark.parametrize("expr", ["@hourly", "*/20 * * * *", "30 2 * * *", "15 1-3 * * *", "0 0 2 * * *"])
@pytest.mark.parametrize("start", [utc(2024, 3, 30, 20), utc(2024, 10, 26, 20)])
def test_dst_latest_fire_agrees_with_next_fire(expr: str, start: datetime) -> None:
    fires = next_fires(expr, BERLIN, start, 30)
    for fire in fires:
        assert latest_fire_at_or_before(expr, BERLIN, fire) == fire
    for before, fire in itertools.pairwise(fires):
        assert latest_fire_at_or_before(expr, BERLIN, fire - timedelta(seconds=1)) == before
        assert latest_fire_at_or_before(expr, BERLIN, fire - timedelta(seconds=1), before) is None


# -- helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("built", "text"),
    [
        (every("5m"), "@every 5m"),
        (every(90), "@every 1m30s"),
        (every(timedelta(hours=2)), "@every 2h"),
        (every(minutes=5), "@every 5m"),
        (every(hours=1, minutes=30), "@every 1h30m"),
        (every(days=1), "@every 1d"),
        (daily(9), "0 9 * * *"),
        (daily(9, 30), "30 9 * * *"),
        (daily(9, 30, 15), "15 30 9 * * *"),
        (weekly(0, 9), "0 9 * * 1"),  # 0 = Monday, as calendar.MONDAY
        (weekly(6, 9), "0 9 * * 0"),  # 6 = Sunday
        (weekly("fri", 17, 45), "45 17 * * 5"),
        (weekly("Sunday"), "0 0 * * 0"),
        (monthly(1, 6), "0 6 1 * *"),
        (monthly(15, 12, 30), "30 12 15 * *"),
        (monthly("last", 23), "0 23 L * *"),
    ],
)
def test_helpers_build_valid_expressions(built: Cron, text: str) -> None:
    assert isinstance(built, str) and isinstance(built, Cron)
    assert built == text
    validate_cron(built)


def test_helpers_fire_where_expected() -> None:
    assert next_fire(weekly("mon", 9), "UTC", T0) == utc(2024, 1, 1, 9)
    assert next_fire(monthly("last", 0), "UTC", utc(2024, 2, 2)) == utc(2024, 2, 29)
    assert next_fire(daily(9), BERLIN, utc(2024, 1, 1, 9)) == utc(2024, 1, 2, 8)
    assert next_fire(every("30s"), "UTC", T0) == utc(2024, 1, 1, 0, 0, 30)


@pytest.mark.parametrize(
    "call",
    [
        lambda: every(),
        lambda: every("5m", minutes=5),
        lambda: every(0.5),
        lambda: every("never"),
        lambda: daily(24),
        lambda: daily(9, 60),
        lambda: daily(True),
        lambda: weekly(7),
        lambda: weekly("someday"),
        lambda: monthly(0),
        lambda: monthly(32),
    ],
)
def test_helpers_reject_bad_arguments(call: object) -> None:
    with pytest.raises(ValidationError) as info:
        call()  # type: ignore[operator]
    assert info.value.field == "cron"
