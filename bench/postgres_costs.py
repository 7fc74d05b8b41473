"""Where conveyor's PostgreSQL microseconds go, server side: the CPU of the one server
backend that serves a drain, per job, and how many statements each round trip plans.

    python bench/postgres_costs.py [-n 20000] [--runs 3] [--url postgresql://...]

Each run fills a fresh schema with ``-n`` jobs (``enqueue`` of 1,000 at a time, COPY),
then drains it the way a worker's acknowledger does (``finish_and_claim`` of 10 outcomes
and 10 new jobs per round trip) on a pool of one connection, and prints that backend's
CPU (``/proc/<pid>/stat``, so run it on the server's machine) per job for the fill and
the drain, the rates, and the plannings per round trip once the plan caches have settled
(``log_planner_stats`` on the connection: the statement sent, plus any planned inside
the functions it calls). ``--perf`` records the drain with ``perf record -g`` into
``perf.postgres.data`` (``perf report --children --sort symbol -i perf.postgres.data``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from conveyor.backends.base import ClaimRequest
from conveyor.backends.postgres.backend import PostgresBackend
from conveyor.core import lifecycle
from conveyor.core.options import JobDefaults, build_job

URL = os.environ.get("CONVEYOR_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
TICK = os.sysconf("SC_CLK_TCK")


def backend_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def run(url: str, n: int, perf: bool) -> dict[str, Any]:
    schema = "costs_" + uuid.uuid4().hex[:8]
    b = PostgresBackend(url, schema=schema, pool_min_size=1, pool_max_size=1)
    plannings: list[int] = []
    try:
        await b.connect()
        async with b._connections.connection() as conn:
            row = await (await conn.execute("SELECT pg_backend_pid() AS pid")).fetchone()
            assert row is not None
            pid = int(row["pid"])
            notices: list[str] = []
            conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
            await conn.execute("SET client_min_messages = log")
        defaults = JobDefaults()
        t = datetime.now(UTC)
        cpu0, t0 = backend_cpu(pid), time.perf_counter()
        for i in range(0, n, 1000):
            await b.enqueue([build_job("t", {"ts": 0.0}, now=t, defaults=defaults) for _ in range(min(1000, n - i))])
        fill_cpu, fill_s = backend_cpu(pid) - cpu0, time.perf_counter() - t0

        recorder = None
        if perf:
            out = "perf.postgres.data"
            recorder = await asyncio.create_subprocess_exec(
                *["perf", "record", "-e", "cpu-clock", "-F", "4000", "-g", "-p", str(pid), "-o", out],
                stderr=asyncio.subprocess.DEVNULL,
            )
            await asyncio.sleep(1)
        request = ClaimRequest("w", ["t"], 10, datetime.now(UTC) + timedelta(minutes=10))
        cpu0, t0 = backend_cpu(pid), time.perf_counter()
        claimed = await b.claim(worker_id="w", topics=["t"], limit=10, now=t, locked_until=request.locked_until)
        done = trips = 0
        while claimed:
            outcomes = [lifecycle.completed(j, "w", None) for j in claimed]
            done += len(outcomes)
            trips += 1
            if trips == 20:  # the plan caches have settled: count the plannings of a few
                async with b._connections.connection() as conn:
                    await conn.execute("SET log_planner_stats = on")
            if 20 <= trips < 25:
                notices.clear()
            _, claimed = await b.finish_and_claim(outcomes, now=datetime.now(UTC), claim=request)
            if 20 <= trips < 25:
                plannings.append(sum("PLANNER STATISTICS" in m for m in notices))
            if trips == 25:
                async with b._connections.connection() as conn:
                    await conn.execute("SET log_planner_stats = off")
        drain_cpu, drain_s = backend_cpu(pid) - cpu0, time.perf_counter() - t0
        if recorder is not None:
            recorder.send_signal(signal.SIGINT)
            await recorder.wait()
        assert done == n, done
        return {
            "fill_us": 1e6 * fill_cpu / n,
            "fill_rate": n / fill_s,
            "drain_us": 1e6 * drain_cpu / n,
            "drain_rate": n / drain_s,
            "plannings": plannings,
        }
    finally:
        await b.close()
        with psycopg.connect(url, autocommit=True) as c:
            c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--url", default=URL)
    parser.add_argument("--perf", action="store_true")
    args = parser.parse_args()
    for _ in range(args.runs):
        r = asyncio.run(run(args.url, args.n, args.perf))
        print(
            f"fill {r['fill_us']:.1f} µs/job ({r['fill_rate']:,.0f}/s)  drain {r['drain_us']:.1f} µs/job"
            f" ({r['drain_rate']:,.0f}/s)  plannings per round trip {r['plannings']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
