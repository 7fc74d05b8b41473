"""Settings: defaults, the ``CONVEYOR_*`` environment (README.md, Configuration) and explicit overrides.

``Settings.from_env`` is the one reader of the environment: the CLI calls it, and so do
the clients created without ``settings=`` (``Conveyor()`` takes ``CONVEYOR_URL``);
everything else gets a ``Settings`` value. A bad value raises ``ConfigurationError``
naming the variable.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from conveyor.core.duration import MAX_DURATION_SECONDS, parse_duration
from conveyor.core.errors import ConfigurationError, ValidationError
from conveyor.core.options import TOPIC_PATTERN
from conveyor.core.redact import redact

DEFAULT_URL = "sqlite:///conveyor.db"
PREFIX = "CONVEYOR_"


class SettingsOverrides(TypedDict, total=False):
    """``Settings`` fields given as keyword arguments (``AsyncConveyor(url, workers=4)``),
    validated like the ``CONVEYOR_*`` variable of the same name: durations as seconds or
    strings such as ``"30s"``, lists as sequences or comma-separated strings. The URL is
    the clients' first argument (``SettingsChanges`` adds it)."""

    workers: int
    poll_interval: float | str
    lock_duration: float | str
    batch_size: int
    max_retries: int
    retry_delay: float | str
    max_payload_size: int
    http_enabled: bool
    auto_start: bool
    disabled: bool
    admin_token: str | None
    enqueue_tokens: Sequence[str] | str
    read_tokens: Sequence[str] | str
    allowed_topics: Sequence[str] | str
    retention: float | str
    log_format: str
    log_level: str
    pending_threshold: int
    max_retries_limit: int
    min_retry_delay: float | str
    min_schedule_interval: float | str


class SettingsChanges(SettingsOverrides, total=False):
    """``SettingsOverrides`` and ``url``: what ``configure()`` may change."""

    url: str


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of a client, worker and server, with its default. Build one with
    ``Settings.from_env()`` (the ``CONVEYOR_*`` variables) or directly; a bad value raises
    ``ValidationError`` naming the field."""

    url: str = DEFAULT_URL
    workers: int = 10
    poll_interval: float = 1.0
    lock_duration: float = 300.0
    # How long a stopping worker lets running jobs finish before handing them back.
    shutdown_timeout: float = 30.0
    batch_size: int = 10
    max_retries: int = 3
    retry_delay: float = 60.0
    max_payload_size: int = 1024 * 1024
    http_enabled: bool = True
    auto_start: bool = True
    disabled: bool = False
    admin_token: str | None = field(default=None, repr=False)
    enqueue_tokens: tuple[str, ...] = field(default=(), repr=False)
    read_tokens: tuple[str, ...] = field(default=(), repr=False)
    allowed_topics: tuple[str, ...] = ()
    retention: float = 7 * 86400.0
    log_format: str = "text"
    log_level: str = "INFO"
    pending_threshold: int = 10_000
    # Bounds on HTTP requests (docs/api.md "Limits"): max_retries for every role; a
    # retry delay and a schedule interval for callers without the admin role.
    max_retries_limit: int = 100
    min_retry_delay: float = 1.0
    min_schedule_interval: float = 60.0
    # PostgreSQL (docs/postgres.md): a direct connection for LISTEN when ``url`` goes
    # through a pooler; acknowledgements committed without waiting for the WAL flush.
    listen_url: str | None = field(default=None, repr=False)
    pg_async_ack: bool = True

    def __post_init__(self) -> None:
        # Values given in code go through the environment's rules too: "2s" is a
        # duration here as in CONVEYOR_LOCK_DURATION, and a bad one names its field.
        for name in _PARSERS:
            raw = getattr(self, name)
            if raw is not None:
                object.__setattr__(self, name, setting_value(name, raw))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``CONVEYOR_*`` variables, then ``overrides`` (None values ignored)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, parse in _PARSERS.items():
            raw = env.get(PREFIX + name.upper())
            if raw is None or raw.strip() == "":
                continue
            try:
                values[name] = parse(raw)
            except (ValueError, ValidationError) as exc:
                reason = exc.reason if isinstance(exc, ValidationError) else str(exc)
                shown = "<hidden>" if "token" in name else redact(raw)
                raise ConfigurationError(
                    f"invalid {PREFIX}{name.upper()}={shown!r}: {reason}", variable=PREFIX + name.upper()
                ) from None
        for key, value in overrides.items():
            if value is not None:
                values[key] = value
        return cls(**values)

    def store_options(self) -> dict[str, Any]:
        """What ``open_backend`` needs besides the URL: the PostgreSQL settings, for a
        PostgreSQL store."""
        if not self.url.lower().startswith(("postgresql://", "postgres://")):
            return {}
        return {"listen_url": self.listen_url, "async_ack": self.pg_async_ack}

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (None values ignored), validated like the environment.

        Raises:
            ValidationError: an unknown setting, or a bad value (named).
        """
        for name in changes:
            if name not in _FIELDS:
                raise ValidationError(name, f"not a setting; expected one of {', '.join(sorted(_FIELDS))}")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def setting_value(name: str, value: object) -> Any:
    """``value`` for setting ``name`` (a string as in ``CONVEYOR_<NAME>``, or the
    value itself: a number of seconds, a bool, a list), checked and normalised.

    Raises:
        ValidationError: the value is not valid for ``name``.
    """
    try:
        return _PARSERS[name](value)
    except ValueError as exc:
        raise ValidationError(name, str(exc)) from None
    except ValidationError as exc:
        raise ValidationError(name, exc.reason) from None


