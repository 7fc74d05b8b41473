"""Pure core: durations, backoff, validation, settings."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import TypedDict

import pydantic
import pytest

from conveyor.core.backoff import backoff_delay, parse_backoff
from conveyor.core.duration import format_duration, parse_duration
from conveyor.core.errors import ConfigurationError, PayloadTooLarge, ValidationError
from conveyor.core.job import JobStatus
from conveyor.core.lifecycle import failed, snoozed, worker_lost
from conveyor.core.options import (
    JobDefaults,
    build_job,
    build_job_from_mapping,
    build_update,
    parse_datetime,
    validate_topic,
)
from conveyor.settings import Settings

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10),
        ("10m", 600),
        ("1h30m", 5400),
        ("1h30s", 3630),
        ("2d", 172800),
        ("1w", 604800),
        (30, 30),
        (1.5, 1.5),
        ("45", 45),
        ("0", 0),
        ("2.5s", 2.5),
    ],
)
def test_parse_duration_accepts_numbers_and_units(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5x", "invalid duration '5x'"),
        ("", "invalid duration"),
        ("1h 30", "invalid duration"),
        (-1, "must not be negative"),
        ("abc", "invalid duration"),
        (True, "expected a duration"),
        (None, "expected a duration"),
        (float("nan"), "finite"),
    ],
)
def test_parse_duration_rejects_bad_input_with_a_message(text: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        parse_duration(text, field="delay")
    assert info.value.field == "delay"
    assert str(info.value).startswith("delay: ")


def test_parse_duration_can_refuse_zero() -> None:
    with pytest.raises(ValidationError, match="greater than 0"):
        parse_duration(0, field="timeout", allow_zero=False)


@pytest.mark.parametrize(
    ("seconds", "text"), [(330, "5m30s"), (600, "10m0s"), (3661, "1h1m1s"), (0.25, "250ms"), (5, "5s")]
)
def test_format_duration_like_the_seed(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("none", [0, 0, 0, 0]),
        ("constant", [60, 60, 60, 60]),
        ("linear", [60, 120, 180, 240]),
        ("exponential", [60, 120, 240, 480]),
        ("quadratic", [60, 240, 540, 960]),
    ],
)
def test_backoff_delays_follow_the_spec(strategy: str, expected: list[float]) -> None:
    assert [backoff_delay(strategy, 60, n) for n in range(1, 5)] == expected


def test_backoff_jitter_stays_within_half_either_side() -> None:
    assert backoff_delay("constant", 100, 1, jitter=True, rand=lambda: 0.0) == 50
    assert backoff_delay("constant", 100, 1, jitter=True, rand=lambda: 0.999) == pytest.approx(149.9)


def test_exponential_backoff_is_capped_at_the_longest_duration_and_a_long_base_is_kept() -> None:
    assert backoff_delay("exponential", 60, 10_000) == 10 * 365 * 86400
    assert backoff_delay("constant", 800 * 86400, 3) == 800 * 86400  # a retry_delay of 800d is 800d


def test_parse_backoff_accepts_jitter_and_rejects_unknown() -> None:
    assert parse_backoff("exponential+jitter") == ("exponential", True)
    with pytest.raises(ValidationError, match="unknown backoff 'fibonacci'"):
        parse_backoff("fibonacci")


def _job(**kw: object):
    return build_job("t", None, now=NOW, defaults=JobDefaults(), **kw)


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ("", "topic: must not be empty"),
        ("a b", "topic: invalid topic 'a b'"),
        ("x" * 201, "at most 200 characters"),
        ("é", "invalid topic"),
        (5, "expected a string"),
    ],
)
def test_topic_rules(topic: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        build_job(topic, None, now=NOW, defaults=JobDefaults())


def test_a_bad_schedule_name_is_called_a_name_not_a_topic() -> None:
    with pytest.raises(ValidationError, match="name: invalid name 'bad name!'"):
        validate_topic("bad name!", field="name")


def test_valid_topic_characters() -> None:
    assert build_job("A-z_0.9:x", None, now=NOW, defaults=JobDefaults()).topic == "A-z_0.9:x"


def test_payload_limit() -> None:
    build_job("t", "x" * 100, now=NOW, defaults=JobDefaults(max_payload_size=102))
    with pytest.raises(PayloadTooLarge, match="payload: encoded size 103 bytes exceeds the limit of 102 bytes"):
        build_job("t", "x" * 101, now=NOW, defaults=JobDefaults(max_payload_size=102))


def test_payload_must_be_json() -> None:
    with pytest.raises(ValidationError, match="payload: not JSON-serialisable"):
        build_job("t", {1, 2}, now=NOW, defaults=JobDefaults())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"priority": "high"}, "priority: expected an integer"),
        ({"priority": 2**40}, "priority: must be between"),
        ({"max_retries": -1}, "max_retries: must be between 0"),
        ({"retry_delay": "soon"}, "retry_delay: invalid duration"),
        ({"timeout": 0}, "timeout: duration must be greater than 0"),
        ({"backoff": "random"}, "backoff: unknown backoff"),
        ({"metadata": [1]}, "metadata: expected an object"),
        ({"unique_key": ""}, "unique_key: expected a non-empty string"),
        ({"run_at": "tomorrow"}, "run_at: invalid ISO 8601 time"),
        ({"run_at": NOW, "delay": 1}, "run_at and delay are mutually exclusive"),
    ],
)
def test_option_validation_names_the_field(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _job(**options)


def test_defaults_and_times() -> None:
    job = _job()
    assert job.status is JobStatus.PENDING
    assert job.run_at == NOW
    assert (job.max_retries, job.retry_delay, job.backoff, job.timeout) == (3, 60.0, "quadratic", None)
    assert _job(delay="10m").run_at == NOW + timedelta(minutes=10)


def test_naive_times_are_utc_and_aware_ones_converted() -> None:
    assert parse_datetime("2026-01-01T10:00:00", field="run_at") == datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert parse_datetime("2026-01-01T10:00:00+02:00", field="run_at") == datetime(2026, 1, 1, 8, tzinfo=UTC)
    assert parse_datetime("2026-01-01T10:00:00Z", field="run_at").tzinfo is not None
    east = timezone(timedelta(hours=8))
    assert parse_datetime(datetime(2026, 1, 1, 8, tzinfo=east), field="run_at").hour == 0


def test_enqueue_many_item_errors_name_the_item() -> None:
    with pytest.raises(ValidationError, match=r"jobs\[2\]\.priority"):
        build_job_from_mapping({"topic": "t", "priority": "x"}, now=NOW, defaults=JobDefaults(), index=2)
    with pytest.raises(ValidationError, match=r"jobs\[0\]\.colour: unknown field"):
        build_job_from_mapping({"topic": "t", "colour": 1}, now=NOW, defaults=JobDefaults(), index=0)


def test_update_validation() -> None:
    assert build_update({"priority": 3}, now=NOW, defaults=JobDefaults()) == {"priority": 3}
    with pytest.raises(ValidationError, match="status: cannot be updated"):
        build_update({"status": "completed"}, now=NOW, defaults=JobDefaults())


def test_failure_retries_with_backoff_until_the_budget_is_used() -> None:
    job = _job(max_retries=2, retry_delay=10, backoff="linear")
    job.attempts = 1
    first = failed(job, "w", "boom", NOW)
    assert first.status is JobStatus.PENDING and first.run_at == NOW + timedelta(seconds=10)
    job.attempts = 2
    assert failed(job, "w", "boom", NOW).run_at == NOW + timedelta(seconds=20)
    job.attempts = 3
    assert failed(job, "w", "boom", NOW).status is JobStatus.FAILED
    job.attempts = 1
    assert failed(job, "w", "boom", NOW, permanent=True).status is JobStatus.FAILED


def test_snooze_and_worker_lost_outcomes() -> None:
    job = _job()
    job.attempts = 1
    out = snoozed(job, "w", 30, NOW)
    assert out.refund_attempt and out.run_at == NOW + timedelta(seconds=30)
    job.locked_by = "dead"
    lost = worker_lost(job, NOW)
    assert lost.locked_by == "dead" and "worker lost" in (lost.last_error or "")
    job.cancel_requested = True
    assert worker_lost(job, NOW).status is JobStatus.CANCELLED


@dataclasses.dataclass
class Email:
    to: str
    subject: str = ""


class EmailModel(pydantic.BaseModel):
    to: str


class EmailDict(TypedDict):
    to: str


def test_payload_as_builds_dataclasses_models_and_typed_dicts() -> None:
    job = build_job("t", {"to": "a@b.c"}, now=NOW, defaults=JobDefaults())
    assert job.payload_as(Email) == Email(to="a@b.c")
    assert job.payload_as(EmailModel).to == "a@b.c"
    assert job.payload_as(EmailDict) == {"to": "a@b.c"}
    bad = build_job("t", {"from": "x"}, now=NOW, defaults=JobDefaults())
    for model in (Email, EmailModel, EmailDict):
        with pytest.raises(ValidationError, match=r"payload\.(from|to): "):  # names the field
            bad.payload_as(model)


def test_settings_from_env_and_overrides() -> None:
    s = Settings.from_env({"CONVEYOR_WORKERS": "4", "CONVEYOR_POLL_INTERVAL": "250ms", "CONVEYOR_RETENTION": "0"})
    assert (s.workers, s.poll_interval, s.retention) == (4, 0.25, 0)
    assert Settings.from_env({"CONVEYOR_URL": "memory://"}, url="sqlite:///x.db").url == "sqlite:///x.db"
    assert Settings.from_env({}).url == "sqlite:///conveyor.db"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CONVEYOR_WORKERS", "abc", "invalid CONVEYOR_WORKERS='abc': expected an integer"),
        ("CONVEYOR_WORKERS", "0", "CONVEYOR_WORKERS.*between 1"),
        ("CONVEYOR_POLL_INTERVAL", "-1s", "CONVEYOR_POLL_INTERVAL"),
        ("CONVEYOR_LOCK_DURATION", "forever", "CONVEYOR_LOCK_DURATION"),
        ("CONVEYOR_URL", "ftp://x", "CONVEYOR_URL"),
        ("CONVEYOR_HTTP_ENABLED", "maybe", "CONVEYOR_HTTP_ENABLED.*true or false"),
        ("CONVEYOR_LOG_FORMAT", "xml", "CONVEYOR_LOG_FORMAT.*text, json"),
        ("CONVEYOR_MAX_PAYLOAD_SIZE", "-5", "CONVEYOR_MAX_PAYLOAD_SIZE"),
        ("CONVEYOR_ALLOWED_TOPICS", "ok,bad topic!", "CONVEYOR_ALLOWED_TOPICS.*'bad topic!' is not a topic"),
        ("CONVEYOR_ALLOWED_TOPICS", "email:**", "CONVEYOR_ALLOWED_TOPICS.*prefix ending in"),
    ],
)
def test_bad_environment_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        Settings.from_env({name: value})
    assert info.value.variable == name


def test_settings_given_in_code_follow_the_environment_s_rules() -> None:
    s = Settings(lock_duration="2s", retry_delay="1m", workers="4", http_enabled="off", allowed_topics=["a", "b:*"])
    assert (s.lock_duration, s.retry_delay, s.workers, s.http_enabled) == (2.0, 60.0, 4, False)
    assert s.allowed_topics == ("a", "b:*")
    assert s.replace(poll_interval="250ms").poll_interval == 0.25
    for change, field in (
        ({"lock_duration": "bogus"}, "lock_duration"),
        ({"workers": 0}, "workers"),
        ({"max_retries": True}, "max_retries"),
        ({"log_format": "xml"}, "log_format"),
        ({"nope": 1}, "nope"),
    ):
        with pytest.raises(ValidationError) as info:
            s.replace(**change)
        assert info.value.field == field


def test_allowed_topics_take_topics_and_prefixes() -> None:
    env = {"CONVEYOR_ALLOWED_TOPICS": " email:* , report,, * "}
    assert Settings.from_env(env).allowed_topics == ("email:*", "report", "*")


def test_job_ids_are_uuid7_and_strictly_increasing() -> None:
    import uuid

    from conveyor.core.ids import new_job_id

    ids = [new_job_id() for _ in range(20_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    parsed = uuid.UUID(ids[-1])
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122


def test_job_copy_keeps_every_field() -> None:
    job = build_job("t", {"a": 1}, now=NOW, defaults=JobDefaults(), metadata={"m": 1}, unique_key="k")
    # A distinct, non-default value in every field, so a field the copy drops shows.
    job.last_error, job.result, job.schedule, job.started_at = "boom", {"r": 2}, "nightly", NOW
    job.finished_at, job.locked_by, job.locked_until, job.cancel_requested = NOW, "w1", NOW, True
    clone = job.copy()
    assert clone is not job
    assert dataclasses.asdict(clone) == dataclasses.asdict(job)


def test_a_client_given_settings_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from conveyor import AsyncConveyor, Conveyor

    monkeypatch.setenv("CONVEYOR_URL", "memory://")
    monkeypatch.setenv("CONVEYOR_LOCK_DURATION", "not a duration")
    # Explicit settings: the environment is not consulted (a bad variable is harmless).
    client = AsyncConveyor(settings=Settings(url="sqlite:///given.db"))
    assert client.url == "sqlite:///given.db" and client.settings.lock_duration == 300.0
    # No settings: the app's defaults come from the CONVEYOR_* environment (docs: Conveyor()).
    with pytest.raises(ConfigurationError, match="CONVEYOR_LOCK_DURATION"):
        AsyncConveyor()
    monkeypatch.delenv("CONVEYOR_LOCK_DURATION")
    assert Conveyor().url == "memory://"
    assert Conveyor("sqlite:///explicit.db").url == "sqlite:///explicit.db"  # an explicit URL wins
