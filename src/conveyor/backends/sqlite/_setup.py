"""Connection-level helpers of the SQLite backend: URL parsing, driver error
translation, migration discovery and splitting. Imports only ``conveyor.core``."""

from __future__ import annotations

import sqlite3
from importlib import resources

from conveyor.core.errors import BackendError, BackendUnavailable, ConfigurationError


def parse_url(url: str) -> str:
    """``sqlite:///rel.db`` → ``rel.db``; ``sqlite:////abs.db`` → ``/abs.db``."""
    if not url.lower().startswith("sqlite://"):
        raise ConfigurationError(f"not a SQLite URL: {url!r}")
    rest = url[len("sqlite://") :].split("?", 1)[0]
    if not rest.startswith("/") or len(rest) < 2:
        raise ConfigurationError(
            f"invalid SQLite URL {url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = rest[1:]
    if path == ":memory:":
        raise ConfigurationError("sqlite:///:memory: cannot be shared between connections; use memory://")
    return path


def is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    text = str(exc)
    return "locked" in text or "busy" in text


def translate(exc: sqlite3.Error, path: str) -> BackendError:
    if isinstance(exc, sqlite3.OperationalError | sqlite3.ProgrammingError | sqlite3.InterfaceError):
        return BackendUnavailable(f"SQLite store {path!r} unavailable: {exc}")
    return BackendError(f"SQLite store {path!r} failed: {exc}")


def split_statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit our transaction)."""
    out: list[str] = []
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            stmt = buf.strip()
            if stmt.strip(";").strip() and not all(
                line.strip().startswith("--") or not line.strip() for line in stmt.rstrip(";").splitlines()
            ):
                out.append(stmt)
            buf = ""
    return out


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every bundled migration, in order."""
    folder = resources.files("conveyor.backends.sqlite") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.name[:-4], entry.read_text(encoding="utf-8")))
    return sorted(found)