def _text(raw: object) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, got {type(raw).__name__}")
    return raw


def _int(low: int, high: int) -> Callable[[object], int]:
    def parse(raw: object) -> int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            value = raw
        else:
            try:
                value = int(_text(raw).strip())
            except ValueError:
                raise ValueError("expected an integer") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return parse


def _duration(*, allow_zero: bool, maximum: float, limit_text: str) -> Callable[[object], float]:
    """A duration within ``maximum`` seconds: a huge one would overflow the worker's
    date arithmetic (and stop its claim loop) long after start-up."""

    def parse(raw: object) -> float:
        seconds = parse_duration(raw, field="value", allow_zero=allow_zero)
        if seconds > maximum:
            raise ValueError(f"must be at most {limit_text}")
        return seconds

    return parse


def _bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = _text(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _csv(raw: object) -> tuple[str, ...]:
    """Comma-separated text, or a list/tuple of strings."""
    parts = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(parts, list | tuple):
        raise ValueError(f"expected comma-separated text or a list of strings, got {type(raw).__name__}")
    return tuple(_text(part).strip() for part in parts if _text(part).strip())


def _topic_patterns(raw: object) -> tuple[str, ...]:
    """Topics, or topic prefixes ending in ``*`` (``*`` alone: every topic)."""
    patterns = _csv(raw)
    for pattern in patterns:
        name = pattern[:-1] if pattern.endswith("*") else pattern
        if pattern != "*" and not TOPIC_PATTERN.fullmatch(name):
            raise ValueError(
                f"{pattern!r} is not a topic nor a topic prefix ending in * (letters, digits and _ . : - only)"
            )
    return patterns


_URL_SCHEMES = frozenset(
    {"memory", "sqlite", "postgresql", "postgres", "redis", "rediss"}
    | {"redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel"}
)


def _url(raw: object) -> str:
    text = _text(raw).strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme not in _URL_SCHEMES:
        raise ValueError("expected memory://, sqlite:///path.db, postgresql://... or redis://...")
    return text


def _postgres_url(raw: object) -> str:
    text = _text(raw).strip()
    if not text.lower().startswith(("postgresql://", "postgres://")):
        raise ValueError("expected a postgresql:// URL (a direct connection to the server)")
    return text


def _choice(*options: str) -> Callable[[object], str]:
    def parse(raw: object) -> str:
        text = _text(raw).strip().lower()
        if text not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return text

    return parse


def _log_level(raw: object) -> str:
    text = _text(raw).strip().upper()
    if text not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return text


def _token(raw: object) -> str:
    return _text(raw).strip()


_PARSERS: dict[str, Callable[[object], Any]] = {
    "url": _url,
    "workers": _int(1, 10_000),
    "poll_interval": _duration(allow_zero=False, maximum=3600.0, limit_text="1h"),
    "lock_duration": _duration(allow_zero=False, maximum=7 * 86400.0, limit_text="7d"),
    "shutdown_timeout": _duration(allow_zero=True, maximum=86400.0, limit_text="1d"),
    "batch_size": _int(1, 10_000),
    "max_retries": _int(0, 1_000_000),
    "retry_delay": _duration(allow_zero=True, maximum=MAX_DURATION_SECONDS, limit_text="10 years"),
    "max_payload_size": _int(1, 1024**3),
    "http_enabled": _bool,
    "auto_start": _bool,
    "disabled": _bool,
    "admin_token": _token,
    "enqueue_tokens": _csv,
    "read_tokens": _csv,
    "allowed_topics": _topic_patterns,
    "retention": _duration(allow_zero=True, maximum=MAX_DURATION_SECONDS, limit_text="10 years"),
    "log_format": _choice("text", "json"),
    "log_level": _log_level,
    "pending_threshold": _int(1, 2**31),
    "max_retries_limit": _int(0, 1_000_000),
    "min_retry_delay": _duration(allow_zero=True, maximum=86400.0, limit_text="1d"),
    "min_schedule_interval": _duration(allow_zero=True, maximum=86400.0, limit_text="1d"),
    "listen_url": _postgres_url,
    "pg_async_ack": _bool,
}
_FIELDS = frozenset(f.name for f in dataclasses.fields(Settings))
