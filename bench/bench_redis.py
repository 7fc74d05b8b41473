"""conveyor on Redis beside Huey (Redis storage), RQ, SAQ, Dramatiq and BullMQ's Python
port: same run, same workload, same Redis; each peer at its defaults (``redis_peers.py``).

    python bench/bench_redis.py                  # the full run
    python bench/bench_redis.py --quick          # small counts, for a smoke run
    python bench/bench_redis.py --json           # machine-readable output

Per system, each measurement in fresh child processes under a fresh key prefix/queue
name (deleted afterwards):

- single enqueue jobs/s, synchronous API: one client process enqueuing in a loop
  (conveyor: ``Conveyor.enqueue``, as a Django or Flask view calls it; Huey: calling the
  task; RQ: ``Queue.enqueue``; Dramatiq: ``actor.send``).
- single enqueue jobs/s, asyncio API, each call awaited before the next (conveyor:
  ``AsyncConveyor.enqueue``; SAQ: ``Queue.enqueue``; BullMQ: ``Queue.add``).
- bulk enqueue jobs/s: batches of ``--batch`` (conveyor ``enqueue_many``, RQ
  ``enqueue_many``, BullMQ ``addBulk``; the others have none).
- drain jobs/s with 1, 2 and 4 worker processes at concurrency ``--concurrency`` each:
  N queued no-op jobs; the clock starts when every worker is connected and idle-ready
  and stops when their handlers have counted N (a shared memory page, no store polling).
  RQ's ``SimpleWorker`` runs one job at a time per process.
- the same drain of conveyor on a 3-master Redis Cluster (``--cluster-url``, or one the
  bench starts on free loopback ports with ``tests/services.py``).
- CPU µs per job beside every rate: client + worker processes + redis-server(s) (from
  ``time.process_time()``, ``/proc/<pid>/stat`` and ``INFO cpu``). On a shared Redis
  the server's figure includes whatever else it served meanwhile.
- enqueue-to-start latency p50/p99: an idle worker in another process; the parent
  enqueues jobs spaced ``--spacing`` apart carrying their wall-clock enqueue time.

With ``--backlog N`` (e.g. 1000000) every measurement runs beside N jobs that are not
due: right after its fresh prefix/queue name is made, the system's own API puts N jobs
delayed an hour in the measured queue (conveyor ``enqueue_many`` in batches of 5,000;
the peers' ``fill_backlog`` in ``redis_peers.py``); the fill is not timed into any
figure. RQ (no delayed bulk call) is skipped there.

Redis: ``--url`` (default ``CONVEYOR_BENCH_REDIS_URL`` or redis://127.0.0.1:6379/0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import mmap
import os
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # the bench folder is not a package: found through sys.path
    TOPIC,
    Child,
    Counter,
    Producer,
    bench_main,
    cell,
    conveyor_fill,
    conveyor_producer,
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
from redis_peers import PEERS, timed, timed_async

SCRIPT = os.path.abspath(__file__)
ROOT = Path(SCRIPT).resolve().parents[1]
SYSTEMS = ("conveyor-redis", "huey-redis", "rq", "saq", "dramatiq", "bullmq")
CHILD_TIMEOUT = 600.0
BACKLOG_TIMEOUT = 3600.0  # a million jobs through a peer's one-job call
DEFAULT_URL = os.environ.get("CONVEYOR_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
# From the issue: drain >= 1.5x the fastest peer; sync single enqueue >= 0.9x Huey's;
# async single enqueue >= the fastest asyncio peer's; bulk >= the fastest peer bulk;
# p50 <= 1.5 ms; with 2 processes >= 1.2x Huey's.
TARGETS = {"drain": 1.5, "enqueue": 0.9, "enqueue_async": 1.0, "bulk": 1.0, "drain2": 1.2, "latency_p50_ms": 1.5}


# -- conveyor ----------------------------------------------------------------------------


def _conveyor_url(url: str, token: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}prefix=bench-{token}"


def _conveyor(url: str, token: str) -> Any:
    from conveyor import Conveyor

    return Conveyor(_conveyor_url(url, token))


class ConveyorSystem:
    def enqueue(self, url: str, token: str, n: int) -> dict[str, Any] | None:
        app = _conveyor(url, token)
        try:
            return timed(n, lambda i: app.enqueue(TOPIC, {"i": i}))
        finally:
            app.close()

    def enqueue_async(self, url: str, token: str, n: int) -> dict[str, Any] | None:
        from conveyor import AsyncConveyor

        async def go() -> dict[str, Any]:
            app = AsyncConveyor(_conveyor_url(url, token))
            try:
                return await timed_async(n, lambda i: app.enqueue(TOPIC, {"i": i}))
            finally:
                await app.close()

        return asyncio.run(go())

    def bulk(self, url: str, token: str, n: int, batch: int) -> dict[str, Any] | None:
        app = _conveyor(url, token)
        app.enqueue_many([{"topic": TOPIC, "payload": {"i": -1}}])
        batches = noop_batches(n, batch)
        t0, c0 = time.perf_counter(), time.process_time()
        for items in batches:
            app.enqueue_many(items)
        out = rate_result(n, time.perf_counter() - t0, client_cpu=time.process_time() - c0)
        app.close()
        return out

    def fill(self, url: str, token: str, n: int) -> None:
        app = _conveyor(url, token)
        conveyor_fill(app, n)
        app.close()

    def work(self, url: str, token: str, concurrency: int, counter: Counter, start: Callable[[], None]) -> None:
        app = _conveyor(url, token)
        register_handlers(app, counter)
        app.stats()  # connected before it says ready
        start()
        app.start(concurrency=concurrency)
        counter.wait("worker", CHILD_TIMEOUT)
        app.stop(timeout=30)
        app.close()

    def producer(self, url: str, token: str) -> Producer:
        return conveyor_producer(_conveyor(url, token))

    def fill_backlog(self, url: str, token: str, n: int) -> None:
        app = _conveyor(url, token)
        for s in range(0, n, 5000):
            app.enqueue_many([{"topic": TOPIC, "payload": {"i": i}, "delay": 3600} for i in range(s, min(n, s + 5000))])
        app.close()


IMPLS: dict[str, Any] = {"conveyor-redis": ConveyorSystem, **PEERS}


# -- CPU of the Redis servers and of the workers -------------------------------------------


def _redis_nodes(url: str) -> list[Any]:
    """Plain clients for every server behind ``url`` (one, or each Cluster node)."""
    import redis

    if url.startswith("redis+cluster://"):
        seeds = url.removeprefix("redis+cluster://").split("/", 1)[0].split(",")
        return [redis.Redis(host=h, port=int(p)) for h, p in (s.rsplit(":", 1) for s in seeds)]
    return [redis.Redis.from_url(url.split("?", 1)[0])]


def redis_cpu(url: str) -> float:
    """CPU seconds the server(s) behind ``url`` have used (``INFO cpu``, main thread and children)."""
    total = 0.0
    for client in _redis_nodes(url):
        try:
            info = client.info("cpu")
            total += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        finally:
            client.close()
    return total


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far, from ``/proc`` (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the shared page of a multi-process drain ---------------------------------------------
# Offset 0: the "go" flag the parent sets once every worker is ready; then one int64
# per worker: how many jobs its handlers have run (written under the counter's lock).


class PageCounter(Counter):
    def __init__(self, page: mmap.mmap, slot: int) -> None:
        super().__init__(0)  # never done: the parent kills the worker
        self.page = page
        self.offset = 8 * (slot + 1)

    def hit(self) -> None:
        with self.lock:
            self.count += 1
            struct.pack_into("<q", self.page, self.offset, self.count)


@contextlib.contextmanager
def shared_page(workers: int) -> Iterator[tuple[str, mmap.mmap]]:
    with tempfile.NamedTemporaryFile(prefix="conveyor-bench-") as f:
        f.write(b"\0" * 8 * (workers + 1))
        f.flush()
        with mmap.mmap(f.fileno(), 0) as page:
            yield f.name, page


def _open_page(path: str) -> mmap.mmap:
    with open(path, "r+b") as f:
        return mmap.mmap(f.fileno(), 0)


def _wait_for_go(page: mmap.mmap) -> Callable[[], None]:
    def start() -> None:
        emit_ready()
        while struct.unpack_from("<q", page, 0)[0] == 0:
            time.sleep(0.001)  # before the clock starts: costs the measurement nothing

    return start


def cleanup(url: str, token: str) -> None:
    """Delete every key of one measurement (on each node of a Cluster)."""
    cluster = url.startswith("redis+cluster://")
    for client in _redis_nodes(url):
        try:
            pipe = client.pipeline(transaction=False)
            for key in client.scan_iter(match=f"*{token}*", count=1000):
                pipe.delete(key)  # one DEL per key: a Cluster node refuses one across slots
            if not cluster:  # RQ never runs on the Cluster (a node would answer MOVED for rq:queues)
                _rq_keys(client, pipe, token)
            pipe.execute()
        finally:
            client.close()


def _rq_keys(client: Any, pipe: Any, token: str) -> None:
    """Queue the deletion of RQ's keys of one measurement: RQ names its job and result keys
    by job id alone, the job's origin (its queue's name) carries the token."""
    for key in client.scan_iter(match="rq:job:*", count=1000):
        origin = client.hget(key, "origin")
        if origin is not None and token in origin.decode(errors="replace"):
            job_id = key.decode().removeprefix("rq:job:")
            pipe.delete(key, f"rq:results:{job_id}")
    for queue in client.smembers("rq:queues"):
        if token in queue.decode(errors="replace"):
            pipe.srem("rq:queues", queue)


def child_main(argv: list[str]) -> None:
    """``--child MODE SYSTEM URL TOKEN [k=v ...]``: one measurement; prints its result."""
    mode, system, url, token, *rest = argv
    kv = dict(item.split("=", 1) for item in rest)
    n = int(kv.get("n", "0"))
    conc = int(kv.get("concurrency", "10"))
    impl = IMPLS[system]()
    if mode in ("enqueue", "enqueue_async", "bulk"):
        server0 = redis_cpu(url)
        batch = (int(kv["batch"]),) if mode == "bulk" else ()
        out = getattr(impl, mode)(url, token, n, *batch)
        if out is not None:
            # The server's CPU over the whole child (its 50 warm-up calls included).
            cpu = out.pop("client_cpu") + redis_cpu(url) - server0
            out["cpu_us_per_job"] = cpu / n * 1e6
        emit_result(**(out or {}))
    elif mode == "fill":
        impl.fill(url, token, n)
        emit_result(jobs=n)
    elif mode == "backlog":
        t0 = time.perf_counter()
        impl.fill_backlog(url, token, n)
        emit_result(jobs=n, seconds=time.perf_counter() - t0)
    elif mode == "drain-worker":
        page = _open_page(kv["page"])
        impl.work(url, token, conc, PageCounter(page, int(kv["slot"])), _wait_for_go(page))
    elif mode == "latency-worker":
        counter = Counter(n)
        impl.work(url, token, conc, counter, emit_ready)
        emit_result(**latency_result(counter.latencies))
    else:
        raise SystemExit(f"unknown child mode {mode!r}")


# -- the orchestrator --------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cluster: Any = None

    def child(self, mode: str, system: str, token: str, *extra: str, url: str | None = None) -> dict[str, Any]:
        a = self.args
        return run_child(
            SCRIPT,
            [mode, system, url or a.url, token, f"concurrency={a.concurrency}", *extra],
            timeout=CHILD_TIMEOUT,
            what=f"{mode} {system}",
        )

    def _token(self, system: str = "", url: str | None = None) -> str:
        """A fresh prefix/queue name; with ``--backlog``, already holding that many jobs
        of ``system`` that are not due."""
        token = uuid.uuid4().hex[:10]
        if self.args.backlog and system:
            if not hasattr(IMPLS[system], "fill_backlog"):
                raise RuntimeError(f"{system}: --backlog is not supported (no delayed bulk call)")
            run_child(
                SCRIPT,
                ["backlog", system, url or self.args.url, token, f"n={self.args.backlog}"],
                timeout=BACKLOG_TIMEOUT,
                what=f"backlog fill {system}",
            )
        return token

    def _enqueue(self, mode: str, system: str, *extra: str) -> dict[str, Any] | None:
        token = self._token(system)
        try:
            return self.child(mode, system, token, *extra) or None
        finally:
            cleanup(self.args.url, token)

    def enqueue(self, system: str) -> dict[str, Any] | None:
        return self._enqueue("enqueue", system, f"n={self.args.enqueue_jobs}")

    def enqueue_async(self, system: str) -> dict[str, Any] | None:
        return self._enqueue("enqueue_async", system, f"n={self.args.enqueue_jobs}")

    def bulk(self, system: str) -> dict[str, Any] | None:
        return self._enqueue("bulk", system, f"n={self.args.many_jobs}", f"batch={self.args.batch}")

    def _drain(self, system: str, processes: int, url: str) -> dict[str, Any] | None:
        a = self.args
        token = self._token(system, url)
        try:
            self.child("fill", system, token, f"n={a.jobs}", url=url)
            with shared_page(processes) as (path, page):
                workers = [
                    Child(
                        SCRIPT,
                        [
                            "drain-worker",
                            system,
                            url,
                            token,
                            f"concurrency={a.concurrency}",
                            f"page={path}",
                            f"slot={i}",
                        ],
                        what=f"drain worker {system}",
                    )
                    for i in range(processes)
                ]
                try:
                    for w in workers:
                        w.wait_ready(60)
                    server0 = redis_cpu(url)
                    cpu0 = [process_cpu(w.proc.pid) for w in workers]
                    t0 = time.perf_counter()
                    struct.pack_into("<q", page, 0, 1)  # go
                    while sum(struct.unpack_from(f"<{processes}q", page, 8)) < a.jobs:
                        if time.perf_counter() - t0 > CHILD_TIMEOUT:
                            raise RuntimeError(f"drain of {system} with {processes} processes timed out")
                        if any(w.proc.poll() is not None for w in workers):
                            raise RuntimeError(f"a drain worker of {system} exited: {workers[0]._stderr()}")
                        time.sleep(0.002)
                    took = time.perf_counter() - t0
                    cpu = sum(process_cpu(w.proc.pid) - c for w, c in zip(workers, cpu0, strict=True))
                    server = redis_cpu(url) - server0
                finally:
                    for w in workers:
                        w.kill()
            return rate_result(
                a.jobs, took, processes=processes, cpu_us_per_job=(cpu + server) / a.jobs * 1e6,
                server_cpu_us_per_job=server / a.jobs * 1e6,
            )  # fmt: skip
        finally:
            cleanup(url, token)

    def drain(self, system: str) -> dict[str, Any] | None:
        return self._drain(system, 1, self.args.url)

    def drain2(self, system: str) -> dict[str, Any] | None:
        return self._drain(system, 2, self.args.url)

    def drain4(self, system: str) -> dict[str, Any] | None:
        return self._drain(system, 4, self.args.url)

    def drain_cluster(self, system: str) -> dict[str, Any] | None:
        if system != "conveyor-redis":
            return None  # the peers have no Redis Cluster mode
        return self._drain(system, 1, self._cluster_url())

    def _cluster_url(self) -> str:
        if self.args.cluster_url:
            return str(self.args.cluster_url)
        if self.cluster is None:
            sys.path.insert(0, str(ROOT))
            from tests.services import RedisClusterService

            self.cluster = RedisClusterService(Path(tempfile.mkdtemp(prefix="conveyor-bench-cluster-")))
            self.cluster.start()
        return str(self.cluster.url)

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()

    def latency(self, system: str) -> dict[str, Any] | None:
        a = self.args
        token = self._token(system)
        worker = Child(
            SCRIPT,
            ["latency-worker", system, a.url, token, f"concurrency={a.concurrency}", f"n={a.latency_jobs}"],
            what=f"latency {system}",
        )
        try:
            return run_latency(worker, lambda: IMPLS[system]().producer(a.url, token), a)
        finally:
            cleanup(a.url, token)


METRICS: list[tuple[str, str]] = [
    ("enqueue", "single enqueue jobs/s (sync API)"),
    ("enqueue_async", "single enqueue jobs/s (asyncio API)"),
    ("bulk", "bulk enqueue jobs/s"),
    ("drain", "drain jobs/s (1 process)"),
    ("drain2", "drain jobs/s (2 processes)"),
    ("drain4", "drain jobs/s (4 processes)"),
    ("drain_cluster", "drain jobs/s (1 process, 3-node Cluster)"),
    ("latency", "latency p50/p99 ms (other process)"),
]


def check_targets(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ours = results.get("conveyor-redis", {})
    peers = [s for s in results if s != "conveyor-redis"]

    def best(metric: str, among: list[str]) -> tuple[str, float] | None:
        rates = [(s, float(results[s][metric]["rate"])) for s in among if results.get(s, {}).get(metric)]
        return max(rates, key=lambda x: x[1]) if rates else None

    comparisons = (
        ("drain", peers, "fastest"),
        ("enqueue", ["huey-redis"], "Huey"),
        ("enqueue_async", peers, "fastest asyncio"),
        ("bulk", peers, "fastest bulk"),
        ("drain2", ["huey-redis"], "Huey"),
    )
    for metric, among, what in comparisons:
        top = best(metric, among)
        if top and ours.get(metric):
            value = float(ours[metric]["rate"]) / top[1]
            out[f"{metric} vs {what} ({top[0]})"] = {
                "value": round(value, 2),
                "target": TARGETS[metric],
                "met": value >= TARGETS[metric],
            }
    if ours.get("latency"):
        p50 = float(ours["latency"]["p50_ms"])
        target = TARGETS["latency_p50_ms"]
        out["latency_p50_ms"] = {"value": round(p50, 2), "target": target, "met": p50 <= target}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(args)
    try:
        # keep_going: one peer failing must not lose the others' figures.
        results = measure(bench, METRICS, args, system_width=16, keep_going=True)
    finally:
        bench.close()
    dists = ("conveyor", "redis", "hiredis", "huey", "rq", "saq", "dramatiq", "bullmq")
    config = run_config(args, installed_versions(dists), url=args.url)
    config["backlog"] = args.backlog
    return {
        "config": config,
        "results": results,
        "targets": check_targets(results),
    }


def cpu_cell(r: dict[str, Any] | None) -> str:
    """A rate with its CPU µs per job (client + workers + Redis)."""
    if r is None:
        return "n/a"
    if "cpu_us_per_job" not in r:
        return cell(r)
    return f"{cell(r)} ({r['cpu_us_per_job']:.0f} µs)"


def render(report: dict[str, Any]) -> str:
    results = report["results"]
    c = report["config"]
    head = [
        f"conveyor Redis bench: Python {c['python']}, {c['machine']}, "
        + ", ".join(f"{k} {v}" for k, v in c["versions"].items()),
        f"enqueue {c['enqueue_jobs']:,}; bulk {c['many_jobs']:,} in batches of {c['batch']:,}; drain "
        f"{c['drain_jobs']:,} no-op jobs, concurrency {c['concurrency']} per process; latency {c['latency_jobs']} "
        f"jobs spaced {c['spacing_s'] * 1000:g} ms; median of {c['repeat']} run(s); in parentheses: CPU µs per job, "
        "client + workers + redis-server",
    ]
    if c.get("backlog"):
        head.append(f"every measurement beside {c['backlog']:,} jobs of its system delayed an hour (--backlog)")
    rows = [results_row(label, results, m, cpu_cell) for m, label in METRICS]
    return render_report(head, rows, report, "  {name:<44} {detail}  {mark}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = workload_parser(__doc__, SYSTEMS, METRICS, bulk="bulk")
    p.add_argument("--url", default=DEFAULT_URL, help="Redis URL (default %(default)s)")
    p.add_argument(
        "--cluster-url",
        default="",
        help="redis+cluster:// URL for the Cluster drain (default: start a 3-master Cluster on free ports)",
    )
    p.add_argument(
        "--backlog", type=int, default=0, help="jobs not due put in every store before it is measured (e.g. 1000000)"
    )
    args = parse_workload_args(p, argv, SYSTEMS)
    if args.backlog < 0:
        p.error("--backlog must be >= 0")
    return args


def parent_main(argv: list[str]) -> int:
    args = parse_args(argv)
    print_report(run(args), args.json, render)
    return 0


def main(argv: list[str] | None = None) -> int:
    return bench_main(argv, child_main, parent_main)


if __name__ == "__main__":
    sys.exit(main())
