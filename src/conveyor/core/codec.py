"""JSON encoding of payloads, results and metadata (orjson: fast, strict).

Strict JSON both ways: ``loads`` refuses ``NaN``, ``Infinity`` and numbers that overflow
a double (``1e400``), and ``encode_checked`` refuses the non-finite floats that orjson
would otherwise write as ``null`` (silently changing the data).
"""

from __future__ import annotations

import dataclasses
import math
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
    """Encode ``value`` as strict JSON or raise a ValidationError naming ``field`` (and
    the path inside it, e.g. ``payload.items[2]``)."""
    try:
        encoded = orjson.dumps(value)
    except TypeError as exc:
        raise ValidationError(field, f"not JSON-serialisable: {exc}") from exc
    # orjson writes NaN and ±Infinity as null: only then can a value hide one, so the
    # walk runs only for encodings that contain a null.
    if b"null" in encoded:
        path = _non_finite_path(value, field)
        if path is not None:
            raise ValidationError(path, "NaN and Infinity are not JSON numbers")
    return encoded


def _non_finite_path(value: Any, path: str) -> str | None:
    """The path of the first non-finite float inside ``value`` (as orjson walks it)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, dict):
        items: Any = ((f"{path}.{key}", item) for key, item in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{path}[{i}]", item) for i, item in enumerate(value))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = ((f"{path}.{f.name}", getattr(value, f.name)) for f in dataclasses.fields(value))
    else:
        return None
    for sub_path, item in items:
        found = _non_finite_path(item, sub_path)
        if found is not None:
            return found
    return None
