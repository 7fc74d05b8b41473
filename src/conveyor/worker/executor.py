"""Runs one handler for one claimed job and maps what happened to an ``Outcome``.

Async handlers run as tasks (cancelled on timeout or cancellation); sync handlers run
in a thread pool. A sync handler cannot be killed: past its timeout, or a grace period
after a cancellation request, its thread is abandoned and its late return discarded.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from conveyor.core import codec, lifecycle
from conveyor.core.job import Job
from conveyor.core.lifecycle import Outcome
from conveyor.core.signals import JobTimeout, PermanentError, Snooze
from conveyor.registry import Handler

logger = logging.getLogger("conveyor")

# How long a sync handler has to notice ``job.cancel_requested`` before it is abandoned.
CANCEL_GRACE_SECONDS = 1.5


@dataclass(slots=True)
class Attempt:
    """One running attempt, as the dispatcher tracks it."""

    job: Job
    handler: Handler
    # Resolved with "cancel" or "release" to interrupt the handler (one future, no extra tasks).
    interrupt: asyncio.Future[str] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    lease_lost: bool = False
    # The outcome is stored (acknowledged): a heartbeat no longer finds the job processing.
    acknowledged: bool = False
    started: float = 0.0
    error: BaseException | None = None

    def request(self, reason: str) -> None:
        if not self.interrupt.done():
            self.interrupt.set_result(reason)

    @property
    def interrupted(self) -> str | None:
        return self.interrupt.result() if self.interrupt.done() else None


class ThreadPool:
    """A thread pool that replaces itself when too many of its threads are abandoned."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="conveyor-handler")
        self._abandoned = 0

    def submit(self, fn: Callable[[Job], Any], job: Job) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        return loop.run_in_executor(self._pool, ctx.run, fn, job)

    def abandon_one(self) -> None:
        self._abandoned += 1
        if self._abandoned >= max(1, self._size // 2):
            # Stuck threads hold pool slots forever: start a fresh pool for new work.
            old, self._pool = self._pool, ThreadPoolExecutor(self._size, thread_name_prefix="conveyor-handler")
            old.shutdown(wait=False)
            self._abandoned = 0

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _error_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc)).strip()
    return f"{type(exc).__name__}: {exc}\n{text}" if str(exc) else text


async def run_attempt(attempt: Attempt, worker_id: str, pool: ThreadPool, now: Callable[[], datetime]) -> Outcome:
    job, handler = attempt.job, attempt.handler
    timeout = job.timeout if job.timeout is not None else handler.timeout
    if handler.is_async:
        work: asyncio.Future[Any] = asyncio.ensure_future(handler.fn(job))
    else:
        work = pool.submit(handler.fn, job)
    done, _ = await asyncio.wait({work, attempt.interrupt}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)

    if work in done:
        return _outcome_of(attempt, work, worker_id, now)

    if attempt.interrupted == "cancel":
        job.cancel_requested = True
        if handler.is_async:
            work.cancel()
        # Give the handler a moment to stop: async cleanup runs; a sync one polls
        # ``job.cancel_requested`` (its thread cannot be interrupted).
        await asyncio.wait({work}, timeout=CANCEL_GRACE_SECONDS)
        if not work.done():
            pool.abandon_one()
        elif not work.cancelled():
            work.exception()  # retrieved: whatever it raised, the job ends cancelled
        return lifecycle.cancelled(job, worker_id)

    if attempt.interrupted == "release":
        work.cancel()
        if not handler.is_async:
            pool.abandon_one()
        else:
            await asyncio.wait({work}, timeout=1.0)
        return lifecycle.released(job, worker_id, now())

    # Timed out.
    work.cancel()
    if handler.is_async:
        await asyncio.wait({work}, timeout=1.0)
    else:
        pool.abandon_one()
    exc = JobTimeout(float(timeout or 0))
    attempt.error = exc
    return lifecycle.failed(job, worker_id, str(exc), now())


def _outcome_of(attempt: Attempt, work: asyncio.Future[Any], worker_id: str, now: Callable[[], datetime]) -> Outcome:
    job = attempt.job
    if work.cancelled():
        attempt.error = asyncio.CancelledError()
        return lifecycle.failed(job, worker_id, "CancelledError: the handler was cancelled", now())
    exc = work.exception()
    if exc is None:
        if job.cancel_requested:
            return lifecycle.cancelled(job, worker_id)
        result = work.result()
        try:
            codec.dumps(result)
        except TypeError as err:
            attempt.error = err
            return lifecycle.failed(job, worker_id, f"the handler's result is not JSON-serialisable: {err}", now())
        return lifecycle.completed(job, worker_id, result)
    attempt.error = exc
    if job.cancel_requested:
        return lifecycle.cancelled(job, worker_id)
    if isinstance(exc, Snooze):
        return lifecycle.snoozed(job, worker_id, exc.delay, now())
    if isinstance(exc, PermanentError):
        return lifecycle.failed(job, worker_id, _error_text(exc), now(), permanent=True)
    return lifecycle.failed(job, worker_id, _error_text(exc), now())
