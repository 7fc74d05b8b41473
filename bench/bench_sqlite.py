"""conveyor on ``memory://`` and SQLite, beside Huey's SQLite storage, same run, same workload.

    python bench/bench_sqlite.py                 # the full run (a few minutes)
    python bench/bench_sqlite.py --quick         # small counts, for a smoke run
    python bench/bench_sqlite.py --json          # machine-readable output

Measured, per system (each measurement in a fresh child process, a fresh database file):

- single enqueue jobs/s: one client process, the sync ``Conveyor.enqueue`` in a loop
  (Huey: calling the task, which enqueues it).
- enqueue_many jobs/s: ``Conveyor.enqueue_many`` in batches (Huey has no bulk enqueue: n/a).
- drain jobs/s: N queued no-op jobs drained by ONE worker process at concurrency C (a
  subprocess; sync handlers in threads, as Huey's thread workers run them). Timed inside
  the worker process, from just before the worker starts until the handler has counted
  N jobs; no polling of the database. conveyor's jobs are then checked to be all
  ``completed``. ``memory://`` cannot cross processes: it is filled and drained in the
  worker process itself.
- enqueue-to-start latency p50/p99: an idle worker in another process; this process
  enqueues jobs spaced ``--spacing`` apart, each carrying its enqueue wall-clock time;
  the handler records ``time.time() - ts``. Also conveyor's in-process latency (enqueue
  and worker in one process).

Huey runs twice: ``huey-sqlite`` with its defaults (``SqliteHuey``: WAL, SQLite's
default ``synchronous``, FULL: an fsync per commit), and ``huey-sqlite-normal`` with
``synchronous=NORMAL``, the durability conveyor's SQLite backend runs with by default
(both survive a process crash; a power loss may take the last commits). Its consumer
keeps Huey's defaults: thread workers polling every 0.1 s, backing off to 10 s when idle.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # the bench folder is not a package: found through sys.path
    Child,
    emit_ready,
    emit_result,
    fmt_ms,
    fmt_rate,
    percentile,
    render_table,
    run_child,
)

SCRIPT = os.path.abspath(__file__)
SYSTEMS = ("conveyor-memory", "conveyor-sqlite", "conveyor-sqlite-async", "huey-sqlite", "huey-sqlite-normal")
# conveyor-sqlite-async: the same store with ``async def`` handlers (no thread hop per job);
# its client side is conveyor-sqlite's, so only the worker's figures are measured.
ASYNC_ONLY = "conveyor-sqlite-async"
# PRAGMA synchronous per Huey variant: Huey's own default (SQLite's FULL), and NORMAL,
# the durability conveyor's SQLite backend runs with.
HUEY_SYNC = {"huey-sqlite": "default", "huey-sqlite-normal": "normal"}
TOPIC = "bench.noop"
LAT_TOPIC = "bench.latency"
WARMUP = 50
CHILD_TIMEOUT = 600.0

TARGETS = {
    "drain_ratio": 1.5,  # conveyor/SQLite drain ÷ Huey/SQLite drain
    "enqueue_ratio": 1.0,  # conveyor/SQLite single enqueue ÷ Huey/SQLite
    "enqueue_many": 30_000.0,  # jobs/s
    "latency_p50_ms": 5.0,  # from another process
    "latency_inproc_p50_ms": 1.0,
}


# -- conveyor ----------------------------------------------------------------------------


def _conveyor(url: str) -> Any:
    from conveyor import Conveyor

    return Conveyor(url)


class _Counter:
    """Counts handler calls; records when the N-th one ran."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.done_at = 0.0
        self.latencies: list[float] = []

    def hit(self) -> None:
        with self.lock:
            self.count += 1
            if self.count == self.target:
                self.done_at = time.perf_counter()
                self.done.set()

    def latency(self, ts: float) -> None:
        took = time.time() - ts
        with self.lock:
            self.latencies.append(took)
            if len(self.latencies) == self.target:
                self.done_at = time.perf_counter()
                self.done.set()


