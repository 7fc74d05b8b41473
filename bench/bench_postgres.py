"""conveyor on PostgreSQL beside pgqueuer, Oban and procrastinate: same database, same
run, same workload, each peer configured as its documentation recommends.

    python bench/bench_postgres.py            # the full run (several minutes)
    python bench/bench_postgres.py --quick    # small counts, for a smoke run
    python bench/bench_postgres.py --json

``CONVEYOR_BENCH_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``);
every system gets fresh schemas, dropped afterwards. Each measurement runs in a fresh
child process. Per system:

- single enqueue jobs/s: one client process enqueues N jobs one by one (awaited);
  for conveyor also through the sync facade (``Conveyor.enqueue``).
- bulk enqueue jobs/s: the same client, batches of 1,000 (conveyor ``enqueue_many``,
  pgqueuer's list ``enqueue``, Oban ``enqueue_many``, procrastinate ``batch_defer_async``).
- drain jobs/s: N queued no-op async jobs drained by P worker processes (concurrency 10
  each; conveyor and pgqueuer with P = 1, 2, 4, the others with P = 1). The handler
  appends one line to a ledger file; the parent releases the workers together and stops
  the clock when the ledger holds N lines. conveyor's drain is also run through PgBouncer
  in transaction pooling mode (``--pgbouncer-url``, else one the bench starts itself when
  Debian's ``pgbouncer`` is installed), without CONVEYOR_LISTEN_URL.
- enqueue-to-start latency p50/p99: one idle worker process; this process enqueues
  jobs spaced ``--spacing`` apart carrying their enqueue time; the handler records
  ``time.time() - ts``.
- statements and round trips per job (conveyor): every statement its drain sends,
  counted at the driver by query (statements sent together in pipeline mode share one
  round trip), divided by the jobs drained.

pgqueuer runs on asyncpg (its default driver) with ``batch_size=10``; Oban (its Python
port, which needs Python >= 3.12: ``--oban-python`` or ``CONVEYOR_BENCH_OBAN_PYTHON``
names an interpreter with ``oban`` installed) with its own pool and a queue of limit 10;
procrastinate with ``concurrency=10``.

``--repeat N`` runs every measurement N times, the systems taking turns within each
repeat, and reports the median run (all runs under ``runs`` in ``--json``): on a shared
VM one run's figure can be 20% off.

``--backlog N`` (e.g. 1000000) runs every measurement on a store that already holds N
jobs that are not due: each fresh schema is first filled through the system's own bulk
API, in batches of 5,000, with jobs of the measured topic delayed an hour (conveyor,
pgqueuer: ``execute_after``) or, where the bench does not drive a delay, in a queue
no worker reads (procrastinate; Oban is not supported there). The fill is not timed
into any figure, and a CHECKPOINT after it writes its dirty pages out before the
measurement starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # the bench folder is not a package: found through sys.path
    Child,
    bench_main,
    emit_ready,
    emit_result,
    fmt_ms,
    fmt_rate,
    percentile,
    print_report,
    render_table,
    run_child,
)

SCRIPT = os.path.abspath(__file__)
URL = os.environ.get("CONVEYOR_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SYSTEMS = ("conveyor", "pgqueuer", "oban", "procrastinate")
MULTI_PROCESS = ("conveyor", "pgqueuer")  # drained with P = 1, 2 and 4
TOPIC = "noop"
CHILD_TIMEOUT = 900.0
BACKLOG_BATCH = 5_000
# --backlog: jobs that are not due, put in every fresh schema before it is measured.
BACKLOG = {"jobs": 0}
PEERS_MEASURED = {  # from the issue, for the record: a machine "like" this one
    "pgqueuer": {"drain": 3622, "single": 2117, "bulk": 32720, "p50_ms": 3.8},
    "procrastinate": {"drain": 487, "single": 993, "bulk": 11575, "p50_ms": 5.1},
}


def _schema_url(schema: str, base: str = URL) -> str:
    return f"{base}{'&' if '?' in base else '?'}schema={schema}"


def _procrastinate_conninfo(schema: str) -> dict[str, Any]:
    return {"conninfo": URL, "kwargs": {"kwargs": {"options": f"-c search_path={schema}"}}}


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(sql)


def _ledger_write(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


# -- the systems, each behind the same five verbs ------------------------------------------


class ConveyorSystem:
    def __init__(self, schema: str, base: str = URL) -> None:
        from conveyor import AsyncConveyor

        self.app = AsyncConveyor(_schema_url(schema, base))

    async def setup(self) -> None:
        await self.app.connect()

    async def enqueue(self, payload: dict[str, Any]) -> None:
        await self.app.enqueue(TOPIC, payload)

    async def enqueue_many(self, payloads: list[dict[str, Any]]) -> None:
        await self.app.enqueue_many([{"topic": TOPIC, "payload": p} for p in payloads])

    async def enqueue_backlog(self, n: int) -> None:
        await self.app.enqueue_many([{"topic": TOPIC, "payload": {"ts": 0.0}, "delay": 3600} for _ in range(n)])

    async def work(self, ledger: str, latency: bool, go: asyncio.Event) -> None:
        from conveyor import Job

        @self.app.handler(TOPIC)
        async def noop(job: Job) -> None:
            _ledger_write(ledger, str(time.time() - job.payload["ts"]) if latency else "1")

        await self.app.connect()
        emit_ready()
        await go.wait()
        await self.app.run_worker(concurrency=10)

    async def close(self) -> None:
        await self.app.close()


class PgqueuerSystem:
    """pgqueuer on asyncpg, its default driver."""

    def __init__(self, schema: str) -> None:
        os.environ["PGQUEUER_SCHEMA"] = schema
        self.schema = schema

    async def _connect(self) -> Any:
        import asyncpg

        self.conn = await asyncpg.connect(URL, server_settings={"search_path": self.schema})
        return self.conn

    async def setup(self) -> None:
        from pgqueuer import AsyncpgDriver, Queries

        q = Queries(AsyncpgDriver(await self._connect()))
        if not await q.schema_is_installed():
            _admin(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            await q.install()
        self.q = q

    async def enqueue(self, payload: dict[str, Any]) -> None:
        await self.q.enqueue(TOPIC, json.dumps(payload).encode(), 0)

    async def enqueue_many(self, payloads: list[dict[str, Any]]) -> None:
        await self.q.enqueue([TOPIC] * len(payloads), [json.dumps(p).encode() for p in payloads], [0] * len(payloads))

    async def enqueue_backlog(self, n: int) -> None:
        from datetime import timedelta

        body = json.dumps({"ts": 0.0}).encode()
        await self.q.enqueue([TOPIC] * n, [body] * n, [0] * n, [timedelta(hours=1)] * n)

    async def work(self, ledger: str, latency: bool, go: asyncio.Event) -> None:
        from pgqueuer import AsyncpgDriver, PgQueuer

        pgq = PgQueuer(AsyncpgDriver(await self._connect()))

        @pgq.entrypoint(TOPIC)
        async def noop(job: Any) -> None:
            _ledger_write(ledger, str(time.time() - json.loads(job.payload)["ts"]) if latency else "1")

        emit_ready()
        await go.wait()
        await pgq.run(batch_size=10)

    async def close(self) -> None:
        if hasattr(self, "conn"):
            await self.conn.close()


class ObanSystem:
    """Oban's Python port: its psycopg pool (Oban.create_pool), a queue of limit 10, the
    schema in its own prefix (oban.schema.install)."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.ledger = ""
        self.latency = False
        self.pool: Any = None

    async def _oban(self, queues: dict[str, int] | None = None) -> Any:
        from oban import Oban, worker

        if self.pool is None:
            self.pool = await Oban.create_pool(URL)
        bench = self

        @worker(queue="bench")
        class Noop:
            async def process(self, job: Any) -> None:
                _ledger_write(bench.ledger, str(time.time() - job.args["ts"]) if bench.latency else "1")

        self.worker = Noop
        return Oban(pool=self.pool, prefix=self.schema, queues=queues or {})

    async def setup(self) -> None:
        from oban import schema

        self.oban = await self._oban()
        if os.environ.get("BENCH_INSTALL") == "1":
            _admin(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            await schema.install(self.pool, prefix=self.schema)

    async def enqueue(self, payload: dict[str, Any]) -> None:
        await self.oban.enqueue(self.worker.new(payload))

    async def enqueue_many(self, payloads: list[dict[str, Any]]) -> None:
        await self.oban.enqueue_many([self.worker.new(p) for p in payloads])

    async def enqueue_backlog(self, n: int) -> None:
        raise SystemExit("oban: --backlog is not supported (its fill is not written yet)")

    async def work(self, ledger: str, latency: bool, go: asyncio.Event) -> None:
        self.ledger, self.latency = ledger, latency
        oban = await self._oban({"bench": 10})
        emit_ready()
        await go.wait()
        async with oban:
            await asyncio.Event().wait()

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()


class ProcrastinateSystem:
    def __init__(self, schema: str) -> None:
        import procrastinate

        self.schema = schema
        info = _procrastinate_conninfo(schema)
        self.app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(conninfo=info["conninfo"], **info["kwargs"])
        )
        self.ledger = ""
        self.latency = False

        @self.app.task(name=TOPIC, queue="bench")
        async def noop(ts: float = 0.0) -> None:
            _ledger_write(self.ledger, str(time.time() - ts) if self.latency else "1")

        self.task = noop

    async def setup(self) -> None:
        await self.app.open_async()
        if os.environ.get("BENCH_INSTALL") == "1":
            await self.app.schema_manager.apply_schema_async()

    async def enqueue(self, payload: dict[str, Any]) -> None:
        await self.task.defer_async(**payload)

    async def enqueue_many(self, payloads: list[dict[str, Any]]) -> None:
        await self.task.batch_defer_async(*payloads)

    async def enqueue_backlog(self, n: int) -> None:
        # A queue the bench's workers (queues=["bench"]) never read.
        await self.task.configure(queue="backlog").batch_defer_async(*({"ts": 0.0} for _ in range(n)))

    async def work(self, ledger: str, latency: bool, go: asyncio.Event) -> None:
        self.ledger, self.latency = ledger, latency
        await self.app.open_async()
        emit_ready()
        await go.wait()
        await self.app.run_worker_async(concurrency=10, queues=["bench"], wait=True)

    async def close(self) -> None:
        await self.app.close_async()


