"""Buffers job events and publishes them to the backend in batches, off the hot path:
an enqueue returns once the job is stored, and its event follows within milliseconds."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable

from conveyor.backends.base import Backend
from conveyor.core.errors import BackendError
from conveyor.core.events import Event
from conveyor.logs import StoreOutage

logger = logging.getLogger("conveyor.events")

MAX_BUFFERED = 100_000
BATCH = 500
# Once woken, wait this long for more events before writing a batch: a loop of single
# enqueues through the sync facade otherwise costs a second store round trip (a second
# SQLite write transaction) per job. Events still follow within milliseconds.
LINGER = 0.002
# Events emitted from another thread (the sync facade's callers) wake the loop at most
# once per window: waking a thread costs more than an SQLite insert.
THREAD_WINDOW = 0.005


class EventPublisher:
    def __init__(self, backend: Backend, *, outage: StoreOutage | None = None) -> None:
        self._backend = backend
        self._outage = outage or StoreOutage(logger)
        self._buffer: list[Event] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        # Set by the task whenever it has published everything buffered: flush waits on it.
        self._drained = asyncio.Event()
        self._closed = False
        # The buffer is shared with emit_threadsafe's callers.
        self._lock = threading.Lock()
        self._thread_wake_pending = False

    def _append(self, events: Iterable[Event]) -> None:
        with self._lock:
            self._buffer.extend(events)
            dropped = len(self._buffer) - MAX_BUFFERED
            if dropped > 0:
                # The store is unreachable for long: keep the newest events only.
                del self._buffer[:dropped]
        if dropped > 0:
            logger.warning("event buffer full: dropped %d oldest events", dropped)

    def emit(self, events: Iterable[Event]) -> None:
        """Queue events (on the loop's thread); never blocks and never raises."""
        if self._closed:
            return
        self._append(events)
        self._wake_up()

    def emit_threadsafe(self, events: Iterable[Event], loop: asyncio.AbstractEventLoop) -> None:
        """Queue events from another thread. They join the buffer now, so they keep their
        order relative to events emitted later on the loop (a job's start follows its
        enqueue); the loop is woken at most once per THREAD_WINDOW."""
        if self._closed:
            return
        self._append(events)
        with self._lock:
            if self._thread_wake_pending:
                return
            self._thread_wake_pending = True
        try:
            loop.call_soon_threadsafe(loop.call_later, THREAD_WINDOW, self._wake_from_thread)
        except RuntimeError:
            pass  # the loop is closed

    def _wake_from_thread(self) -> None:
        with self._lock:
            self._thread_wake_pending = False
        self._wake_up()

    def _wake_up(self) -> None:
        if self._closed:
            return  # a thread's wake-up that fires after close() starts nothing
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="conveyor-events")
        self._wake.set()

    def _take(self) -> list[Event]:
        with self._lock:
            batch, self._buffer = self._buffer[:BATCH], self._buffer[BATCH:]
        return batch

    def _put_back(self, batch: list[Event]) -> None:
        with self._lock:
            self._buffer[:0] = batch

    async def _run(self) -> None:
        delay = 0.05
        while True:
            await self._wake.wait()
            if len(self._buffer) < BATCH and not self._closed:
                await asyncio.sleep(LINGER)
            self._wake.clear()
            while self._buffer:
                batch = self._take()
                try:
                    await self._backend.publish(batch)
                    delay = 0.05
                    self._outage.ok()
                except BackendError as exc:
                    self._put_back(batch)
                    self._outage.failed(f"publishing {len(batch)} events", exc, retry_in=delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            self._drained.set()
            if self._closed:
                return

    async def flush(self, timeout: float = 5.0) -> None:
        if not self._buffer:
            return
        # Events a thread emitted may still wait for their wake-up (THREAD_WINDOW).
        self._wake_up()
        if self._task is None or self._task.done():
            return
        try:
            async with asyncio.timeout(timeout):
                while self._buffer:
                    self._drained.clear()
                    self._wake.set()
                    await self._drained.wait()
        except TimeoutError:
            pass  # the store is unreachable: close() gives up on what is left

    async def close(self, timeout: float = 5.0) -> None:
        await self.flush(timeout)
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
