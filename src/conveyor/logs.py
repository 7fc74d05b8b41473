"""Logging: the set-up of ``conveyor worker`` and ``conveyor serve``, and the one
report of a store outage shared by every component of a client.

Importing conveyor configures nothing: a library user keeps control of logging (the
``conveyor`` logger tree only emits records). The commands call ``configure_logging``,
which puts ONE handler on the root logger, so that conveyor's records, the user's
handlers' and hooks' own loggers, uvicorn's, asyncio's and the ``warnings`` module's
all come out in one format: text, or one JSON object per line
(``CONVEYOR_LOG_FORMAT=json``), at ``CONVEYOR_LOG_LEVEL``. Reference: docs/logging.md.

Imports only ``conveyor.core.redact``.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import warnings
from datetime import UTC, datetime
from types import TracebackType
from typing import IO, Any

import orjson

from conveyor.core.redact import redact

logger = logging.getLogger("conveyor")

# Attributes every LogRecord has; anything else passed via ``extra=`` is context.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: time, level, logger, message, the
    record's ``extra=`` context, and the exception's traceback as a string."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``configure_logging`` installs (recognised to replace it). Every line
    it writes has its passwords hidden (``core.redact``): a store URL or DSN in a
    message, a driver's error text or a traceback never shows one."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _format_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    # One line (the default adds the source line below): a warning is one record.
    return f"{filename}:{lineno}: {category.__name__}: {message}"


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    exc_info = (args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback)
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("conveyor").error("uncaught exception in thread %s", name, exc_info=exc_info)


def _log_uncaught(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger("conveyor").critical("uncaught exception", exc_info=(exc_type, exc, tb))


def configure_logging(*, fmt: str = "text", level: str | int = "INFO", stream: IO[str] | None = None) -> None:
    """Route every log record of the process through one stderr handler (idempotent).

    For conveyor's commands only (a library user configures logging themselves). The
    root logger gets the handler and ``level``, so records of the user's handlers and
    hooks (any logger) show as conveyor's do; ``warnings`` are captured as records
    (logger ``py.warnings``), and uncaught exceptions of threads are logged, so that in
    JSON mode every line on stderr is one JSON object.

    Args:
        fmt: ``text`` or ``json``.
        level: a level name or number, e.g. ``INFO`` or ``DEBUG``.
        stream: where to write (default: ``sys.stderr``).
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    # Conveyor's records go through the root's handler (not one of their own).
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
    logging.captureWarnings(True)
    warnings.formatwarning = _format_warning
    threading.excepthook = _log_thread_exception
    sys.excepthook = _log_uncaught


def json_logging() -> bool:
    """Whether ``configure_logging`` set up JSON output in this process."""
    return any(isinstance(h, _Handler) and isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


class StoreOutage:
    """One WARNING when the store becomes unreachable and one INFO when it answers
    again, however many components of a client (claim loop, lease renewal, event
    publisher, scheduler, WebSocket hub...) run into the outage meanwhile; their
    individual retries are logged at DEBUG.

    ``failed`` and ``ok`` are called from the event loop's thread and from others (the
    sync facade): a lock keeps the transition single.
    """

    def __init__(self, log: logging.Logger | None = None, clock: Any = time.monotonic) -> None:
        self._log = log or logger
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._failures = 0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, component: str, exc: BaseException, *, retry_in: float | None = None) -> None:
        """``component`` could not reach the store (it retries on its own)."""
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = self._clock()
                self._failures = 0
            self._failures += 1
        retry = f"; retrying in {retry_in:.1f}s" if retry_in is not None else ""
        if first:
            self._log.warning(
                "store unreachable (%s: %s): retrying until it is back",
                component,
                exc,
                extra={"event": "store_unreachable", "component": component},
            )
        else:
            self._log.debug("%s: store still unreachable (%s)%s", component, exc, retry)

    def ok(self) -> None:
        """A component reached the store. Cheap when there was no outage."""
        if self._down_since is None:
            return
        with self._lock:
            since, self._down_since = self._down_since, None
            failures = self._failures
        if since is None:
            return
        took = self._clock() - since
        self._log.info(
            "store reachable again after %.1fs (%d failed attempts meanwhile)",
            took,
            failures,
            extra={"event": "store_reconnected", "outage_seconds": round(took, 3)},
        )
