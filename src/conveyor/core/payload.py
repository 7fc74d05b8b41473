"""Typed payloads both ways: a dataclass or pydantic model instance given to enqueue becomes
its JSON value, and ``Job.payload_as(Model)`` builds a dataclass, pydantic model or
TypedDict back from the stored JSON, checking and converting every field. Pure; imports
only ``conveyor.core`` (and pydantic only through the model it is given).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import types
import typing
import uuid
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar, cast

from conveyor.core import codec
from conveyor.core.clock import ensure_utc
from conveyor.core.errors import ValidationError
from conveyor.core.signals import PermanentError

T = TypeVar("T")
_JSON_SCALARS = (dict, list, str, int, float, bool)


class InvalidPayload(ValidationError, PermanentError):
    """The payload does not match the model a handler asked for.

    A ``ValidationError`` naming the field (``payload.count``) and a ``PermanentError``:
    raised in a handler, the job fails at once (retrying cannot change its payload).
    """


def to_json_value(payload: Any) -> Any:
    """``payload`` as the JSON value stored: a pydantic model or dataclass instance
    becomes its JSON form (datetimes as ISO strings); anything else is returned as is."""
    if payload is None or isinstance(payload, _JSON_SCALARS):
        return payload
    dump = getattr(payload, "model_dump", None)
    if dump is not None and not isinstance(payload, type):
        return dump(mode="json")
    if dataclasses.is_dataclass(payload) and not isinstance(payload, type):
        return codec.loads(codec.dumps(payload))
    return payload


def build(model: type[T], data: Any) -> T:
    """Build ``model`` (a dataclass, a pydantic model or a TypedDict) from ``data``.

    Raises:
        InvalidPayload: ``data`` does not fit ``model``; the error names the field.
    """
    name = getattr(model, "__name__", repr(model))
    validate = getattr(model, "model_validate", None)
    if validate is not None:
        try:
            return cast(T, validate(data))
        except ValueError as exc:  # pydantic.ValidationError is a ValueError
            raise _from_pydantic(exc, name) from exc
    try:
        return cast(T, _convert(model, data, "payload"))
    except InvalidPayload as exc:
        raise InvalidPayload(exc.field, f"{exc.reason} (payload_as({name}))") from None


def _from_pydantic(exc: ValueError, name: str) -> InvalidPayload:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0] if errors() else None
        if first is not None:
            loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.get("loc", ()))
            return InvalidPayload(f"payload{loc}", f"{first.get('msg', exc)} (payload_as({name}))")
    return InvalidPayload("payload", f"does not match {name}: {exc}")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _convert(tp: Any, value: Any, path: str) -> Any:
    """``value`` (decoded JSON) as type ``tp``, converted where JSON has no such type."""
    if tp is Any or tp is object or isinstance(tp, TypeVar):
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Annotated, typing.Required, typing.NotRequired):
        return _convert(typing.get_args(tp)[0], value, path)
    if origin is typing.Union or origin is types.UnionType:
        return _convert_union(typing.get_args(tp), value, path)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            allowed = ", ".join(repr(a) for a in typing.get_args(tp))
            raise InvalidPayload(path, f"expected one of {allowed}, got {value!r}")
        return value
    if tp is type(None):
        if value is not None:
            raise InvalidPayload(path, f"expected null, got {_kind(value)}")
        return None
    if origin is not None:
        return _convert_generic(origin, typing.get_args(tp), value, path)
    if isinstance(tp, type):
        return _convert_class(tp, value, path)
    return value  # a forward reference or a special form we do not check


def _convert_union(args: tuple[Any, ...], value: Any, path: str) -> Any:
    if value is None and type(None) in args:
        return None
    errors: list[InvalidPayload] = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _convert(arg, value, path)
        except InvalidPayload as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    names = " or ".join(getattr(a, "__name__", str(a)) for a in args)
    raise InvalidPayload(path, f"expected {names}, got {_kind(value)}")


def _convert_generic(origin: Any, args: tuple[Any, ...], value: Any, path: str) -> Any:
    if origin in (list, set, frozenset, tuple) or (isinstance(origin, type) and issubclass(origin, list)):
        if not isinstance(value, list):
            raise InvalidPayload(path, f"expected an array, got {_kind(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise InvalidPayload(path, f"expected {len(args)} items, got {len(value)}")
            return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
        item = args[0] if args else Any
        items = [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else origin(items)
    if isinstance(origin, type) and issubclass(origin, Mapping):
        if not isinstance(value, dict):
            raise InvalidPayload(path, f"expected an object, got {_kind(value)}")
        val_tp = args[1] if len(args) == 2 else Any
        return {k: _convert(val_tp, v, f"{path}.{k}") for k, v in value.items()}
    return value


def _convert_class(tp: type, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, path)
    if hasattr(tp, "model_validate"):  # a nested pydantic model
        try:
            return tp.model_validate(value)
        except ValueError as exc:
            raise InvalidPayload(path, str(exc).splitlines()[0]) from exc
    if _is_typeddict(tp):
        return _build_typeddict(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise InvalidPayload(path, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise InvalidPayload(path, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidPayload(path, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise InvalidPayload(path, f"expected a string, got {_kind(value)}")
        return value
    if tp in (dt.datetime, dt.date, dt.time):
        return _parse_time(tp, value, path)
    if issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in tp)
            raise InvalidPayload(path, f"expected one of {allowed}, got {value!r}") from None
    if tp in (uuid.UUID, Decimal):
        try:
            return tp(str(value)) if isinstance(value, str | int | float) and not isinstance(value, bool) else tp(value)
        except (ValueError, TypeError, InvalidOperation):
            raise InvalidPayload(path, f"expected a {tp.__name__}, got {value!r}") from None
    if tp in (list, dict, tuple, set, frozenset):
        return _convert_generic(tp, (), value, path)
    if not isinstance(value, tp):
        raise InvalidPayload(path, f"expected {tp.__name__}, got {_kind(value)}")
    return value


def _parse_time(tp: type, value: Any, path: str) -> Any:
    if isinstance(value, tp):
        return value
    if not isinstance(value, str):
        raise InvalidPayload(path, f"expected an ISO 8601 {tp.__name__} string, got {_kind(value)}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = tp.fromisoformat(text)  # type: ignore[attr-defined]
    except ValueError:
        raise InvalidPayload(path, f"invalid ISO 8601 {tp.__name__} {value!r}") from None
    return ensure_utc(parsed) if tp is dt.datetime else parsed


def _hints(tp: type, path: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(tp, include_extras=True)
    except Exception as exc:  # an unresolvable forward reference: say which model
        raise InvalidPayload(path, f"cannot read the annotations of {tp.__name__}: {exc}") from exc


def _build_dataclass(tp: type, value: Any, path: str) -> Any:
    if isinstance(value, tp):
        return value
    if not isinstance(value, dict):
        raise InvalidPayload(path, f"expected an object for {tp.__name__}, got {_kind(value)}")
    hints = _hints(tp, path)
    fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
    unknown = sorted(k for k in value if k not in fields)
    if unknown:
        raise InvalidPayload(f"{path}.{unknown[0]}", f"unknown field; {tp.__name__} has {', '.join(fields) or 'none'}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise InvalidPayload(f"{path}.{name}", "is required")
            continue
        kwargs[name] = _convert(hints.get(name, Any), value[name], f"{path}.{name}")
    try:
        return tp(**kwargs)
    except (TypeError, ValueError) as exc:  # __post_init__ checks of the user's own
        raise InvalidPayload(path, f"{tp.__name__}: {exc}") from exc


def _is_typeddict(tp: type) -> bool:
    return issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def _build_typeddict(tp: type, value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidPayload(path, f"expected an object for {tp.__name__}, got {_kind(value)}")
    hints = _hints(tp, path)
    # With string annotations (``from __future__ import annotations``) Python 3.11 cannot
    # see Required/NotRequired when it makes __required_keys__: read them from the hints.
    marked = {k: typing.get_origin(h) for k, h in hints.items()}
    required = {k for k in getattr(tp, "__required_keys__", ()) if marked.get(k) is not typing.NotRequired}
    required |= {k for k in getattr(tp, "__optional_keys__", ()) if marked.get(k) is typing.Required}
    missing = sorted(k for k in required if k not in value)
    if missing:
        raise InvalidPayload(f"{path}.{missing[0]}", "is required")
    return {k: _convert(hints[k], v, f"{path}.{k}") if k in hints else v for k, v in value.items()}
