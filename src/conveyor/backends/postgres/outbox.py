"""Events waiting to ride along: the NOTIFY payloads ``publish`` hands over, sent in the
same round trip as the next claim or acknowledgement (psycopg pipeline mode: the two
statements go out together and the worker waits for both replies once), or on their
own when none goes out within ``RIDE_ALONG_WINDOW``. In a drain, claims and
acknowledgements follow each other every few milliseconds, so the job events cost no
round trip of their own.

Imports only the standard library.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

# How long published events wait for a claim or an acknowledgement to ride along with.
RIDE_ALONG_WINDOW = 0.004


class Outbox:
    """The payloads of one ride-along batch and the future their publishers await."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.payloads: list[str] = []
        self.sent: asyncio.Future[None] = loop.create_future()

    def done(self, exc: BaseException | None = None) -> None:
        if self.sent.done():
            return
        if exc is None:
            self.sent.set_result(None)
        else:
            self.sent.set_exception(exc)
            self.sent.exception()  # retrieved: a publisher that gave up must not warn


class RideAlong:
    """The backend's current outbox: ``add`` (from ``publish``), ``take`` (by a claim or
    an acknowledgement about to go out), and the lone send after the window."""

    def __init__(self, send_alone: Callable[[list[str]], Awaitable[None]]) -> None:
        self._send_alone = send_alone
        self._box: Outbox | None = None
        self._timers: set[asyncio.Task[None]] = set()

    async def add(self, payloads: list[str]) -> None:
        """Queue ``payloads`` and wait until they are sent (raises what sending raised)."""
        box = self._box
        if box is None:
            box = self._box = Outbox(asyncio.get_running_loop())
            timer = asyncio.get_running_loop().create_task(self._alone_after_window(box))
            self._timers.add(timer)
            timer.add_done_callback(self._timers.discard)
        box.payloads += payloads
        await asyncio.shield(box.sent)

    def take(self) -> Outbox | None:
        """The pending outbox, now the caller's to send (and to mark done)."""
        box, self._box = self._box, None
        return box

    async def _alone_after_window(self, box: Outbox) -> None:
        await asyncio.sleep(RIDE_ALONG_WINDOW)
        if self._box is not box:
            return  # a claim or an acknowledgement took it
        self._box = None
        await self.send(box)

    async def send(self, box: Outbox) -> None:
        try:
            await self._send_alone(box.payloads)
        except Exception as exc:
            box.done(exc)
        except BaseException:
            box.sent.cancel()
            raise
        else:
            box.done()

    async def flush(self) -> None:
        """Send what waits now (closing)."""
        box = self.take()
        if box is not None:
            await self.send(box)
