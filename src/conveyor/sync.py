"""``Conveyor``: the sync facade over ``AsyncConveyor``. Same methods, blocking; the
coroutines run on a private event loop in a daemon thread. No rules live here."""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar, Unpack

from conveyor.backends.base import Backend, BlockingEnqueue, WorkerInfo
from conveyor.bulk import BulkAction
from conveyor.client import AsyncConveyor
from conveyor.core.clock import Clock
from conveyor.core.job import Job, JobStatus
from conveyor.core.options import JobChanges
from conveyor.core.page import JobPage
from conveyor.core.query import PendingView
from conveyor.core.schedule import Schedule, ScheduleJobOptions
from conveyor.finder import DEFAULT_SCAN, FoundJobs
from conveyor.registry import FailureHook, HandlerFn, Registry, SuccessHook
from conveyor.settings import Settings, SettingsChanges, SettingsOverrides

logger = logging.getLogger("conveyor")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class _LoopThread:
    """An event loop in a daemon thread that runs the sync facade's coroutines."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="conveyor-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop thread and wait for its result (or exception).

        Lighter than ``asyncio.run_coroutine_threadsafe(...).result()``, which chains a
        ``concurrent.futures.Future`` to the task (state copies, a condition variable):
        one task, one done-callback, one lock. It halves the CPU cost of a facade call's
        thread hop, a large share of a single ``enqueue`` (see bench/README.md).
        """
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a sync Conveyor method was called from its own event loop; use AsyncConveyor")
        done = threading.Lock()
        done.acquire()
        box: list[Any] = []

        def start() -> None:
            try:
                task = self.loop.create_task(coro)
            except BaseException as exc:  # e.g. the loop is closing
                coro.close()
                box.append(exc)
                done.release()
                return
            box.append(task)
            task.add_done_callback(lambda _: done.release())

        self.loop.call_soon_threadsafe(start)
        done.acquire()
        outcome = box[0]
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome.cancelled():
            raise concurrent.futures.CancelledError()
        result: T = outcome.result()
        return result

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class Conveyor:
    """Sync facade over ``AsyncConveyor``: same methods and arguments, blocking.

    Its coroutines run on a private event loop in a daemon thread, so it works from
    any thread, including code that already runs an event loop.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        clock: Clock | None = None,
        **overrides: Unpack[SettingsOverrides],
    ) -> None:
        """Create a client; no worker starts and nothing is opened yet.

        Args:
            url: store URL; wins over ``CONVEYOR_URL``; default ``sqlite:///conveyor.db``.
            settings: a complete ``Settings`` (then the environment is not read).
            clock: source of "now" (tests inject a fake).
            **overrides: any ``Settings`` field, e.g. ``lock_duration=30``.

        Raises:
            ConfigurationError: a bad ``CONVEYOR_*`` variable (named).
            ValidationError: a bad override (named).
        """
        self.aio = AsyncConveyor(url, settings=settings, clock=clock, **overrides)
        self._portal: _LoopThread | None = None
        self._pid = os.getpid()
        self._blocking_checked: Backend | None = None
        self._blocking: BlockingEnqueue | None = None

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._portal is None or self._pid != os.getpid():
            # A fork (e.g. multiprocessing) must not reuse the parent's loop thread.
            self._portal = _LoopThread()
            self._pid = os.getpid()
        return self._portal.call(coro)

    # Attribute access for settings, registry and hooks goes to the async client.
    @property
    def settings(self) -> Settings:
        """The client's settings."""
        return self.aio.settings

    @property
    def registry(self) -> Registry:
        """The registered handlers, by topic."""
        return self.aio.registry

    @property
    def url(self) -> str:
        """The store URL."""
        return self.aio.url

    def configure(self, **changes: Unpack[SettingsChanges]) -> None:
        self.aio.configure(**changes)

    def handler(
        self,
        topic: str,
        *,
        priority: int | None = None,
        max_retries: int | None = None,
        retry_delay: float | str | None = None,
        backoff: str | None = None,
        timeout: float | str | None = None,
        max_snoozes: int | None = None,
        on_success: SuccessHook | None = None,
        on_failure: FailureHook | None = None,
    ) -> Callable[[F], F]:
        return self.aio.handler(
            topic,
            priority=priority,
            max_retries=max_retries,
            retry_delay=retry_delay,
            backoff=backoff,
            timeout=timeout,
            max_snoozes=max_snoozes,
            on_success=on_success,
            on_failure=on_failure,
        )

    def register(
        self,
        topic: str,
        fn: HandlerFn,
        *,
        priority: int | None = None,
        max_retries: int | None = None,
        retry_delay: float | str | None = None,
        backoff: str | None = None,
        timeout: float | str | None = None,
        max_snoozes: int | None = None,
        on_success: SuccessHook | None = None,
        on_failure: FailureHook | None = None,
    ) -> None:
        self.aio.register(
            topic,
            fn,
            priority=priority,
            max_retries=max_retries,
            retry_delay=retry_delay,
            backoff=backoff,
            timeout=timeout,
            max_snoozes=max_snoozes,
            on_success=on_success,
            on_failure=on_failure,
        )

    def on_success(self, fn: SuccessHook) -> SuccessHook:
        return self.aio.on_success(fn)

    def on_failure(self, fn: FailureHook) -> FailureHook:
        return self.aio.on_failure(fn)

    def enqueue(
        self,
        topic: str,
        payload: Any = None,
        *,
        run_at: datetime | str | None = None,
        delay: float | str | None = None,
        priority: int | None = None,
        max_retries: int | None = None,
        retry_delay: float | str | None = None,
        backoff: str | None = None,
        timeout: float | str | None = None,
        metadata: Mapping[str, Any] | None = None,
        unique_key: str | None = None,
        max_snoozes: int | None = None,
        connection: Any = None,
    ) -> Job:
        # Validated here, in the caller's thread; stored from it too when the store can
        # (SQLite), else through the loop thread.
        job = self.aio.build_job(
            topic,
            payload,
            run_at=run_at,
            delay=delay,
            priority=priority,
            max_retries=max_retries,
            retry_delay=retry_delay,
            backoff=backoff,
            timeout=timeout,
            metadata=metadata,
            unique_key=unique_key,
            max_snoozes=max_snoozes,
        )
        blocking = self._blocking_backend()
        if blocking is None:
            return self._call(self.aio.insert([job], connection))[0]
        return self._insert_blocking(blocking, [job], connection)[0]

    def enqueue_many(self, items: Iterable[Mapping[str, Any]], *, connection: Any = None) -> builtins.list[Job]:
        blocking = self._blocking_backend()
        if blocking is None:
            return self._call(self.aio.enqueue_many(builtins.list(items), connection=connection))
        jobs = self.aio.build_jobs(items)
        return self._insert_blocking(blocking, jobs, connection) if jobs else []

    def _blocking_backend(self) -> BlockingEnqueue | None:
        """The store, if it can insert from this thread: no hop to the loop thread (for
        SQLite, whose statements block anyway). Only once the store is open."""
        if self._portal is None or self._pid != os.getpid() or not self.aio.is_connected:
            return None
        backend = self.aio.backend
        if backend is not self._blocking_checked:
            # isinstance() on a runtime Protocol is slow: decide once per backend object.
            self._blocking_checked = backend
            ok = backend.capabilities.blocking_enqueue and isinstance(backend, BlockingEnqueue)
            self._blocking = backend if ok else None  # type: ignore[assignment]
        return self._blocking

    def _insert_blocking(
        self, backend: BlockingEnqueue, jobs: builtins.list[Job], connection: Any
    ) -> builtins.list[Job]:
        assert self._portal is not None
        if not backend.accepts_blocking(jobs, connection):
            return self._call(self.aio.insert(jobs, connection))
        events = self.aio.events_with_insert(self.aio.backend, jobs, connection)
        stored = backend.enqueue_blocking(jobs, connection=connection, events=events)
        self.aio.after_insert(jobs, stored, connection, from_loop=self._portal.loop, published=events is not None)
        return stored

    def get(self, job_id: str) -> Job:
        return self._call(self.aio.get(job_id))

    def list(
        self,
        *,
        status: str | JobStatus | None = None,
        topic: str | None = None,
        limit: int = 50,
        offset: int = 0,
        after: str | None = None,
        before: str | None = None,
    ) -> JobPage:
        return self._call(
            self.aio.list(status=status, topic=topic, limit=limit, offset=offset, after=after, before=before)
        )

    def stats(self) -> dict[str, Any]:
        return self._call(self.aio.stats())

    def workers(self) -> builtins.list[WorkerInfo]:
        return self._call(self.aio.workers())

    def job_types(self) -> builtins.list[str]:
        return self._call(self.aio.job_types())

    def cancel(self, job_id: str) -> Job:
        return self._call(self.aio.cancel(job_id))

    def requeue(self, job_id: str) -> Job:
        return self._call(self.aio.requeue(job_id))

    def bulk_requeue(self, *, status: str = "failed", topic: str | None = None) -> int:
        """Requeue every failed (or cancelled) job, of ``topic`` if given; return how many."""
        return self._call(self.aio.bulk_requeue(status=status, topic=topic))

    def bulk_cancel(self, *, status: str = "pending", topic: str | None = None) -> int:
        """Cancel every pending job (or stop every processing one); return how many."""
        return self._call(self.aio.bulk_cancel(status=status, topic=topic))

    def bulk(self, action: BulkAction, *, status: str | JobStatus, topic: str | None = None) -> int:
        return self._call(self.aio.bulk(action, status=status, topic=topic))

    def find_jobs(
        self,
        *,
        status: str | JobStatus | None = None,
        topic: str | None = None,
        view: PendingView | None = None,
        schedule: str | None = None,
        id_suffix: str | None = None,
        text: str | None = None,
        limit: int = 50,
        after: str | None = None,
        scan: int = DEFAULT_SCAN,
    ) -> FoundJobs:
        return self._call(
            self.aio.find_jobs(
                status=status,
                topic=topic,
                view=view,
                schedule=schedule,
                id_suffix=id_suffix,
                text=text,
                limit=limit,
                after=after,
                scan=scan,
            )
        )

    def resolve_job_id(self, id_or_suffix: str) -> str:
        return self._call(self.aio.resolve_job_id(id_or_suffix))

    def bulk_delete(self, *, status: str, topic: str | None = None) -> int:
        """Delete every job of ``status`` (not processing); return how many."""
        return self._call(self.aio.bulk_delete(status=status, topic=topic))

    def update(self, job_id: str, **changes: Unpack[JobChanges]) -> Job:
        return self._call(self.aio.update(job_id, **changes))

    def delete(self, job_id: str) -> None:
        self._call(self.aio.delete(job_id))

    def complete(self, job_id: str, result: Any = None) -> Job:
        return self._call(self.aio.complete(job_id, result))

    def fail(self, job_id: str, error: str) -> Job:
        return self._call(self.aio.fail(job_id, error))

    def prune(self) -> int:
        return self._call(self.aio.prune())

    def migrate(self) -> int:
        return self._call(self.aio.migrate())

    # -- schedules (owned by the schedules module) ------------------------------------

    def schedule(
        self,
        name: str,
        cron: str,
        topic: str,
        payload: Any = None,
        *,
        timezone: str = "UTC",
        enabled: bool = True,
        **job_options: Unpack[ScheduleJobOptions],
    ) -> Schedule:
        return self._call(
            self.aio.schedule(name, cron, topic, payload, timezone=timezone, enabled=enabled, **job_options)
        )

    def declare_schedule(
        self,
        name: str,
        cron: str,
        topic: str,
        payload: Any = None,
        *,
        timezone: str = "UTC",
        enabled: bool = True,
        **job_options: Unpack[ScheduleJobOptions],
    ) -> Schedule:
        return self.aio.declare_schedule(name, cron, topic, payload, timezone=timezone, enabled=enabled, **job_options)

    def arm_schedule(
        self,
        name: str,
        cron: str,
        topic: str,
        payload: Any = None,
        *,
        timezone: str = "UTC",
        replace: bool = True,
        **job_options: Unpack[ScheduleJobOptions],
    ) -> Job:
        return self._call(
            self.aio.arm_schedule(name, cron, topic, payload, timezone=timezone, replace=replace, **job_options)
        )

    def sync_schedules(self) -> dict[str, builtins.list[str]]:
        return self._call(self.aio.sync_schedules())

    def run_schedule(self, name: str) -> Job:
        return self._call(self.aio.run_schedule(name))

    def get_schedule(self, name: str) -> Schedule:
        return self._call(self.aio.get_schedule(name))

    def schedules(self) -> builtins.list[Schedule]:
        return self._call(self.aio.schedules())

    def unschedule(self, name: str) -> None:
        self._call(self.aio.unschedule(name))

    def enable_schedule(self, name: str) -> Schedule:
        return self._call(self.aio.enable_schedule(name))

    def disable_schedule(self, name: str) -> Schedule:
        return self._call(self.aio.disable_schedule(name))

    def next_runs(self, name: str, n: int = 1) -> builtins.list[datetime]:
        return self._call(self.aio.next_runs(name, n))

    def start(
        self,
        *,
        concurrency: int | None = None,
        topics: Sequence[str] | None = None,
        batch_size: int | None = None,
        poll_interval: float | str | None = None,
        lock_duration: float | str | None = None,
        shutdown_timeout: float | str | None = None,
        scheduler: bool = True,
        worker_id: str | None = None,
    ) -> None:
        """Start a worker in the background (see ``AsyncConveyor.start``)."""
        self._call(
            self.aio.start(
                concurrency=concurrency,
                topics=topics,
                batch_size=batch_size,
                poll_interval=poll_interval,
                lock_duration=lock_duration,
                shutdown_timeout=shutdown_timeout,
                scheduler=scheduler,
                worker_id=worker_id,
            )
        )

    def stop(self, timeout: float | None = None) -> None:
        if self._portal is not None:
            self._call(self.aio.stop(timeout))

    def run_worker(
        self,
        *,
        concurrency: int | None = None,
        topics: Sequence[str] | None = None,
        batch_size: int | None = None,
        poll_interval: float | str | None = None,
        lock_duration: float | str | None = None,
        shutdown_timeout: float | str | None = None,
        scheduler: bool = True,
        worker_id: str | None = None,
    ) -> None:
        """Run a worker in this thread until SIGINT/SIGTERM or ``stop()`` from another
        thread; returns at once when disabled. The first signal drains (running jobs
        get the shutdown timeout to finish), a second stops now, handing them back.

        Args:
            concurrency, topics, batch_size, poll_interval, lock_duration,
                shutdown_timeout, scheduler, worker_id: as ``AsyncConveyor.start``'s.

        Raises:
            ValidationError: a bad option, or a topic without a handler.
        """
        import signal

        received: list[int] = []

        def on_signal(signum: int, _frame: object) -> None:
            received.append(signum)
            worker = self.aio.worker
            if worker is not None and self._portal is not None:
                self._portal.loop.call_soon_threadsafe(worker.signal_received, signum)

        # Handlers go in before the worker starts: its loop thread may begin a job
        # at once, and a SIGTERM in that window must drain it, not kill the process.
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, on_signal)
        try:
            self.start(
                concurrency=concurrency,
                topics=topics,
                batch_size=batch_size,
                poll_interval=poll_interval,
                lock_duration=lock_duration,
                shutdown_timeout=shutdown_timeout,
                scheduler=scheduler,
                worker_id=worker_id,
            )
            worker = self.aio.worker
            if worker is None:  # CONVEYOR_DISABLED
                return
            if self._portal is not None:
                for signum in received:  # arrived while it started
                    self._portal.loop.call_soon_threadsafe(worker.signal_received, signum)
            self._call(self.aio.run_worker(install_signal_handlers=False))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def close(self) -> None:
        """Stop this process's worker (if any), close the store and the loop thread."""
        if self._portal is not None:
            self._call(self.aio.close())
            self._portal.close()
            self._portal = None

    def __enter__(self) -> Conveyor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _share_docstrings() -> None:
    """Give each facade method without a docstring its ``AsyncConveyor`` twin's: the same
    arguments, errors and result (returned instead of awaited), written once."""
    for name, method in vars(Conveyor).items():
        if name.startswith("_") or not callable(method) or method.__doc__:
            continue
        twin = getattr(AsyncConveyor, name, None)
        if twin is not None and twin.__doc__:
            method.__doc__ = twin.__doc__


_share_docstrings()
