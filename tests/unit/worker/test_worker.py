"""The worker on the memory backend: retries, timeouts, signals, cancellation, stop."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor import AsyncConveyor, Conveyor, Job, JobStatus, PermanentError, Snooze
from conveyor.clock import FakeClock
from conveyor.settings import Settings


def settings(**kw: Any) -> Settings:
    return Settings(url="memory://", poll_interval=0.05, lock_duration=30, retry_delay=0.05, retention=0).replace(**kw)


@pytest.fixture
async def app() -> AsyncIterator[AsyncConveyor]:
    client = AsyncConveyor(settings=settings())
    yield client
    await client.close()


async def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def status_is(app: AsyncConveyor, job_id: str, status: str) -> bool:
    return (await app.get(job_id)).status == status


async def test_async_and_sync_handlers_complete_with_results(app: AsyncConveyor) -> None:
    @app.handler("async")
    async def a(job: Job) -> dict[str, Any]:
        return {"doubled": job.payload * 2}

    @app.handler("sync")
    def s(job: Job) -> str:
        return threading.current_thread().name

    await app.start()
    j1 = await app.enqueue("async", 21)
    j2 = await app.enqueue("sync", None)
    await wait_for(lambda: status_is(app, j2.id, "completed"))
    await wait_for(lambda: status_is(app, j1.id, "completed"))
    assert (await app.get(j1.id)).result == {"doubled": 42}
    assert (await app.get(j2.id)).result.startswith("conveyor-handler")


async def test_failing_job_runs_one_plus_max_retries_times_with_backoff_spacing() -> None:
    # On a fake clock: the gaps are exactly the backoff, and only the clock moves them.
    clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
    app = AsyncConveyor(settings=settings(poll_interval=3600), clock=clock)
    runs: list[datetime] = []

    @app.handler("flaky")
    async def flaky(job: Job) -> None:
        runs.append(clock.now())
        raise RuntimeError(f"boom {len(runs)}")

    try:
        await app.start()
        job = await app.enqueue("flaky", None, max_retries=3, retry_delay=10, backoff="linear")
        for n, gap in enumerate((10, 20, 30), start=1):
            await wait_for(lambda n=n: len(runs) == n)
            await wait_for(lambda: status_is(app, job.id, "pending"))
            clock.advance(gap)
        await wait_for(lambda: status_is(app, job.id, "failed"))
        assert [(b - a).total_seconds() for a, b in itertools.pairwise(runs)] == [10, 20, 30]
        final = await app.get(job.id)
        assert final.attempts == 4
        assert "RuntimeError: boom 4" in (final.last_error or "")
    finally:
        await app.close()


async def test_timeout_fails_the_attempt_for_async_and_sync_handlers(app: AsyncConveyor) -> None:
    @app.handler("slow-async")
    async def slow_async(job: Job) -> None:
        await asyncio.sleep(10)

    @app.handler("slow-sync")
    def slow_sync(job: Job) -> str:
        time.sleep(1.0)
        return "late"

    await app.start()
    a = await app.enqueue("slow-async", None, timeout="100ms", max_retries=0)
    s = await app.enqueue("slow-sync", None, timeout=0.1, max_retries=0)
    started = time.monotonic()
    await wait_for(lambda: status_is(app, a.id, "failed"))
    await wait_for(lambda: status_is(app, s.id, "failed"))
    assert time.monotonic() - started < 0.9  # the sync thread is abandoned, not awaited
    assert "timeout" in ((await app.get(a.id)).last_error or "")
    assert "timeout" in ((await app.get(s.id)).last_error or "")
    await asyncio.sleep(1.0)  # the abandoned thread returns: its result is discarded
    assert (await app.get(s.id)).status is JobStatus.FAILED


async def test_handler_timeout_is_the_default_for_its_jobs(app: AsyncConveyor) -> None:
    @app.handler("slow", timeout="50ms")
    async def slow(job: Job) -> None:
        await asyncio.sleep(5)

    await app.start()
    job = await app.enqueue("slow", None, max_retries=0)
    await wait_for(lambda: status_is(app, job.id, "failed"))


async def test_permanent_error_fails_without_retry(app: AsyncConveyor) -> None:
    runs = []

    @app.handler("bad")
    def bad(job: Job) -> None:
        runs.append(1)
        raise PermanentError("invalid card")

    await app.start()
    job = await app.enqueue("bad", None, max_retries=5)
    await wait_for(lambda: status_is(app, job.id, "failed"))
    assert len(runs) == 1
    assert "invalid card" in ((await app.get(job.id)).last_error or "")


async def test_snooze_runs_again_later_without_using_a_retry(app: AsyncConveyor) -> None:
    runs: list[float] = []

    @app.handler("later")
    async def later(job: Job) -> str:
        runs.append(time.monotonic())
        if len(runs) < 3:
            raise Snooze("100ms")
        return "done"

    await app.start()
    job = await app.enqueue("later", None, max_retries=0)
    await wait_for(lambda: status_is(app, job.id, "completed"))
    final = await app.get(job.id)
    assert final.attempts == 1
    assert len(runs) == 3
    assert runs[1] - runs[0] >= 0.09


async def test_a_handler_that_always_snoozes_fails_past_max_snoozes(app: AsyncConveyor) -> None:
    @app.handler("forever")
    async def forever(job: Job) -> None:
        raise Snooze(0)

    failures: list[Job] = []
    app.on_failure(lambda job, exc: failures.append(job))
    await app.start()
    job = await app.enqueue("forever", None, max_snoozes=3)
    await wait_for(lambda: status_is(app, job.id, "failed"))
    final = await app.get(job.id)
    assert (final.snoozes, final.attempts) == (3, 1)
    assert final.last_error is not None and "max_snoozes (3)" in final.last_error
    assert [e["attempt"] for e in final.errors] == [1]


async def test_failed_attempts_are_recorded_with_their_traceback(app: AsyncConveyor) -> None:
    @app.handler("flaky")
    async def flaky(job: Job) -> None:
        raise RuntimeError(f"attempt {job.attempts}")

    await app.start()
    job = await app.enqueue("flaky", None, max_retries=1, retry_delay=0)
    await wait_for(lambda: status_is(app, job.id, "failed"))
    final = await app.get(job.id)
    assert [(e["attempt"], e["worker"]) for e in final.errors] == [(1, app.worker.id), (2, app.worker.id)]
    assert "RuntimeError: attempt 2" in final.errors[1]["error"] and "Traceback" in final.errors[1]["error"]


async def test_cancel_stops_a_running_async_job(app: AsyncConveyor) -> None:
    started = asyncio.Event()
    cleaned = asyncio.Event()

    @app.handler("long")
    async def long(job: Job) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.set()

    await app.start()
    job = await app.enqueue("long", None)
    await asyncio.wait_for(started.wait(), 5)
    t0 = time.monotonic()
    await app.cancel(job.id)
    await wait_for(lambda: status_is(app, job.id, "cancelled"))
    assert time.monotonic() - t0 < 2.5
    assert cleaned.is_set()


async def test_cancel_reaches_a_running_sync_job(app: AsyncConveyor) -> None:
    started = threading.Event()
    noticed = threading.Event()

    @app.handler("long-sync")
    def long_sync(job: Job) -> None:
        started.set()
        for _ in range(1000):
            if job.cancel_requested:
                noticed.set()
                return
            time.sleep(0.01)

    await app.start()
    job = await app.enqueue("long-sync", None)
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    await app.cancel(job.id)
    await wait_for(lambda: status_is(app, job.id, "cancelled"), timeout=8)
    assert noticed.is_set()


async def test_graceful_stop_lets_a_running_job_finish(app: AsyncConveyor) -> None:
    started = asyncio.Event()

    @app.handler("work")
    async def work(job: Job) -> str:
        started.set()
        await asyncio.sleep(0.3)
        return "finished"

    await app.start()
    job = await app.enqueue("work", None)
    await asyncio.wait_for(started.wait(), 5)
    await app.stop(timeout=5)
    final = await app.get(job.id)
    assert final.status is JobStatus.COMPLETED and final.result == "finished"
    assert await app.workers() == []


async def test_stop_timeout_releases_unfinished_jobs_back_to_pending(app: AsyncConveyor) -> None:
    started = asyncio.Event()

    @app.handler("stuck")
    async def stuck(job: Job) -> None:
        started.set()
        await asyncio.sleep(60)

    await app.start()
    job = await app.enqueue("stuck", None)
    await asyncio.wait_for(started.wait(), 5)
    await app.stop(timeout=0.1)
    final = await app.get(job.id)
    assert final.status is JobStatus.PENDING
    assert final.attempts == 0
    assert final.locked_by is None


async def test_hooks_run_on_success_and_final_failure(app: AsyncConveyor) -> None:
    seen: list[tuple[str, str]] = []

    @app.on_success
    def ok(job: Job) -> None:
        seen.append(("ok", job.topic))

    @app.on_failure
    def ko(job: Job, exc: BaseException) -> None:
        seen.append(("ko", type(exc).__name__))

    @app.handler("good")
    async def good(job: Job) -> None:
        return None

    @app.handler("bad")
    async def bad(job: Job) -> None:
        raise ValueError("nope")

    await app.start()
    a = await app.enqueue("good", None)
    b = await app.enqueue("bad", None, max_retries=1, retry_delay=0)
    await wait_for(lambda: status_is(app, a.id, "completed"))
    await wait_for(lambda: status_is(app, b.id, "failed"))
    await wait_for(lambda: len(seen) == 2)
    assert sorted(seen) == [("ko", "ValueError"), ("ok", "good")]


async def test_in_process_enqueue_wakes_an_idle_worker_at_once() -> None:
    app = AsyncConveyor(settings=settings(poll_interval=10))
    started: list[float] = []

    @app.handler("ping")
    async def ping(job: Job) -> None:
        started.append(time.monotonic())

    await app.start()
    await asyncio.sleep(0.1)  # the worker is idle, waiting up to 10 s
    t0 = time.monotonic()
    await app.enqueue("ping", None)
    await wait_for(lambda: started)
    assert started[0] - t0 < 0.05
    await app.close()


async def test_delayed_job_starts_when_due_not_at_the_next_poll() -> None:
    app = AsyncConveyor(settings=settings(poll_interval=10))
    started: list[float] = []

    @app.handler("later")
    async def later(job: Job) -> None:
        started.append(time.monotonic())

    await app.start()
    t0 = time.monotonic()
    await app.enqueue("later", None, delay=0.3)
    await wait_for(lambda: started)
    assert 0.29 <= started[0] - t0 < 0.6
    await app.close()


async def test_a_delayed_job_due_after_a_partial_claim_starts_when_due() -> None:
    # After claiming fewer jobs than it could, the worker must still wake for the next
    # delayed job (its enqueue's wake-up is long used up), not at the next poll.
    app = AsyncConveyor(settings=settings(poll_interval=10))
    started: dict[str, float] = {}

    @app.handler("later")
    async def later(job: Job) -> None:
        started[job.payload] = time.monotonic()

    await app.start()
    t0 = time.monotonic()
    await app.enqueue("later", "b", delay=0.3)
    await app.enqueue("later", "c", delay=0.6)
    await wait_for(lambda: len(started) == 2)
    # Without the fix "c" starts a poll interval (10 s) late: bounds loose for busy CPUs.
    assert 0.29 <= started["b"] - t0 < 2.0
    assert 0.59 <= started["c"] - t0 < 2.5
    await app.close()


def test_worker_options_take_durations_like_the_settings() -> None:
    app = Conveyor("memory://", lock_duration="2s", poll_interval="250ms")
    assert (app.settings.lock_duration, app.settings.poll_interval) == (2.0, 0.25)

    @app.handler("t")
    def t(job: Job) -> None:
        return None

    app.start(lock_duration="1m", poll_interval="100ms")
    try:
        assert (app.aio.worker.lock_duration, app.aio.worker.poll_interval) == (60.0, 0.1)
    finally:
        app.stop()
        app.close()


async def test_concurrency_limits_parallel_attempts(app: AsyncConveyor) -> None:
    running = 0
    peak = 0

    @app.handler("p")
    async def p(job: Job) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    await app.start(concurrency=3)
    await app.enqueue_many([{"topic": "p"} for _ in range(12)])
    await wait_for(lambda: _count(app, "completed", 12))
    assert peak == 3


async def _count(app: AsyncConveyor, status: str, n: int) -> bool:
    return (await app.list(status=status)).total == n


async def test_events_cover_a_retry_then_failure(app: AsyncConveyor) -> None:
    events: list[tuple[str, Any]] = []
    ready = asyncio.Event()

    async def listen() -> None:
        stream = app.events()
        ready.set()
        async for e in stream:
            events.append((e.type, e.metadata.get("final")))
            if e.type == "job.failed" and e.metadata.get("final"):
                return

    await app.connect()
    task = asyncio.create_task(listen())
    await ready.wait()
    await asyncio.sleep(0.01)

    @app.handler("bad")
    async def bad(job: Job) -> None:
        raise RuntimeError("x")

    await app.start()
    await app.enqueue("bad", None, max_retries=1, retry_delay=0)
    await asyncio.wait_for(task, 5)
    types = [t for t, _ in events]
    assert types == ["job.scheduled", "job.started", "job.failed", "job.retrying", "job.started", "job.failed"]
    assert events[2][1] is False and events[-1][1] is True


async def test_a_job_whose_lease_expired_is_recovered_by_the_worker() -> None:
    app = AsyncConveyor(settings=settings(lock_duration=0.3))

    @app.handler("t")
    async def t(job: Job) -> str:
        return "ok"

    await app.connect()
    job = await app.enqueue("t", None)
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    await app.backend.claim(worker_id="dead", topics=["t"], limit=1, now=now, locked_until=now + timedelta(seconds=0.3))
    await app.start()
    await wait_for(lambda: status_is(app, job.id, "completed"))
    final = await app.get(job.id)
    assert final.attempts == 2
    assert "worker lost" in (final.last_error or "")
    await app.close()


def test_sync_facade_runs_a_worker_in_the_background() -> None:
    app = Conveyor(settings=settings())
    done = threading.Event()

    @app.handler("hello")
    def hello(job: Job) -> str:
        done.set()
        return f"hello {job.payload['name']}"

    app.start()
    job = app.enqueue("hello", {"name": "world"})
    assert done.wait(5)
    deadline = time.monotonic() + 5
    while app.get(job.id).status != JobStatus.COMPLETED and time.monotonic() < deadline:
        time.sleep(0.01)
    assert app.get(job.id).result == "hello world"
    app.stop()
    app.close()


def test_worker_refuses_topics_without_handlers() -> None:
    from conveyor import ValidationError

    app = Conveyor(settings=settings())
    with pytest.raises(ValidationError, match="no handler is registered for topic 'nope'"):
        app.start(topics=["nope"])
    app.close()


async def test_disabled_setting_starts_no_worker() -> None:
    app = AsyncConveyor(settings=settings(disabled=True))

    @app.handler("t")
    async def t(job: Job) -> None:
        return None

    await app.start()
    assert app.worker is None
    await app.run_worker(install_signal_handlers=False)  # returns at once
    job = await app.enqueue("t", None)
    await asyncio.sleep(0.1)
    assert (await app.get(job.id)).status is JobStatus.PENDING
    await app.close()


async def test_a_heartbeat_that_misses_a_job_just_acknowledged_does_not_call_its_lease_lost(
    app: AsyncConveyor, caplog: pytest.LogCaptureFixture
) -> None:
    """Acknowledgements and heartbeats are separate round trips whose replies come back
    in any order: a heartbeat that finds a job finished whose attempt has ended (its
    outcome stored, the reply not processed yet) must not report the lease lost. An
    attempt still running whose job another worker took is reported."""
    from conveyor.core import lifecycle
    from conveyor.worker.executor import Attempt
    from conveyor.worker.lease import LeaseKeeper

    @app.handler("t")
    async def t(job: Job) -> None:
        pass

    backend = await app.connect()
    ended_job = await app.enqueue("t", {})
    running_job = await app.enqueue("t", {})
    now = app.clock.now()
    claimed = await backend.claim(
        worker_id="w", topics=["t"], limit=2, now=now, locked_until=now + timedelta(seconds=30)
    )
    by_id = {j.id: j for j in claimed}
    ended, running = by_id[ended_job.id], by_id[running_job.id]
    await backend.finish([lifecycle.completed(ended, "w", None)], now=now)  # stored; reply not seen yet
    await backend.finish([lifecycle.released(running, "w", now)], now=now)  # the job is no longer ours

    async def done() -> None:
        pass

    finished_task = asyncio.ensure_future(done())
    await finished_task
    running_task = asyncio.ensure_future(asyncio.sleep(60))
    handler = app.registry.get("t")
    assert handler is not None
    active = {
        ended.id: Attempt(job=ended, handler=handler, task=finished_task),
        running.id: Attempt(job=running, handler=handler, task=running_task),
    }
    caplog.set_level("WARNING", logger="conveyor")
    await LeaseKeeper(app, "w", active, lock_duration=30, info=None).renew()
    lost = [r.getMessage() for r in caplog.records if "lease lost" in r.getMessage()]
    assert lost == [
        f"job {running.id}: lease lost (another worker may run it now); stopping this attempt, "
        "its result will be discarded"
    ]
    assert not active[ended.id].lease_lost and active[running.id].lease_lost
    # Never two live attempts: the one whose lease was lost is stopped, the ended one left alone.
    assert active[running.id].reason == "lost" and active[ended.id].reason is None
    await asyncio.gather(running_task, return_exceptions=True)
    assert running_task.cancelled()


async def noop_handler(app: AsyncConveyor) -> Any:
    """Registers a handler for "t" that does nothing, opens the store; the handler."""

    @app.handler("t")
    async def t(job: Job) -> None:
        pass

    await app.connect()
    handler = app.registry.get("t")
    assert handler is not None
    return handler


async def test_an_acknowledgement_claims_for_every_slot_it_frees_beyond_batch_size(app: AsyncConveyor) -> None:
    """The claim riding on an acknowledgement refills the slots the acknowledged
    attempts held, all of them in that round trip (not ``batch_size`` of them and the
    rest in another); never beyond what the worker may hold."""
    from conveyor.worker.dispatcher import Worker
    from conveyor.worker.executor import Attempt

    handler = await noop_handler(app)
    worker = Worker(app, concurrency=4, batch_size=1)
    for job in await app.enqueue_many([{"topic": "t"} for _ in range(4)]):
        worker._active[job.id] = Attempt(job=job, handler=handler)  # 4 slots held
    made = worker._claim_with_acks(3, app.clock.now())
    assert made is not None and made[0].limit == 3
    worker._active.update({f"extra-{i}": Attempt(job=job, handler=handler) for i in range(3)})  # 7 held: 3 too many
    assert worker._claim_with_acks(3, app.clock.now()) is None


async def test_a_stored_outcome_frees_only_its_own_attempt_not_a_newer_one_of_the_same_job(
    app: AsyncConveyor,
) -> None:
    """A job retried at once can be claimed again (by the claim loop) before the round
    trip that stored its retry returns: that return must not take the new attempt out
    of the worker's hands (its slot, its lease renewals)."""
    from conveyor.worker.dispatcher import Worker
    from conveyor.worker.executor import Attempt

    handler = await noop_handler(app)
    worker = Worker(app, concurrency=2)
    (job,) = await app.enqueue_many([{"topic": "t"}])
    first, second = Attempt(job=job, handler=handler), Attempt(job=job, handler=handler)
    worker._active[job.id] = second  # claimed again while the first attempt's outcome was stored
    worker._release_slot(first)
    assert list(worker._active) == [job.id] and worker._active[job.id] is second
    worker._release_slot(second)
    assert worker._active == {}


