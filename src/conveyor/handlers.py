"""The handler methods of ``AsyncConveyor``, mixed into the client: register handlers
(with their job defaults) and hooks. The registry itself is ``conveyor.registry``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from conveyor.core.options import JobDefaults, JobOptions, validate_topic
from conveyor.registry import FailureHook, HandlerFn, Registry, SuccessHook

F = TypeVar("F", bound=Callable[..., Any])


class HandlerMethods:
    """``handler``/``register``, the topic defaults they set, and the hooks."""

    registry: Registry
    _topic_defaults: dict[str, tuple[JobDefaults, JobOptions, JobDefaults]]
    _success_hooks: list[SuccessHook]
    _failure_hooks: list[FailureHook]

    if TYPE_CHECKING:

        @property
        def defaults(self) -> JobDefaults: ...

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
        """Register the decorated function (sync or async) as the handler of ``topic``.

        The job options given here are the defaults of the topic's jobs: an enqueue
        (in a process that registered the handler) that does not give an option gets
        the handler's, else the settings' (``CONVEYOR_MAX_RETRIES``, ...); the stored
        job shows the value it got. A worker also runs a job stored without a timeout
        with its handler's.

        Args:
            topic: the topic handled, 1-200 characters of ``A-Za-z0-9_.:-``.
            priority: default priority (higher runs first).
            max_retries: default retry budget (a job runs at most ``1 + max_retries`` times).
            retry_delay: default backoff base, seconds or a duration string (``"10s"``).
            backoff: default strategy: ``none``, ``constant``, ``linear``,
                ``exponential`` or ``quadratic``, optionally ``+jitter``.
            timeout: default limit of one attempt, seconds or a duration string.
            max_snoozes: default cap on ``Snooze`` (past it the job fails; default 100).
            on_success: called with the job after one of this topic's jobs completes.
            on_failure: called with the job and the exception when one ends ``failed``.

        Returns:
            A decorator that registers the function and returns it unchanged.

        Raises:
            ValidationError: a bad option (the error names it), or another handler is
                already registered for ``topic``.
        """
        options = JobOptions.validated(
            priority=priority,
            max_retries=max_retries,
            retry_delay=retry_delay,
            backoff=backoff,
            timeout=timeout,
            max_snoozes=max_snoozes,
        )
        validate_topic(topic)

        def decorate(fn: F) -> F:
            self.registry.add(topic, fn, options=options, on_success=on_success, on_failure=on_failure)
            return fn

        return decorate

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
        """Register ``fn`` as the handler of ``topic``: ``handler()`` without the decorator.

        Args:
            topic: the topic handled.
            fn: the handler, sync or async, called with the ``Job``.
            priority: default priority of the topic's jobs.
            max_retries: default retry budget.
            retry_delay: default backoff base.
            backoff: default backoff strategy.
            timeout: default limit of one attempt.
            max_snoozes: default cap on ``Snooze``.
            on_success: hook called with the job after it completes.
            on_failure: hook called with the job and the exception when it ends ``failed``.

        Raises:
            ValidationError: a bad option, or another handler is registered for ``topic``.
        """
        self.handler(
            topic,
            priority=priority,
            max_retries=max_retries,
            retry_delay=retry_delay,
            backoff=backoff,
            timeout=timeout,
            max_snoozes=max_snoozes,
            on_success=on_success,
            on_failure=on_failure,
        )(fn)

    def defaults_for(self, topic: str) -> JobDefaults:
        """The defaults a new job of ``topic`` gets for the options its enqueue does not
        give: its handler's options over the settings' defaults."""
        options = self.registry.options(topic)
        base = self.defaults
        if options is None:
            return base
        cached = self._topic_defaults.get(topic)
        if cached is None or cached[0] is not base or cached[1] is not options:
            cached = self._topic_defaults[topic] = (base, options, base.overlaid(options))
        return cached[2]

    def on_success(self, fn: SuccessHook) -> SuccessHook:
        """Call ``fn(job)`` after any job completes in this process's worker."""
        self._success_hooks.append(fn)
        return fn

    def on_failure(self, fn: FailureHook) -> FailureHook:
        """Call ``fn(job, exc)`` when a job ends ``failed`` in this process's worker."""
        self._failure_hooks.append(fn)
        return fn

    @property
    def success_hooks(self) -> list[SuccessHook]:
        """The ``on_success`` hooks, in registration order."""
        return self._success_hooks

    @property
    def failure_hooks(self) -> list[FailureHook]:
        """The ``on_failure`` hooks, in registration order."""
        return self._failure_hooks
