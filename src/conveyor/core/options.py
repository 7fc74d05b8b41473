"""Validation of enqueue/update input and construction of new job records. Pure."""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict

from conveyor.core import codec
from conveyor.core.backoff import DEFAULT_BACKOFF, parse_backoff
from conveyor.core.clock import ensure_utc
from conveyor.core.duration import MAX_DURATION_SECONDS, parse_duration
from conveyor.core.errors import PayloadTooLarge, ValidationError
from conveyor.core.ids import new_job_id
from conveyor.core.job import Job, JobStatus
from conveyor.core.payload import to_json_value
from conveyor.core.text import is_storable

TOPIC_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,200}")
PRIORITY_RANGE = (-(2**31), 2**31 - 1)
MAX_RETRIES_LIMIT = 1_000_000
MAX_UNIQUE_KEY_LENGTH = 255
# Job ids given by callers (enqueue_many's ``id``) follow the topic rule: they appear in
# URL paths and store keys.
JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,200}")
# Error texts (last_error, the errors list, fail()) keep their head and tail up to this
# many characters: a traceback's interesting parts.
MAX_ERROR_LENGTH = 64 * 1024
DEFAULT_MAX_PAYLOAD_SIZE = 1024 * 1024
# Snoozes a job may take before it fails (a handler that always snoozes loops forever).
DEFAULT_MAX_SNOOZES = 100
MAX_SNOOZES_LIMIT = 1_000_000

# Arguments enqueue accepts, as the keys of an enqueue_many item.
ENQUEUE_FIELDS = frozenset(
    {
        "topic",
        "payload",
        "run_at",
        "delay",
        "priority",
        "max_retries",
        "max_snoozes",
        "retry_delay",
        "backoff",
        "timeout",
        "metadata",
        "unique_key",
        "schedule",
        "id",
    }
)
UPDATE_FIELDS = frozenset({"run_at", "delay", "payload", "priority", "max_retries", "metadata"})


class JobChanges(TypedDict, total=False):
    """What ``update()`` may change on a pending job (a key left out is not changed)."""

    run_at: datetime | str | None
    delay: float | str | None
    payload: Any
    priority: int | None
    max_retries: int | None
    metadata: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class JobDefaults:
    """What a new job gets for each option its enqueue does not give: the settings'
    defaults, overlaid with its handler's (``JobDefaults.overlaid``)."""

    max_retries: int = 3
    retry_delay: float = 60.0
    backoff: str = DEFAULT_BACKOFF.value
    max_payload_size: int = DEFAULT_MAX_PAYLOAD_SIZE
    priority: int = 0
    timeout: float | None = None
    max_snoozes: int = DEFAULT_MAX_SNOOZES

    def overlaid(self, options: JobOptions) -> JobDefaults:
        """These defaults with the options ``options`` sets (validated) in their place."""
        changes = {name: getattr(options, name) for name in JOB_OPTION_NAMES if getattr(options, name) is not None}
        return dataclasses.replace(self, **changes) if changes else self


