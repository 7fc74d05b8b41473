"""conveyor under a backlog: the cost of the calls users and workers make, with 10,000
to 1,000,000 jobs in the store, per backend.

    python bench/bench_backlog.py                                  # sqlite, postgres, redis at 10k, 100k, 1M
    python bench/bench_backlog.py --backends sqlite --sizes 10000,1000000
    python bench/bench_backlog.py --backends sqlite --sizes 2000 --repeat 3 --drain 1000   # a smoke run
    python bench/bench_backlog.py --json

Per backend and size, a fresh store (a SQLite file, a PostgreSQL schema, a Redis key
prefix; removed afterwards) is filled with ``enqueue_many`` (batches of 10,000): half
the jobs due, half delayed an hour, over 10 topics. Then, each the median of
``--repeat`` calls (7) through the public API of one client process:

- ``stats()``; ``list(limit=50)``; ``list(status="pending", offset=N/4)``; a keyset page
  deep in the backlog (``list(limit=50, after=<the id of the job enqueued at N/2>)``);
  ``list(topic=…)``; ``get(id)``;
- one ``claim`` of 10 over the 10 topics (the storage protocol's call; the claimed jobs
  are completed afterwards, outside the timing);
- ``GET /api/jobs/stats`` and ``GET /api/jobs?limit=50`` through the ASGI app
  (``create_app``, in process, no network);
- drain: a worker process (``Conveyor.start(concurrency=10)``, a no-op ``async def``
  handler per topic) draining ``min(due jobs, --drain)`` jobs (100,000), timed inside
  that process from ``start()`` to the last handled job, and also to the N-th (N: the
  jobs the smallest store of the run has due, less 100), the rate compared between
  sizes (the same number of jobs, so that only what the store holds differs); its RSS
  when its first job ran, once warm (after a tenth of the drain, at most 10,000 jobs)
  and after the last.

Targets (issue 12), at 1,000,000 jobs versus 10,000: drain >= 80 % of the rate; claim,
``stats()``, the first pages, ``get()`` and the two dashboard calls within 2x (+2 ms);
the deep keyset page within 2x of the first page; the worker's RSS within +10 % after
draining 100,000 jobs. ``offset=N/4`` is shown for comparison: an offset page walks
past the jobs it skips on every backend.

PostgreSQL: ``CONVEYOR_BENCH_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``); Redis: ``CONVEYOR_BENCH_REDIS_URL``
(default ``redis://127.0.0.1:6379/0``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # the bench folder is not a package: found through sys.path
    Child,
    emit_ready,
    emit_result,
    fmt_ms,
    fmt_rate,
    render_table,
)

SCRIPT = os.path.abspath(__file__)
BACKENDS = ("sqlite", "postgres", "redis")
TOPICS = [f"backlog-{i}" for i in range(10)]
FILL_BATCH = 10_000
CONCURRENCY = 10
POSTGRES_URL = os.environ.get("CONVEYOR_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CONVEYOR_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
DRAIN_TIMEOUT = 3600.0


# -- stores ---------------------------------------------------------------------------------


class Store:
    """A fresh, empty store of one backend, and how to remove it."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.token = f"backlog_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.tmp: tempfile.TemporaryDirectory[str] | None = None
        if backend == "sqlite":
            self.tmp = tempfile.TemporaryDirectory(prefix="conveyor-backlog-")
            self.url = f"sqlite:///{os.path.join(self.tmp.name, 'backlog.db')}"
        elif backend == "postgres":
            self.url = f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}schema={self.token}"
        else:
            self.url = f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}prefix={self.token}"

    def remove(self) -> None:
        if self.tmp is not None:
            self.tmp.cleanup()
        elif self.backend == "postgres":
            import psycopg

            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.token}" CASCADE')
        else:
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            try:
                batch: list[bytes] = []
                for key in client.scan_iter(match=f"*{self.token}*", count=10_000):
                    batch.append(key)
                    if len(batch) >= 10_000:
                        client.unlink(*batch)
                        batch.clear()
                if batch:
                    client.unlink(*batch)
            finally:
                client.close()


# -- the client side: fill and measure -------------------------------------------------------


