"""``Conveyor``: the sync facade over ``AsyncConveyor``. Same methods, blocking; the
coroutines run on a private event loop in a daemon thread. No rules live here, and no
signature or docstring either: each method is built from its ``AsyncConveyor`` twin
(``_blocking``, ``_delegate``, ``_like``), which states them once; mypy and ``help()``
see the twin's typed signature."""

from __future__ import annotations

import asyncio
import atexit
import builtins
import concurrent.futures
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, Concatenate, ParamSpec, TypeVar

from conveyor import stop_signals
from conveyor.backends.base import Backend, BlockingEnqueue
from conveyor.client import AsyncConveyor
from conveyor.core.job import Job, check_distinct_ids
from conveyor.registry import Registry
from conveyor.settings import Settings

logger = logging.getLogger("conveyor")
T = TypeVar("T")
P = ParamSpec("P")
# How long closing may take at interpreter exit, and cancelling what is left on the loop.
AT_EXIT_TIMEOUT = 10.0
CANCEL_TIMEOUT = 5.0
R = TypeVar("R")


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
        """Cancel the tasks still on the loop and wait for them (as ``asyncio.run`` does
        at its end: a task left pending on a closed loop is reported "destroyed but
        pending" when collected), then stop and close the loop."""
        if self.loop.is_closed():
            return
        if self._thread.is_alive():
            with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                asyncio.run_coroutine_threadsafe(_cancel_remaining(), self.loop).result(timeout=CANCEL_TIMEOUT)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


async def _cancel_remaining() -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()


def _twin_of(method: Callable[..., Any], twin: Callable[..., Any]) -> None:
    """Give the facade method its twin's name, docstring, annotations and (through
    ``__wrapped__``, which ``inspect.signature`` follows) signature. The annotations are
    strings resolved in the twin's module: ``typing.get_type_hints`` finds it through
    ``__wrapped__`` too."""
    method.__name__ = twin.__name__
    method.__qualname__ = f"Conveyor.{twin.__name__}"
    method.__doc__ = twin.__doc__
    method.__annotations__ = dict(twin.__annotations__)
    method.__wrapped__ = twin  # type: ignore[attr-defined]


def _blocking(twin: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]) -> Callable[Concatenate[Conveyor, P], R]:
    """The blocking method of the coroutine method ``twin``: runs it on the loop thread."""

    def method(self: Conveyor, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._call(twin(self.aio, *args, **kwargs))

    _twin_of(method, twin)
    return method


def _delegate(twin: Callable[Concatenate[Any, P], R]) -> Callable[Concatenate[Conveyor, P], R]:
    """The facade method of the plain (not coroutine) method ``twin``: calls it as is."""

    def method(self: Conveyor, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return twin(self.aio, *args, **kwargs)

    _twin_of(method, twin)
    return method


def _like(
    twin: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]],
) -> Callable[[Callable[..., R]], Callable[Concatenate[Conveyor, P], R]]:
    """Decorate a facade method whose body is its own (a fast path, the loop thread's
    lifetime) with the signature and docstring of the coroutine method ``twin``: it
    returns what ``twin`` returns when awaited."""

    def decorate(method: Callable[..., R]) -> Callable[Concatenate[Conveyor, P], R]:
        _twin_of(method, twin)
        return method

    return decorate


def _constructor(
    twin: Callable[Concatenate[Any, P], None],
) -> Callable[[Callable[..., None]], Callable[Concatenate[Conveyor, P], None]]:
    """``_like`` for ``__init__``, whose twin is no coroutine."""

    def decorate(method: Callable[..., None]) -> Callable[Concatenate[Conveyor, P], None]:
        _twin_of(method, twin)
        return method

    return decorate


# What a forked child inherited and must neither use nor close (closing would act on the
# parent's connections): kept referenced, so not collected, until the child exits.
_inherited: builtins.list[tuple[_LoopThread, object]] = []


# The loop threads not closed yet, with their client and the process that made them:
# held here, not through the facade, because a loop thread outlives a facade that was
# collected without close() (a function's local).
_open: dict[_LoopThread, tuple[AsyncConveyor, int]] = {}