async def test_cancelling_run_worker_hands_running_jobs_back_and_leaves_no_loop_running(app: AsyncConveyor) -> None:
    """A worker run as a task that gets cancelled (a task group, a timeout, an app
    shutting down) stops like a second SIGINT: its running job goes back to pending,
    the attempt not counted, and none of its loops keeps claiming; the cancellation
    then propagates."""
    started = asyncio.Event()

    @app.handler("slow")
    async def slow(job: Job) -> None:
        started.set()
        await asyncio.sleep(60)

    job = await app.enqueue("slow", None)
    runner = asyncio.create_task(app.run_worker(install_signal_handlers=False, concurrency=2))
    await asyncio.wait_for(started.wait(), 5)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    back = await app.get(job.id)
    assert (back.status, back.attempts) == (JobStatus.PENDING, 0)
    assert app.worker is None
    assert not [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("conveyor-")]
    later = await app.enqueue("slow", None)
    await asyncio.sleep(0.2)  # no loop of the cancelled worker claims it
    assert (await app.get(later.id)).status == JobStatus.PENDING


async def test_an_attempt_whose_lease_was_lost_is_stopped() -> None:
    """SPEC: never two live attempts of one job. A worker that learns from its heartbeat
    that another worker holds the job now (it was paused past its lease, say) stops its
    own attempt at once instead of letting it run alongside the new one."""
    from conveyor.core import lifecycle

    app = AsyncConveyor(settings=settings(lock_duration=0.6))  # a heartbeat every 0.2 s
    started, stopped = asyncio.Event(), asyncio.Event()

    @app.handler("t")
    async def t(job: Job) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stopped.set()
            raise

    try:
        await app.start(concurrency=1)
        job = await app.enqueue("t", None)
        await asyncio.wait_for(started.wait(), 5)
        worker = app.worker
        assert worker is not None
        attempt = worker._active[job.id]
        # Another worker takes the job over, as after this one's lease expired.
        backend, now = app.backend, app.clock.now()
        await backend.finish([lifecycle.released(attempt.job, worker.id, now)], now=now)
        (taken,) = await backend.claim(
            worker_id="other", topics=["t"], limit=1, now=now, locked_until=now + timedelta(seconds=30)
        )
        await asyncio.wait_for(stopped.wait(), 5)  # stopped by the next heartbeat
        assert attempt.reason == "lost"
        await wait_for(lambda: job.id not in worker._active)
        stored = await app.get(job.id)
        assert (stored.status, stored.locked_by, stored.attempts) == (JobStatus.PROCESSING, "other", taken.attempts)
    finally:
        await app.stop(timeout=1)
        await app.close()
