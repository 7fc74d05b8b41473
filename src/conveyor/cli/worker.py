"""``conveyor worker`` (run a worker for an app's handlers, in one or several
processes, with a graceful drain and a second signal that stops at once) and
``conveyor workers`` (the store's live workers and its maintenance leader)."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import time
from types import FrameType
from typing import Any

import click

from conveyor import stop_signals
from conveyor.cli._common import (
    App,
    CliError,
    cli_state,
    exit_if_handlers_linger,
    given,
    load_app,
    load_settings,
    reported_errors,
    run,
)
from conveyor.cli._output import emit, json_option, table
from conveyor.client import AsyncConveyor
from conveyor.core.duration import parse_duration
from conveyor.core.errors import ValidationError
from conveyor.core.options import validate_topic
from conveyor.logs import configure_logging
from conveyor.settings import setting_value
from conveyor.sync import Conveyor

logger = logging.getLogger("conveyor")


def _duration_option(value: str | None, field: str) -> float | None:
    return None if value is None else parse_duration(value, field=field, allow_zero=False)


def _topics_option(value: str | None) -> list[str] | None:
    if value is None:
        return None
    topics = [t.strip() for t in value.split(",") if t.strip()]
    if not topics:
        raise ValidationError("topics", "expected a comma-separated list of topics")
    for topic in topics:
        validate_topic(topic, field="topics")
    return topics


@click.command()
@click.option("--app", "app_spec", required=True, metavar="MODULE:ATTR", help="The Conveyor app, e.g. tasks:app.")
@click.option("--concurrency", type=click.IntRange(min=1), help="Jobs run at once per process [CONVEYOR_WORKERS].")
@click.option("--topics", metavar="A,B", help="Only claim these topics (default: every registered handler).")
@click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes.")
@click.option(
    "--no-scheduler",
    is_flag=True,
    help="Do not fire schedules, and do not stand for the store's maintenance leader "
    "(recovering expired leases, pruning).",
)
@click.option(
    "--shutdown-timeout",
    metavar="DURATION",
    help="How long SIGINT/SIGTERM lets running jobs finish before handing them back "
    "(a second signal stops at once) [CONVEYOR_SHUTDOWN_TIMEOUT, 30s].",
)
@click.option("--poll-interval", metavar="DURATION", help="Fallback poll interval [CONVEYOR_POLL_INTERVAL].")
@click.option("--lock-duration", metavar="DURATION", help="Lease of a running job [CONVEYOR_LOCK_DURATION].")
@click.option("--batch-size", type=click.IntRange(min=1), help="Jobs claimed per round trip [CONVEYOR_BATCH_SIZE].")
@click.pass_context
def worker(
    ctx: click.Context,
    app_spec: str,
    concurrency: int | None,
    topics: str | None,
    processes: int,
    no_scheduler: bool,
    shutdown_timeout: str | None,
    poll_interval: str | None,
    lock_duration: str | None,
    batch_size: int | None,
) -> None:
    """Run a worker for the handlers of an app until SIGINT or SIGTERM.

    The first signal stops claiming and lets running jobs finish for up to the shutdown
    timeout, then hands the rest back (pending again, the attempt not counted); a second
    signal hands them back at once."""
    stop_signals.hold()  # a signal while the app loads stops the worker once it starts
    url = cli_state(ctx).url
    settings = load_settings(url)
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    options = given(
        concurrency=concurrency,
        topics=_topics_option(topics),
        batch_size=batch_size,
        poll_interval=_duration_option(poll_interval, "poll_interval"),
        lock_duration=_duration_option(lock_duration, "lock_duration"),
        shutdown_timeout=_setting_option(shutdown_timeout, "shutdown_timeout"),
        scheduler=not no_scheduler,
    )
    app = load_app(app_spec)
    if url is not None:
        app.configure(url=url)
    if processes > 1:
        # The app loaded fine here, so the children will load it too: spawn them.
        args = _child_args(ctx, app_spec, concurrency, topics, no_scheduler, poll_interval, lock_duration, batch_size)
        if shutdown_timeout is not None:
            args += ["--shutdown-timeout", shutdown_timeout]
        code = _supervise(args, processes)
        if code:
            raise CliError(f"{code} of {processes} worker processes failed")
        return
    _run_worker(app, options)


def _run_worker(app: App, options: dict[str, Any]) -> None:
    if isinstance(app, Conveyor):
        try:
            with reported_errors():
                app.run_worker(**options)
        finally:
            app.close()
            stop_signals.ignore()
            exit_if_handlers_linger()
        return

    async def main(client: AsyncConveyor) -> None:
        try:
            await client.run_worker(**options)
        finally:
            await client.close()

    try:
        with reported_errors():
            asyncio.run(main(app))
    finally:
        stop_signals.ignore()  # stopped: not the default handlers closing the loop put back
        exit_if_handlers_linger()


def _setting_option(value: str | None, setting: str) -> Any:
    """A duration option checked by the rules of its setting (``CONVEYOR_<NAME>``)."""
    if value is None:
        return None
    return setting_value(setting, value)  # a ValidationError naming the setting: the option's name


def _child_args(
    ctx: click.Context,
    app_spec: str,
    concurrency: int | None,
    topics: str | None,
    no_scheduler: bool,
    poll_interval: str | None,
    lock_duration: str | None,
    batch_size: int | None,
) -> list[str]:
    args = [sys.executable, "-m", "conveyor"]
    url = cli_state(ctx).url
    if url is not None:
        args += ["--url", url]
    args += ["worker", "--app", app_spec]
    for flag, value in (
        ("--concurrency", concurrency),
        ("--topics", topics),
        ("--poll-interval", poll_interval),
        ("--lock-duration", lock_duration),
        ("--batch-size", batch_size),
    ):
        if value is not None:
            args += [flag, str(value)]
    if no_scheduler:
        args.append("--no-scheduler")
    return args


def _stop_with_parent() -> None:
    """In a child, before exec: get SIGTERM when the supervisor dies, even by SIGKILL, so
    no orphaned worker keeps claiming jobs (Linux only; elsewhere a no-op)."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _supervise(args: list[str], processes: int) -> int:
    """Run ``processes`` copies of ``args``; forward SIGINT/SIGTERM; return how many failed.

    A child that fails while the others run stops them all (SIGTERM): a half-sized pool
    that keeps going silently is worse than a supervisor (systemd, k8s) restarting us.
    """
    children: list[subprocess.Popen[bytes]] = []
    stopping = False
    forwarded: set[int] = set()

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        forwarded.add(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in stop_signals.STOP_SIGNALS}
    if stop_signals.take():  # stopped before any child started
        return 0
    try:
        for _ in range(processes):
            # A session of its own: a terminal's Ctrl-C reaches the children only through
            # forward(), once per press (reaching them twice would be "stop now").
            children.append(subprocess.Popen(args, preexec_fn=_stop_with_parent, start_new_session=True))
        logger.info("started %d worker processes: pids %s", processes, ", ".join(str(c.pid) for c in children))
        reported: set[int] = set()
        while True:
            running = 0
            for child in children:
                code = child.poll()
                if code is None:
                    running += 1
                elif child.pid not in reported:
                    reported.add(child.pid)
                    if code != 0 and not stopping:
                        logger.error("worker process %d exited with %d: stopping the others", child.pid, code)
                        forward(signal.SIGTERM, None)
            if not running:
                break
            time.sleep(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    # A child that a forwarded signal ended before it could handle it (still starting
    # up) stopped as asked: not a failure.
    return sum(1 for child in children if child.returncode != 0 and -child.returncode not in forwarded)


@click.command()
@json_option
@click.pass_context
def workers(ctx: click.Context, as_json: bool) -> None:
    """Live workers of the store; LEADER marks the one that does its maintenance
    (recovering expired leases, pruning, firing schedules)."""

    async def go(client: AsyncConveyor) -> list[dict[str, Any]]:
        return [w.to_dict() for w in await client.workers()]

    data = run(ctx, go)
    rows = [
        (
            w["id"],
            w["host"],
            str(w["pid"]),
            ",".join(w["topics"]) or "-",
            f"{len(w['active_jobs'])}/{w['concurrency']}",
            w["last_heartbeat"] or "",
            "yes" if w["leader"] else "",
        )
        for w in data
    ]
    text = (
        table(("ID", "HOST", "PID", "TOPICS", "ACTIVE", "LAST HEARTBEAT", "LEADER"), rows)
        if rows
        else "no live workers"
    )
    emit(as_json, data, text)
