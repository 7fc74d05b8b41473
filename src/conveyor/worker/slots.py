"""``RunSlots``: the run slots of a worker that claims ahead (backends with
``finish_and_claim``), given out in claim order.

Such a worker keeps several claims in flight (its claim loop's and its
acknowledgements'), on several connections, and their replies may come back in any
order: a first-come semaphore would then start jobs out of the order SPEC promises
("jobs of one priority start in run_at order"). So the jobs waiting for a slot start in
the stores' claim order (higher priority, then earlier ``run_at``, then id), and the
jobs a claim brings back wait until every claim sent before it has come back too (one
of those holds jobs that come before them).

That is exact where the store serves claims in the order they were sent (SQLite and
``memory://``: one claimer). Redis runs atomic scripts as they arrive, and two claims
sent on two connections arrive in the other order now and then (one inversion seen in
many full test runs). PostgreSQL
serves concurrent statements as their connections run them, and a claim sent later
can still be served first now and then (migration 0015 made its round trip claim
before it stores its outcomes, which removed most of it). Waiting for every claim in
flight when a claim comes back would be exact there too, but measured 27 % slower
PostgreSQL drains (bench/README.md, sixteenth session): not taken.

Imports only ``core.job``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import datetime

from conveyor.core.job import Job, claim_order

ClaimOrder = tuple[int, datetime, str]


class Turn:
    """One job's place in the queue: ``waiting``, ``granted`` a slot, ``held`` (its
    handler runs), ``over``. ``async with turn``: wait for the slot and hold it."""

    __slots__ = ("slots", "state", "wake")

    def __init__(self, slots: RunSlots) -> None:
        self.slots = slots
        self.state = "waiting"
        self.wake: asyncio.Future[None] | None = None  # made only if it has to wait

    async def __aenter__(self) -> None:
        if self.state == "waiting":
            self.wake = asyncio.get_running_loop().create_future()
            try:
                await self.wake
            except asyncio.CancelledError:
                self.withdraw()
                raise
        if self.state != "granted":  # withdrawn: the task is being cancelled
            raise asyncio.CancelledError
        self.state = "held"

    async def __aexit__(self, *exc_info: object) -> None:
        self.state = "over"
        self.slots.release()

    def withdraw(self) -> None:
        """The job leaves the queue before its handler runs (cancelled, handed back):
        a slot granted to it is free again."""
        if self.state == "granted":
            self.slots.release()
        if self.state != "held":
            self.state = "over"


class RunSlots:
    """``n`` slots, and the worker's claims in flight (numbered as they are sent)."""

    def __init__(self, n: int) -> None:
        self._free = n
        # (claim order, arrival, horizon, turn): the next slot goes to the first in
        # claim order, once every claim numbered up to its horizon came back.
        self._waiting: list[tuple[ClaimOrder, int, int, Turn]] = []
        self._arrivals = itertools.count()
        self._sent = 0
        self._in_flight: set[int] = set()

    def claim_sent(self) -> int:
        """A claim is about to be sent: its number, for ``claim_back``."""
        self._sent += 1
        self._in_flight.add(self._sent)
        return self._sent

    def claim_back(self, number: int) -> int:
        """Claim ``number`` came back (or failed): the horizon of the jobs it brought
        (they wait for the claims sent before it). ``enter`` them, then ``hand_out``."""
        self._in_flight.discard(number)
        return number - 1

    def enter(self, job: Job, horizon: int) -> Turn:
        """Queue ``job``: its turn comes in claim order, once every claim numbered up to
        ``horizon`` came back. Its task holds the turn (``async with``); whoever
        cancels the task ``withdraw``s it first (the task may not have run yet)."""
        turn = Turn(self)
        heapq.heappush(self._waiting, (claim_order(job), next(self._arrivals), horizon, turn))
        return turn

    def release(self) -> None:
        """A held slot is free again."""
        self._free += 1
        self.hand_out()

    def hand_out(self) -> None:
        """Give free slots to the first waiters in claim order."""
        # Only the first in claim order may take a slot: a job behind it never starts
        # before it, even when the first still waits for a claim to come back.
        while self._free > 0 and self._waiting:
            _, _, horizon, turn = self._waiting[0]
            if turn.state != "waiting":
                heapq.heappop(self._waiting)  # withdrawn
                continue
            if self._in_flight and min(self._in_flight) <= horizon:
                return
            heapq.heappop(self._waiting)
            self._free -= 1
            turn.state = "granted"
            if turn.wake is not None:
                turn.wake.set_result(None)
