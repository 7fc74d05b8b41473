"""JSON encoding of payloads, results and metadata (orjson: fast, strict).

Strict JSON both ways: ``loads`` refuses ``NaN``, ``Infinity`` and numbers that overflow
a double (``1e400``); ``loads_input`` also refuses integers outside the 64-bit range, which
orjson would read as floats; ``encode_checked`` refuses the non-finite floats that orjson
would otherwise write as ``null`` and says which limit a value breaks. Nothing is
silently changed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
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


# The integers orjson keeps exact (and can write back); it reads any other integer
# literal as a float (2**64 becomes 1.8446744073709552e+19). Only a run of 19 or more
# digits can be one, so only such input is parsed a second time, to check.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_LONG_DIGITS = re.compile(rb"[0-9]{19}")

# orjson.dumps refuses values nested deeper than this many arrays or objects.
MAX_DEPTH = 254


def loads_input(data: bytes | str) -> Any:
    """``loads`` for what users send (HTTP bodies, WebSocket messages, CLI arguments):
    an integer outside the 64-bit range is a ``json.JSONDecodeError`` (a ValueError), not
    a float."""
    value = orjson.loads(data)
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_DIGITS.search(raw):
        text = raw.decode()  # valid UTF-8: orjson has read it

        def checked(literal: str) -> int:
            number = int(literal)
            if not _INT_MIN <= number <= _INT_MAX:
                shown = literal if len(literal) <= 30 else f"{literal[:27]}..."
                raise json.JSONDecodeError(f"integer {shown} is outside the 64-bit range", text, text.find(literal))
            return number

        json.loads(text, parse_int=checked)
    return value


def encode_checked(value: Any, *, field: str) -> bytes:
    """Encode ``value`` as strict JSON or raise a ValidationError naming ``field`` (and
    the path inside it, e.g. ``payload.items[2]``)."""
    try:
        encoded = orjson.dumps(value)
    except TypeError as exc:
        if str(exc) == "Recursion limit reached":
            raise ValidationError(field, f"nested deeper than {MAX_DEPTH} levels of arrays and objects") from exc
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
