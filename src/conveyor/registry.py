"""Handlers registered with ``@app.handler("topic")``: stable topic names, never derived
from function names, each with the job options it gives its jobs by default.

A handler's settings are grouped by who applies them: ``options`` (job defaults, applied
at enqueue and, for the timeout, by the worker) and its hooks. Per-topic flow-control
limits (``concurrency=``, ``rate=``) will be one more group beside them, stored in the
store rather than applied at enqueue. Imports only ``core``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from conveyor.core.errors import ValidationError
from conveyor.core.job import Job
from conveyor.core.options import JobOptions, validate_topic

HandlerFn = Callable[[Job], Any]
SuccessHook = Callable[[Job], Any]
FailureHook = Callable[[Job, BaseException], Any]


@dataclass(frozen=True, slots=True)
class Handler:
    """A registered handler.

    Attributes:
        topic: the topic it handles.
        fn: the function called with each job (sync or async).
        is_async: whether ``fn`` is a coroutine function.
        options: job options its jobs get when their enqueue does not give them.
        on_success: called with the job after it completes.
        on_failure: called with the job and the exception when it ends ``failed``.
    """

    topic: str
    fn: HandlerFn
    is_async: bool
    options: JobOptions = field(default_factory=JobOptions)
    on_success: SuccessHook | None = None
    on_failure: FailureHook | None = None

    @property
    def timeout(self) -> float | None:
        """The handler's default attempt timeout in seconds (None: no limit)."""
        return self.options.timeout


class Registry:
    """The handlers of one client, by topic (one handler per topic)."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def add(
        self,
        topic: str,
        fn: HandlerFn,
        *,
        options: JobOptions | None = None,
        on_success: SuccessHook | None = None,
        on_failure: FailureHook | None = None,
    ) -> Handler:
        """Register ``fn`` as the handler of ``topic``.

        Args:
            topic: the topic, 1-200 characters of ``A-Za-z0-9_.:-``.
            fn: a callable taking the job (a coroutine function for async handlers).
            options: default job options of the topic (validated).
            on_success: hook called with the job after it completes.
            on_failure: hook called with the job and the exception when it ends ``failed``.

        Returns:
            The registered handler.

        Raises:
            ValidationError: a bad topic, ``fn`` is not callable, or another handler is
                already registered for ``topic`` (registering the same one again with the
                same options is allowed, e.g. a module imported twice).
        """
        validate_topic(topic)
        if not callable(fn):
            raise ValidationError("handler", f"expected a callable for topic {topic!r}")
        handler = Handler(
            topic=topic,
            fn=fn,
            is_async=inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__),
            options=options or JobOptions(),
            on_success=on_success,
            on_failure=on_failure,
        )
        existing = self._handlers.get(topic)
        if existing is not None and not _same(existing, handler):
            raise ValidationError(
                "topic",
                f"a handler is already registered for {topic!r} ({_describe(existing.fn)}); one topic has one handler",
            )
        self._handlers[topic] = handler
        return handler

    def get(self, topic: str) -> Handler | None:
        """The handler of ``topic``, or None."""
        return self._handlers.get(topic)

    def options(self, topic: str) -> JobOptions | None:
        """The default job options of ``topic``'s handler (None: no handler here)."""
        handler = self._handlers.get(topic)
        return None if handler is None else handler.options

    @property
    def topics(self) -> list[str]:
        """The registered topics, sorted."""
        return sorted(self._handlers)

    def __contains__(self, topic: object) -> bool:
        return topic in self._handlers

    def __len__(self) -> int:
        return len(self._handlers)


def _same(a: Handler, b: Handler) -> bool:
    """The same function with the same settings: a repeated registration (a module
    imported twice defines its functions twice), not a clash."""
    return (
        _identity(a.fn) == _identity(b.fn)
        and a.options == b.options
        and _identity(a.on_success) == _identity(b.on_success)
        and _identity(a.on_failure) == _identity(b.on_failure)
    )


def _identity(fn: object) -> object:
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    code = getattr(fn, "__code__", None)
    if module is None or name is None or code is None:
        return fn
    return (module, name, code.co_firstlineno)


def _describe(fn: HandlerFn) -> str:
    module, name = getattr(fn, "__module__", "?"), getattr(fn, "__qualname__", repr(fn))
    return f"{module}.{name}"
