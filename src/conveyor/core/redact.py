"""Hiding passwords in text before it is logged or shown: store URLs, their
``?password=`` parameters and libpq DSNs (``password=secret``, quoted or not). Pure."""

from __future__ import annotations

import re

MASK = "***"

# scheme://user:password@host  (also scheme://:password@host, as Redis URLs use)
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<secret>[^@\s]*)(?=@)")
# password=... in a query string (?password=x&...) or a DSN (password=x / password='a b')
_KEYWORD = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd|sslpassword)\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&;,]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with every password replaced by ``***``."""
    if "@" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: m.group("head") + MASK, text)
    return _KEYWORD.sub(lambda m: m.group("head") + MASK, text)
