"""Shared helpers of the bench scripts: child processes, percentiles, tables; the
workload, orchestration, report and options that bench_sqlite and bench_redis share.

Every measurement runs in a fresh child process (``python <script> --child ...``) that
prints one ``RESULT {json}`` line, so that one system's threads, caches and garbage
never slow down the next one's figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor import Conveyor

RESULT = "RESULT "
READY = "READY"


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of ``values``."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def emit_result(**fields: Any) -> None:
    """Print the child's one result line and flush it."""
    sys.stdout.write(RESULT + json.dumps(fields) + "\n")
    sys.stdout.flush()


def emit_ready() -> None:
    sys.stdout.write(READY + "\n")
    sys.stdout.flush()


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    # A user's CONVEYOR_* settings must not change the workload.
    for key in list(env):
        if key.startswith("CONVEYOR_"):
            del env[key]
    return env


def child_command(script: str, args: Sequence[str], python: str | None = None) -> list[str]:
    """``python``: another interpreter for the child (a peer that needs a newer Python)."""
    return [python or sys.executable, script, "--child", *args]


def parse_result(stdout: str, what: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT):
            data: dict[str, Any] = json.loads(line[len(RESULT) :])
            return data
    raise RuntimeError(f"{what}: the child printed no result")


def run_child(
    script: str, args: Sequence[str], *, timeout: float, what: str, python: str | None = None
) -> dict[str, Any]:
    """Run a child to completion; return its result (raises with its stderr on failure)."""
    proc = subprocess.run(
        child_command(script, args, python),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{what}: exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return parse_result(proc.stdout, what)


class Child:
    """A long-running child (a worker) that says READY, then later prints its result."""

    def __init__(self, script: str, args: Sequence[str], *, what: str, python: str | None = None) -> None:
        self.what = what
        self.proc = subprocess.Popen(
            child_command(script, args, python),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.strip() == READY:
                return
        self.kill()
        raise RuntimeError(f"{self.what}: not ready: {self._stderr()}")

    def result(self, timeout: float) -> dict[str, Any]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"{self.what}: timed out after {timeout:.0f}s") from None
        if self.proc.returncode != 0:
            raise RuntimeError(f"{self.what}: exit {self.proc.returncode}: {err.strip()[-2000:]}")
        return parse_result(out, self.what)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _stderr(self) -> str:
        self.kill()
        assert self.proc.stderr is not None
        return self.proc.stderr.read().strip()[-2000:]


def fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def fmt_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [
        "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True))),
        "  ".join("-" * w for w in widths),
    ]
    for row in rows:
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
    return "\n".join(lines)


# -- what the workers of bench_sqlite and bench_redis run -----------------------------------

# conveyor topics of the no-op jobs and of the latency jobs (payload ``{"ts": time.time()}``).
TOPIC = "bench.noop"
LAT_TOPIC = "bench.latency"
WARMUP = 50  # enqueues before the timed ones: connections, caches, prepared statements


class Counter:
    """Counts handler calls (or collects their latencies); records when the ``target``-th one ran.

    Handlers call it from worker threads, hence the lock. The measuring code reads
    ``done_at`` instead of polling the store, so no polling competes with the worker.
    """

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

    def wait(self, what: str, timeout: float) -> None:
        """Block until the target is reached; a child that gets stuck exits saying how far it got."""
        if not self.done.wait(timeout):
            raise SystemExit(f"{what}: only {self.count or len(self.latencies)} of {self.target} jobs ran")


def register_handlers(app: Conveyor, counter: Counter, handler_kind: str = "sync") -> None:
    """conveyor's no-op and latency handlers, feeding ``counter``: ``async def`` ones or plain ones."""
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


def counting_tasks(
    counter: Counter | None,
    noop_task: Callable[[Callable[..., None]], Any],
    latency_task: Callable[[Callable[..., None]], Any],
) -> tuple[Any, Any]:
    """A peer's no-op and latency tasks, each registered with that peer's decorator
    (Huey's ``task``, Dramatiq's ``actor``). They feed ``counter`` in a worker; a
    producer passes None and only sends them.
    """

    def noop(i: int) -> None:
        if counter is not None:
            counter.hit()

    def latency(ts: float) -> None:
        if counter is not None:
            counter.latency(ts)

    return noop_task(noop), latency_task(latency)


def noop_batches(n: int, batch: int) -> list[list[dict[str, Any]]]:
    """``n`` no-op jobs as ``enqueue_many`` items, ``batch`` per call; built before any clock starts."""
    return [[{"topic": TOPIC, "payload": {"i": i}} for i in range(s, min(n, s + batch))] for s in range(0, n, batch)]


def conveyor_fill(app: Conveyor, n: int) -> None:
    """Queue ``n`` no-op jobs for a drain (not timed)."""
    for items in noop_batches(n, 1000):
        app.enqueue_many(items)


# The parent's side of a latency run: one enqueue of a latency job, and a close.
Producer = tuple[Callable[[], object], Callable[[], None]]


def conveyor_producer(app: Conveyor) -> Producer:
    app.stats()  # connect before the first timed enqueue
    return (lambda: app.enqueue(LAT_TOPIC, {"ts": time.time()})), app.close


def rate_result(jobs: int, seconds: float, *, cpu: float | None = None, **extra: Any) -> dict[str, Any]:
    """A throughput figure; ``cpu`` (process CPU seconds of the run) adds CPU µs per job."""
    out: dict[str, Any] = {"jobs": jobs, "seconds": seconds, "rate": jobs / seconds}
    if cpu is not None:
        out["cpu_us_per_job"] = cpu / jobs * 1e6
    out.update(extra)
    return out


def latency_result(latencies: Sequence[float], percentiles: Sequence[int] = (50, 99)) -> dict[str, Any]:
    """Latencies (seconds) summed up in milliseconds: the given percentiles and the maximum."""
    ms = [x * 1000 for x in latencies]
    return {"jobs": len(ms), **{f"p{p}_ms": percentile(ms, p) for p in percentiles}, "max_ms": max(ms)}


# -- the parent of bench_sqlite and bench_redis ----------------------------------------------

Metrics = Sequence[tuple[str, str]]  # (name of the Bench method, row label)


def paced(n: int, spacing: float, enqueue: Callable[[], object]) -> None:
    """Call ``enqueue`` n times, ``spacing`` seconds apart (on a fixed schedule: no drift)."""
    start = time.perf_counter()
    for i in range(n):
        pause = start + i * spacing - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        enqueue()


def run_latency(worker: Child, producer: Callable[[], Producer], args: argparse.Namespace) -> dict[str, Any]:
    """Latency from another process: once ``worker`` is ready and idle, enqueue
    ``args.latency_jobs`` latency jobs paced ``args.spacing`` apart; the worker reports.
    """
    try:
        worker.wait_ready(60)
        enqueue, close = producer()
        time.sleep(args.idle)  # the worker is idle when the first job arrives
        paced(args.latency_jobs, args.spacing, enqueue)
        close()
        return worker.result(60 + args.latency_jobs * args.spacing)
    finally:
        worker.kill()


def median_result(runs: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The run with the median headline figure (rate, or p50 for latencies); all runs' figures beside it."""
    real = [r for r in runs if r]
    if not real:
        return None
    key = "rate" if "rate" in real[0] else "p50_ms"
    ordered = sorted(real, key=lambda r: float(r[key]))
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    if len(real) > 1:
        chosen["runs"] = [r[key] for r in real]
    return chosen


def cell(r: dict[str, Any] | None) -> str:
    """A result in a table: its rate, or its latency p50 / p99."""
    if r is None:
        return "n/a"
    if "rate" in r:
        return fmt_rate(r["rate"])
    return f"{fmt_ms(r['p50_ms'])} / {fmt_ms(r['p99_ms'])}"


def measure(
    bench: object, metrics: Metrics, args: argparse.Namespace, *, system_width: int, keep_going: bool = False
) -> dict[str, dict[str, Any]]:
    """``bench.<metric>(system)`` for the metrics of ``--only`` and the systems of
    ``--systems``, ``--repeat`` times; the median run of each. With ``keep_going`` a
    system that fails gets no figure instead of ending the run (peers one does not
    maintain break now and then). Progress goes to stderr unless ``--json``.
    """
    results: dict[str, dict[str, Any]] = {s: {} for s in args.systems}
    for metric, label in metrics:
        if metric not in args.only:
            continue
        # Systems take turns within each repeat, so that a change in the machine's
        # load hits them alike.
        runs: dict[str, list[dict[str, Any] | None]] = {s: [] for s in args.systems}
        for _ in range(args.repeat):
            for system in args.systems:
                try:
                    runs[system].append(getattr(bench, metric)(system))
                except Exception as exc:
                    if not keep_going:
                        raise
                    print(f"  {label}: {system} failed: {exc}", file=sys.stderr, flush=True)
                    runs[system].append(None)
        for system in args.systems:
            results[system][metric] = median_result(runs[system])
            if not args.json:
                print(
                    f"  {label:<36} {system:<{system_width}} {cell(results[system][metric])}",
                    file=sys.stderr,
                    flush=True,
                )
    return results


def installed_versions(dists: Iterable[str]) -> dict[str, str]:
    """Installed versions of the given distributions (``missing`` where not installed)."""
    from importlib import metadata

    out = {}
    for dist in dists:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


def run_config(
    args: argparse.Namespace, versions: dict[str, str], *, url: str | None = None, handler: str | None = None
) -> dict[str, Any]:
    """The report's ``config``: the workload and the machine (``url`` and ``handler`` where a script has them)."""
    config: dict[str, Any] = {} if url is None else {"url": url}
    config.update(
        enqueue_jobs=args.enqueue_jobs,
        many_jobs=args.many_jobs,
        batch=args.batch,
        drain_jobs=args.jobs,
        concurrency=args.concurrency,
    )
    if handler is not None:
        config["handler"] = handler
    config.update(
        latency_jobs=args.latency_jobs,
        spacing_s=args.spacing,
        repeat=args.repeat,
        python=platform.python_version(),
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs",
        versions=versions,
    )
    return config


def results_row(
    label: str, results: dict[str, dict[str, Any]], metric: str, fmt: Callable[[Any], str] = cell
) -> list[str]:
    """One table row: ``label``, then ``metric`` of every system, formatted by ``fmt``."""
    return [label, *(fmt(r.get(metric)) for r in results.values())]


def render_report(head: Sequence[str], rows: Sequence[Sequence[str]], report: dict[str, Any], target_line: str) -> str:
    """Heading lines, the table (a column per system) and the targets, one line each.

    ``target_line`` is a script's format of a target line, with the fields ``name``,
    ``detail`` (value and target, empty where a target has no value) and ``mark``.
    """
    lines = [*head, "", render_table(["metric", *report["results"]], rows), "", "targets:"]
    for name, t in report["targets"].items():
        detail = f"{t['value']} (target {t['target']})" if "value" in t else ""
        lines.append(target_line.format(name=name, detail=detail, mark="met" if t["met"] else "MISSED"))
    return "\n".join(lines)


def print_report(report: dict[str, Any], as_json: bool, render: Callable[[dict[str, Any]], str]) -> None:
    print(json.dumps(report, indent=2) if as_json else render(report))


def workload_parser(doc: str | None, systems: Sequence[str], metrics: Metrics, *, bulk: str) -> argparse.ArgumentParser:
    """The options bench_sqlite and bench_redis share; ``bulk`` names the bulk enqueue call in the help."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=10_000, help="jobs drained (default 10,000)")
    p.add_argument("--enqueue-jobs", type=int, default=5_000, help="single enqueues timed (default 5,000)")
    p.add_argument("--many-jobs", type=int, default=10_000, help=f"jobs sent in {bulk} calls (default 10,000)")
    p.add_argument("--batch", type=int, default=1_000, help=f"jobs per {bulk} call (default 1,000)")
    p.add_argument("--concurrency", type=int, default=10, help="worker concurrency (default 10)")
    p.add_argument("--latency-jobs", type=int, default=200, help="jobs of the latency runs (default 200)")
    p.add_argument("--spacing", type=float, default=0.02, help="seconds between latency jobs (default 0.02)")
    p.add_argument("--idle", type=float, default=0.5, help="seconds the latency worker idles first (default 0.5)")
    p.add_argument("--systems", default=",".join(systems), help=f"comma-separated subset of {','.join(systems)}")
    p.add_argument("--only", default=",".join(m for m, _ in metrics), help="comma-separated subset of the metrics")
    p.add_argument("--repeat", type=int, default=1, help="runs per measurement; the median is reported")
    p.add_argument("--quick", action="store_true", help="small counts for a smoke run")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def parse_workload_args(p: argparse.ArgumentParser, argv: Sequence[str], systems: Sequence[str]) -> argparse.Namespace:
    """Parse; ``--quick`` counts; ``--systems`` and ``--only`` as lists (systems checked)."""
    args = p.parse_args(argv)
    if args.quick:
        args.jobs, args.enqueue_jobs, args.many_jobs, args.latency_jobs = 1_000, 500, 2_000, 50
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for s in args.systems:
        if s not in systems:
            p.error(f"unknown system {s!r}: expected some of {', '.join(systems)}")
    args.only = {m.strip() for m in args.only.split(",") if m.strip()}
    return args


def bench_main(argv: list[str] | None, child: Callable[[list[str]], None], parent: Callable[[list[str]], int]) -> int:
    """A script's entry point: ``--child ...`` is one measurement (see ``child_command``),
    anything else the parent's command line.
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        child(argv[1:])
        return 0
    return parent(argv)