def _close_left_open() -> None:
    for portal, (client, pid) in list(_open.items()):
        _close_at_exit(portal, client, pid)


atexit.register(_close_left_open)


def _close_at_exit(portal: _LoopThread, client: AsyncConveyor, pid: int) -> None:
    """A script that ends without ``close()``: its loop thread (a daemon) would be frozen
    mid-task at exit, leaving buffered job events unpublished, running jobs
    ``processing`` until their lease expires and the store's connections unclosed. Hand
    running jobs back at once (the process is ending) and close, in bounded time (an
    unreachable store must not hold the exit)."""
    if pid != os.getpid():
        return  # a forked child's copy of its parent's client

    async def close_now() -> None:
        await client.stop(0)
        await client.close()

    try:
        asyncio.run_coroutine_threadsafe(close_now(), portal.loop).result(timeout=AT_EXIT_TIMEOUT)
    except (Exception, concurrent.futures.CancelledError) as exc:
        logger.warning("could not close the conveyor client at exit: %r", exc)
    finally:
        portal.close()


class Conveyor:
    """Sync facade over ``AsyncConveyor``: same methods, arguments and docstrings,
    blocking (a coroutine method's result is returned instead of awaited).

    Its coroutines run on a private event loop in a daemon thread, so it works from
    any thread, including code that already runs an event loop.

    Args:
        url: store URL; wins over ``CONVEYOR_URL``; default ``sqlite:///conveyor.db``.
        settings: a complete ``Settings`` (then the environment is not read).
        clock: source of "now" (tests inject a fake).
        **overrides: any ``Settings`` field, e.g. ``lock_duration=30``.

    Raises:
        ConfigurationError: a bad ``CONVEYOR_*`` variable (named).
        ValidationError: a bad override (named).
    """

    @_constructor(AsyncConveyor.__init__)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.aio = AsyncConveyor(*args, **kwargs)
        self._portal: _LoopThread | None = None
        self._portal_lock = threading.Lock()  # threads making their first call at once start one loop
        self._pid = os.getpid()
        self._blocking_checked: Backend | None = None
        self._blocking: BlockingEnqueue | None = None

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        portal = self._portal
        if portal is None or self._pid != os.getpid():
            portal = self._open_portal()
        return portal.call(coro)

    def _open_portal(self) -> _LoopThread:
        """The loop thread, started by the first call in this process (whichever thread
        makes it)."""
        with self._portal_lock:
            if self._portal is not None and self._pid == os.getpid():
                return self._portal  # another thread started it meanwhile
            if self._portal is not None:
                # A forked child (e.g. multiprocessing): the parent's loop thread does not
                # exist here, and its store connections are the parent's sockets (sharing
                # them mixes the two processes' statements): open a store of our own.
                _inherited.append((self._portal, self.aio.forget_store()))
            portal = _LoopThread()
            self._pid = os.getpid()
            _open[portal] = (self.aio, self._pid)
            self._portal = portal
            return portal

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

    configure = _delegate(AsyncConveyor.configure)
    handler = _delegate(AsyncConveyor.handler)
    register = _delegate(AsyncConveyor.register)
    on_success = _delegate(AsyncConveyor.on_success)
    on_failure = _delegate(AsyncConveyor.on_failure)
    declare_schedule = _delegate(AsyncConveyor.declare_schedule)

    @_like(AsyncConveyor.enqueue)
    def enqueue(self, *args: Any, connection: Any = None, **options: Any) -> Job:
        # Validated here, in the caller's thread; stored from it too when the store can
        # (SQLite), else through the loop thread.
        job = self.aio.build_job(*args, **options)
        blocking = self._blocking_backend()
        if blocking is None:
            return self._call(self.aio.insert([job], connection))[0]
        return self._insert_blocking(blocking, [job], connection)[0]

    @_like(AsyncConveyor.enqueue_many)
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
        check_distinct_ids(jobs)  # as insert() does: the one other door to the store
        events = self.aio.events_with_insert(self.aio.backend, jobs, connection)
        stored = backend.enqueue_blocking(jobs, connection=connection, events=events)
        self.aio.after_insert(jobs, stored, connection, from_loop=self._portal.loop, published=events is not None)
        return stored

    get = _blocking(AsyncConveyor.get)
    list = _blocking(AsyncConveyor.list)
    stats = _blocking(AsyncConveyor.stats)
    workers = _blocking(AsyncConveyor.workers)
    job_types = _blocking(AsyncConveyor.job_types)
    cancel = _blocking(AsyncConveyor.cancel)
    requeue = _blocking(AsyncConveyor.requeue)
    update = _blocking(AsyncConveyor.update)
    delete = _blocking(AsyncConveyor.delete)
    complete = _blocking(AsyncConveyor.complete)
    fail = _blocking(AsyncConveyor.fail)
    bulk = _blocking(AsyncConveyor.bulk)
    bulk_requeue = _blocking(AsyncConveyor.bulk_requeue)
    bulk_cancel = _blocking(AsyncConveyor.bulk_cancel)
    bulk_delete = _blocking(AsyncConveyor.bulk_delete)
    find_jobs = _blocking(AsyncConveyor.find_jobs)
    resolve_job_id = _blocking(AsyncConveyor.resolve_job_id)
    prune = _blocking(AsyncConveyor.prune)
    migrate = _blocking(AsyncConveyor.migrate)

    schedule = _blocking(AsyncConveyor.schedule)
    arm_schedule = _blocking(AsyncConveyor.arm_schedule)
    arm_schedule_reporting = _blocking(AsyncConveyor.arm_schedule_reporting)
    sync_schedules = _blocking(AsyncConveyor.sync_schedules)
    run_schedule = _blocking(AsyncConveyor.run_schedule)
    get_schedule = _blocking(AsyncConveyor.get_schedule)
    schedules = _blocking(AsyncConveyor.schedules)
    unschedule = _blocking(AsyncConveyor.unschedule)
    enable_schedule = _blocking(AsyncConveyor.enable_schedule)
    disable_schedule = _blocking(AsyncConveyor.disable_schedule)
    next_runs = _blocking(AsyncConveyor.next_runs)

    start = _blocking(AsyncConveyor.start)

    @_like(AsyncConveyor.stop)
    def stop(self, timeout: float | None = None) -> None:
        if self._portal is not None:
            self._call(self.aio.stop(timeout))

    @_like(AsyncConveyor.run_worker)
    def run_worker(self, *, install_signal_handlers: bool = True, **options: Any) -> None:
        # The signals reach this (the main) thread; each is passed on to the worker on
        # the loop thread, which drains on the first and stops now on the second. Until
        # the worker has started they are kept, then passed on in order: each exactly
        # once (one passed on at once AND kept would reach it twice: "stop now").
        received: builtins.list[int] = []
        live = False  # signals go straight to the started worker

        def on_signal(signum: int, _frame: object) -> None:
            worker = self.aio.worker
            if live and worker is not None and self._portal is not None:
                self._portal.loop.call_soon_threadsafe(worker.signal_received, signum)
            else:
                received.append(signum)

        # Handlers go in before the worker starts: its loop thread may begin a job
        # at once, and a SIGTERM in that window must drain it, not kill the process.
        previous = {}
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            for sig in stop_signals.STOP_SIGNALS:
                previous[sig] = signal.signal(sig, on_signal)
            received.extend(stop_signals.take())  # arrived while the CLI started us
        try:
            self.start(**options)
            worker = self.aio.worker
            if worker is None:  # CONVEYOR_DISABLED
                return
            if self._portal is not None:
                live = True  # from here on, on_signal passes each signal on itself
                for signum in received:  # those that came before, once each
                    self._portal.loop.call_soon_threadsafe(worker.signal_received, signum)
            self._call(self.aio.run_worker(install_signal_handlers=False))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @_like(AsyncConveyor.close)
    def close(self) -> None:
        if self._portal is not None and self._pid == os.getpid():
            try:
                self._call(self.aio.close())
            finally:
                _open.pop(self._portal, None)
                self._portal.close()
                self._portal = None

    def __enter__(self) -> Conveyor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