async def fill(client: Any, n: int) -> str:
    """Enqueue ``n`` jobs (half due, half delayed an hour, over 10 topics); return the id
    of the job enqueued at n/2 (a cursor deep in the backlog)."""
    deep = ""
    for start in range(0, n, FILL_BATCH):
        items = [
            {"topic": TOPICS[i % 10], "payload": {"i": i}, **({"delay": "1h"} if i % 2 else {})}
            for i in range(start, min(n, start + FILL_BATCH))
        ]
        jobs = await client.enqueue_many(items)
        if start <= n // 2 < start + len(jobs):
            deep = jobs[n // 2 - start].id
    return deep


async def median_ms(call: Callable[[], Awaitable[Any]], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await call()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


async def measure_calls(url: str, n: int, repeat: int) -> dict[str, Any]:
    import httpx

    from conveyor import AsyncConveyor
    from conveyor.api import create_app

    client = AsyncConveyor(url)
    t0 = time.perf_counter()
    deep = await fill(client, n)
    out: dict[str, Any] = {"fill_s": time.perf_counter() - t0}
    first = (await client.list(limit=1)).items[0].id
    backend = client.backend
    claimed: list[str] = []

    async def claim() -> None:
        now = datetime.now(UTC)
        jobs = await backend.claim(
            worker_id="bench", topics=TOPICS, limit=10, now=now, locked_until=now + timedelta(minutes=5)
        )
        claimed.extend(j.id for j in jobs)

    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "stats": client.stats,
        "list": lambda: client.list(limit=50),
        "list_offset": lambda: client.list(status="pending", limit=50, offset=n // 4),
        "list_keyset_deep": lambda: client.list(limit=50, after=deep),
        "list_topic": lambda: client.list(topic=TOPICS[3], limit=50),
        "list_status": lambda: client.list(status="pending", limit=50),
        "get": lambda: client.get(first),
        "claim": claim,
    }
    for name, call in calls.items():
        out[name] = await median_ms(call, repeat)
    for job_id in claimed:  # back out of the way of the drain
        await client.complete(job_id, None)
    out["claimed"] = len(claimed)

    app = create_app(client)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:

            async def get(path: str) -> None:
                response = await http.get(path)
                response.raise_for_status()

            out["http_stats"] = await median_ms(lambda: get("/api/jobs/stats"), repeat)
            out["http_list"] = await median_ms(lambda: get("/api/jobs?limit=50"), repeat)
    await client.close()
    return out


# -- the worker side: a drain in a child process ----------------------------------------------


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: the peak instead
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return float(peak) / (2**20 if sys.platform == "darwin" else 2**10)


def child_drain(url: str, target: int, first: int) -> None:
    from conveyor import Conveyor

    app = Conveyor(url)
    lock = threading.Lock()
    done = threading.Event()
    state: dict[str, Any] = {"count": 0, "rss_start": 0.0, "rss_warm": 0.0, "done_at": 0.0, "first_at": 0.0}
    # Caches fill in the first seconds (SQLite's page cache is bounded by its
    # cache_size): RSS is also read once warm, after a tenth of the drain (<= 10,000 jobs).
    warm = max(1, min(10_000, target // 10))

    async def noop(job: Any) -> None:
        with lock:
            state["count"] += 1
            if state["count"] == 1:
                state["rss_start"] = rss_mb()
            if state["count"] == warm:
                state["rss_warm"] = rss_mb()
            if state["count"] == first:
                state["first_at"] = time.perf_counter()
            if state["count"] == target:
                state["done_at"] = time.perf_counter()
                done.set()

    for topic in TOPICS:
        app.handler(topic)(noop)
    emit_ready()
    t0 = time.perf_counter()
    app.start(concurrency=CONCURRENCY)
    if not done.wait(DRAIN_TIMEOUT):
        raise SystemExit(f"drain: only {state['count']} of {target} jobs ran")
    rss_end = rss_mb()
    took = state["done_at"] - t0
    app.stop(timeout=30)
    app.close()
    emit_result(
        jobs=target,
        seconds=took,
        rate=target / took,
        first_jobs=first,
        first_rate=first / (state["first_at"] - t0),
        rss_start_mb=state["rss_start"],
        rss_warm_mb=state["rss_warm"],
        rss_end_mb=rss_end,
    )


def measure_drain(url: str, due: int, drain: int, first: int) -> dict[str, Any]:
    target = min(due, drain)
    worker = Child(SCRIPT, ["drain", url, str(target), str(min(first, target))], what=f"drain {url}")
    worker.wait_ready(120)
    return worker.result(DRAIN_TIMEOUT + 60)


# -- orchestration and report --------------------------------------------------------------------


def run(backend: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    store = Store(backend)
    try:
        row: dict[str, Any] = {"backend": backend, "jobs": n}
        row.update(asyncio.run(measure_calls(store.url, n, args.repeat)))
        due = n - n // 2 - row["claimed"]
        row["drain"] = measure_drain(store.url, due, args.drain, args.first)
        return row
    finally:
        store.remove()


COLUMNS = [
    ("stats() ms", "stats"),
    ("list(limit=50) ms", "list"),
    ("list(status=pending) ms", "list_status"),
    ("list(status=pending, offset=N/4) ms", "list_offset"),
    ("keyset page deep ms", "list_keyset_deep"),
    ("list(topic=…) ms", "list_topic"),
    ("get() ms", "get"),
    ("claim of 10 ms", "claim"),
    ("/api/jobs/stats ms", "http_stats"),
    ("/api/jobs?limit=50 ms", "http_list"),
]


def render(rows: list[dict[str, Any]]) -> str:
    head = [
        "backend",
        "jobs in store",
        *(c for c, _ in COLUMNS),
        "drain jobs/s, first N",
        "drain jobs/s",
        "worker RSS start → warm → end MB",
    ]
    body = []
    for r in rows:
        d = r["drain"]
        body.append(
            [
                r["backend"],
                f"{r['jobs']:,}",
                *(fmt_ms(r[key]) for _, key in COLUMNS),
                f"{fmt_rate(d['first_rate'])} ({d['first_jobs']:,} jobs)",
                f"{fmt_rate(d['rate'])} ({d['jobs']:,} jobs)",
                f"{d['rss_start_mb']:.1f} → {d['rss_warm_mb']:.1f} → {d['rss_end_mb']:.1f}",
            ]
        )
    return render_table(head, body)


FLAT = ("claim", "stats", "list", "list_status", "list_topic", "get", "http_stats", "http_list")


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """Issue 12's targets, per backend, comparing its largest store with its smallest."""
    lines = []
    for backend in dict.fromkeys(r["backend"] for r in rows):
        mine = sorted((r for r in rows if r["backend"] == backend), key=lambda r: r["jobs"])
        small, large = mine[0], mine[-1]
        if small is large:
            continue
        vs = f"{large['jobs']:,} vs {small['jobs']:,}"
        checks = [
            (
                f"drain of the first {small['drain']['first_jobs']:,} jobs >= 80 % "
                f"({large['drain']['first_rate'] / small['drain']['first_rate']:.0%})",
                large["drain"]["first_rate"] >= 0.8 * small["drain"]["first_rate"],
            ),
            *(
                (f"{key} within 2x + 2 ms ({small[key]:.2f} -> {large[key]:.2f} ms)", large[key] <= 2 * small[key] + 2)
                for key in FLAT
            ),
            (
                f"keyset page deep within 2x of the first page ({large['list_keyset_deep']:.2f} vs "
                f"{large['list']:.2f} ms)",
                large["list_keyset_deep"] <= 2 * large["list"],
            ),
            (
                f"worker RSS within +10 % ({large['drain']['rss_start_mb']:.1f} -> {large['drain']['rss_end_mb']:.1f} MB)",
                large["drain"]["rss_end_mb"] <= 1.1 * large["drain"]["rss_start_mb"],
            ),
        ]
        lines += [f"{backend} {vs}: {'met    ' if ok else 'NOT MET'} {text}" for text, ok in checks]
    return lines


def parent(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated: sqlite, postgres, redis")
    p.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated job counts")
    p.add_argument("--repeat", type=int, default=7, help="calls per measurement (the median is shown)")
    p.add_argument("--drain", type=int, default=100_000, help="jobs the worker drains (at most the due ones)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in BACKENDS:
            p.error(f"unknown backend {b!r}: expected some of {', '.join(BACKENDS)}")
    try:
        sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        p.error(f"--sizes: expected comma-separated integers, got {args.sizes!r}")
    if any(s < 10 for s in sizes) or args.repeat < 1 or args.drain < 1:
        p.error("--sizes must be >= 10, --repeat and --drain >= 1")
    # The drain rates compared between sizes: over as many jobs at every size (what the
    # smallest store has due, less the claims the calls made), so that only the jobs
    # in the store differ, not the length of the run.
    args.first = max(1, min(args.drain, min(sizes) - min(sizes) // 2 - 100))
    rows = []
    for backend in backends:
        for n in sizes:
            print(f"{backend}: {n:,} jobs…", file=sys.stderr, flush=True)
            rows.append(run(backend, n, args))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(render(rows))
        print("\n".join(targets(rows)))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        _, what, *rest = argv
        if what != "drain":
            raise SystemExit(f"unknown child {what!r}")
        child_drain(rest[0], int(rest[1]), int(rest[2]))
        return 0
    return parent(argv)


if __name__ == "__main__":
    raise SystemExit(main())
