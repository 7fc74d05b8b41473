"""Jobs handed to this process's idle workers by enqueue (keys.py, "Push").

A worker that found nothing to claim registers as idle before it waits; enqueue then
claims a due job for it inside the enqueue script and publishes the record on the
worker's inbox channel, so the job starts without the wake-up → claim round trip. The
records land in a per-worker stash that the next ``claim()`` returns first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from conveyor.backends.redis import record
from conveyor.backends.redis.connection import Endpoint
from conveyor.backends.redis.keys import Keys
from conveyor.backends.redis.pubsub import ChannelListener
from conveyor.core.job import Job

log = logging.getLogger("conveyor.backends.redis")

# A registration outlives the wait it was made for by this much (a worker that stops
# waiting without a claim, e.g. frozen, is skipped after it).
REGISTRATION_SLACK = 2.0

Run = Callable[..., Awaitable[Any]]


@dataclass
class _Inbox:
    worker_id: str
    listener: ChannelListener | None = None  # started at the worker's first wait
    topics: list[str] = field(default_factory=list)
    free: int = 0
    lease_us: int = 0
    registered: bool = False
    stash: list[Job] = field(default_factory=list)


class PushReceiver:
    def __init__(self, endpoint: Endpoint, keys: Keys, run: Run, notify: Callable[[], None]) -> None:
        self._endpoint = endpoint
        self._keys = keys
        self._run = run
        self._notify = notify
        self._inboxes: dict[str, _Inbox] = {}

    def take(self, worker_id: str, limit: int, now: datetime) -> list[Job]:
        """Up to ``limit`` pushed jobs of this worker whose lease still holds (a job
        held past its lease may already run elsewhere: it is left to recovery)."""
        inbox = self._inboxes.get(worker_id)
        if inbox is None or not inbox.stash:
            return []
        live = [j for j in inbox.stash if j.locked_until is not None and j.locked_until > now]
        taken, inbox.stash = live[:limit], live[limit:]
        inbox.free = max(inbox.free - len(taken), 0)
        return taken

    def claimed(self, worker_id: str, topics: list[str], free: int, lease_us: int) -> None:
        """After a claim through the store (which unregistered the worker): what to
        register when the worker waits next."""
        inbox = self._inboxes.get(worker_id)
        if inbox is None:
            inbox = self._inboxes[worker_id] = _Inbox(worker_id)
        inbox.topics, inbox.free, inbox.lease_us, inbox.registered = topics, free, lease_us, False

    async def before_wait(self, timeout: float) -> bool:
        """Register the idle workers whose inbox listens; True if pushed jobs wait."""
        if any(inbox.stash for inbox in self._inboxes.values()):
            return True
        expires = int((time.time() + timeout + REGISTRATION_SLACK) * 1_000_000)
        for inbox in self._inboxes.values():
            if inbox.listener is None:
                # Only claimers that wait get an inbox (a connection); it registers from
                # the next wait on, once subscribed.
                inbox.listener = self._listen(inbox.worker_id)
                continue
            if inbox.registered or inbox.free < 1 or not inbox.topics or not inbox.listener.is_subscribed:
                continue
            await self._run(
                "idle", inbox.worker_id, inbox.free, inbox.lease_us, expires, len(inbox.topics), *inbox.topics
            )
            inbox.registered = True
        return False

    def _listen(self, worker_id: str) -> ChannelListener:
        listener = ChannelListener(
            self._endpoint,
            self._keys.inbox(worker_id),
            on_message=lambda data: self._received(worker_id, data),
            on_subscribed=lambda: None,
        )
        listener.start()
        return listener

    def held(self, worker_id: str) -> list[str]:
        """Ids of pushed jobs not handed to the worker yet (their leases need renewing)."""
        inbox = self._inboxes.get(worker_id)
        return [j.id for j in inbox.stash] if inbox is not None else []

    def renewed(self, worker_id: str, locked_until: datetime, lost: frozenset[str]) -> None:
        inbox = self._inboxes.get(worker_id)
        if inbox is None:
            return
        inbox.stash = [j for j in inbox.stash if j.id not in lost]
        for job in inbox.stash:
            job.locked_until = locked_until

    async def unregister(self, worker_id: str) -> list[Job]:
        """The worker stops: no more pushes; returns the pushed jobs it never took."""
        inbox = self._inboxes.pop(worker_id, None)
        if inbox is None:
            return []
        try:
            if inbox.topics:
                await self._run("idle", worker_id, 0, 0, 0, len(inbox.topics), *inbox.topics)
        finally:
            if inbox.listener is not None:
                await inbox.listener.stop()
        return inbox.stash

    async def close(self) -> None:
        inboxes, self._inboxes = list(self._inboxes.values()), {}
        for inbox in inboxes:
            if inbox.listener is not None:
                await inbox.listener.stop()

    def forget(self) -> None:
        """Drop state made in another event loop (its listeners are not running here)."""
        self._inboxes = {}

    def _received(self, worker_id: str, data: bytes) -> None:
        inbox = self._inboxes.get(worker_id)
        try:
            job = record.decode_job([value.encode() for value in orjson.loads(data)])
        except Exception:
            log.exception("undecodable pushed job on %s", self._keys.inbox(worker_id))
            return
        if inbox is None:
            # The worker is gone: the job comes back when its lease expires.
            log.warning("job %s pushed to stopped worker %s; it returns after its lease", job.id, worker_id)
            return
        inbox.stash.append(job)
        inbox.registered = False  # the script lowered the free count it holds for us
        self._notify()
