"""Runs one handler for one claimed job and maps what happened to an ``Outcome``.

Async handlers are awaited in the attempt's own task (a cancellation or a timeout
cancels them where they wait). Sync handlers run in a thread pool; a thread cannot be
killed, so past its timeout, or a grace period after a cancellation request, it is
abandoned and its late return discarded (fencing makes sure of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from conveyor.core import lifecycle
from conveyor.core.errors import ValidationError
from conveyor.core.job import Job
from conveyor.core.lifecycle import Outcome
from conveyor.core.options import DEFAULT_MAX_PAYLOAD_SIZE, bound_error_text, validate_result
from conveyor.core.signals import JobTimeout, PermanentError, Snooze
from conveyor.registry import Handler
from conveyor.worker.slots import Turn

logger = logging.getLogger("conveyor")

# How long a handler has to stop after a cancellation request before it is abandoned.
CANCEL_GRACE_SECONDS = 1.5


@dataclass(slots=True)
class Attempt:
    """One running attempt, as the dispatcher tracks it."""

    job: Job
    handler: Handler
    task: asyncio.Task[None] | None = None
    # Why the dispatcher interrupted the attempt: "cancel", "release" (graceful stop) or
    # "lost" (its lease was lost: the store refuses its outcome).
    reason: str | None = None
    lease_lost: bool = False
    # time.monotonic() when the handler started (0.0: claimed ahead, waiting for a run slot).
    started: float = 0.0
    # Claimed ahead: its place in the queue for a run slot (RunSlots).
    turn: Turn | None = None
    error: BaseException | None = None
    thread: ThreadFuture[None] | None = None

    def request(self, reason: str) -> None:
        """Interrupt the running handler (first reason wins)."""
        if self.reason is None and self.task is not None and not self.task.done():
            self.reason = reason
            if self.turn is not None:
                self.turn.withdraw()  # its task may not have run yet: it frees its slot
            self.task.cancel()

    @property
    def interrupted(self) -> str | None:
        return self.reason

    @property
    def ended(self) -> bool:
        """The handler is done and the outcome handed to the acknowledgements (queued,
        in flight or stored): from then on the job may be finished in the store."""
        return self.task is not None and self.task.done()


# Sync handlers running right now in this process, thread name → job id: a thread
# cannot be killed, so after a worker stops its owner may want to know (and not wait).
_RUNNING: dict[str, str] = {}
_RUNNING_LOCK = threading.Lock()


def running_sync_handlers() -> dict[str, str]:
    """The sync handlers still running in this process: thread name → job id."""
    with _RUNNING_LOCK:
        return dict(_RUNNING)


class ThreadPool:
    """Runs sync handlers. Results reach the event loop in bursts: one loop wake-up for
    every group of handlers that finish together, not one per job. Replaces its
    executor when too many threads were abandoned (stuck handlers hold pool slots)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="conveyor-handler")
        self._abandoned = 0
        self._done: deque[tuple[asyncio.Future[Any], bool, Any]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def submit(self, fn: Callable[[Job], Any], job: Job) -> tuple[asyncio.Future[Any], ThreadFuture[None]]:
        loop = asyncio.get_running_loop()
        result: asyncio.Future[Any] = loop.create_future()
        ctx = contextvars.copy_context()

        def call() -> None:
            name = threading.current_thread().name
            with _RUNNING_LOCK:
                _RUNNING[name] = job.id
            try:
                item = (result, True, ctx.run(fn, job))
            except BaseException as exc:  # delivered to the loop as the attempt's outcome
                item = (result, False, exc)
            finally:
                with _RUNNING_LOCK:
                    _RUNNING.pop(name, None)
            with self._lock:
                self._done.append(item)
                if self._scheduled:
                    return
                self._scheduled = True
            try:
                loop.call_soon_threadsafe(self._deliver)
            except RuntimeError:
                pass  # the loop is closed: the worker is gone, and so is the attempt

        return result, self._pool.submit(call)

    def _deliver(self) -> None:
        with self._lock:
            items = list(self._done)
            self._done.clear()
            self._scheduled = False
        for future, ok, value in items:
            if future.done():  # timed out or abandoned: the late result is discarded
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def abandon_one(self) -> None:
        self._abandoned += 1
        if self._abandoned >= max(1, self._size // 2):
            old, self._pool = self._pool, ThreadPoolExecutor(self._size, thread_name_prefix="conveyor-handler")
            old.shutdown(wait=False)
            self._abandoned = 0

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _error_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc)).strip()
    return bound_error_text(f"{type(exc).__name__}: {exc}\n{text}" if str(exc) else text)


