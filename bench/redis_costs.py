"""Where conveyor's Redis microseconds go: the CPU of one operation, client and
redis-server apart, and the scripts it ran (``INFO commandstats``).

    python bench/redis_costs.py enqueue --url redis://127.0.0.1:6391/0
    python bench/redis_costs.py enqueue-async | drain-async | drain-sync

Use a redis-server of its own (the run resets its command statistics). Under
``valgrind --tool=callgrind`` with ``--callgrind``, only the measured part is counted
(``callgrind_control`` zeroes the counters before it and dumps them after): the dump's
total divided by ``-n`` is instructions per operation, steady on a loaded machine
where CPU times are not. ``--callgrind-server PID`` does the same for a redis-server
run under callgrind and prints its instructions per operation::

    valgrind --tool=callgrind redis-server --port 6391 --save '' --appendonly no &
    python bench/redis_costs.py enqueue --url redis://127.0.0.1:6391/0 --callgrind-server <its pid>
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

import redis

from conveyor import AsyncConveyor, Conveyor, Job


def server_cpu(r: redis.Redis) -> float:
    info = cast(dict[str, Any], r.info("cpu"))
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


class Meter:
    """Client and server CPU of the measured part; callgrind's counters around it."""

    def __init__(self, r: redis.Redis, callgrind: bool, server_pid: int | None) -> None:
        self.r = r
        self.callgrind = callgrind
        self.server_pid = server_pid

    def _control(self, flag: str) -> None:
        if self.callgrind:
            subprocess.run(["callgrind_control", flag, str(os.getpid())], capture_output=True, check=False)

    def _server_instructions(self) -> int:
        """The instructions redis-server ran since its counters were zeroed (every
        thread's), as ``callgrind_control -e`` shows them."""
        shown = subprocess.run(
            ["callgrind_control", "-e", str(self.server_pid)], capture_output=True, check=True, text=True
        ).stdout
        return sum(int(n.replace(",", "")) for n in re.findall(r"^\s*Th \d+\s+([\d,]+)", shown, re.M))

    def start(self) -> None:
        self.r.config_resetstat()
        self._control("-z")
        if self.server_pid is not None:
            subprocess.run(["callgrind_control", "-z", str(self.server_pid)], capture_output=True, check=True)
        self.server, self.client, self.wall = server_cpu(self.r), time.process_time(), time.perf_counter()

    def stop(self, what: str, n: int) -> None:
        wall, client = time.perf_counter() - self.wall, time.process_time() - self.client
        self._control("-d")
        if self.server_pid is not None:
            print(f"{what}: {self._server_instructions() / n:,.0f} instructions inside redis-server per op")
        server = server_cpu(self.r) - self.server
        print(
            f"{what}: {n / wall:,.0f}/s; CPU per op: client {client / n * 1e6:.0f} µs, server {server / n * 1e6:.0f} µs"
        )
        for name, row in cast(dict[str, Any], self.r.info("commandstats")).items():
            if row["calls"] >= n // 20:
                print(
                    f"  {name.removeprefix('cmdstat_')}: {row['calls'] / n:.2f} per op, {row['usec_per_call']} µs each"
                )


def enqueue(url: str, n: int, meter: Meter) -> None:
    app = Conveyor(url)
    for i in range(50):
        app.enqueue("t", {"i": i})
    meter.start()
    for i in range(n):
        app.enqueue("t", {"i": i})
    meter.stop("Conveyor.enqueue", n)
    app.close()


async def enqueue_async(url: str, n: int, meter: Meter) -> None:
    app = AsyncConveyor(url)
    for i in range(50):
        await app.enqueue("t", {"i": i})
    meter.start()
    for i in range(n):
        await app.enqueue("t", {"i": i})
    meter.stop("AsyncConveyor.enqueue", n)
    await app.close()


async def drain(url: str, n: int, meter: Meter, *, sync_handler: bool) -> None:
    """``n`` queued no-op jobs drained by one worker at concurrency 10 in this process."""
    app = AsyncConveyor(url)
    for k in range(0, n, 1000):
        await app.enqueue_many([{"topic": "noop", "payload": {"i": i}} for i in range(k, min(k + 1000, n))])
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    count = 0
    lock = threading.Lock()

    def hit() -> None:
        nonlocal count
        with lock:
            count += 1
            if count == n:
                loop.call_soon_threadsafe(done.set)

    handler: Callable[[Job], Any]
    if sync_handler:

        def noop(job: Job) -> None:
            hit()

        handler = noop
    else:

        async def noop_async(job: Job) -> None:
            hit()

        handler = noop_async
    app.handler("noop")(handler)
    await app.connect()
    meter.start()
    await app.start(concurrency=10)
    await done.wait()
    meter.stop(f"drain ({'sync' if sync_handler else 'async'} handlers), per job", n)
    await app.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["enqueue", "enqueue-async", "drain-async", "drain-sync"])
    p.add_argument("--url", default="redis://127.0.0.1:6379/0", help="a redis-server of its own (default %(default)s)")
    p.add_argument("-n", type=int, default=3000, help="operations measured (default %(default)s)")
    p.add_argument("--callgrind", action="store_true", help="zero and dump callgrind's counters around the run")
    p.add_argument(
        "--callgrind-server",
        type=int,
        metavar="PID",
        help="a redis-server under valgrind --tool=callgrind: print its instructions per operation",
    )
    args = p.parse_args()
    logging.disable(logging.WARNING)  # the no-persistence and unhandled-topic warnings
    url = f"{args.url}{'&' if '?' in args.url else '?'}prefix=costs-{uuid.uuid4().hex[:8]}"
    r = redis.Redis.from_url(args.url)
    meter = Meter(r, args.callgrind, args.callgrind_server)
    runs: dict[str, Callable[[], Awaitable[None] | None]] = {
        "enqueue": lambda: enqueue(url, args.n, meter),
        "enqueue-async": lambda: enqueue_async(url, args.n, meter),
        "drain-async": lambda: drain(url, args.n, meter, sync_handler=False),
        "drain-sync": lambda: drain(url, args.n, meter, sync_handler=True),
    }
    try:
        result = runs[args.mode]()
        if result is not None:
            asyncio.run(result)  # type: ignore[arg-type]
    finally:
        keys = list(r.scan_iter(match=url.rpartition("prefix=")[2] + ":*", count=1000))
        for i in range(0, len(keys), 1000):
            r.delete(*keys[i : i + 1000])
        r.close()


if __name__ == "__main__":
    main()