def _register(app: Any, counter: _Counter, handler_kind: str) -> None:
    if handler_kind == "async":

        @app.handler(TOPIC)
        async def noop_async(job: Any) -> None:
            counter.hit()

        @app.handler(LAT_TOPIC)
        async def latency_async(job: Any) -> None:
            counter.latency(job.payload["ts"])

    else:

        @app.handler(TOPIC)
        def noop(job: Any) -> None:
            counter.hit()

        @app.handler(LAT_TOPIC)
        def latency(job: Any) -> None:
            counter.latency(job.payload["ts"])


def conveyor_enqueue(url: str, n: int) -> dict[str, Any]:
    app = _conveyor(url)
    for i in range(WARMUP):
        app.enqueue(TOPIC, {"i": -i})
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        app.enqueue(TOPIC, {"i": i})
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    app.close()
    return {"jobs": n, "seconds": took, "rate": n / took, "cpu_us_per_job": cpu / n * 1e6}


def conveyor_enqueue_many(url: str, n: int, batch: int) -> dict[str, Any]:
    app = _conveyor(url)
    app.enqueue_many([{"topic": TOPIC, "payload": {"i": -1}}])
    batches = [[{"topic": TOPIC, "payload": {"i": i}} for i in range(s, min(n, s + batch))] for s in range(0, n, batch)]
    t0, c0 = time.perf_counter(), time.process_time()
    for items in batches:
        app.enqueue_many(items)
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    app.close()
    return {"jobs": n, "batch": batch, "seconds": took, "rate": n / took, "cpu_us_per_job": cpu / n * 1e6}


def conveyor_fill(app: Any, n: int) -> None:
    for s in range(0, n, 1000):
        app.enqueue_many([{"topic": TOPIC, "payload": {"i": i}} for i in range(s, min(n, s + 1000))])


def conveyor_drain(url: str, n: int, concurrency: int, handler_kind: str, fill: bool) -> dict[str, Any]:
    app = _conveyor(url)
    counter = _Counter(n)
    _register(app, counter, handler_kind)
    if fill:
        conveyor_fill(app, n)
    t0, c0 = time.perf_counter(), time.process_time()
    app.start(concurrency=concurrency)
    if not counter.done.wait(CHILD_TIMEOUT):
        raise SystemExit(f"drain: only {counter.count} of {n} jobs ran")
    took, cpu = counter.done_at - t0, time.process_time() - c0
    app.stop(timeout=30)
    stats = app.stats()
    app.close()
    return {
        "jobs": n,
        "seconds": took,
        "rate": n / took,
        "cpu_us_per_job": cpu / n * 1e6,
        "handled": counter.count,
        "completed": stats["completed"],
        "all_completed": stats["completed"] == n and stats["total"] == n,
    }


def conveyor_latency_worker(url: str, n: int, concurrency: int, handler_kind: str) -> dict[str, Any]:
    app = _conveyor(url)
    counter = _Counter(n)
    _register(app, counter, handler_kind)
    app.start(concurrency=concurrency)
    emit_ready()
    if not counter.done.wait(CHILD_TIMEOUT):
        raise SystemExit(f"latency: only {len(counter.latencies)} of {n} jobs ran")
    app.stop(timeout=30)
    app.close()
    return _latency_result(counter.latencies)


def conveyor_latency_inproc(url: str, n: int, spacing: float, concurrency: int, handler_kind: str) -> dict[str, Any]:
    app = _conveyor(url)
    counter = _Counter(n)
    _register(app, counter, handler_kind)
    app.start(concurrency=concurrency)
    time.sleep(0.3)  # let the worker go idle
    _paced(n, spacing, lambda: app.enqueue(LAT_TOPIC, {"ts": time.time()}))
    if not counter.done.wait(60):
        raise SystemExit(f"latency: only {len(counter.latencies)} of {n} jobs ran")
    app.stop(timeout=30)
    app.close()
    return _latency_result(counter.latencies)


def conveyor_producer(url: str) -> tuple[Callable[[], None], Callable[[], None]]:
    app = _conveyor(url)
    app.stats()  # connect before the first timed enqueue
    return (lambda: app.enqueue(LAT_TOPIC, {"ts": time.time()})), app.close


