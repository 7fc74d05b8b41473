"""``conveyor serve``: the HTTP + WebSocket API (uvicorn) with an embedded worker and
scheduler, on any store.

- ``--app module:attr`` loads the handlers; without it the embedded worker has no
  handlers (it claims nothing) and still stands for the store's maintenance leader
  (firing schedules, recovering expired leases, pruning: docs/workers.md); so does
  ``serve`` without an embedded worker, unless ``--no-scheduler``.
- ``CONVEYOR_DISABLED=true``: nothing starts (exit 0 with a message).
  ``CONVEYOR_HTTP_ENABLED=false``: only the worker and scheduler run.
  ``CONVEYOR_AUTO_START=false`` (or ``--no-worker``): no embedded worker.
- With no token configured, listening beyond loopback is refused (exit 1).
- SIGTERM/SIGINT: stop accepting connections, close WebSockets, let in-flight
  requests finish, drain the embedded worker (``client.stop``), close the store; exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
from collections.abc import Callable, Generator
from types import FrameType
from typing import Any

import click

from conveyor import stop_signals
from conveyor.cli._common import (
    CliError,
    cli_state,
    exit_if_handlers_linger,
    load_app,
    load_settings,
    redact_url,
    run_coroutine,
)
from conveyor.client import AsyncConveyor
from conveyor.logs import configure_logging
from conveyor.settings import Settings
from conveyor.sync import Conveyor
from conveyor.worker.dispatcher import Worker
from conveyor.worker.lease import registry_entry
from conveyor.worker.maintenance import Maintainer

logger = logging.getLogger("conveyor")

GRACEFUL_TIMEOUT = 10
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on the loopback interface."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def has_tokens(settings: Settings) -> bool:
    return bool(settings.admin_token or settings.enqueue_tokens or settings.read_tokens)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port.")
@click.option("--app", "app_spec", metavar="MODULE:ATTR", help="The Conveyor app with the handlers, e.g. tasks:app.")
@click.option("--no-worker", is_flag=True, help="Do not run the embedded worker [CONVEYOR_AUTO_START=false].")
@click.option(
    "--no-scheduler",
    is_flag=True,
    help="Do not fire schedules, and do not stand for the store's maintenance leader "
    "(recovering expired leases, pruning).",
)
@click.option("--concurrency", type=click.IntRange(min=1), help="Embedded worker concurrency [CONVEYOR_WORKERS].")
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    app_spec: str | None,
    no_worker: bool,
    no_scheduler: bool,
    concurrency: int | None,
) -> None:
    """Run the HTTP API and dashboard, with an embedded worker and scheduler."""
    stop_signals.hold()  # a Ctrl-C while the app loads or uvicorn starts stops cleanly
    url = cli_state(ctx).url
    env = load_settings(url)  # validates the environment first: a bad value names the variable
    configure_logging(fmt=env.log_format, level=env.log_level)
    if env.disabled:
        click.echo("conveyor is disabled (CONVEYOR_DISABLED=true): not starting", err=True)
        return
    if app_spec:
        loaded = load_app(app_spec)
        client = loaded.aio if isinstance(loaded, Conveyor) else loaded
        if url is not None:
            client.configure(url=url)
    else:
        client = AsyncConveyor(settings=env)
    settings = client.settings
    http = settings.http_enabled
    worker = not no_worker and settings.auto_start
    scheduler = not no_scheduler
    if http and not has_tokens(settings) and not is_loopback(host):
        raise CliError(
            f"refusing to listen on {host}: no token is configured; set CONVEYOR_ADMIN_TOKEN "
            "(and optionally CONVEYOR_ENQUEUE_TOKENS / CONVEYOR_READ_TOKENS) or listen on 127.0.0.1"
        )
    if not http and not worker and not scheduler:
        raise CliError(
            "nothing to run: HTTP is disabled (CONVEYOR_HTTP_ENABLED=false) and so are the worker and scheduler"
        )
    worker_options: dict[str, Any] = {"scheduler": scheduler}
    if concurrency is not None:
        worker_options["concurrency"] = concurrency
    logger.info(
        "serve: store=%s http=%s worker=%s scheduler=%s",
        redact_url(client.url),
        f"{host}:{port}" if http else "off",
        "on" if worker else "off",
        "on" if scheduler else "off",
    )
    try:
        run_coroutine(_main(client, host=host, port=port, http=http, worker=worker, worker_options=worker_options))
    finally:
        stop_signals.ignore()  # stopped and exiting
        exit_if_handlers_linger()


async def _main(
    client: AsyncConveyor, *, host: str, port: int, http: bool, worker: bool, worker_options: dict[str, Any]
) -> None:
    scheduler_task: asyncio.Task[None] | None = None
    stopping = asyncio.Event()

    def embedded_worker() -> Worker | None:
        # Until it has stopped (a second signal during its drain hands its jobs back).
        return client.worker

    async def start_background() -> None:
        nonlocal scheduler_task
        # The store was opened (or found down, and logged) already; the worker and the
        # scheduler connect once it is back.
        if worker:
            await client.start(**worker_options)
        elif worker_options["scheduler"]:
            scheduler_task = _start_maintainer(client, stopping)

    async def stop_background() -> None:
        stopping.set()
        if worker:
            logger.info("draining the embedded worker (up to %.0fs)", client.settings.shutdown_timeout)
            await client.stop()
        if scheduler_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(scheduler_task, 5.0)
        await client.close()

    if not http:
        await _run_without_http(embedded_worker, start_background, stop_background)
        return

    import uvicorn

    from conveyor.api import create_app
    from conveyor.cli._http import TimedH11Protocol, bind

    app = create_app(client)
    app.state.startup_hooks.append(start_background)
    app.state.shutdown_hooks.append(stop_background)
    sock = bind(host, port)  # before uvicorn: a port in use is one clear line, exit 1
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        http=TimedH11Protocol,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=GRACEFUL_TIMEOUT,
        ws_max_size=client.settings.max_payload_size + 64 * 1024,
    )
    server = _Server(config, embedded_worker)
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise CliError(f"could not start the HTTP server on {host}:{port}")


def _start_maintainer(client: AsyncConveyor, stopping: asyncio.Event) -> asyncio.Task[None]:
    """Without an embedded worker, ``serve`` still stands for the store's maintenance
    leader (firing schedules, recovering expired leases, pruning), listed among the
    live workers with no topics."""
    holder = f"{socket.gethostname()}:{os.getpid()}:serve"
    started = client.clock.now()
    maintainer = Maintainer(
        client,
        holder,
        lock_duration=client.settings.lock_duration,
        info=lambda: registry_entry(holder, [], 0, [], started, client.clock.now()),
    )
    return asyncio.get_running_loop().create_task(maintainer.run(stopping), name="conveyor-maintenance")


async def _run_without_http(embedded_worker: Callable[[], Worker | None], start: Any, stop: Any) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def on_signal(signum: int) -> None:
        done.set()
        worker = embedded_worker()
        if worker is not None:  # the second signal hands running jobs back
            worker.signal_received(signum)

    for sig in stop_signals.STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    early = stop_signals.take()  # arrived during the start-up
    try:
        await start()
        for signum in early:
            on_signal(signum)
        await done.wait()
        logger.info("stopping")
    finally:
        await stop()
        for sig in stop_signals.STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        stop_signals.hold()  # not the defaults asyncio puts back: no traceback while exiting


class _Server:
    """uvicorn's server, minus its re-raise of SIGTERM/SIGINT after a graceful shutdown
    (which would kill the process with the signal instead of exiting 0), plus: the
    signals reach the embedded worker too (the second one hands its running jobs back
    at once), and the application's shutdown (draining the worker, closing the store)
    runs after a second signal as well, where uvicorn would skip it and leave it to be
    cancelled at the loop's end."""

    def __init__(self, config: Any, embedded_worker: Callable[[], Worker | None]) -> None:
        import uvicorn

        loop = asyncio.get_running_loop()

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                super().handle_exit(sig, frame)
                worker = embedded_worker()
                if worker is not None:  # from a signal handler: only the thread-safe call
                    loop.call_soon_threadsafe(worker.signal_received, sig)

            async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
                await super().shutdown(sockets)
                if self.force_exit:
                    await self.lifespan.shutdown()

            @contextlib.contextmanager
            def capture_signals(self) -> Generator[None, None, None]:
                with super().capture_signals():
                    for signum in stop_signals.take():  # arrived during the start-up
                        self.handle_exit(signum, None)
                    try:
                        yield
                    finally:
                        self._captured_signals.clear()

        self._server = Server(config)

    @property
    def started(self) -> bool:
        return bool(self._server.started)

    async def serve(self, sockets: list[Any] | None = None) -> None:
        await self._server.serve(sockets=sockets)
