"""What every store's text holds: UTF-8 without NUL. A Python ``str`` may hold more (a
lone surrogate, from bytes decoded with ``surrogateescape``; a NUL), which SQLite's and
Redis's encoders refuse and PostgreSQL's text columns cannot carry. Pure."""

from __future__ import annotations

REPLACEMENT = "\ufffd"


def is_storable(text: str) -> bool:
    """Whether every store holds ``text`` as it is."""
    if text.isascii():
        return "\x00" not in text
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable(text: str) -> str:
    """``text`` as every store holds it, for text conveyor stores but does not check (a
    handler's error message), so that one rule holds on every store: a NUL becomes the
    six characters ``\\u0000`` (still readable), a lone surrogate U+FFFD. Returned as is
    (no copy) when nothing needs replacing."""
    if is_storable(text):
        return text
    text = text.replace("\x00", "\\u0000")
    return "".join(REPLACEMENT if "\ud800" <= c <= "\udfff" else c for c in text)
