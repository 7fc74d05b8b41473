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
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # the bench folder is not a package: found through sys.path
    LAT_TOPIC,
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
    paced,
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
SYSTEMS = ("conveyor-memory", "conveyor-sqlite", "conveyor-sqlite-async", "huey-sqlite", "huey-sqlite-normal")
# conveyor-sqlite-async: the same store with ``async def`` handlers (no thread hop per job);
# its client side is conveyor-sqlite's, so only the worker's figures are measured.
ASYNC_ONLY = "conveyor-sqlite-async"
# PRAGMA synchronous per Huey variant: Huey's own default (SQLite's FULL), and NORMAL,
# the durability conveyor's SQLite backend runs with.
HUEY_SYNC = {"huey-sqlite": "default", "huey-sqlite-normal": "normal"}
CHILD_TIMEOUT = 600.0
LATENCY_PERCENTILES = (50, 90, 99)

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


def conveyor_enqueue(url: str, n: int) -> dict[str, Any]:
    app = _conveyor(url)
    for i in range(WARMUP):
        app.enqueue(TOPIC, {"i": -i})
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        app.enqueue(TOPIC, {"i": i})
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    app.close()
    return rate_result(n, took, cpu=cpu)


def conveyor_enqueue_many(url: str, n: int, batch: int) -> dict[str, Any]:
    app = _conveyor(url)
    app.enqueue_many([{"topic": TOPIC, "payload": {"i": -1}}])
    batches = noop_batches(n, batch)
    t0, c0 = time.perf_counter(), time.process_time()
    for items in batches:
        app.enqueue_many(items)
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    app.close()
    # "batch" right after "jobs", where the JSON report has always had it.
    return {"jobs": n, "batch": batch, **rate_result(n, took, cpu=cpu)}


def conveyor_drain(url: str, n: int, concurrency: int, handler_kind: str, fill: bool) -> dict[str, Any]:
    app = _conveyor(url)
    counter = Counter(n)
    register_handlers(app, counter, handler_kind)
    if fill:
        conveyor_fill(app, n)
    t0, c0 = time.perf_counter(), time.process_time()
    app.start(concurrency=concurrency)
    counter.wait("drain", CHILD_TIMEOUT)
    took, cpu = counter.done_at - t0, time.process_time() - c0
    app.stop(timeout=30)
    stats = app.stats()
    app.close()
    return rate_result(
        n,
        took,
        cpu=cpu,
        handled=counter.count,
        completed=stats["completed"],
        all_completed=stats["completed"] == n and stats["total"] == n,
    )


def conveyor_latency_worker(url: str, n: int, concurrency: int, handler_kind: str) -> dict[str, Any]:
    app = _conveyor(url)
    counter = Counter(n)
    register_handlers(app, counter, handler_kind)
    app.start(concurrency=concurrency)
    emit_ready()
    counter.wait("latency", CHILD_TIMEOUT)
    app.stop(timeout=30)
    app.close()
    return latency_result(counter.latencies, LATENCY_PERCENTILES)


def conveyor_latency_inproc(url: str, n: int, spacing: float, concurrency: int, handler_kind: str) -> dict[str, Any]:
    app = _conveyor(url)
    counter = Counter(n)
    register_handlers(app, counter, handler_kind)
    app.start(concurrency=concurrency)
    time.sleep(0.3)  # let the worker go idle
    paced(n, spacing, lambda: app.enqueue(LAT_TOPIC, {"ts": time.time()}))
    counter.wait("latency", 60)
    app.stop(timeout=30)
    app.close()
    return latency_result(counter.latencies, LATENCY_PERCENTILES)


# -- Huey --------------------------------------------------------------------------------


def _huey(path: str, synchronous: str, counter: Counter | None = None) -> tuple[Any, Any, Any]:
    from huey import SqliteHuey  # type: ignore[import-untyped]
    from huey.storage import SqliteStorage  # type: ignore[import-untyped]

    class Storage(SqliteStorage):  # type: ignore[misc]
        def _create_connection(self) -> Any:
            conn = super()._create_connection()
            if synchronous != "default":
                conn.execute(f"pragma synchronous={synchronous}")
            return conn

    huey = SqliteHuey("bench", filename=path, storage_class=Storage)
    noop, latency = counting_tasks(counter, huey.task(name="noop"), huey.task(name="latency"))
    return huey, noop, latency


def huey_enqueue(path: str, n: int, synchronous: str) -> dict[str, Any]:
    _, noop, _ = _huey(path, synchronous)
    for i in range(WARMUP):
        noop(-i)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        noop(i)
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    return rate_result(n, took, cpu=cpu)


def huey_fill(path: str, n: int, synchronous: str) -> dict[str, Any]:
    _, noop, _ = _huey(path, synchronous)
    for i in range(n):
        noop(i)
    return {"jobs": n}


