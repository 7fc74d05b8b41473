"""conveyor on Redis beside Huey (Redis storage), RQ, SAQ and Dramatiq: same run, same
workload, same Redis.

    python bench/bench_redis.py                  # the full run
    python bench/bench_redis.py --quick          # small counts, for a smoke run
    python bench/bench_redis.py --json           # machine-readable output

Per system, each measurement in a fresh child process under a fresh key prefix/queue
name (deleted afterwards):

- single enqueue jobs/s: one client process enqueuing in a loop (conveyor: the sync
  ``Conveyor.enqueue``; Huey: calling the task; RQ: ``Queue.enqueue``; SAQ:
  ``await queue.enqueue``; Dramatiq: ``actor.send``).
- bulk enqueue jobs/s: batches of 1,000 where the system has a bulk call (conveyor
  ``enqueue_many``, RQ ``enqueue_many``, SAQ ``batch``-less: n/a, Huey/Dramatiq: n/a).
- drain jobs/s: N queued no-op jobs drained by ONE worker process at concurrency C,
  timed inside the worker from just before it starts until the handler has counted N
  (RQ has no in-process concurrency: its ``SimpleWorker``, one job at a time, no fork).
  conveyor also with 2 and 4 worker processes (timed by the parent from the start of
  the first worker until the store says all N completed).
- enqueue-to-start latency p50/p99: an idle worker in another process; the parent
  enqueues jobs spaced ``--spacing`` apart carrying their wall-clock enqueue time.

Redis: ``--url`` (default ``CONVEYOR_BENCH_REDIS_URL`` or redis://127.0.0.1:6379/0).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # the bench folder is not a package: found through sys.path
    TOPIC,
    WARMUP,
    Child,
    Counter,
    Producer,
    bench_main,
    conveyor_fill,
    conveyor_producer,
    counting_tasks,
    emit_ready,
    emit_result,
    installed_versions,
    latency_result,
    measure,
    noop_batches,
    parse_workload_args,
    print_report,
    rate_result,
    register_handlers,
    render_report,
    results_row,
    run_child,
    run_config,
    run_latency,
    workload_parser,
)

SCRIPT = os.path.abspath(__file__)
SYSTEMS = ("conveyor-redis", "huey-redis", "rq", "saq", "dramatiq")
CHILD_TIMEOUT = 600.0
DEFAULT_URL = os.environ.get("CONVEYOR_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
TARGETS = {"drain_ratio": 1.5, "enqueue_ratio": 1.0, "latency_p50_ms": 1.0}


COUNTER = Counter(0)  # replaced in the child that runs a worker


# -- conveyor ----------------------------------------------------------------------------


def _conveyor_url(url: str, token: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}prefix=bench-{token}"


def _conveyor(url: str, token: str) -> Any:
    from conveyor import Conveyor

    return Conveyor(_conveyor_url(url, token))


class ConveyorSystem:
    def enqueue(self, url: str, token: str, n: int) -> dict[str, Any]:
        app = _conveyor(url, token)
        for i in range(WARMUP):
            app.enqueue(TOPIC, {"i": -i})
        t0 = time.perf_counter()
        for i in range(n):
            app.enqueue(TOPIC, {"i": i})
        took = time.perf_counter() - t0
        app.close()
        return rate_result(n, took)

    def bulk(self, url: str, token: str, n: int, batch: int) -> dict[str, Any] | None:
        app = _conveyor(url, token)
        app.enqueue_many([{"topic": TOPIC, "payload": {"i": -1}}])
        batches = noop_batches(n, batch)
        t0 = time.perf_counter()
        for items in batches:
            app.enqueue_many(items)
        took = time.perf_counter() - t0
        app.close()
        return rate_result(n, took)

    def fill(self, url: str, token: str, n: int) -> None:
        app = _conveyor(url, token)
        conveyor_fill(app, n)
        app.close()

    def drain(self, url: str, token: str, n: int, concurrency: int) -> dict[str, Any]:
        app = _conveyor(url, token)
        counter = Counter(n)
        register_handlers(app, counter)
        app.stats()  # connect first
        t0 = time.perf_counter()
        app.start(concurrency=concurrency)
        counter.wait("drain", CHILD_TIMEOUT)
        took = counter.done_at - t0
        app.stop(timeout=30)
        stats = app.stats()
        app.close()
        return rate_result(n, took, all_completed=stats["completed"] >= n)

    def worker(self, url: str, token: str, n: int, concurrency: int, latency: bool) -> dict[str, Any]:
        app = _conveyor(url, token)
        counter = Counter(n)  # n=0: run until killed
        register_handlers(app, counter)
        app.stats()  # connected before READY
        emit_ready()
        app.start(concurrency=concurrency)
        counter.wait("worker", CHILD_TIMEOUT)
        app.stop(timeout=30)
        app.close()
        return latency_result(counter.latencies) if latency else {"jobs": counter.count}

    def producer(self, url: str, token: str) -> Producer:
        return conveyor_producer(_conveyor(url, token))


# -- Huey (Redis) ------------------------------------------------------------------------


def _huey(url: str, token: str, counter: Counter | None = None) -> tuple[Any, Any, Any]:
    from huey import RedisHuey  # type: ignore[import-untyped]

    huey = RedisHuey(f"bench-{token}", url=url)
    noop, latency = counting_tasks(counter, huey.task(name="noop"), huey.task(name="latency"))
    return huey, noop, latency


class HueySystem:
    def enqueue(self, url: str, token: str, n: int) -> dict[str, Any]:
        _, noop, _ = _huey(url, token)
        for i in range(WARMUP):
            noop(-i)
        t0 = time.perf_counter()
        for i in range(n):
            noop(i)
        return rate_result(n, time.perf_counter() - t0)

    def bulk(self, url: str, token: str, n: int, batch: int) -> dict[str, Any] | None:
        return None

    def fill(self, url: str, token: str, n: int) -> None:
        _, noop, _ = _huey(url, token)
        for i in range(n):
            noop(i)

    def drain(self, url: str, token: str, n: int, concurrency: int) -> dict[str, Any]:
        counter = Counter(n)
        huey, _, _ = _huey(url, token, counter)
        t0 = time.perf_counter()
        consumer = huey.create_consumer(workers=concurrency, worker_type="thread", periodic=False)
        consumer.start()
        counter.wait("drain", CHILD_TIMEOUT)
        took = counter.done_at - t0
        consumer.stop(graceful=True)
        return rate_result(n, took)

    def worker(self, url: str, token: str, n: int, concurrency: int, latency: bool) -> dict[str, Any]:
        counter = Counter(n)
        huey, _, _ = _huey(url, token, counter)
        consumer = huey.create_consumer(workers=concurrency, worker_type="thread", periodic=False)
        consumer.start()
        emit_ready()
        counter.wait("worker", CHILD_TIMEOUT)
        consumer.stop(graceful=True)
        return latency_result(counter.latencies)

    def producer(self, url: str, token: str) -> Producer:
        _, _, latency = _huey(url, token)
        return (lambda: latency(time.time())), lambda: None


# -- RQ ----------------------------------------------------------------------------------


def rq_noop(i: int) -> None:
    COUNTER.hit()


def rq_latency(ts: float) -> None:
    COUNTER.latency(ts)


def _rq_tasks() -> Any:
    """This file imported under its own name: RQ refuses functions of ``__main__``."""
    import bench_redis

    return bench_redis


def _rq(url: str, token: str) -> Any:
    from redis import Redis
    from rq import Queue

    return Queue(f"bench-{token}", connection=Redis.from_url(url))


class RqSystem:
    def enqueue(self, url: str, token: str, n: int) -> dict[str, Any]:
        q = _rq(url, token)
        for i in range(WARMUP):
            q.enqueue(_rq_tasks().rq_noop, -i)
        t0 = time.perf_counter()
        for i in range(n):
            q.enqueue(_rq_tasks().rq_noop, i)
        return rate_result(n, time.perf_counter() - t0)

    def bulk(self, url: str, token: str, n: int, batch: int) -> dict[str, Any] | None:
        from rq import Queue

        q = _rq(url, token)
        t0 = time.perf_counter()
        for s in range(0, n, batch):
            q.enqueue_many([Queue.prepare_data(_rq_tasks().rq_noop, (i,)) for i in range(s, min(n, s + batch))])
        return rate_result(n, time.perf_counter() - t0)

    def fill(self, url: str, token: str, n: int) -> None:
        from rq import Queue

        q = _rq(url, token)
        for s in range(0, n, 1000):
            q.enqueue_many([Queue.prepare_data(_rq_tasks().rq_noop, (i,)) for i in range(s, min(n, s + 1000))])

    def _worker(self, url: str, token: str) -> Any:
        from rq import SimpleWorker

        q = _rq(url, token)
        return SimpleWorker([q], connection=q.connection)

    def drain(self, url: str, token: str, n: int, concurrency: int) -> dict[str, Any]:
        tasks = _rq_tasks()
        tasks.COUNTER = counter = Counter(n)
        worker = self._worker(url, token)
        t0 = time.perf_counter()
        worker.work(burst=True, logging_level="WARNING")  # RQ's signal handlers need the main thread
        counter.wait("drain", CHILD_TIMEOUT)
        return rate_result(n, counter.done_at - t0, concurrency=1)

    def worker(self, url: str, token: str, n: int, concurrency: int, latency: bool) -> dict[str, Any]:
        tasks = _rq_tasks()
        tasks.COUNTER = counter = Counter(n)
        worker = self._worker(url, token)

        def report() -> None:
            counter.wait("worker", CHILD_TIMEOUT)
            emit_result(**latency_result(counter.latencies))
            os._exit(0)

        threading.Thread(target=report, daemon=True).start()
        emit_ready()
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

    def enqueue(self, url: str, token: str, n: int) -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            q = self._queue(url, token)
            await q.connect()
            for i in range(WARMUP):
                await q.enqueue("saq_noop", i=-i)
            t0 = time.perf_counter()
            for i in range(n):
                await q.enqueue("saq_noop", i=i)
            took = time.perf_counter() - t0
            await q.disconnect()
            return rate_result(n, took)

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

    def _run_worker(self, url: str, token: str, concurrency: int, ready: Callable[[], None]) -> None:
        from saq import Worker

        async def go() -> None:
            q = self._queue(url, token)
            worker = Worker(q, functions=[saq_noop, saq_latency], concurrency=concurrency)
            task = asyncio.create_task(worker.start())
            ready()
            while not COUNTER.done.is_set():
                await asyncio.sleep(0.01)
            await worker.stop()
            task.cancel()

        asyncio.run(go())

    def drain(self, url: str, token: str, n: int, concurrency: int) -> dict[str, Any]:
        global COUNTER
        COUNTER = Counter(n)
        t0 = time.perf_counter()
        self._run_worker(url, token, concurrency, lambda: None)
        return rate_result(n, COUNTER.done_at - t0)

    def worker(self, url: str, token: str, n: int, concurrency: int, latency: bool) -> dict[str, Any]:
        global COUNTER
        COUNTER = Counter(n)
        self._run_worker(url, token, concurrency, emit_ready)
        return latency_result(COUNTER.latencies)

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
    def enqueue(self, url: str, token: str, n: int) -> dict[str, Any]:
        _, noop, _ = _dramatiq(url, token)
        for i in range(WARMUP):
            noop.send(-i)
        t0 = time.perf_counter()
        for i in range(n):
            noop.send(i)
        return rate_result(n, time.perf_counter() - t0)

    def bulk(self, url: str, token: str, n: int, batch: int) -> dict[str, Any] | None:
        return None

    def fill(self, url: str, token: str, n: int) -> None:
        _, noop, _ = _dramatiq(url, token)
        for i in range(n):
            noop.send(i)

    def drain(self, url: str, token: str, n: int, concurrency: int) -> dict[str, Any]:
        from dramatiq import Worker

        counter = Counter(n)
        broker, _, _ = _dramatiq(url, token, counter)
        t0 = time.perf_counter()
        worker = Worker(broker, worker_threads=concurrency)
        worker.start()
        counter.wait("drain", CHILD_TIMEOUT)
        took = counter.done_at - t0
        worker.stop()
        return rate_result(n, took)

    def worker(self, url: str, token: str, n: int, concurrency: int, latency: bool) -> dict[str, Any]:
        from dramatiq import Worker

        counter = Counter(n)
        broker, _, _ = _dramatiq(url, token, counter)
        worker = Worker(broker, worker_threads=concurrency)
        worker.start()
        emit_ready()
        counter.wait("worker", CHILD_TIMEOUT)
        worker.stop()
        return latency_result(counter.latencies)

    def producer(self, url: str, token: str) -> Producer:
        _, _, latency = _dramatiq(url, token)
        return (lambda: latency.send(time.time())), lambda: None


IMPLS: dict[str, Any] = {
    "conveyor-redis": ConveyorSystem,
    "huey-redis": HueySystem,
    "rq": RqSystem,
    "saq": SaqSystem,
    "dramatiq": DramatiqSystem,
}


def cleanup(url: str, token: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"*{token}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    finally:
        client.close()


def child_main(argv: list[str]) -> None:
    """``--child MODE SYSTEM URL TOKEN [k=v ...]``: one measurement; prints its result."""
    mode, system, url, token, *rest = argv
    kv = dict(item.split("=", 1) for item in rest)
    n = int(kv.get("n", "0"))
    conc = int(kv.get("concurrency", "10"))
    impl = IMPLS[system]()
    if mode == "enqueue":
        out = impl.enqueue(url, token, n)
    elif mode == "bulk":
        out = impl.bulk(url, token, n, int(kv["batch"])) or {}
    elif mode == "fill":
        impl.fill(url, token, n)
        out = {"jobs": n}
    elif mode == "drain":
        out = impl.drain(url, token, n, conc)
    elif mode == "worker":
        out = impl.worker(url, token, n, conc, kv.get("latency") == "1")
    else:
        raise SystemExit(f"unknown child mode {mode!r}")
    emit_result(**out)


# -- the orchestrator --------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def child(self, mode: str, system: str, token: str, *extra: str) -> dict[str, Any]:
        a = self.args
        return run_child(
            SCRIPT,
            [mode, system, a.url, token, f"concurrency={a.concurrency}", *extra],
            timeout=CHILD_TIMEOUT,
            what=f"{mode} {system}",
        )

    def _token(self) -> str:
        return uuid.uuid4().hex[:10]

    def enqueue(self, system: str) -> dict[str, Any] | None:
        token = self._token()
        try:
            return self.child("enqueue", system, token, f"n={self.args.enqueue_jobs}")
        finally:
            cleanup(self.args.url, token)

    def bulk(self, system: str) -> dict[str, Any] | None:
        token = self._token()
        try:
            out = self.child("bulk", system, token, f"n={self.args.many_jobs}", f"batch={self.args.batch}")
            return out or None
        finally:
            cleanup(self.args.url, token)

    def drain(self, system: str) -> dict[str, Any] | None:
        token = self._token()
        n = f"n={self.args.jobs}"
        try:
            self.child("fill", system, token, n)
            return self.child("drain", system, token, n)
        finally:
            cleanup(self.args.url, token)

    def _drain_processes(self, system: str, processes: int) -> dict[str, Any] | None:
        if system != "conveyor-redis":
            return None
        a = self.args
        token = self._token()
        try:
            self.child("fill", system, token, f"n={a.jobs}")
            from conveyor import Conveyor

            app = Conveyor(_conveyor_url(a.url, token))
            app.stats()
            # Workers run until killed; the store says when all jobs are done.
            workers = [
                Child(SCRIPT, ["worker", system, a.url, token, f"concurrency={a.concurrency}", "n=0"], what="worker")
                for _ in range(processes)
            ]
            try:
                for w in workers:
                    w.wait_ready(60)
                t0 = time.perf_counter()
                while app.stats()["completed"] < a.jobs:
                    if time.perf_counter() - t0 > CHILD_TIMEOUT:
                        raise RuntimeError("drain with several processes timed out")
                    time.sleep(0.005)
                took = time.perf_counter() - t0
            finally:
                for w in workers:
                    w.kill()
                app.close()
            return rate_result(a.jobs, took, processes=processes)
        finally:
            cleanup(a.url, token)

    def drain2(self, system: str) -> dict[str, Any] | None:
        return self._drain_processes(system, 2)

    def drain4(self, system: str) -> dict[str, Any] | None:
        return self._drain_processes(system, 4)

    def latency(self, system: str) -> dict[str, Any] | None:
        a = self.args
        token = self._token()
        worker = Child(
            SCRIPT,
            ["worker", system, a.url, token, f"concurrency={a.concurrency}", f"n={a.latency_jobs}", "latency=1"],
            what=f"latency {system}",
        )
        try:
            return run_latency(worker, lambda: IMPLS[system]().producer(a.url, token), a)
        finally:
            cleanup(a.url, token)


METRICS: list[tuple[str, str]] = [
    ("enqueue", "single enqueue jobs/s"),
    ("bulk", "bulk enqueue jobs/s"),
    ("drain", "drain jobs/s (1 process)"),
    ("drain2", "drain jobs/s (2 processes)"),
    ("drain4", "drain jobs/s (4 processes)"),
    ("latency", "latency p50/p99 ms (other process)"),
]


def check_targets(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ours = results.get("conveyor-redis", {})
    peers = [s for s in results if s != "conveyor-redis"]

    def best(metric: str) -> tuple[str, float] | None:
        rates = [(s, float(results[s][metric]["rate"])) for s in peers if results[s].get(metric)]
        return max(rates, key=lambda x: x[1]) if rates else None

    for metric, name in (("drain", "drain_ratio"), ("enqueue", "enqueue_ratio")):
        top = best(metric)
        if top and ours.get(metric):
            value = float(ours[metric]["rate"]) / top[1]
            out[f"{name}[vs fastest: {top[0]}]"] = {
                "value": round(value, 2),
                "target": TARGETS[name],
                "met": value >= TARGETS[name],
            }
    if ours.get("latency"):
        p50 = float(ours["latency"]["p50_ms"])
        out["latency_p50_ms"] = {"value": round(p50, 2), "target": TARGETS["latency_p50_ms"], "met": p50 <= 1.0}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    # keep_going: one peer failing must not lose the others' figures.
    results = measure(Bench(args), METRICS, args, system_width=16, keep_going=True)
    dists = ("conveyor", "redis", "hiredis", "huey", "rq", "saq", "dramatiq")
    return {
        "config": run_config(args, installed_versions(dists), url=args.url),
        "results": results,
        "targets": check_targets(results),
    }


def render(report: dict[str, Any]) -> str:
    results = report["results"]
    c = report["config"]
    head = [
        f"conveyor Redis bench: Python {c['python']}, {c['machine']}, "
        + ", ".join(f"{k} {v}" for k, v in c["versions"].items()),
        f"enqueue {c['enqueue_jobs']:,}; bulk {c['many_jobs']:,} in batches of {c['batch']:,}; drain "
        f"{c['drain_jobs']:,} no-op jobs, concurrency {c['concurrency']}; latency {c['latency_jobs']} jobs spaced "
        f"{c['spacing_s'] * 1000:g} ms; median of {c['repeat']} run(s)",
    ]
    rows = [results_row(label, results, m) for m, label in METRICS]
    return render_report(head, rows, report, "  {name:<44} {detail}  {mark}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = workload_parser(__doc__, SYSTEMS, METRICS, bulk="bulk")
    p.add_argument("--url", default=DEFAULT_URL, help="Redis URL (default %(default)s)")
    return parse_workload_args(p, argv, SYSTEMS)


def parent_main(argv: list[str]) -> int:
    args = parse_args(argv)
    print_report(run(args), args.json, render)
    return 0


def main(argv: list[str] | None = None) -> int:
    return bench_main(argv, child_main, parent_main)


if __name__ == "__main__":
    sys.exit(main())
