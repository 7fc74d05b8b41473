"""Plumbing shared by the CLI's commands (``main``, ``serve``, ``schedules``): one-line
errors with exit codes, environment validation, JSON arguments, opening a client and
loading a user's app from ``module:attr``.

Exit codes: 0 ok, 1 failure (a conveyor error, a bad environment value, an
unreachable store), 2 usage (click's own errors, and a bad value of the command's own
option or argument, named as typed: ``--delay``). Every error is one line on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import IO, Any, NoReturn, TypeVar

import click

from conveyor.cli._output import JSON_META_KEY
from conveyor.client import AsyncConveyor
from conveyor.core import codec
from conveyor.core.errors import (
    BackendError,
    ConfigurationError,
    ConveyorError,
    InvalidState,
    JobNotFound,
    MissingDependencyError,
    ValidationError,
)
from conveyor.core.redact import redact
from conveyor.logs import json_logging
from conveyor.settings import Settings
from conveyor.sync import Conveyor
from conveyor.worker.executor import running_sync_handlers

T = TypeVar("T")
App = Conveyor | AsyncConveyor


# The commands that log (they set logging up from CONVEYOR_LOG_FORMAT/_LEVEL).
LOGGING_COMMANDS = ("worker", "serve")


def log_format_requested() -> str:
    """``CONVEYOR_LOG_FORMAT`` as given (lower case), before the settings validate it."""
    return os.environ.get("CONVEYOR_LOG_FORMAT", "").strip().lower()


def show_error(message: str, file: IO[Any] | None = None) -> None:
    """A command's fatal error: one ``error: ...`` line on stderr, or, from worker/serve
    in CONVEYOR_LOG_FORMAT=json, one JSON line (``event: "exit"``) like all they write."""
    if file is None and json_logging():
        logging.getLogger("conveyor").error("%s", message, extra={"event": "exit"})
        return
    click.echo(f"error: {message}", err=True, file=file)


class CliError(click.ClickException):
    """A failure reported as one ``error: ...`` line on stderr (exit 1 by default)."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        show_error(self.format_message(), file)


class Interrupted(CliError):
    """Ctrl-C outside a worker (a worker drains gracefully instead)."""

    exit_code = 130


def error_message(exc: BaseException) -> str:
    """One readable line for an error raised by conveyor (or, failing that, anything)."""
    if isinstance(exc, ConveyorError):
        text = exc.message
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = text.strip()
    return text.splitlines()[0] if text else type(exc).__name__