def _system(name: str, schema: str) -> Any:
    if name == "conveyor-pgbouncer":  # conveyor's drain through PgBouncer (the parent's)
        return ConveyorSystem(schema, os.environ["BENCH_PGBOUNCER_URL"])
    systems = {"conveyor": ConveyorSystem, "pgqueuer": PgqueuerSystem, "oban": ObanSystem}
    return systems.get(name, ProcrastinateSystem)(schema)


async def _drain_statements(schema: str, n: int) -> dict[str, Any]:
    """Drain ``n`` jobs in this process, counting every statement conveyor sends while it
    does (no pipeline mode: one round trip each), by query name."""
    from collections import Counter

    import psycopg

    from conveyor import AsyncConveyor, Job
    from conveyor.backends.postgres import queries as q

    app = AsyncConveyor(_schema_url(schema))
    for i in range(0, n, 1000):
        await app.enqueue_many([{"topic": TOPIC, "payload": {"ts": 0.0}} for _ in range(min(1000, n - i))])
    done = 0
    finished = asyncio.Event()

    @app.handler(TOPIC)
    async def noop(job: Job) -> None:
        nonlocal done
        done += 1
        if done >= n:
            finished.set()

    names = {q.render(v, schema): k for k, v in q.QUERIES.items()}
    counts: Counter[str] = Counter()
    trips = 0
    in_pipeline = False
    original = psycopg.AsyncCursor.execute
    original_pipeline = psycopg.AsyncConnection.pipeline

    async def counting(self: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
        nonlocal trips
        counts[names.get(str(query), str(query).split(None, 1)[0][:40])] += 1
        trips += not in_pipeline
        return await original(self, query, params, **kwargs)

    @contextlib.asynccontextmanager
    async def pipeline(self: Any) -> Any:  # its statements share one round trip
        nonlocal trips, in_pipeline
        trips += 1
        in_pipeline = True
        try:
            async with original_pipeline(self) as p:
                yield p
        finally:
            in_pipeline = False

    psycopg.AsyncCursor.execute = counting  # type: ignore[method-assign]
    psycopg.AsyncConnection.pipeline = pipeline  # type: ignore[method-assign,assignment]
    worker = asyncio.create_task(app.run_worker(concurrency=10))
    await finished.wait()
    await asyncio.sleep(1.0)  # the last acknowledgements
    psycopg.AsyncCursor.execute = original  # type: ignore[method-assign]
    psycopg.AsyncConnection.pipeline = original_pipeline  # type: ignore[method-assign]
    worker.cancel()
    with contextlib.suppress(BaseException):
        await worker
    await app.close()
    return {
        "per_job": sum(counts.values()) / n,
        "round_trips_per_job": trips / n,
        "by_query": {k: v / n for k, v in counts.most_common()},
    }


# -- child processes ---------------------------------------------------------------------


async def _child(argv: list[str]) -> None:
    verb, name, schema = argv[0], argv[1], argv[2]
    system = _system(name, schema)
    try:
        if verb == "setup":
            if name in ("procrastinate", "oban"):
                _admin(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                os.environ["BENCH_INSTALL"] = "1"
            await system.setup()
            emit_result(ok=True)
        elif verb == "backlog":
            n = int(argv[3])
            await system.setup()
            t0 = time.perf_counter()
            for i in range(0, n, BACKLOG_BATCH):
                await system.enqueue_backlog(min(BACKLOG_BATCH, n - i))
            emit_result(seconds=time.perf_counter() - t0)
        elif verb == "single":
            n = int(argv[3])
            await system.setup()
            for _ in range(20):  # warm-up: connections, prepared statements
                await system.enqueue({"ts": 0.0})
            t0 = time.perf_counter()
            for _ in range(n):
                await system.enqueue({"ts": 0.0})
            emit_result(rate=n / (time.perf_counter() - t0))
        elif verb == "single-sync":  # conveyor only: the sync facade, from the caller's thread
            from conveyor import Conveyor

            n = int(argv[3])
            app = Conveyor(_schema_url(schema))
            for _ in range(20):
                app.enqueue(TOPIC, {"ts": 0.0})
            t0 = time.perf_counter()
            for _ in range(n):
                app.enqueue(TOPIC, {"ts": 0.0})
            emit_result(rate=n / (time.perf_counter() - t0))
            app.close()
        elif verb == "bulk":
            n = int(argv[3])
            await system.setup()
            await system.enqueue_many([{"ts": 0.0}] * 100)
            t0 = time.perf_counter()
            for i in range(0, n, 1000):
                await system.enqueue_many([{"ts": 0.0} for _ in range(min(1000, n - i))])
            emit_result(rate=n / (time.perf_counter() - t0))
        elif verb == "worker":
            ledger, latency = argv[3], argv[4] == "latency"
            go = asyncio.Event()
            # The parent releases every worker at once with SIGUSR1.
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, go.set)
            await system.work(ledger, latency, go)
        elif verb == "statements":
            emit_result(**await _drain_statements(schema, int(argv[3])))
        elif verb == "latency":
            n, spacing = int(argv[3]), float(argv[4])
            await system.setup()
            for _ in range(n):
                await system.enqueue({"ts": time.time()})
                await asyncio.sleep(spacing)
            emit_result(ok=True)
    finally:
        await system.close()


# -- the parent ------------------------------------------------------------------------------


def _count(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def _stop(workers: list[Child]) -> None:
    for w in workers:
        w.kill()
        for stream in (w.proc.stdout, w.proc.stderr):
            if stream is not None:
                stream.close()


# The interpreter of each system's children (Oban's Python port needs Python >= 3.12).
PYTHON: dict[str, str] = {}


def _run(name: str, args: list[str], what: str) -> dict[str, Any]:
    return run_child(SCRIPT, args, timeout=CHILD_TIMEOUT, what=what, python=PYTHON.get(name))


@contextmanager
def _fresh_schema(name: str) -> Iterator[str]:
    """A new schema, set up for ``name`` by a child (and filled with ``--backlog`` jobs
    that are not due); dropped afterwards."""
    schema = f"bench_{name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
    _run(name, ["setup", name, schema], f"{name} setup")
    try:
        if BACKLOG["jobs"]:
            _run(name, ["backlog", name, schema, str(BACKLOG["jobs"])], f"{name} backlog fill")
            # The fill leaves ~1 GB of dirty pages: written out now, not by the checkpointer
            # during the measurement that happens to come first (same for every system).
            _admin("CHECKPOINT")
        yield schema
    finally:
        _admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def _workers(name: str, schema: str, mode: str, processes: int) -> Iterator[tuple[str, list[Child]]]:
    """``processes`` worker processes, ready and held until ``_go``, and their fresh ledger file."""
    with tempfile.TemporaryDirectory() as tmp:
        ledger = os.path.join(tmp, "ledger")
        workers = [
            Child(SCRIPT, ["worker", name, schema, ledger, mode], what=f"{name} worker", python=PYTHON.get(name))
            for _ in range(processes)
        ]
        try:
            for w in workers:
                w.wait_ready(120)
            yield ledger, workers
        finally:
            _stop(workers)


def _go(workers: list[Child]) -> None:
    for w in workers:
        w.proc.send_signal(signal.SIGUSR1)


def _drain(name: str, n: int, processes: int) -> float:
    with _fresh_schema(name) as schema:
        _run(name, ["bulk", name, schema, str(n - 100)], f"{name} fill")
        with _workers(name, schema, "drain", processes) as (ledger, workers):
            t0 = time.perf_counter()
            _go(workers)
            deadline = time.monotonic() + CHILD_TIMEOUT
            while _count(ledger) < n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name}: drain timed out at {_count(ledger)}/{n}")
                time.sleep(0.002)
            return n / (time.perf_counter() - t0)


def _latency(name: str, n: int, spacing: float) -> tuple[float, float]:
    with _fresh_schema(name) as schema, _workers(name, schema, "latency", 1) as (ledger, workers):
        _go(workers)
        time.sleep(1.5)  # idle now
        _run(name, ["latency", name, schema, str(n), str(spacing)], name)
        deadline = time.monotonic() + 30
        while _count(ledger) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        with open(ledger) as f:
            values = [float(x) * 1000 for x in f.read().split()]
        return percentile(values, 50), percentile(values, 99)


def _enqueue_rates(name: str, single_n: int, bulk_n: int) -> tuple[float, float]:
    with _fresh_schema(name) as schema:
        single = _run(name, ["single", name, schema, str(single_n)], name)
        bulk = _run(name, ["bulk", name, schema, str(bulk_n)], name)
        return single["rate"], bulk["rate"]


def render(results: dict[str, dict[str, Any]]) -> str:
    rows = [
        [
            name,
            fmt_rate(r.get("single")),
            fmt_rate(r.get("bulk")),
            fmt_rate(r.get("drain")),
            fmt_rate(r.get("drain_2")),
            fmt_rate(r.get("drain_4")),
            fmt_ms(r.get("p50_ms")),
            fmt_ms(r.get("p99_ms")),
        ]
        for name, r in results.items()
    ]
    headers = ["system", "single/s", "bulk/s", "drain/s P=1", "P=2", "P=4", "p50 ms", "p99 ms"]
    text = render_table(headers, rows)
    if BACKLOG["jobs"]:
        text += f"\nevery store held {BACKLOG['jobs']:,} jobs not due (--backlog) before each measurement"
    c = results.get("conveyor")
    if c:
        if c.get("single_sync"):
            text += f"\nconveyor single enqueue from the sync facade (Conveyor.enqueue): {fmt_rate(c['single_sync'])}/s"
        if c.get("drain_pgbouncer"):
            text += (
                f"\nconveyor drain through PgBouncer (transaction pooling, P=1): {fmt_rate(c['drain_pgbouncer'])}/s"
                f" (direct: {fmt_rate(c['drain'])}/s)"
            )
        if c.get("statements"):
            st = c["statements"]
            parts = ", ".join(f"{k} {v:.3f}" for k, v in st["by_query"].items())
            text += (
                f"\nconveyor per job in a drain: {st['per_job']:.3f} statements ({parts}),"
                f" {st.get('round_trips_per_job', st['per_job']):.3f} round trips"
            )
    for peer in ("pgqueuer", "oban"):
        p = results.get(peer)
        if c and p and p.get("drain"):
            text += (
                f"\nconveyor ÷ {peer}: drain {c['drain'] / p['drain']:.2f}x (target 1.5), single "
                f"{c['single'] / p['single']:.2f}x, bulk {c['bulk'] / p['bulk']:.2f}x"
            )
            if p.get("drain_2") and c.get("drain_2"):
                text += f", 2 processes {c['drain_2'] / p['drain_2']:.2f}x (target 1.5)"
    if c:
        text += f"\nconveyor p50 {c['p50_ms']:.2f} ms (target 3)"
    return text


def _oban_python(flag: str | None) -> str | None:
    """An interpreter that can import oban: the flag, CONVEYOR_BENCH_OBAN_PYTHON, or this one."""
    import subprocess

    for candidate in (flag, os.environ.get("CONVEYOR_BENCH_OBAN_PYTHON"), sys.executable):
        if candidate and subprocess.run([candidate, "-c", "import oban, psycopg"], capture_output=True).returncode == 0:
            return candidate
    return None


@contextmanager
def _pgbouncer(url: str | None) -> Iterator[str | None]:
    """The PgBouncer URL to drain through: the given one, or one started here (None when
    Debian's pgbouncer is not installed)."""
    if url:
        yield url
        return
    sys.path.insert(0, os.path.dirname(os.path.dirname(SCRIPT)))
    from tests.services import PgBouncerService

    with tempfile.TemporaryDirectory() as tmp:
        bouncer = PgBouncerService(__import__("pathlib").Path(tmp))
        try:
            bouncer.start()
        except Exception as exc:
            print(f"no PgBouncer ({exc}): the drain through it is skipped", file=sys.stderr)
            yield None
            return
        try:
            yield bouncer.url("public").split("?")[0]
        finally:
            bouncer.stop()


def _median(values: list[Any]) -> Any:
    """The median run's figure (the lower middle one of an even count); a dict (the
    statement counts, which do not vary) is taken from the first run."""
    if not isinstance(values[0], float):
        return values[0]
    return sorted(values)[(len(values) - 1) // 2]


def _measurements(args: argparse.Namespace) -> list[tuple[tuple[str, ...], tuple[str, ...], Any]]:
    """Each measurement: the result keys it fills, the systems it applies to, and the
    function that measures one system (a figure, or a tuple of one per key)."""
    every = tuple(SYSTEMS)

    def single_sync(name: str) -> float:
        with _fresh_schema(name) as schema:
            return float(_run(name, ["single-sync", name, schema, str(args.single)], name)["rate"])

    def pgbouncer(name: str) -> float | None:
        with _pgbouncer(args.pgbouncer_url) as bouncer:
            if bouncer is None:
                return None
            os.environ["BENCH_PGBOUNCER_URL"] = bouncer
            return _drain("conveyor-pgbouncer", args.jobs, 1)

    def statements(name: str) -> dict[str, Any]:
        with _fresh_schema(name) as schema:
            return dict(_run(name, ["statements", name, schema, str(min(args.jobs, 5000))], name))

    return [
        (("single", "bulk"), every, lambda name: _enqueue_rates(name, args.single, args.jobs)),
        (("single_sync",), ("conveyor",), single_sync),
        (("drain",), every, lambda name: _drain(name, args.jobs, 1)),
        (("drain_2",), MULTI_PROCESS, lambda name: _drain(name, args.jobs, 2)),
        (("drain_4",), MULTI_PROCESS, lambda name: _drain(name, args.jobs, 4)),
        (("drain_pgbouncer",), ("conveyor",), pgbouncer),
        (("statements",), ("conveyor",), statements),
        (("p50_ms", "p99_ms"), every, lambda name: _latency(name, args.latency_jobs, args.spacing)),
    ]


def parent_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--single", type=int, default=2_000)
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--spacing", type=float, default=0.02)
    parser.add_argument("--oban-python", help="a Python >= 3.12 with oban installed")
    parser.add_argument("--pgbouncer-url", help="PgBouncer (transaction pooling) in front of the same database")
    parser.add_argument(
        "--backlog", type=int, default=0, help="jobs not due put in every store before it is measured (e.g. 1000000)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; the median is reported")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.backlog < 0:
        parser.error("--backlog must be >= 0")
    BACKLOG["jobs"] = args.backlog
    if args.quick:
        args.jobs, args.single, args.latency_jobs = 2_000, 300, 50
    names = []
    for name in args.systems.split(","):
        if name == "oban":
            python = _oban_python(args.oban_python)
            if python is None:
                print("oban skipped: no interpreter with oban (Python >= 3.12); see --oban-python", file=sys.stderr)
                continue
            PYTHON[name] = python
        names.append(name)
    results: dict[str, dict[str, Any]] = {name: {} for name in names}
    # Systems take turns within each repeat of each measurement, so that a change in
    # the machine's load (a shared VM's neighbours) hits them alike; the median is kept.
    for keys, systems, measurement in _measurements(args):
        runs: dict[str, list[Any]] = {name: [] for name in names if name in systems}
        for _ in range(args.repeat):
            for name in runs:
                figures = measurement(name)
                runs[name].append(figures if isinstance(figures, tuple) else (figures,))
        for name, figures in runs.items():
            for i, key in enumerate(keys):
                values = [f[i] for f in figures if f[i] is not None]
                if values:
                    results[name][key] = _median(values)
                    if len(values) > 1 and isinstance(values[0], float):
                        results[name].setdefault("runs", {})[key] = [round(v, 2) for v in values]
            shown = {k: results[name].get(k) for k in keys if k != "statements"}
            if shown and not args.json:
                print(f"{name}: {json.dumps(shown)}", file=sys.stderr, flush=True)
    print_report(results, args.json, render)
    return 0


def main(argv: list[str] | None = None) -> int:
    return bench_main(argv, lambda child_argv: asyncio.run(_child(child_argv)), parent_main)


if __name__ == "__main__":
    sys.exit(main())