# -- Huey --------------------------------------------------------------------------------


def _huey(path: str, synchronous: str, counter: _Counter | None = None) -> tuple[Any, Any, Any]:
    from huey import SqliteHuey
    from huey.storage import SqliteStorage

    class Storage(SqliteStorage):  # type: ignore[misc]
        def _create_connection(self) -> Any:
            conn = super()._create_connection()
            if synchronous != "default":
                conn.execute(f"pragma synchronous={synchronous}")
            return conn

    huey = SqliteHuey("bench", filename=path, storage_class=Storage)
    c = counter

    @huey.task(name="noop")
    def noop(i: int) -> None:
        if c is not None:
            c.hit()

    @huey.task(name="latency")
    def latency(ts: float) -> None:
        if c is not None:
            c.latency(ts)

    return huey, noop, latency


def huey_enqueue(path: str, n: int, synchronous: str) -> dict[str, Any]:
    _, noop, _ = _huey(path, synchronous)
    for i in range(WARMUP):
        noop(-i)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        noop(i)
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"jobs": n, "seconds": took, "rate": n / took, "cpu_us_per_job": cpu / n * 1e6}


def huey_fill(path: str, n: int, synchronous: str) -> dict[str, Any]:
    _, noop, _ = _huey(path, synchronous)
    for i in range(n):
        noop(i)
    return {"jobs": n}


def _huey_consumer(huey: Any, concurrency: int) -> Any:
    # Huey's defaults: initial_delay=0.1, backoff=1.15, max_delay=10.
    return huey.create_consumer(workers=concurrency, worker_type="thread", periodic=False)


def huey_drain(path: str, n: int, concurrency: int, synchronous: str) -> dict[str, Any]:
    counter = _Counter(n)
    huey, _, _ = _huey(path, synchronous, counter)
    left = huey.pending_count()
    t0, c0 = time.perf_counter(), time.process_time()
    consumer = _huey_consumer(huey, concurrency)
    consumer.start()
    if not counter.done.wait(CHILD_TIMEOUT):
        raise SystemExit(f"drain: only {counter.count} of {n} jobs ran")
    took, cpu = counter.done_at - t0, time.process_time() - c0
    consumer.stop(graceful=True)
    return {
        "jobs": n,
        "seconds": took,
        "rate": n / took,
        "cpu_us_per_job": cpu / n * 1e6,
        "handled": counter.count,
        "queued_before": left,
        "left_after": huey.pending_count(),
    }


def huey_latency_worker(path: str, n: int, concurrency: int, synchronous: str) -> dict[str, Any]:
    counter = _Counter(n)
    huey, _, _ = _huey(path, synchronous, counter)
    consumer = _huey_consumer(huey, concurrency)
    consumer.start()
    emit_ready()
    if not counter.done.wait(CHILD_TIMEOUT):
        raise SystemExit(f"latency: only {len(counter.latencies)} of {n} jobs ran")
    consumer.stop(graceful=True)
    return _latency_result(counter.latencies)


def huey_producer(path: str, synchronous: str) -> tuple[Callable[[], None], Callable[[], None]]:
    huey, _, latency = _huey(path, synchronous)
    huey.pending_count()  # connect before the first timed enqueue
    return (lambda: latency(time.time())), huey.storage.close


# -- shared ------------------------------------------------------------------------------


def _paced(n: int, spacing: float, enqueue: Callable[[], None]) -> None:
    start = time.perf_counter()
    for i in range(n):
        pause = start + i * spacing - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        enqueue()


def _latency_result(latencies: list[float]) -> dict[str, Any]:
    ms = [x * 1000 for x in latencies]
    return {
        "jobs": len(ms),
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
    }


def _url(system: str, path: str) -> str:
    return "memory://" if system == "conveyor-memory" else f"sqlite:///{path}"  # sqlite, sqlite-async