# The job options a handler can set as defaults for the jobs of its topic.
JOB_OPTION_NAMES = ("priority", "max_retries", "retry_delay", "backoff", "timeout", "max_snoozes")


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Validated job options, None where not set: a handler's defaults for its jobs.

    Precedence at enqueue: an argument of the enqueue call, then the handler's
    ``JobOptions``, then the settings (``CONVEYOR_MAX_RETRIES``, ...).
    """

    priority: int | None = None
    max_retries: int | None = None
    retry_delay: float | None = None
    backoff: str | None = None
    timeout: float | None = None
    max_snoozes: int | None = None

    @classmethod
    def validated(
        cls,
        *,
        priority: object = None,
        max_retries: object = None,
        retry_delay: object = None,
        backoff: object = None,
        timeout: object = None,
        max_snoozes: object = None,
    ) -> JobOptions:
        """Validate options as enqueue does; None leaves an option unset.

        Raises:
            ValidationError: a bad value; the error names the option.
        """
        return cls(
            priority=None if priority is None else validate_priority(priority),
            max_retries=None if max_retries is None else validate_max_retries(max_retries),
            retry_delay=None
            if retry_delay is None
            else _bounded_duration(retry_delay, field="retry_delay", allow_zero=True),
            backoff=None if backoff is None else validate_backoff(backoff),
            timeout=None if timeout is None else _bounded_duration(timeout, field="timeout", allow_zero=False),
            max_snoozes=None if max_snoozes is None else validate_max_snoozes(max_snoozes),
        )

    def to_dict(self) -> dict[str, Any]:
        """The options that are set, by name."""
        return {name: getattr(self, name) for name in JOB_OPTION_NAMES if getattr(self, name) is not None}


@functools.lru_cache(maxsize=4096)
def _is_valid_topic(topic: str) -> bool:
    return TOPIC_PATTERN.fullmatch(topic) is not None


def validate_topic(topic: object, *, field: str = "topic") -> str:
    if isinstance(topic, str) and _is_valid_topic(topic):
        return topic
    if not isinstance(topic, str):
        raise ValidationError(field, f"expected a string, got {type(topic).__name__}")
    if not TOPIC_PATTERN.fullmatch(topic):
        if not topic:
            raise ValidationError(field, "must not be empty")
        if len(topic) > 200:
            raise ValidationError(field, f"must be at most 200 characters, got {len(topic)}")
        what = "name" if field == "name" else "topic"  # a schedule's name follows the topic rule
        raise ValidationError(field, f"invalid {what} {topic!r}: only letters, digits and _ . : - are allowed")
    return topic


def validate_int(value: object, *, field: str, low: int, high: int) -> int:
    if type(value) is int and low <= value <= high:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValidationError(field, f"expected an integer, got {value!r}")
    if not low <= value <= high:
        raise ValidationError(field, f"must be between {low} and {high}, got {value}")
    return value


def validate_priority(value: object) -> int:
    return validate_int(value, field="priority", low=PRIORITY_RANGE[0], high=PRIORITY_RANGE[1])


def validate_max_retries(value: object) -> int:
    return validate_int(value, field="max_retries", low=0, high=MAX_RETRIES_LIMIT)


def validate_max_snoozes(value: object) -> int:
    return validate_int(value, field="max_snoozes", low=0, high=MAX_SNOOZES_LIMIT)


def validate_backoff(value: object) -> str:
    """A backoff name as stored: ``"exponential"`` or ``"exponential+jitter"``."""
    strategy, jitter = parse_backoff(value)
    return strategy.value + ("+jitter" if jitter else "")


def validate_payload(payload: Any, *, max_size: int, field: str = "payload") -> bytes:
    encoded = codec.encode_checked(payload, field=field)
    if len(encoded) > max_size:
        raise PayloadTooLarge(len(encoded), max_size, field)
    return encoded


def validate_metadata(metadata: object, *, max_size: int = DEFAULT_MAX_PAYLOAD_SIZE) -> dict[str, Any]:
    """A metadata object: string keys, strict JSON, encoded size within ``max_size``
    (the payload limit)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValidationError("metadata", f"expected an object, got {type(metadata).__name__}")
    out = dict(metadata)
    if any(not isinstance(k, str) for k in out):
        raise ValidationError("metadata", "keys must be strings")
    encoded = codec.encode_checked(out, field="metadata")
    if len(encoded) > max_size:
        raise PayloadTooLarge(len(encoded), max_size, "metadata")
    return out


def validate_result(result: Any, *, max_size: int) -> bytes:
    """A handler's (or ``complete()``'s) result: strict JSON within the payload limit.

    Raises:
        ValidationError: not JSON-serialisable (or NaN/Infinity), naming ``result``.
        PayloadTooLarge: the encoded result exceeds ``max_size``.
    """
    encoded = codec.encode_checked(result, field="result")
    if len(encoded) > max_size:
        raise PayloadTooLarge(len(encoded), max_size, "result")
    return encoded


