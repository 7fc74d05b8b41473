"""Connection-level helpers of the SQLite backend: URL and option parsing, opening a
connection, driver error translation, the busy-retry policy, migration discovery and
splitting, closing. Imports only ``conveyor.core`` and the backend's SQL text."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sqlite3
import time
from importlib import resources
from urllib.parse import parse_qsl

from conveyor.backends.sqlite import queries as q
from conveyor.core.errors import BackendError, BackendUnavailable, ConfigurationError

# The backend module's logger: log records keep the name they had before the split.
log = logging.getLogger("conveyor.backends.sqlite.backend")

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_FIRST_BACKOFF = 0.001
_MAX_BACKOFF = 0.05


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


def parse_options(
    url: str,
    *,
    synchronous: str | None,
    busy_timeout_ms: int | None,
    lock_wait: float | None,
    watch_interval: float | None,
) -> tuple[str, int, float, float]:
    """(synchronous, busy_timeout_ms, lock_wait, watch_interval): the arguments, else the
    URL's query (``sqlite:///x.db?synchronous=FULL``), else the defaults."""
    query = dict(parse_qsl(url.split("?", 1)[1])) if "?" in url else {}
    try:
        sync = str(synchronous or query.get("synchronous", "NORMAL")).upper()
        busy_ms = int(busy_timeout_ms if busy_timeout_ms is not None else query.get("busy_timeout_ms", 5))
        wait = float(lock_wait if lock_wait is not None else query.get("lock_wait", 30.0))
        interval = float(watch_interval if watch_interval is not None else query.get("watch_interval", 0.002))
    except ValueError as exc:
        raise ConfigurationError(f"invalid option in SQLite URL {url!r}: {exc}") from exc
    if sync not in _SYNCHRONOUS:
        raise ConfigurationError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, got {sync!r}")
    return sync, busy_ms, wait, interval


def create_private(path: str) -> None:
    """Create the database file readable by its owner only (0600) when it does not exist:
    jobs hold payloads and results. SQLite gives the -wal and -shm files the database
    file's permissions."""
    if path in ("", ":memory:") or path.startswith("file:"):
        return
    # An existing file keeps its mode; a missing directory is for sqlite3.connect to report.
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def open_connection(path: str, synchronous: str, busy_timeout_ms: int) -> sqlite3.Connection:
    create_private(path)
    db = sqlite3.connect(
        path,
        timeout=busy_timeout_ms / 1000,
        isolation_level=None,  # we issue BEGIN/COMMIT ourselves
        check_same_thread=False,
        cached_statements=512,
    )
    try:
        for pragma in q.CONNECTION_PRAGMAS:
            db.execute(pragma.format(synchronous=synchronous, busy_timeout_ms=busy_timeout_ms))
    except BaseException:
        db.close()
        raise
    return db


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


class BusyBackoff:
    """How long to wait after a failed try while another connection holds the file's
    lock: growing, jittered delays until ``lock_wait`` runs out. Other errors and the end
    of the wait are raised as conveyor errors."""

    def __init__(self, path: str, lock_wait: float) -> None:
        self._path = path
        self._lock_wait = lock_wait
        self._delay = _FIRST_BACKOFF
        self._deadline = 0.0

    def after(self, exc: sqlite3.Error) -> float:
        if not is_busy(exc):
            raise translate(exc, self._path) from exc
        now = time.monotonic()
        if not self._deadline:
            self._deadline = now + self._lock_wait
        elif now >= self._deadline:
            raise BackendUnavailable(
                f"SQLite store {self._path!r} stayed locked for more than {self._lock_wait:g}s"
            ) from exc
        delay = self._delay * (0.5 + random.random())
        self._delay = min(self._delay * 2, _MAX_BACKOFF)
        return delay


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


def close_connections(path: str, *connections: sqlite3.Connection | None) -> None:
    """Close the store's connections that are open, logging (not raising) a failure."""
    for db in connections:
        if db is not None:
            try:
                db.close()
            except sqlite3.Error:  # pragma: no cover - close of a broken handle
                log.exception("SQLite store %s: error while closing a connection", path)