def fail(message: str) -> NoReturn:
    raise CliError(message)


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Turn any exception into a one-line ``error:`` message and exit 1 (no traceback).

    Set ``CONVEYOR_LOG_LEVEL=DEBUG`` to see the traceback of an unexpected error.
    """
    try:
        yield
    except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
        raise
    except ValidationError as exc:
        usage = usage_error(exc.field, exc.reason)
        raise (CliError(error_message(exc)) if usage is None else usage) from None
    except (JobNotFound, InvalidState, ConfigurationError, MissingDependencyError) as exc:
        raise CliError(error_message(exc)) from None
    except BackendError as exc:
        raise CliError(f"store error: {error_message(exc)}") from None
    except ConveyorError as exc:
        raise CliError(error_message(exc)) from None
    except KeyboardInterrupt:
        raise Interrupted("interrupted") from None
    except Exception as exc:
        if os.environ.get("CONVEYOR_LOG_LEVEL", "").strip().upper() == "DEBUG":
            logging.getLogger("conveyor").exception("unexpected error")
        raise CliError(f"unexpected error: {error_message(exc)}") from None


class OneLineUsageError(click.UsageError):
    """click's usage error (exit 2) as one line on stderr, with where to find help,
    instead of click's usage block."""

    def show(self, file: IO[Any] | None = None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        show_error(f"{self.format_message()}{hint}", file)


def _one_line(exc: click.UsageError) -> OneLineUsageError:
    return OneLineUsageError(exc.format_message(), exc.ctx)


def usage_error(field: str, reason: str) -> OneLineUsageError | None:
    """A bad value of the running command's own option or argument (the API's field
    ``delay`` is ``--delay``, ``payload`` the ``PAYLOAD_JSON`` argument): a usage error,
    exit 2, naming it as the user typed it. None when no parameter of the command
    gave that field (the error is then a failure, exit 1)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return None
    for param in ctx.command.params:
        if param.name in (field, f"{field}_json"):
            hint = param.get_error_hint(ctx)
            if hint.strip("'").lstrip("-").lower() != field:
                hint += f" ({field})"  # the API's name too: '--retry-delay' (retry_delay)
            return _one_line(click.BadParameter(reason, ctx=ctx, param_hint=hint))
    return None


URL_HELP = (
    "Store URL (sqlite:///path.db, postgresql://..., redis://..., memory://); "
    "wins over the app's own URL and CONVEYOR_URL."
)
# Set on a command once it takes the options every command takes.
_COMMON_OPTIONS_MARK = "_conveyor_common_options"


def _set_url(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is None:
        return
    if not value.strip():
        raise click.BadParameter("must not be empty", ctx=ctx, param_hint="'--url'")
    ctx.ensure_object(CliState).url = value  # given after the subcommand: wins over one before it


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[JSON_META_KEY] = True  # read by the subcommand's own --json (_output)


def with_common_options(command: click.Command) -> click.Command:
    """Give ``command`` (and, for a group, its subcommands) ``--url`` and ``--json``, so
    that ``conveyor migrate --url URL`` works as ``conveyor --url URL migrate`` does,
    and ``conveyor jobs --json list`` as ``conveyor jobs list --json``."""
    if getattr(command, _COMMON_OPTIONS_MARK, False):
        return command
    setattr(command, _COMMON_OPTIONS_MARK, True)
    if not any("--url" in p.opts for p in command.params):
        command.params.append(
            click.Option(["--url"], metavar="URL", expose_value=False, callback=_set_url, help=URL_HELP)
        )
    if not any("--json" in p.opts for p in command.params):
        command.params.append(
            click.Option(
                ["--json"], is_flag=True, expose_value=False, callback=_set_json, help="Print machine-readable JSON."
            )
        )
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            with_common_options(sub)
    elif command.callback is not None:
        command.callback = _reporting_errors(command.callback)
    return command


def _reporting_errors(callback: Callable[..., Any]) -> Callable[..., Any]:
    """``callback`` run under ``reported_errors`` in its own command's context, where a
    ValidationError of one of its options or arguments becomes a usage error naming it."""

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        with reported_errors():
            return callback(*args, **kwargs)

    return run


class ErrorReportingGroup(click.Group):
    """A click group whose subcommands' errors become one line on stderr: exit 1, or 2
    for usage errors (parsed options and arguments). Every subcommand, also one added by
    another module, takes ``--url`` after its name too."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        return None if command is None else with_common_options(command)

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise  # a bare group: its help, as click prints it
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        with reported_errors():
            try:
                return super().invoke(ctx)
            except (OneLineUsageError, click.exceptions.NoArgsIsHelpError):
                raise
            except click.UsageError as exc:
                raise _one_line(exc) from None


@dataclass
class CliState:
    """What the top-level group passes down: the ``--url`` override and ``--json``."""

    url: str | None = None
    json: bool = False


def cli_state(ctx: click.Context) -> CliState:
    state = ctx.find_object(CliState)
    return state if state is not None else CliState()


def load_settings(url: str | None = None) -> Settings:
    """Validate the ``CONVEYOR_*`` environment (a bad value names the variable).

    Raises:
        CliError: a bad environment value.
    """
    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        raise CliError(error_message(exc)) from None
    return settings.replace(url=url)


def given(**options: Any) -> dict[str, Any]:
    """The options a user gave: click passes ``None`` for an omitted one, and leaving it
    out lets the client apply its own default (or the ``CONVEYOR_*`` one)."""
    return {key: value for key, value in options.items() if value is not None}


def parse_json(text: str, field: str) -> Any:
    """Parse a JSON argument (``-`` reads it from stdin) as strict JSON (``core.codec``):
    invalid JSON, ``NaN``, ``Infinity``, numbers that overflow and nesting deeper than
    1,024 levels fail with ``<field>: invalid JSON (...)``."""
    if text == "-":
        text = sys.stdin.read()
    try:
        return codec.loads_input(text)
    except ValueError as exc:
        reason = f"invalid JSON ({exc})"
        raise usage_error(field, reason) or CliError(f"{field}: {reason}") from None


def run(ctx: click.Context, factory: Callable[[AsyncConveyor], Awaitable[T]]) -> T:
    """Open a client on the configured store (``--url`` from ``ctx``), run
    ``factory(client)``, close the client."""
    settings = load_settings(cli_state(ctx).url)

    async def main() -> T:
        client = AsyncConveyor(settings=settings)
        try:
            return await factory(client)
        finally:
            await client.close()

    return run_coroutine(main())


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    with reported_errors():
        return asyncio.run(coro)


def load_app(spec: str) -> App:
    """Import ``module:attr`` (``attr`` defaults to ``app``; dotted attributes allowed).

    The current directory is put on ``sys.path`` first so a project's own modules import.

    Raises:
        CliError: the module or attribute is missing, importing failed, or the object is
            not a ``Conveyor`` / ``AsyncConveyor``.
    """
    module_name, _, attr = spec.partition(":")
    module_name, attr = module_name.strip(), (attr.strip() or "app")
    if not module_name:
        fail(f"app: expected module:attribute, e.g. myproject.tasks:app, got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            fail(f"app: cannot import module {module_name!r}: no module named {exc.name!r}")
        fail(f"app: importing {module_name!r} failed: {error_message(exc)}")
    except ConveyorError as exc:
        fail(f"app: importing {module_name!r} failed: {error_message(exc)}")
    except Exception as exc:
        fail(f"app: importing {module_name!r} failed: {error_message(exc)}")
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            fail(f"app: module {module_name!r} has no attribute {attr!r}")
    if not isinstance(obj, Conveyor | AsyncConveyor):
        fail(f"app: {module_name}:{attr} is a {type(obj).__name__}, not a Conveyor or AsyncConveyor app")
    return obj


def redact_url(url: str) -> str:
    """``url`` with its password hidden (userinfo, ``?password=``): ``core.redact``."""
    return redact(url)


def exit_if_handlers_linger() -> None:
    """Sync handlers still running after the worker stopped (``worker`` and ``serve``:
    their jobs were handed back, their threads cannot be killed) would keep the process
    alive until they return, running beside the job's next attempt elsewhere: say so
    and exit now instead."""
    stuck = running_sync_handlers()
    if not stuck:
        return
    code = 1 if sys.exc_info()[0] is not None else 0
    logging.getLogger("conveyor").warning(
        "%d sync handler%s still running after the worker stopped (%s): exiting without waiting for them",
        len(stuck),
        "s" if len(stuck) != 1 else "",
        ", ".join(f"job {job_id} in {thread}" for thread, job_id in stuck.items()),
        extra={"event": "exit_with_running_handlers"},
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