def bound_error_text(text: str) -> str:
    """``text`` cut to ``MAX_ERROR_LENGTH`` characters, keeping its head and its tail
    (where a traceback ends with the exception)."""
    if len(text) <= MAX_ERROR_LENGTH:
        return text
    half = MAX_ERROR_LENGTH // 2
    return f"{text[:half]}\n... [{len(text) - 2 * half} characters cut] ...\n{text[-half:]}"


def validate_text(value: object, *, field: str, max_length: int) -> str:
    """A non-empty string of at most ``max_length`` characters without NUL (which no
    store's text columns hold)."""
    if not isinstance(value, str) or not value:
        raise ValidationError(field, "expected a non-empty string")
    if len(value) > max_length:
        raise ValidationError(field, f"must be at most {max_length} characters")
    if not is_storable(value):
        if "\x00" in value:
            raise ValidationError(field, "must not contain NUL (\\u0000) characters")
        raise ValidationError(field, "must be valid Unicode text (it holds a lone surrogate)")
    return value


def validate_job_id(value: object, *, field: str = "id") -> str:
    if isinstance(value, str) and JOB_ID_PATTERN.fullmatch(value):
        return value
    if not isinstance(value, str):
        raise ValidationError(field, f"expected a string, got {type(value).__name__}")
    raise ValidationError(field, "must be 1-200 characters of letters, digits and _ . : -")


def parse_datetime(value: object, *, field: str) -> datetime:
    """ISO 8601 string or datetime → aware UTC datetime (naive means UTC)."""
    if isinstance(value, datetime):
        return _to_utc(value, field)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValidationError(field, f"invalid ISO 8601 time {value!r}") from None
        return _to_utc(parsed, field)
    raise ValidationError(field, f"expected an ISO 8601 time, got {type(value).__name__}")


def _to_utc(value: datetime, field: str) -> datetime:
    try:
        return ensure_utc(value)
    except OverflowError:
        # 0001-01-01T00:00:00+14:00 is before year 1 in UTC; 9999-12-31T23:59:59-14:00 after 9999.
        raise ValidationError(field, f"{value.isoformat()} is outside the years 1-9999 in UTC") from None


def add_seconds(now: datetime, seconds: float, *, field: str) -> datetime:
    """``now`` plus ``seconds``, or a ValidationError naming ``field`` past year 9999."""
    try:
        return now + timedelta(seconds=seconds)
    except OverflowError:
        raise ValidationError(field, "the resulting time is past the year 9999") from None


def resolve_run_at(run_at: object, delay: object, now: datetime) -> datetime:
    if run_at is not None and delay is not None:
        raise ValidationError("run_at", "run_at and delay are mutually exclusive; give one of them")
    if delay is not None:
        seconds = parse_duration(delay, field="delay")
        if seconds > MAX_DURATION_SECONDS:
            raise ValidationError("delay", "must be at most 10 years")
        return add_seconds(now, seconds, field="delay")
    if run_at is not None:
        return parse_datetime(run_at, field="run_at")
    return now


def _bounded_duration(value: object, *, field: str, allow_zero: bool) -> float:
    seconds = parse_duration(value, field=field, allow_zero=allow_zero)
    if seconds > MAX_DURATION_SECONDS:
        raise ValidationError(field, "must be at most 10 years")
    return seconds


