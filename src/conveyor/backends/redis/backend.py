"""RedisBackend: the storage protocol on Redis, one atomic Lua script per state change.

Imports only ``conveyor.core``, ``conveyor.backends.base``, ``conveyor.backends.wakeup``
and this package. Every method is one round trip (one script call); every state change
runs inside one script, so a crash between two commands cannot lose or duplicate a job.
Commands go through redis-py (``driver.py`` builds its clients from the URL: one server,
TLS, Cluster or Sentinel); scripts through redis-py's ``register_script`` (EVALSHA,
loaded again on NOSCRIPT after a restart or SCRIPT FLUSH). redis-py exceptions never
leave this module: connection problems become ``BackendUnavailable``, anything else
``BackendError`` (``driver.translate``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

from conveyor.backends.base import (
    Applied,
    Capabilities,
    ClaimRequest,
    HeartbeatResult,
    StoreStats,
    WorkerInfo,
    applied,
    inserted_events,
    wakes,
)
from conveyor.backends.presence import Presence
from conveyor.backends.wakeup import hand_over
from conveyor.core import codec, operation
from conveyor.core.errors import (
    ConfigurationError,
    JobNotFound,
    MissingDependencyError,
)
from conveyor.core.events import Event
from conveyor.core.job import Job, JobStatus
from conveyor.core.lifecycle import Outcome
from conveyor.core.operation import JobOp
from conveyor.core.page import JobPage, keyset_page
from conveyor.core.schedule import Schedule

try:
    import hiredis  # noqa: F401  # redis-py's reply parser when installed
    import redis  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "redis", "redis") from exc

from conveyor.backends.redis import arguments, driver, lua, record
from conveyor.backends.redis.channels import Channels
from conveyor.backends.redis.event_listeners import EventListeners
from conveyor.backends.redis.keys import LAYOUT_VERSION, Keys

log = logging.getLogger("conveyor.backends.redis")

T = TypeVar("T")

_STATUSES = [s.value for s in JobStatus]
# Redis URLs (masked) already warned about in this process: warn once, not per client.
_WARNED_NO_PERSISTENCE: set[str] = set()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisBackend:
    """Jobs, schedules and workers in Redis under one key prefix (see ``keys.py``).

    Args:
        url: ``redis://``, ``rediss://``, ``redis+cluster://`` or ``redis+sentinel://``
            (see ``driver.py`` and ``docs/redis.md``).
        prefix: key prefix (wins over ``?prefix=``); default ``conveyor``.
        **options: ``socket_timeout`` (seconds a command may wait for its reply; default
            none: a dead connection is found by TCP keepalive within ~25 s) and
            ``socket_connect_timeout`` (default 5), winning over the URL's
            ``?socket_timeout=``/``?socket_connect_timeout=``; other options are ignored.

    Raises:
        ConfigurationError: a malformed URL (named without its password).
    """

    capabilities = Capabilities(
        push_wakeups=True,
        cross_process_events=True,
        transactional_enqueue=False,
        multi_process=True,
        blocking_enqueue=True,
        enqueue_events=True,
        finish_and_claim=True,
    )

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url
        self._target = driver.parse(url, prefix=options.get("prefix") or None, timeouts=options)
        self.keys = Keys(self._target.prefix)
        self._lua = lua.scripts()
        # redis.asyncio clients belong to one event loop (and one process): made on first
        # use in each, with their registered scripts.
        self._client: Any = None
        self._client_home: tuple[asyncio.AbstractEventLoop, int] | None = None
        self._scripts: dict[str, Any] = {}
        # One connection held for one command at a time, used whenever it is free (the
        # worker's loops, a caller awaiting each enqueue); concurrent commands go
        # through the pool. ``driver.HeldConnection`` says why.
        self._held: driver.HeldConnection | None = None
        self._sync_client: Any = None
        self._sync_scripts: dict[str, Any] = {}
        self._sync_held: driver.HeldConnection | None = None
        self._sync_pid = 0
        self._sync_lock = threading.Lock()
        self._channels = Channels(self._target, self.keys, client=self._async, reconnect=self._reconnect)
        self._presence = Presence(EventListeners(self.keys.listeners, self._command), self._channels.subscribers)
        self._tasks: set[asyncio.Task[None]] = set()

    # -- connection ------------------------------------------------------------------

    def _async(self) -> Any:
        """This event loop's client (a new one in another loop or a forked child)."""
        here = (asyncio.get_running_loop(), os.getpid())
        if self._client is None or self._client_home != here:
            self._channels.same_loop()
            self._client, self._client_home = driver.async_client(self._target), here
            self._scripts = {name: self._client.register_script(s.text) for name, s in self._lua.items()}
            self._held = driver.HeldConnection(self._target, self._client)
            self._channels.watch_failover()
        return self._client

    def _reconnect(self) -> None:
        """Drop every connection (the next commands open new ones): after a failover."""
        if self._client is not None:
            task = asyncio.get_running_loop().create_task(self._client.connection_pool.disconnect())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._sync_client is not None:
            self._sync_client.connection_pool.disconnect()

    async def _call(self, what: str, command: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await command(*args, **kwargs)
        except driver.ERRORS as exc:
            driver.translate(self._target, exc, what)

    async def _command(self, *args: Any) -> Any:
        """One plain command on this event loop's client."""
        return await self._call(str(args[0]), self._async().execute_command, *args)

    async def _run(self, name: str, *args: Any) -> Any:
        """Run script ``name`` (the prefix as its key and first argument)."""
        client = self._async()
        assert self._held is not None  # made with the client
        holder = self._held
        held, stale = holder.take()
        failed = False
        try:
            if stale is not None:
                await stale.aclose()  # its connection back to the pool
            return await driver.run_script(held or client, self._scripts[name], self.keys.prefix, args)
        except driver.ERRORS as exc:
            failed = True
            driver.translate(self._target, exc, f"script {name}")
        finally:
            if held is not None:
                holder.give_back(failed=failed)

    async def connect(self) -> None:
        self._channels.closed = False
        await self.migrate()
        await self._warn_without_persistence()

    async def migrate(self) -> int:
        """Record (or upgrade to) the layout version. Redis has no schema: returns 1 the
        first time a prefix is used or when its layout was upgraded, then 0."""
        client = self._async()
        prefix = self.keys.prefix
        try:
            while True:
                done = int(await driver.run_script(client, self._scripts["migrate"], prefix, (LAYOUT_VERSION,)))
                if done != 2:  # 2: a large store is upgraded in steps (migrate.lua)
                    return done
        except driver.ERRORS as exc:
            if str(exc).startswith("CONVEYOR layout version"):  # migrate.lua: a newer layout
                message = str(exc).removeprefix("CONVEYOR ")
                raise ConfigurationError(f"redis prefix {prefix!r}: {message}") from exc
            driver.translate(self._target, exc, "migrate")

    async def _warn_without_persistence(self) -> None:
        """Warn once per process and server when Redis keeps neither an AOF nor RDB
        snapshots: a restart of Redis then loses every job and schedule."""
        display = self._target.display
        if display in _WARNED_NO_PERSISTENCE:
            return
        client = self._async()
        extra: dict[str, Any] = {}
        if self._target.kind == "cluster":
            extra["target_nodes"] = client.get_node_from_key(self.keys.prefix)
        try:
            config = await client.config_get("appendonly", **extra)
            config.update(await client.config_get("save", **extra))
        except driver.ERRORS:
            return  # CONFIG refused (a managed Redis often renames it): nothing to judge by
        settings = {_text(k): _text(v) for k, v in config.items()}
        _WARNED_NO_PERSISTENCE.add(display)
        if settings.get("appendonly", "no") == "no" and not settings.get("save", "").strip():
            log.warning(
                'redis at %s persists nothing (appendonly no, save ""): a restart of Redis loses every job '
                "and schedule; set appendonly yes (see docs/redis.md, Durability)",
                display,
            )

    async def close(self) -> None:
        if self._client_home == (asyncio.get_running_loop(), os.getpid()):  # its tasks and client are this loop's
            await self._presence.leave()
        await self._channels.close()
        client, home, self._client = self._client, self._client_home, None
        held, self._held = (self._held.drop() if self._held is not None else None), None
        if client is not None and home is not None and home[1] == os.getpid():
            try:
                same_loop = home[0] is asyncio.get_running_loop()
            except RuntimeError:
                same_loop = False
            if same_loop:  # another loop's connections cannot be closed from here
                with contextlib.suppress(Exception):
                    if held is not None:
                        await held.aclose()  # its connection back to the pool, closed next
                    await driver.aclose(client)
        sync, self._sync_client = self._sync_client, None
        sync_held, self._sync_held = (self._sync_held.drop() if self._sync_held is not None else None), None
        if sync is not None:
            with contextlib.suppress(Exception):
                if sync_held is not None:
                    sync_held.close()
                driver.close(sync)

    async def ping(self) -> None:
        await self._call("PING", self._async().ping)

    # -- jobs ------------------------------------------------------------------------

    async def enqueue(
        self, jobs: Sequence[Job], *, connection: Any = None, events: Sequence[Event] | None = None
    ) -> list[Job]:
        if not jobs:
            return []
        args, payloads = arguments.enqueue_args(jobs, connection, events, self._channels.envelope_head)
        replies = await self._run("enqueue", *args)
        out = arguments.enqueued(jobs, payloads, replies)
        if events:
            # This process's subscribers (the channel skips our own messages).
            self._channels.deliver(inserted_events(jobs, out, events))
        self.notify_local()
        return out

    def accepts_blocking(self, jobs: Sequence[Job], connection: Any) -> bool:
        return True

    def enqueue_blocking(
        self, jobs: Sequence[Job], *, connection: Any = None, events: Sequence[Event] | None = None
    ) -> list[Job]:
        """``enqueue`` from a thread outside the event loop (the sync facade's caller),
        through redis-py's blocking client and the same script: no hop to the loop
        thread."""
        if not jobs:
            return []
        args, payloads = arguments.enqueue_args(jobs, connection, events, self._channels.envelope_head)
        if self._sync_client is None or self._sync_pid != os.getpid():
            with self._sync_lock:  # callers' threads: one client, not one each
                if self._sync_client is None or self._sync_pid != os.getpid():
                    client = driver.sync_client(self._target)
                    self._sync_scripts = {"enqueue": client.register_script(self._lua["enqueue"].text)}
                    # A forked child's holder may be taken by a thread of its parent.
                    self._sync_held = driver.HeldConnection(self._target, client)
                    self._sync_client, self._sync_pid = client, os.getpid()
        holder = self._sync_held
        assert holder is not None  # made with the client
        held = None
        failed = False
        try:
            held, stale = holder.take()
            if stale is not None:
                stale.close()  # its connection back to the pool
            replies = driver.run_script_sync(
                held or self._sync_client, self._sync_scripts["enqueue"], self.keys.prefix, args
            )
        except driver.ERRORS as exc:
            failed = True
            driver.translate(self._target, exc, "script enqueue")
        finally:
            if held is not None:
                holder.give_back(failed=failed)
        out = arguments.enqueued(jobs, payloads, replies)
        channels = self._channels
        bound, subscribed = channels.bound, bool(channels.subscribers)
        local = inserted_events(jobs, out, events) if events and subscribed else ()
        hand_over(bound[0] if bound else None, channels.wakeup, channels.deliver if subscribed else None, local)
        return out

    async def get(self, job_id: str) -> Job | None:
        fields = await self._call("HGETALL", self._async().hgetall, self.keys.job(job_id))
        return record.decode_job_map(fields) if fields else None

    async def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        topic: str | None = None,
        limit: int = 50,
        offset: int = 0,
        after: str | None = None,
        before: str | None = None,
    ) -> JobPage:
        # One row more than the page: it tells whether another page follows.
        reply = await self._run(
            "list_jobs",
            status.value if status is not None else "",
            topic or "",
            max(limit + 1, 0),
            max(offset, 0),
            after or "",
            before or "",
            *_STATUSES,
        )
        beyond = bool(int(reply[1])) if after is not None or before is not None else offset > 0
        jobs = [record.decode_job(flat) for flat in reply[2:]]
        return keyset_page(jobs, total=int(reply[0]), limit=limit, offset=offset, before=before, beyond=beyond)

    async def stats(self) -> StoreStats:
        by_status_raw, topics_raw = await self._run("stats", *_STATUSES)
        by_status = {s: int(n) for s, n in zip(_STATUSES, by_status_raw, strict=True)}
        by_topic: dict[str, dict[str, int]] = {}
        for row in topics_raw:
            counts = {s: int(n) for s, n in zip(_STATUSES, row[1:], strict=True) if int(n)}
            if counts:
                by_topic[row[0].decode()] = counts
        return StoreStats(by_status=by_status, by_topic=by_topic)

    async def apply(self, op: JobOp, *, now: datetime) -> Job:
        return applied((await self.apply_many([op], now=now))[0])

    async def apply_many(self, ops: Sequence[JobOp], *, now: datetime) -> list[Applied]:
        if not ops:
            return []
        # The whole batch as ONE script argument (a JSON array of ops), as ``finish``.
        replies = await self._run("apply", record.to_us(now), codec.dumps([arguments.op_args(op) for op in ops]))
        out: list[Applied] = []
        for op, reply in zip(ops, replies, strict=True):
            code = int(reply[0])
            if code == 0:
                out.append(record.decode_job(reply[1]))
            elif code == 1:
                out.append(JobNotFound(op.job_id))
            else:
                out.append(operation.refused(op, reply[1].decode(), holder=reply[2].decode() if code == 3 else None))
        if wakes(ops, out):
            self.notify_local()
        return out

    # -- the worker's side -----------------------------------------------------------

    async def claim(
        self, *, worker_id: str, topics: Sequence[str], limit: int, now: datetime, locked_until: datetime
    ) -> list[Job]:
        if limit <= 0 or not topics:
            return []
        wanted = list(dict.fromkeys(topics))
        replies = await self._run(
            "claim", worker_id, limit, record.to_us(now), record.to_us(locked_until), len(wanted), *wanted
        )
        return [record.decode_job(flat) for flat in replies]

    async def next_run_at(self, *, topics: Sequence[str]) -> datetime | None:
        if not topics:
            return None
        reply = await self._run("next_run_at", *dict.fromkeys(topics))
        return None if reply is None else record.from_us(reply)

    async def heartbeat(self, *, worker_id: str, job_ids: Sequence[str], locked_until: datetime) -> HeartbeatResult:
        if not job_ids:
            return HeartbeatResult()
        lost, cancel = await self._run("heartbeat", worker_id, record.to_us(locked_until), *job_ids)
        return HeartbeatResult(
            lost=frozenset(x.decode() for x in lost), cancel_requested=frozenset(x.decode() for x in cancel)
        )

    async def finish(self, outcomes: Sequence[Outcome], *, now: datetime) -> list[Job | None]:
        if not outcomes:
            return []
        return self._finished(await self._run("finish", *arguments.finish_args(outcomes, now)))

    async def finish_and_claim(
        self, outcomes: Sequence[Outcome], *, now: datetime, claim: ClaimRequest
    ) -> tuple[list[Job | None], list[Job]]:
        """One script: the outcomes stored, then claim.lua's claim (``claim_due``)."""
        if claim.limit <= 0 or not claim.topics:
            return await self.finish(outcomes, now=now), []
        if not outcomes:
            return [], await self.claim(
                worker_id=claim.worker_id,
                topics=claim.topics,
                limit=claim.limit,
                now=now,
                locked_until=claim.locked_until,
            )
        finished, claimed = await self._run(
            "finish",
            *arguments.finish_args(outcomes, now),
            claim.worker_id,
            claim.limit,
            record.to_us(claim.locked_until),
            codec.dumps(list(dict.fromkeys(claim.topics))),
        )
        return self._finished(finished), [record.decode_job(flat) for flat in claimed]

    def _finished(self, replies: list[Any]) -> list[Job | None]:
        out = [None if flat is None else record.decode_job(flat) for flat in replies]
        if any(job is not None and job.status is JobStatus.PENDING for job in out):
            self.notify_local()
        return out

    async def expired(self, *, now: datetime, limit: int) -> list[Job]:
        if limit <= 0:
            return []
        replies = await self._run("expired", record.to_us(now), limit)
        return [record.decode_job(flat) for flat in replies if flat]

    async def prune(self, *, finished_before: datetime, limit: int) -> int:
        if limit <= 0:
            return 0
        return int(await self._run("prune", record.to_us(finished_before), limit))

    async def count_finished(self, *, since: datetime, bucket_seconds: int) -> list[tuple[datetime, str, int]]:
        bucket_us = bucket_seconds * 1_000_000
        flat = await self._run("count_finished", record.to_us(since), bucket_us)
        out = []
        for i in range(0, len(flat), 3):
            start = record.from_us(str(int(flat[i]) * bucket_us))
            status = flat[i + 1].decode() if isinstance(flat[i + 1], bytes) else str(flat[i + 1])
            out.append((start, status, int(flat[i + 2])))
        return out

    # -- wake-ups and events (channels.py) ------------------------------------------

    async def wait_for_jobs(self, timeout: float) -> bool:
        return await self._channels.wait(timeout)

    def notify_local(self) -> None:
        self._channels.wakeup.notify()

    async def events_ready(self, timeout: float = 5.0) -> bool:
        """Wait until this process receives events published elsewhere (tests, servers)."""
        return await self._channels.events_ready(timeout)

    def events_wanted(self) -> bool:
        home = self._client_home
        return self._presence.heard(home[0] if home else None)

    async def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        self._channels.deliver(events)
        envelope = self._channels.envelope(events)
        await self._command("PUBLISH", self.keys.events, envelope)

    async def subscribe(self) -> AsyncIterator[Event]:
        sub = await self._channels.subscribe()
        try:
            # From now on events are built and published (they cost nothing while nobody listens).
            await self._presence.join()
        except BaseException:
            await sub.aclose()
            raise
        return sub

    # -- live workers ----------------------------------------------------------------

    async def save_worker(self, info: WorkerInfo) -> None:
        score = record.to_us(info.last_heartbeat) if info.last_heartbeat else "+inf"
        await self._run("workers", "save", info.id, score, record.encode_worker(info))

    async def remove_worker(self, worker_id: str) -> None:
        await self._run("workers", "remove", worker_id)

    async def list_workers(self, *, alive_since: datetime) -> list[WorkerInfo]:
        replies = await self._run("workers", "list", record.to_us(alive_since))
        return sorted((record.decode_worker(raw) for raw in replies), key=lambda w: w.id)

    # -- the maintenance leader ------------------------------------------------------

    async def acquire_leadership(self, *, holder: str, now: datetime, until: datetime) -> bool:
        # The key's TTL is the lease (Redis expires it on its own clock).
        ttl_ms = max(1, round((until - now).total_seconds() * 1000))
        return bool(await self._run("leader", "acquire", holder, ttl_ms))

    async def release_leadership(self, *, holder: str) -> None:
        await self._run("leader", "release", holder)

    async def current_leader(self, *, now: datetime) -> str | None:
        holder = await self._run("leader", "get")
        return holder.decode() if isinstance(holder, bytes) else holder

    # -- schedules -------------------------------------------------------------------

    async def save_schedule(self, schedule: Schedule) -> Schedule:
        flat = await self._run("save_schedule", "save", schedule.name, *record.encode_schedule(schedule))
        return record.decode_schedule(flat)

    async def add_schedule(self, schedule: Schedule) -> Schedule | None:
        flat = await self._run("save_schedule", "add", schedule.name, *record.encode_schedule(schedule))
        return None if flat is None else record.decode_schedule(flat)

    async def get_schedule(self, name: str) -> Schedule | None:
        flat = await self._run("schedules", "get", name)
        return None if flat is None else record.decode_schedule(flat)

    async def list_schedules(self) -> list[Schedule]:
        return [record.decode_schedule(flat) for flat in await self._run("schedules", "list", "")]

    async def delete_schedule(self, name: str) -> bool:
        return bool(await self._run("schedules", "delete", name))

    async def set_schedule_enabled(self, name: str, enabled: bool, *, next_run_at: datetime | None) -> Schedule | None:
        flat = await self._run(
            "schedules", "enable", name, "1" if enabled else "0", record.to_us(next_run_at) if next_run_at else ""
        )
        return None if flat is None else record.decode_schedule(flat)

    async def fire_schedule(
        self, name: str, *, fire_at: datetime, next_run_at: datetime | None, job: Job
    ) -> Job | None:
        reply = await self._run(
            "fire_schedule",
            name,
            record.to_us(fire_at),
            record.to_us(next_run_at) if next_run_at else "",
            record.encode_job(job, codec.dumps(job.payload)),
        )
        code = int(reply[0])
        if code == 0:
            return None
        if code == 1:
            self.notify_local()
            return record.copy_as_stored(job)
        return record.decode_job(reply[1])
