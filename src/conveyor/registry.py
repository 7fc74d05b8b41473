"""Handlers registered with ``@app.handler("topic")``: stable topic names, never derived
from function names."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from conveyor.core.duration import parse_duration
from conveyor.core.errors import ValidationError
from conveyor.core.job import Job
from conveyor.core.options import validate_topic

HandlerFn = Callable[[Job], Any]
SuccessHook = Callable[[Job], Any]
FailureHook = Callable[[Job, BaseException], Any]


@dataclass(frozen=True, slots=True)
class Handler:
    topic: str
    fn: HandlerFn
    is_async: bool
    timeout: float | None = None
    on_success: SuccessHook | None = None
    on_failure: FailureHook | None = None


class Registry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def add(
        self,
        topic: str,
        fn: HandlerFn,
        *,
        timeout: float | str | None = None,
        on_success: SuccessHook | None = None,
        on_failure: FailureHook | None = None,
    ) -> Handler:
        validate_topic(topic)
        if not callable(fn):
            raise ValidationError("handler", f"expected a callable for topic {topic!r}")
        handler = Handler(
            topic=topic,
            fn=fn,
            is_async=inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__),
            timeout=None if timeout is None else parse_duration(timeout, field="timeout", allow_zero=False),
            on_success=on_success,
            on_failure=on_failure,
        )
        self._handlers[topic] = handler
        return handler

    def get(self, topic: str) -> Handler | None:
        return self._handlers.get(topic)

    @property
    def topics(self) -> list[str]:
        return sorted(self._handlers)

    def __contains__(self, topic: object) -> bool:
        return topic in self._handlers

    def __len__(self) -> int:
        return len(self._handlers)