def child_main(argv: list[str]) -> None:
    """``--child MODE SYSTEM PATH [k=v ...]``: one measurement; prints its result."""
    mode, system, path, *rest = argv
    kv = dict(item.split("=", 1) for item in rest)
    n = int(kv.get("n", "0"))
    conc = int(kv.get("concurrency", "10"))
    sync = HUEY_SYNC.get(system, "default")
    handler_kind = "async" if system == ASYNC_ONLY else kv.get("handler", "sync")
    url = _url(system, path)
    huey = system.startswith("huey")
    if mode == "enqueue":
        out = huey_enqueue(path, n, sync) if huey else conveyor_enqueue(url, n)
    elif mode == "many":
        out = conveyor_enqueue_many(url, n, int(kv["batch"]))
    elif mode == "fill":
        if huey:
            out = huey_fill(path, n, sync)
        else:
            app = _conveyor(url)
            conveyor_fill(app, n)
            app.close()
            out = {"jobs": n}
    elif mode == "drain":
        if huey:
            out = huey_drain(path, n, conc, sync)
        else:
            out = conveyor_drain(url, n, conc, handler_kind, fill=system == "conveyor-memory")
    elif mode == "latency-worker":
        out = huey_latency_worker(path, n, conc, sync) if huey else conveyor_latency_worker(url, n, conc, handler_kind)
    elif mode == "latency-inproc":
        out = conveyor_latency_inproc(url, n, float(kv["spacing"]), conc, handler_kind)
    else:
        raise SystemExit(f"unknown child mode {mode!r}")
    emit_result(**out)


# -- the orchestrator --------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = tempfile.mkdtemp(prefix="conveyor-bench-", dir=args.tmpdir)
        self.seq = 0

    def fresh_path(self, system: str) -> str:
        self.seq += 1
        folder = os.path.join(self.root, f"{self.seq:03d}-{system}")
        os.makedirs(folder)
        return os.path.join(folder, "bench.db")

    def common(self) -> list[str]:
        a = self.args
        return [f"concurrency={a.concurrency}", f"handler={a.handler}"]

    def child(self, mode: str, system: str, path: str, *extra: str) -> dict[str, Any]:
        return run_child(
            SCRIPT, [mode, system, path, *self.common(), *extra], timeout=CHILD_TIMEOUT, what=f"{mode} {system}"
        )

    def enqueue(self, system: str) -> dict[str, Any] | None:
        if system == ASYNC_ONLY:
            return None
        return self.child("enqueue", system, self.fresh_path(system), f"n={self.args.enqueue_jobs}")

    def enqueue_many(self, system: str) -> dict[str, Any] | None:
        if system.startswith("huey") or system == ASYNC_ONLY:
            return None
        a = self.args
        return self.child("many", system, self.fresh_path(system), f"n={a.many_jobs}", f"batch={a.batch}")

    def drain(self, system: str) -> dict[str, Any]:
        path = self.fresh_path(system)
        n = f"n={self.args.jobs}"
        if system != "conveyor-memory":
            self.child("fill", system, path, n)
        return self.child("drain", system, path, n)

    def latency(self, system: str) -> dict[str, Any] | None:
        if system == "conveyor-memory":
            return None  # one process only: see latency_inproc
        a = self.args
        path = self.fresh_path(system)
        worker = Child(SCRIPT, ["latency-worker", system, path, *self.common(), f"n={a.latency_jobs}"], what=system)
        try:
            worker.wait_ready(60)
            if system.startswith("huey"):
                enqueue, close = huey_producer(path, HUEY_SYNC[system])
            else:
                enqueue, close = conveyor_producer(_url(system, path))
            time.sleep(a.idle)  # the worker is idle when the first job arrives
            _paced(a.latency_jobs, a.spacing, enqueue)
            close()
            return worker.result(60 + a.latency_jobs * a.spacing)
        finally:
            worker.kill()

    def latency_inproc(self, system: str) -> dict[str, Any] | None:
        if system.startswith("huey"):
            return None
        a = self.args
        return self.child(
            "latency-inproc", system, self.fresh_path(system), f"n={a.latency_jobs}", f"spacing={a.spacing}"
        )

    def close(self) -> None:
        if not self.args.keep:
            shutil.rmtree(self.root, ignore_errors=True)