async def _call(attempt: Attempt, pool: ThreadPool) -> Any:
    job, handler = attempt.job, attempt.handler
    if handler.is_async:
        return await handler.fn(job)
    future, attempt.thread = pool.submit(handler.fn, job)
    return await future


async def run_attempt(
    attempt: Attempt,
    worker_id: str,
    pool: ThreadPool,
    now: Callable[[], datetime],
    *,
    max_result_size: int = DEFAULT_MAX_PAYLOAD_SIZE,
) -> Outcome:
    """Wait for the attempt's run slot if it has a turn (a job claimed ahead waits here; a
    cancellation or a hand-back request ends the wait as it would end the handler), run
    the handler in the current task (``attempt.task``) and return the outcome."""
    job, handler = attempt.job, attempt.handler
    timeout = job.timeout if job.timeout is not None else handler.timeout
    try:
        async with attempt.turn or _NO_WAIT:
            attempt.started = time.monotonic()
            result = await _call_within(attempt, pool, timeout)
    except asyncio.CancelledError:
        if attempt.reason is None:
            raise  # cancelled from outside (shutdown of the loop): not ours to map
        return await _interrupted(attempt, worker_id, pool, now)
    except TimeoutError:
        await _abandon_thread(attempt, pool, grace=0.0)
        exc = JobTimeout(float(timeout or 0))
        attempt.error = exc
        return lifecycle.failed(job, worker_id, str(exc), now())
    except _HandlerTimeout as wrapped:
        exc_h = wrapped.__context__ or wrapped
        attempt.error = exc_h
        return _failure(attempt, exc_h, worker_id, now)
    except Exception as exc:
        attempt.error = exc
        return _failure(attempt, exc, worker_id, now)
    if attempt.reason == "cancel" or job.cancel_requested:
        return lifecycle.cancelled(job, worker_id)
    try:
        validate_result(result, max_size=max_result_size)
    except ValidationError as err:
        # Permanent: running the handler (and its side effects) again returns the same kind of value.
        attempt.error = err
        return lifecycle.failed(job, worker_id, f"the handler's result is invalid: {err}", now(), permanent=True)
    return lifecycle.completed(job, worker_id, result)


async def _call_within(attempt: Attempt, pool: ThreadPool, timeout: float | None) -> Any:
    """The handler's return value; TimeoutError past ``timeout`` (the handler's own
    TimeoutError comes out as ``_HandlerTimeout``)."""
    if timeout is None:
        return await _call(attempt, pool)
    async with asyncio.timeout(timeout) as scope:
        try:
            return await _call(attempt, pool)
        except TimeoutError:
            if scope.expired():
                raise
            raise _HandlerTimeout() from None  # the handler's own TimeoutError: a failure


# A worker that never claims ahead has a free slot for every attempt it launches.
_NO_WAIT = contextlib.nullcontext()


class _HandlerTimeout(Exception):
    """Marks a TimeoutError raised by the handler itself, not by its deadline."""


def _failure(attempt: Attempt, exc: BaseException, worker_id: str, now: Callable[[], datetime]) -> Outcome:
    job = attempt.job
    if job.cancel_requested:
        return lifecycle.cancelled(job, worker_id)
    if isinstance(exc, Snooze):
        return lifecycle.snoozed(job, worker_id, exc.delay, now())
    if isinstance(exc, PermanentError):
        return lifecycle.failed(job, worker_id, _error_text(exc), now(), permanent=True)
    return lifecycle.failed(job, worker_id, _error_text(exc), now())


async def _interrupted(attempt: Attempt, worker_id: str, pool: ThreadPool, now: Callable[[], datetime]) -> Outcome:
    job = attempt.job
    # Whatever the reason, the job is no longer this attempt's: a sync handler polling
    # ``job.cancel_requested`` stops (a handed-back job may run elsewhere at once).
    job.cancel_requested = True
    if attempt.reason in ("cancel", "lost"):
        # Give its thread a moment.
        await _abandon_thread(attempt, pool, grace=CANCEL_GRACE_SECONDS)
        if attempt.reason == "cancel":
            return lifecycle.cancelled(job, worker_id)
        return lifecycle.released(job, worker_id, now())  # lost: the store refuses it (fencing)
    await _abandon_thread(attempt, pool, grace=0.0)
    return lifecycle.released(job, worker_id, now())


async def _abandon_thread(attempt: Attempt, pool: ThreadPool, *, grace: float) -> None:
    """Wait up to ``grace`` for a sync handler's thread, then give up on it."""
    thread = attempt.thread
    if thread is None or thread.done():
        return
    if grace > 0:
        await asyncio.wait({asyncio.wrap_future(thread)}, timeout=grace)
        if thread.done():
            return
    pool.abandon_one()
