"""The Redis peers of bench_redis.py, each used through its public API at its defaults
(as its documentation's getting-started configures it): Huey (RedisHuey, thread
workers), RQ (``SimpleWorker``: no fork, one job at a time), SAQ, Dramatiq (Redis
broker, worker threads) and BullMQ's Python port (the Node original's Lua scripts).

Every system offers the same methods (None where it has no such call):
``enqueue`` (its synchronous API, one job per call), ``enqueue_async`` (its asyncio
API), ``bulk``, ``fill`` (not timed), ``work`` (a worker at ``concurrency`` that
starts consuming when ``start()`` returns and runs until ``counter`` is done or the
process is killed) and ``producer`` (the latency run's enqueue). ``fill_backlog``
(``bench_redis.py --backlog``) puts jobs that are not due, delayed an hour, in the
measured queue: through the peer's bulk call where it has one, else its one-job call
from ``BACKLOG_THREADS`` threads; RQ has no delayed bulk call and no such method.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _common import WARMUP, Counter, Producer, counting_tasks, rate_result

CHILD_TIMEOUT = 600.0
BACKLOG_DELAY = 3600.0  # seconds: the backlog is never due during a run
BACKLOG_THREADS = 8

COUNTER = Counter(0)  # replaced in the child that runs an RQ or SAQ worker


def timed(n: int, call: Callable[[int], object]) -> dict[str, Any]:
    """``call(i)`` for ``WARMUP`` untimed then ``n`` timed values: rate and client CPU."""
    for i in range(WARMUP):
        call(-i - 1)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        call(i)
    return rate_result(n, time.perf_counter() - t0, client_cpu=time.process_time() - c0)


async def timed_async(n: int, call: Callable[[int], Awaitable[object]]) -> dict[str, Any]:
    """``timed`` for a coroutine function, awaited one call after the other."""
    for i in range(WARMUP):
        await call(-i - 1)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        await call(i)
    return rate_result(n, time.perf_counter() - t0, client_cpu=time.process_time() - c0)


def threaded(n: int, call: Callable[[int], object]) -> None:
    """``call(i)`` for i < n from ``BACKLOG_THREADS`` threads (a peer with no bulk call)."""
    from concurrent.futures import ThreadPoolExecutor

    def part(k: int) -> None:
        for i in range(k, n, BACKLOG_THREADS):
            call(i)

    with ThreadPoolExecutor(BACKLOG_THREADS) as pool:
        list(pool.map(part, range(BACKLOG_THREADS)))


# -- Huey (Redis) ------------------------------------------------------------------------


def _huey(url: str, token: str, counter: Counter | None = None) -> tuple[Any, Any, Any]:
    from huey import RedisHuey  # type: ignore[import-untyped]

    huey = RedisHuey(f"bench-{token}", url=url)
    noop, latency = counting_tasks(counter, huey.task(name="noop"), huey.task(name="latency"))
    return huey, noop, latency


class HueySystem:
    def enqueue(self, url: str, token: str, n: int) -> dict[str, Any] | None:
        _, noop, _ = _huey(url, token)
        return timed(n, noop)

    def enqueue_async(self, url: str, token: str, n: int) -> dict[str, Any] | None:
        return None

    def bulk(self, url: str, token: str, n: int, batch: int) -> dict[str, Any] | None:
        return None

    def fill(self, url: str, token: str, n: int) -> None:
        _, noop, _ = _huey(url, token)
        for i in range(n):
            noop(i)

    def fill_backlog(self, url: str, token: str, n: int) -> None:
        _, noop, _ = _huey(url, token)
        threaded(n, lambda i: noop.schedule(args=(i,), delay=BACKLOG_DELAY))

    def work(self, url: str, token: str, concurrency: int, counter: Counter, start: Callable[[], None]) -> None:
        huey, _, _ = _huey(url, token, counter)
        consumer = huey.create_consumer(workers=concurrency, worker_type="thread", periodic=False)
        start()
        consumer.start()
        counter.wait("worker", CHILD_TIMEOUT)
        consumer.stop(graceful=True)

    def producer(self, url: str, token: str) -> Producer:
        _, _, latency = _huey(url, token)
        return (lambda: latency(time.time())), lambda: None


# -- RQ ----------------------------------------------------------------------------------


def rq_noop(i: int) -> None:
    COUNTER.hit()


def rq_latency(ts: float) -> None:
    COUNTER.latency(ts)


def _rq_tasks() -> Any:
    """This module imported under its own name: RQ refuses functions of ``__main__``."""
    import redis_peers

    return redis_peers


def _rq(url: str, token: str) -> Any:
    from redis import Redis
    from rq import Queue

    return Queue(f"bench-{token}", connection=Redis.from_url(url))


class RqSystem:
    def enqueue(self, url: str, token: str, n: int) -> dict[str, Any] | None:
        q = _rq(url, token)
        noop = _rq_tasks().rq_noop
        return timed(n, lambda i: q.enqueue(noop, i))

    def enqueue_async(self, url: str, token: str, n: int) -> dict[str, Any] | None:
        return None

    def bulk(self, url: str, token: str, n: int, batch: int) -> dict[str, Any] | None:
        from rq import Queue

        q = _rq(url, token)
        noop = _rq_tasks().rq_noop
        batches = [[Queue.prepare_data(noop, (i,)) for i in range(s, min(n, s + batch))] for s in range(0, n, batch)]
        t0, c0 = time.perf_counter(), time.process_time()
        for items in batches:
            q.enqueue_many(items)
        return rate_result(n, time.perf_counter() - t0, client_cpu=time.process_time() - c0)

    def fill(self, url: str, token: str, n: int) -> None:
        from rq import Queue

        q = _rq(url, token)
        for s in range(0, n, 1000):
            q.enqueue_many([Queue.prepare_data(_rq_tasks().rq_noop, (i,)) for i in range(s, min(n, s + 1000))])

    def work(self, url: str, token: str, concurrency: int, counter: Counter, start: Callable[[], None]) -> None:
        from rq import SimpleWorker

        _rq_tasks().COUNTER = counter
        q = _rq(url, token)
        worker = SimpleWorker([q], connection=q.connection)

        def finish() -> None:
            counter.wait("worker", CHILD_TIMEOUT)
            from _common import emit_result, latency_result

            if counter.latencies:
                emit_result(**latency_result(counter.latencies))
            os._exit(0)  # the worker loop holds the main thread

        threading.Thread(target=finish, daemon=True).start()
        start()
        worker.work(logging_level="WARNING")  # RQ's signal handlers need the main thread
        raise SystemExit("the RQ worker stopped early")

    def producer(self, url: str, token: str) -> Producer:
        q = _rq(url, token)
        return (lambda: q.enqueue(_rq_tasks().rq_latency, time.time())), lambda: None


# -- SAQ ---------------------------------------------------------------------------------


async def saq_noop(ctx: Any, **kwargs: Any) -> None:
    COUNTER.hit()


async def saq_latency(ctx: Any, *, ts: float) -> None:
    COUNTER.latency(ts)


class SaqSystem:
    def _queue(self, url: str, token: str) -> Any:
        from saq import Queue

        return Queue.from_url(url, name=f"bench-{token}")

    def enqueue(self, url: str, token: str, n: int) -> dict[str, Any] | None:
        return None  # asyncio only

    def enqueue_async(self, url: str, token: str, n: int) -> dict[str, Any] | None:
        async def go() -> dict[str, Any]:
            q = self._queue(url, token)
            await q.connect()
            out = await timed_async(n, lambda i: q.enqueue("saq_noop", i=i))
            await q.disconnect()
            return out

        return asyncio.run(go())

    def bulk(self, url: str, token: str, n: int, batch: int) -> dict[str, Any] | None:
        return None

    def fill(self, url: str, token: str, n: int) -> None:
        async def go() -> None:
            q = self._queue(url, token)
            await q.connect()
            for s in range(0, n, 100):
                await asyncio.gather(*(q.enqueue("saq_noop", i=i) for i in range(s, min(n, s + 100))))
            await q.disconnect()

        asyncio.run(go())

    def fill_backlog(self, url: str, token: str, n: int) -> None:
        async def go() -> None:
            q = self._queue(url, token)
            await q.connect()
            later = int(time.time() + BACKLOG_DELAY)
            for s in range(0, n, 100):
                await asyncio.gather(*(q.enqueue("saq_noop", i=i, scheduled=later) for i in range(s, min(n, s + 100))))
            await q.disconnect()

        asyncio.run(go())

    def work(self, url: str, token: str, concurrency: int, counter: Counter, start: Callable[[], None]) -> None:
        from saq import Worker

        global COUNTER
        COUNTER = counter

        async def go() -> None:
            q = self._queue(url, token)
            worker = Worker(q, functions=[saq_noop, saq_latency], concurrency=concurrency)
            await asyncio.to_thread(start)
            task = asyncio.create_task(worker.start())
            await asyncio.to_thread(counter.wait, "worker", CHILD_TIMEOUT)
            await worker.stop()
            task.cancel()

        asyncio.run(go())

    def producer(self, url: str, token: str) -> Producer:
        loop = asyncio.new_event_loop()
        q = self._queue(url, token)
        loop.run_until_complete(q.connect())

        def close() -> None:
            loop.run_until_complete(q.disconnect())
            loop.close()

        return (lambda: loop.run_until_complete(q.enqueue("saq_latency", ts=time.time()))), close


# -- Dramatiq ----------------------------------------------------------------------------


def _dramatiq(url: str, token: str, counter: Counter | None = None) -> tuple[Any, Any, Any]:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=url, namespace=f"bench-{token}")  # type: ignore[no-untyped-call]
    dramatiq.set_broker(broker)
    noop, latency = counting_tasks(
        counter,
        dramatiq.actor(queue_name="noop", max_retries=0),
        dramatiq.actor(queue_name="latency", max_retries=0),
    )
    return broker, noop, latency


class DramatiqSystem:
    def enqueue(self, url: str, token: str, n: int) -> dict[str, Any] | None:
        _, noop, _ = _dramatiq(url, token)
        return timed(n, noop.send)

    def enqueue_async(self, url: str, token: str, n: int) -> dict[str, Any] | None:
        return None

    def bulk(self, url: str, token: str, n: int, batch: int) -> dict[str, Any] | None:
        return None

    def fill(self, url: str, token: str, n: int) -> None:
        _, noop, _ = _dramatiq(url, token)
        for i in range(n):
            noop.send(i)

    def fill_backlog(self, url: str, token: str, n: int) -> None:
        _, noop, _ = _dramatiq(url, token)
        threaded(n, lambda i: noop.send_with_options(args=(i,), delay=int(BACKLOG_DELAY * 1000)))

    def work(self, url: str, token: str, concurrency: int, counter: Counter, start: Callable[[], None]) -> None:
        from dramatiq import Worker

        broker, _, _ = _dramatiq(url, token, counter)
        worker = Worker(broker, worker_threads=concurrency)
        start()
        worker.start()
        counter.wait("worker", CHILD_TIMEOUT)
        worker.stop()

    def producer(self, url: str, token: str) -> Producer:
        _, _, latency = _dramatiq(url, token)
        return (lambda: latency.send(time.time())), lambda: None


# -- BullMQ (Python port) ----------------------------------------------------------------


class BullmqSystem:
    def _queue(self, url: str, token: str) -> Any:
        from bullmq import Queue  # type: ignore[import-untyped]

        return Queue(f"bench-{token}", {"connection": url})

    def enqueue(self, url: str, token: str, n: int) -> dict[str, Any] | None:
        return None  # asyncio only

    def enqueue_async(self, url: str, token: str, n: int) -> dict[str, Any] | None:
        async def go() -> dict[str, Any]:
            q = self._queue(url, token)
            out = await timed_async(n, lambda i: q.add("noop", {"i": i}))
            await q.close()
            return out

        return asyncio.run(go())

    def bulk(self, url: str, token: str, n: int, batch: int) -> dict[str, Any] | None:
        async def go() -> dict[str, Any]:
            q = self._queue(url, token)
            await q.add("noop", {"i": -1})  # connected and scripts loaded before the clock
            batches = [
                [{"name": "noop", "data": {"i": i}} for i in range(s, min(n, s + batch))] for s in range(0, n, batch)
            ]
            t0, c0 = time.perf_counter(), time.process_time()
            for items in batches:
                await q.addBulk(items)
            out = rate_result(n, time.perf_counter() - t0, client_cpu=time.process_time() - c0)
            await q.close()
            return out

        return asyncio.run(go())

    def fill(self, url: str, token: str, n: int) -> None:
        async def go() -> None:
            q = self._queue(url, token)
            for s in range(0, n, 1000):
                await q.addBulk([{"name": "noop", "data": {"i": i}} for i in range(s, min(n, s + 1000))])
            await q.close()

        asyncio.run(go())

    def fill_backlog(self, url: str, token: str, n: int) -> None:
        async def go() -> None:
            q = self._queue(url, token)
            opts = {"delay": int(BACKLOG_DELAY * 1000)}
            for s in range(0, n, 5000):
                await q.addBulk([{"name": "noop", "data": {"i": i}, "opts": opts} for i in range(s, min(n, s + 5000))])
            await q.close()

        asyncio.run(go())

    def work(self, url: str, token: str, concurrency: int, counter: Counter, start: Callable[[], None]) -> None:
        from bullmq import Worker  # type: ignore[import-untyped]

        async def process(job: Any, job_token: str) -> None:
            if job.name == "latency":
                counter.latency(job.data["ts"])
            else:
                counter.hit()

        async def go() -> None:
            await asyncio.to_thread(start)
            worker = Worker(f"bench-{token}", process, {"connection": url, "concurrency": concurrency})
            await asyncio.to_thread(counter.wait, "worker", CHILD_TIMEOUT)
            await worker.close()

        asyncio.run(go())

    def producer(self, url: str, token: str) -> Producer:
        loop = asyncio.new_event_loop()
        q = self._queue(url, token)

        def close() -> None:
            loop.run_until_complete(q.close())
            loop.close()

        return (lambda: loop.run_until_complete(q.add("latency", {"ts": time.time()}))), close


PEERS: dict[str, Any] = {
    "huey-redis": HueySystem,
    "rq": RqSystem,
    "saq": SaqSystem,
    "dramatiq": DramatiqSystem,
    "bullmq": BullmqSystem,
}
