"""SIGINT/SIGTERM that reach ``conveyor worker`` or ``conveyor serve`` before the worker
or the HTTP server has taken the signals over.

Importing a large app, opening the store or starting uvicorn takes a while; a Ctrl-C or
a SIGTERM in that window used to end the process with a ``KeyboardInterrupt`` traceback
in the middle of the start-up (or kill it with SIGTERM's default action). The CLI calls
``hold()`` first: the signals are noted, and whoever takes them over (the worker's
handlers, uvicorn's) calls ``take()`` and acts on them as if they had just arrived.
Only the ``conveyor`` command's own process is affected (``own_process()``, called by
its entry point): a library user's process, or a test that invokes the command's
functions, keeps its handlers.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_held: list[int] = []
_owned = False


def own_process() -> None:
    """This process is the ``conveyor`` command: ``hold()`` and ``ignore()`` may set its
    signal handlers."""
    global _owned
    _owned = True


def _may_set() -> bool:
    return _owned and threading.current_thread() is threading.main_thread()


def _note(signum: int, _frame: FrameType | None) -> None:
    _held.append(signum)


def hold() -> None:
    """Note SIGINT/SIGTERM from now on instead of their default actions (main thread only).

    The note stays the handler whenever no one else handles them (before the worker
    starts, after it stopped): the process then finishes what it is doing and exits.
    """
    if not _may_set():
        return
    for sig in STOP_SIGNALS:
        signal.signal(sig, _note)


def ignore() -> None:
    """Ignore SIGINT/SIGTERM from now on: the process has stopped and is exiting (at the
    very end the interpreter would put the default actions back, and a late signal
    would end it with a signal's status instead of 0)."""
    if not _may_set():
        return
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def take() -> list[int]:
    """The signals noted since ``hold()`` or the last ``take()``, oldest first."""
    taken = _held[:]
    del _held[: len(taken)]
    return taken