def _huey_consumer(huey: Any, concurrency: int) -> Any:
    # Huey's defaults: initial_delay=0.1, backoff=1.15, max_delay=10.
    return huey.create_consumer(workers=concurrency, worker_type="thread", periodic=False)


def huey_drain(path: str, n: int, concurrency: int, synchronous: str) -> dict[str, Any]:
    counter = Counter(n)
    huey, _, _ = _huey(path, synchronous, counter)
    left = huey.pending_count()
    t0, c0 = time.perf_counter(), time.process_time()
    consumer = _huey_consumer(huey, concurrency)
    consumer.start()
    counter.wait("drain", CHILD_TIMEOUT)
    took, cpu = counter.done_at - t0, time.process_time() - c0
    consumer.stop(graceful=True)
    return rate_result(n, took, cpu=cpu, handled=counter.count, queued_before=left, left_after=huey.pending_count())


def huey_latency_worker(path: str, n: int, concurrency: int, synchronous: str) -> dict[str, Any]:
    counter = Counter(n)
    huey, _, _ = _huey(path, synchronous, counter)
    consumer = _huey_consumer(huey, concurrency)
    consumer.start()
    emit_ready()
    counter.wait("latency", CHILD_TIMEOUT)
    consumer.stop(graceful=True)
    return latency_result(counter.latencies, LATENCY_PERCENTILES)


def huey_producer(path: str, synchronous: str) -> Producer:
    huey, _, latency = _huey(path, synchronous)
    huey.pending_count()  # connect before the first timed enqueue
    return (lambda: latency(time.time())), huey.storage.close


# -- the child ---------------------------------------------------------------------------


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
        if system.startswith("huey"):
            return run_latency(worker, lambda: huey_producer(path, HUEY_SYNC[system]), a)
        return run_latency(worker, lambda: conveyor_producer(_conveyor(_url(system, path))), a)

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


def run(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(args)
    try:
        results = measure(bench, METRICS, args, system_width=18)
    finally:
        bench.close()
    return {
        "config": run_config(
            args, {**installed_versions(("conveyor", "huey")), "sqlite": sqlite3.sqlite_version}, handler=args.handler
        ),
        "results": results,
        "targets": check_targets(results),
    }


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


# Rows of CPU time per job (all threads of the measuring process): steadier than the
# rates when other work shares the machine.
CPU_ROWS = {
    "enqueue": "  CPU µs/job (client)",
    "enqueue_many": "  CPU µs/job (client)",
    "drain": "  CPU µs/job (worker)",
}


def _cpu_cell(r: dict[str, Any] | None) -> str:
    return "n/a" if r is None or "cpu_us_per_job" not in r else f"{r['cpu_us_per_job']:,.0f}"


def render(report: dict[str, Any]) -> str:
    results = report["results"]
    rows = []
    for metric, label in METRICS:
        if not any(metric in r for r in results.values()):
            continue
        rows.append(results_row(label, results, metric))
        if metric in CPU_ROWS:
            rows.append(results_row(CPU_ROWS[metric], results, metric, _cpu_cell))
    c = report["config"]
    head = [
        f"conveyor bench: Python {c['python']}, SQLite {c['versions']['sqlite']}, {c['machine']}, "
        f"huey {c['versions']['huey']}",
        f"enqueue {c['enqueue_jobs']:,} jobs; enqueue_many {c['many_jobs']:,} in batches of {c['batch']:,}; "
        f"drain {c['drain_jobs']:,} jobs, 1 worker process, concurrency {c['concurrency']} ({c['handler']} handlers); "
        f"latency {c['latency_jobs']} jobs spaced {c['spacing_s'] * 1000:g} ms; median of {c['repeat']} run(s)",
    ]
    return render_report(head, rows, report, "  {name:<42} {detail:<28} {mark}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = workload_parser(__doc__, SYSTEMS, METRICS, bulk="enqueue_many")
    p.add_argument("--handler", choices=("sync", "async"), default="sync", help="conveyor handler kind (default sync)")
    p.add_argument("--tmpdir", default=None, help="where the database files go (default: the system temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the database files")
    return parse_workload_args(p, argv, SYSTEMS)


def parent_main(argv: list[str]) -> int:
    args = parse_args(argv)
    if any(s.startswith("huey") for s in args.systems):
        try:
            import huey  # noqa: F401
        except ImportError:
            print("huey is not installed: pip install -e '.[bench]'", file=sys.stderr)
            return 1
    print_report(run(args), args.json, render)
    return 0


def main(argv: list[str] | None = None) -> int:
    return bench_main(argv, child_main, parent_main)


if __name__ == "__main__":
    sys.exit(main())
