"""The SQLite backend (``sqlite:///relative.db``, ``sqlite:////abs/path.db``): the embedded
default. WAL mode, compare-and-set claims, versioned migrations, cross-process wake-ups
through ``PRAGMA data_version``. Imports only ``conveyor.core`` and ``conveyor.backends.base``."""

from __future__ import annotations

from conveyor.backends.sqlite.backend import SqliteBackend

__all__ = ["SqliteBackend"]
