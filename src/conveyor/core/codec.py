"""JSON encoding of payloads, results and metadata (orjson: fast, strict)."""

from __future__ import annotations

from typing import Any

import orjson

from conveyor.core.errors import ValidationError


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def dumps_str(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(data: bytes | bytearray | memoryview | str | None) -> Any:
    if data is None:
        return None
    return orjson.loads(data)


def encode_checked(value: Any, *, field: str) -> bytes:
    """Encode ``value`` or raise a ValidationError naming ``field``."""
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        raise ValidationError(field, f"not JSON-serialisable: {exc}") from exc