METRICS: list[tuple[str, str]] = [
    ("enqueue", "single enqueue jobs/s"),
    ("enqueue_many", "enqueue_many jobs/s"),
    ("drain", "drain jobs/s"),
    ("latency", "latency p50/p99 ms (other process)"),
    ("latency_inproc", "latency p50/p99 ms (in-process)"),
]


def _median_result(runs: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The run with the median headline figure (rate, or p50 for latencies)."""
    real = [r for r in runs if r is not None]
    if not real:
        return None
    key = "rate" if "rate" in real[0] else "p50_ms"
    ordered = sorted(real, key=lambda r: float(r[key]))
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    if len(real) > 1:
        chosen["runs"] = [r[key] for r in real]
    return chosen


def run(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(args)
    results: dict[str, dict[str, Any]] = {s: {} for s in args.systems}
    try:
        for metric, label in METRICS:
            if metric not in args.only:
                continue
            # Systems take turns within each repeat, so that a change in the machine's
            # load hits them alike.
            runs: dict[str, list[dict[str, Any] | None]] = {s: [] for s in args.systems}
            for _ in range(args.repeat):
                for system in args.systems:
                    runs[system].append(getattr(bench, metric)(system))
            for system in args.systems:
                results[system][metric] = _median_result(runs[system])
                if not args.json:
                    print(f"  {label:<36} {system:<18} {_cell(results[system][metric])}", file=sys.stderr, flush=True)
    finally:
        bench.close()
    return {
        "config": {
            "enqueue_jobs": args.enqueue_jobs,
            "many_jobs": args.many_jobs,
            "batch": args.batch,
            "drain_jobs": args.jobs,
            "concurrency": args.concurrency,
            "handler": args.handler,
            "latency_jobs": args.latency_jobs,
            "spacing_s": args.spacing,
            "repeat": args.repeat,
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "versions": _versions(),
        },
        "results": results,
        "targets": check_targets(results),
    }


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("conveyor", "huey"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    import sqlite3

    out["sqlite"] = sqlite3.sqlite_version
    return out


def _get(results: dict[str, dict[str, Any]], system: str, metric: str, key: str) -> float | None:
    r = results.get(system, {}).get(metric)
    return None if r is None else float(r[key])


def check_targets(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def ratio(metric: str, name: str) -> None:
        ours = _get(results, "conveyor-sqlite", metric, "rate")
        for huey in HUEY_SYNC:
            theirs = _get(results, huey, metric, "rate")
            if ours is not None and theirs:
                value = ours / theirs
                out[f"{name}[vs {huey}]"] = {
                    "value": round(value, 2),
                    "target": TARGETS[name],
                    "met": value >= TARGETS[name],
                }

    ratio("drain", "drain_ratio")
    ratio("enqueue", "enqueue_ratio")
    many = _get(results, "conveyor-sqlite", "enqueue_many", "rate")
    if many is not None:
        out["enqueue_many"] = {"value": round(many), "target": TARGETS["enqueue_many"], "met": many >= 30_000}
    p50 = _get(results, "conveyor-sqlite", "latency", "p50_ms")
    if p50 is not None:
        out["latency_p50_ms"] = {"value": round(p50, 2), "target": TARGETS["latency_p50_ms"], "met": p50 <= 5.0}
    for system in ("conveyor-sqlite", "conveyor-memory"):
        p = _get(results, system, "latency_inproc", "p50_ms")
        if p is not None:
            out[f"latency_inproc_p50_ms[{system}]"] = {
                "value": round(p, 3),
                "target": TARGETS["latency_inproc_p50_ms"],
                "met": p <= 1.0,
            }
    all_completed = [
        r["drain"]["all_completed"] for s, r in results.items() if s.startswith("conveyor") and r.get("drain")
    ]
    if all_completed:
        out["drain_all_completed"] = {"met": all(all_completed)}
    return out


def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "n/a"
    if "rate" in r:
        return fmt_rate(r["rate"])
    return f"{fmt_ms(r['p50_ms'])} / {fmt_ms(r['p99_ms'])}"


# Rows of CPU time per job (all threads of the measuring process): steadier than the
# rates when other work shares the machine.
CPU_ROWS = [
    ("enqueue", "  CPU µs/job (client)"),
    ("enqueue_many", "  CPU µs/job (client)"),
    ("drain", "  CPU µs/job (worker)"),
]


def _cpu_cell(r: dict[str, Any] | None) -> str:
    return "n/a" if r is None or "cpu_us_per_job" not in r else f"{r['cpu_us_per_job']:,.0f}"


def render(report: dict[str, Any]) -> str:
    results = report["results"]
    systems = list(results)
    rows = []
    for metric, label in METRICS:
        if not any(metric in results[s] for s in systems):
            continue
        rows.append([label, *(_cell(results[s].get(metric)) for s in systems)])
        for cpu_metric, cpu_label in CPU_ROWS:
            if cpu_metric == metric:
                rows.append([cpu_label, *(_cpu_cell(results[s].get(metric)) for s in systems)])
    c = report["config"]
    lines = [
        f"conveyor bench: Python {c['python']}, SQLite {c['versions']['sqlite']}, {c['machine']}, "
        f"huey {c['versions']['huey']}",
        f"enqueue {c['enqueue_jobs']:,} jobs; enqueue_many {c['many_jobs']:,} in batches of {c['batch']:,}; "
        f"drain {c['drain_jobs']:,} jobs, 1 worker process, concurrency {c['concurrency']} ({c['handler']} handlers); "
        f"latency {c['latency_jobs']} jobs spaced {c['spacing_s'] * 1000:g} ms; median of {c['repeat']} run(s)",
        "",
        render_table(["metric", *systems], rows),
        "",
        "targets:",
    ]
    for name, t in report["targets"].items():
        mark = "met" if t["met"] else "MISSED"
        detail = f"{t['value']} (target {t['target']})" if "value" in t else ""
        lines.append(f"  {name:<42} {detail:<28} {mark}")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=10_000, help="jobs drained by the worker (default 10,000)")
    p.add_argument("--enqueue-jobs", type=int, default=5_000, help="single enqueues timed (default 5,000)")
    p.add_argument("--many-jobs", type=int, default=10_000, help="jobs sent with enqueue_many (default 10,000)")
    p.add_argument("--batch", type=int, default=1_000, help="jobs per enqueue_many call (default 1,000)")
    p.add_argument("--concurrency", type=int, default=10, help="worker concurrency (default 10)")
    p.add_argument("--latency-jobs", type=int, default=200, help="jobs of the latency runs (default 200)")
    p.add_argument("--spacing", type=float, default=0.02, help="seconds between latency jobs (default 0.02)")
    p.add_argument("--idle", type=float, default=0.5, help="seconds the latency worker idles first (default 0.5)")
    p.add_argument("--handler", choices=("sync", "async"), default="sync", help="conveyor handler kind (default sync)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {','.join(SYSTEMS)}")
    p.add_argument("--only", default=",".join(m for m, _ in METRICS), help="comma-separated subset of the metrics")
    p.add_argument("--repeat", type=int, default=1, help="runs per measurement; the median is reported")
    p.add_argument("--quick", action="store_true", help="small counts for a smoke run")
    p.add_argument("--tmpdir", default=None, help="where the database files go (default: the system temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the database files")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.jobs, args.enqueue_jobs, args.many_jobs, args.latency_jobs = 1_000, 500, 2_000, 50
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for s in args.systems:
        if s not in SYSTEMS:
            p.error(f"unknown system {s!r}: expected some of {', '.join(SYSTEMS)}")
    args.only = {m.strip() for m in args.only.split(",") if m.strip()}
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        child_main(argv[1:])
        return 0
    args = parse_args(argv)
    if any(s.startswith("huey") for s in args.systems):
        try:
            import huey  # noqa: F401
        except ImportError:
            print("huey is not installed: pip install -e '.[bench]'", file=sys.stderr)
            return 1
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