def build_job(
    topic: object,
    payload: Any = None,
    *,
    now: datetime,
    defaults: JobDefaults,
    run_at: object = None,
    delay: object = None,
    priority: object = None,
    max_retries: object = None,
    max_snoozes: object = None,
    retry_delay: object = None,
    backoff: object = None,
    timeout: object = None,
    metadata: object = None,
    unique_key: object = None,
    schedule: str | None = None,
    id: str | None = None,  # noqa: A002 - the job field's name
) -> Job:
    """Validate enqueue arguments and return the new ``pending`` job.

    Raises:
        ValidationError: an argument is invalid; the error names it.
        PayloadTooLarge: the encoded payload exceeds ``defaults.max_payload_size``.
    """
    validate_topic(topic)
    assert isinstance(topic, str)
    payload = to_json_value(payload)  # a dataclass or pydantic model instance: its JSON form
    validate_payload(payload, max_size=defaults.max_payload_size)
    if id is not None:
        validate_job_id(id)
    if schedule is not None:
        validate_topic(schedule, field="schedule")
    backoff_name = defaults.backoff if backoff is None else validate_backoff(backoff)  # defaults: validated
    key = (
        None if unique_key is None else validate_text(unique_key, field="unique_key", max_length=MAX_UNIQUE_KEY_LENGTH)
    )
    return Job(
        id=id or new_job_id(),
        topic=topic,
        payload=payload,
        status=JobStatus.PENDING,
        priority=defaults.priority if priority is None else validate_priority(priority),
        run_at=resolve_run_at(run_at, delay, now),
        attempts=0,
        max_retries=defaults.max_retries if max_retries is None else validate_max_retries(max_retries),
        retry_delay=defaults.retry_delay
        if retry_delay is None
        else _bounded_duration(retry_delay, field="retry_delay", allow_zero=True),
        backoff=backoff_name,
        timeout=defaults.timeout if timeout is None else _bounded_duration(timeout, field="timeout", allow_zero=False),
        last_error=None,
        result=None,
        metadata={} if metadata is None else validate_metadata(metadata, max_size=defaults.max_payload_size),
        unique_key=key,
        schedule=schedule,
        created_at=now,
        updated_at=now,
        max_snoozes=defaults.max_snoozes if max_snoozes is None else validate_max_snoozes(max_snoozes),
    )


def build_job_from_mapping(
    item: Mapping[str, Any],
    *,
    now: datetime,
    index: int,
    defaults: JobDefaults | None = None,
    defaults_for: Callable[[str], JobDefaults] | None = None,
) -> Job:
    """One ``enqueue_many`` item; errors name the item, e.g. ``jobs[3].topic``.

    ``defaults_for(topic)`` (a topic's own defaults) wins over ``defaults``.
    """
    if not isinstance(item, Mapping):
        raise ValidationError(f"jobs[{index}]", "expected an object with the arguments of enqueue")
    if not ENQUEUE_FIELDS.issuperset(item):
        unknown = sorted(set(item) - ENQUEUE_FIELDS)
        raise ValidationError(f"jobs[{index}].{unknown[0]}", "unknown field")
    if "topic" not in item:
        raise ValidationError(f"jobs[{index}].topic", "is required")
    args = dict(item)
    topic = args.pop("topic")
    if defaults_for is not None and isinstance(topic, str):
        defaults = defaults_for(topic)
    try:
        return build_job(topic, args.pop("payload", None), now=now, defaults=defaults or JobDefaults(), **args)
    except ValidationError as exc:
        if isinstance(exc, PayloadTooLarge):
            raise PayloadTooLarge(exc.size, exc.limit, f"jobs[{index}].payload") from exc
        raise ValidationError(f"jobs[{index}].{exc.field}", exc.reason) from exc


def build_update(changes: Mapping[str, Any], *, now: datetime, defaults: JobDefaults) -> dict[str, Any]:
    """Validate an update of a pending job into stored field values."""
    unknown = sorted(set(changes) - UPDATE_FIELDS)
    if unknown:
        raise ValidationError(unknown[0], f"cannot be updated; updatable fields: {', '.join(sorted(UPDATE_FIELDS))}")
    out: dict[str, Any] = {}
    if changes.get("run_at") is not None or changes.get("delay") is not None:
        out["run_at"] = resolve_run_at(changes.get("run_at"), changes.get("delay"), now)
    if "payload" in changes:
        out["payload"] = to_json_value(changes["payload"])
        validate_payload(out["payload"], max_size=defaults.max_payload_size)
    if changes.get("priority") is not None:
        out["priority"] = validate_int(
            changes["priority"], field="priority", low=PRIORITY_RANGE[0], high=PRIORITY_RANGE[1]
        )
    if changes.get("max_retries") is not None:
        out["max_retries"] = validate_int(changes["max_retries"], field="max_retries", low=0, high=MAX_RETRIES_LIMIT)
    if "metadata" in changes:
        out["metadata"] = validate_metadata(changes["metadata"], max_size=defaults.max_payload_size)
    return out
