"""Wake-ups across processes for the SQLite backend: a commit by another connection
changes ``PRAGMA data_version`` on ours. While somebody waits for jobs or subscribes to
events, a task reads it every ``interval`` seconds (reading it touches only the
shared-memory WAL index); a change wakes the waiters and calls ``on_commit`` (the
backend tails the events table for its subscribers).

Imports only the SQLite backend's own helpers.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable

from conveyor.backends.sqlite import queries as q
from conveyor.backends.sqlite._setup import is_busy

log = logging.getLogger("conveyor.backends.sqlite.backend")


class Wakeups:
    """The waiters of one backend and the task that watches for other processes' commits.

    Args:
        path: the database file (for log lines).
        db: the backend's main connection, or None while closed.
        lock: the lock that guards that connection.
        interval: seconds between two reads of ``data_version``.
        on_commit: called on the loop when another connection committed.
        subscribed: whether anyone subscribes to events (then the task keeps watching).
    """

    def __init__(
        self,
        path: str,
        db: Callable[[], sqlite3.Connection | None],
        lock: threading.Lock,
        interval: float,
        on_commit: Callable[[], None],
        subscribed: Callable[[], bool],
    ) -> None:
        self._path = path
        self._db = db
        self._lock = lock
        self._interval = interval
        self._on_commit = on_commit
        self._subscribed = subscribed
        self.waiters = 0
        self._version: int | None = None
        self._wake: asyncio.Event | None = None
        self._needed: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Take the current ``data_version`` as seen (the store was just opened)."""
        self._version = self._read_version()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def _read_version(self) -> int | None:
        # On the main connection: data_version there changes only for commits of OTHER
        # connections, so this process's own writes (acks, events) do not wake it up.
        db = self._db()
        if db is None:
            return None
        try:
            with self._lock:
                return int(db.execute(q.DATA_VERSION).fetchone()[0])
        except sqlite3.Error as exc:
            if not is_busy(exc):
                log.warning("SQLite store %s: reading data_version failed: %s", self._path, exc)
            return None

    def poll(self) -> bool:
        """Look for commits by other connections; wake waiters and call ``on_commit``."""
        version = self._read_version()
        if version is None or version == self._version:
            return False
        self._version = version
        self._event().set()
        self._on_commit()
        return True

    def _event(self) -> asyncio.Event:
        if self._wake is None:
            self._wake = asyncio.Event()
        return self._wake

    def watch(self) -> None:
        """Make sure the watching task runs (it sleeps while nobody waits or subscribes)."""
        if self._needed is None:
            self._needed = asyncio.Event()
        self._needed.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="conveyor-sqlite-watch")

    async def _watch(self) -> None:
        needed = self._needed
        assert needed is not None
        while True:
            if self.waiters == 0 and not self._subscribed():
                needed.clear()
                await needed.wait()
                continue
            await asyncio.sleep(self._interval)
            try:
                self.poll()
            except Exception:  # keep watching: a bad event row must not stop wake-ups
                log.exception("SQLite store %s: watcher error", self._path)

    async def wait(self, timeout: float) -> bool:
        """``Backend.wait_for_jobs`` on an open store."""
        event = self._event()
        self.poll()  # commits made while nobody was waiting count too
        if event.is_set():
            event.clear()
            return True
        self.waiters += 1
        self.watch()
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            self.waiters -= 1
        event.clear()
        return True

    def notify(self) -> None:
        """Wake this process's waiters now."""
        if self._wake is not None:
            self._wake.set()
