"""Handlers: job options as per-handler defaults, their precedence, one handler per topic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conveyor import AsyncConveyor, Conveyor, Job, JobStatus, ValidationError
from conveyor.settings import Settings


def settings(**kw: Any) -> Settings:
    return Settings(url="memory://", poll_interval=0.05, lock_duration=30, retry_delay=0.05, retention=0).replace(**kw)


@pytest.fixture
async def app() -> AsyncIterator[AsyncConveyor]:
    client = AsyncConveyor(settings=settings(max_retries=3, retry_delay=60))
    yield client
    await client.close()


def noop(job: Job) -> None:
    return None


async def test_handler_options_are_the_defaults_of_its_jobs_and_shown_on_them(app: AsyncConveyor) -> None:
    app.handler("t", max_retries=5, retry_delay="10s", backoff="exponential", timeout="10s", priority=7)(noop)

    job = await app.enqueue("t", {"a": 1})

    assert (job.max_retries, job.retry_delay, job.backoff, job.timeout, job.priority) == (
        5,
        10.0,
        "exponential",
        10.0,
        7,
    )
    stored = (await app.get(job.id)).to_dict()
    assert stored["timeout"] == 10.0
    assert stored["max_retries"] == 5


async def test_enqueue_arguments_win_over_handler_defaults_which_win_over_settings(app: AsyncConveyor) -> None:
    app.handler("t", max_retries=5, timeout="10s")(noop)

    explicit = await app.enqueue("t", max_retries=1, timeout="2s", priority=-3, backoff="linear")
    partial = await app.enqueue("t", retry_delay="1s")
    other = await app.enqueue("no-handler")

    assert (explicit.max_retries, explicit.timeout, explicit.priority, explicit.backoff) == (1, 2.0, -3, "linear")
    assert (partial.max_retries, partial.timeout, partial.retry_delay) == (5, 10.0, 1.0)
    assert partial.backoff == "quadratic"  # not set on the handler: the default strategy
    assert (other.max_retries, other.retry_delay, other.timeout, other.priority) == (3, 60.0, None, 0)


async def test_enqueue_many_applies_each_topics_handler_defaults(app: AsyncConveyor) -> None:
    app.handler("a", max_retries=9, priority=2)(noop)
    app.handler("b", timeout="1m")(noop)

    a, b, c = await app.enqueue_many([{"topic": "a"}, {"topic": "b", "priority": 4}, {"topic": "a", "max_retries": 0}])

    assert (a.max_retries, a.priority, a.timeout) == (9, 2, None)
    assert (b.max_retries, b.priority, b.timeout) == (3, 4, 60.0)
    assert (c.max_retries, c.priority) == (0, 2)


def test_sync_facade_applies_handler_defaults_on_both_enqueue_paths(tmp_path: Any) -> None:
    app = Conveyor(settings=settings(url=f"sqlite:///{tmp_path}/h.db"))
    try:

        @app.handler("t", max_retries=7, timeout="30s")
        def handle(job: Job) -> None:
            return None

        first = app.enqueue("t")  # opens the store on the loop thread
        second = app.enqueue("t")  # the store is open: the blocking path
        many = app.enqueue_many([{"topic": "t"}])
        assert [(j.max_retries, j.timeout) for j in (first, second, *many)] == [(7, 30.0)] * 3
    finally:
        app.close()


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": "many"}, "max_retries"),
        ({"retry_delay": "soon"}, "retry_delay"),
        ({"backoff": "zigzag"}, "backoff"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": "-5s"}, "timeout"),
        ({"priority": 2**40}, "priority"),
        ({"priority": "high"}, "priority"),
    ],
)
def test_handler_options_are_validated_like_enqueues(options: dict[str, Any], field: str) -> None:
    app = AsyncConveyor(settings=settings())
    with pytest.raises(ValidationError) as info:
        app.handler("t", **options)
    assert info.value.field == field
    assert "t" not in app.registry


def test_unknown_handler_option_is_a_type_error() -> None:
    app = AsyncConveyor(settings=settings())
    with pytest.raises(TypeError, match="colour"):
        app.handler("t", colour="red")  # type: ignore[call-arg]


def test_a_second_handler_for_a_topic_is_an_error(app: AsyncConveyor) -> None:
    @app.handler("t")
    def first(job: Job) -> None:
        return None

    def second(job: Job) -> None:
        return None

    with pytest.raises(ValidationError, match="already registered") as info:
        app.handler("t")(second)
    assert info.value.field == "topic"
    with pytest.raises(ValidationError, match="already registered"):
        app.handler("t", max_retries=1)(first)  # the same function with other defaults
    app.handler("t")(first)  # the same registration again (a module imported twice) is fine
    assert app.registry.get("t") is not None and app.registry.get("t").fn is first  # type: ignore[union-attr]


async def test_worker_runs_a_job_stored_without_timeout_with_its_handlers(app: AsyncConveyor) -> None:
    job = await app.enqueue("slow", max_retries=0)  # enqueued where no handler is registered
    assert job.timeout is None

    @app.handler("slow", timeout="50ms")
    async def slow(job: Job) -> None:
        await asyncio.sleep(5)

    started = time.monotonic()
    await app.start()
    deadline = time.monotonic() + 5
    while (await app.get(job.id)).status is not JobStatus.FAILED and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    failed = await app.get(job.id)
    assert failed.status is JobStatus.FAILED
    assert "timeout" in (failed.last_error or "").lower()
    assert time.monotonic() - started < 4
