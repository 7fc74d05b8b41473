"""A worker process for the crash, fencing and multi-process tests.

Usage: python -m tests.integration.worker_proc URL LEDGER [--concurrency N] [--lock-duration S]
       [--poll-interval S]

Handlers append to LEDGER (O_APPEND writes of one short line are atomic), so tests
count executions by side effect, not by status.
"""

from __future__ import annotations

import argparse
import os
import time

from conveyor import Conveyor, Job


def build_app(url: str, ledger: str, lock_duration: float, poll_interval: float) -> Conveyor:
    app = Conveyor(url, poll_interval=poll_interval, lock_duration=lock_duration, retry_delay=0, retention=0)

    def write(line: str) -> None:
        fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    @app.handler("ledger")
    def ledger_job(job: Job) -> None:
        write(f"run {job.id} {os.getpid()}")

    @app.handler("span")
    def span(job: Job) -> None:
        # An attempt's start and end (monotonic clock, shared by processes on one
        # machine), to check that no two attempts of one job ever ran at once.
        write(f"begin {job.id} {os.getpid()} {job.attempts} {time.monotonic()}")
        time.sleep(float(job.payload))
        write(f"end {job.id} {os.getpid()} {job.attempts} {time.monotonic()}")

    @app.handler("ping")
    def ping(job: Job) -> None:
        # When it started, to measure the wake-up latency of an idle worker.
        write(f"ping {job.id} {time.time()}")

    @app.handler("slow")
    def slow(job: Job) -> dict[str, int]:
        write(f"start {job.id} {os.getpid()} {job.attempts}")
        if job.attempts == 1:
            time.sleep(float(job.payload["seconds"]))
        write(f"done {job.id} {os.getpid()} {job.attempts}")
        return {"pid": os.getpid(), "attempt": job.attempts}

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("ledger")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--lock-duration", type=float, default=30.0)
    parser.add_argument("--poll-interval", type=float, default=0.05)
    args = parser.parse_args()
    app = build_app(args.url, args.ledger, args.lock_duration, args.poll_interval)
    print("ready", flush=True)
    app.run_worker(concurrency=args.concurrency)
    app.close()


if __name__ == "__main__":
    main()
