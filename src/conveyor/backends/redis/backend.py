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
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from conveyor.backends.base import Capabilities, HeartbeatResult, StoreStats, WorkerInfo, inserted_events
from conveyor.backends.wakeup import LocalWakeup, hand_over
from conveyor.core import codec
from conveyor.core.errors import (
    ConfigurationError,
    InvalidState,
    JobNotFound,
    MissingDependencyError,
    ValidationError,
)
from conveyor.core.events import Event
from conveyor.core.job import Job, JobStatus
from conveyor.core.lifecycle import Outcome
from conveyor.core.page import JobPage, keyset_page
from conveyor.core.schedule import Schedule

try:
    import hiredis  # noqa: F401  # redis-py's reply parser when installed
    import redis  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "redis", "redis") from exc

from conveyor.backends.redis import driver, lua, record
from conveyor.backends.redis.keys import LAYOUT_VERSION, Keys
from conveyor.backends.redis.listener import ChannelListener

log = logging.getLogger("conveyor.backends.redis")

T = TypeVar("T")

_SUBSCRIBER_QUEUE = 10_000
_STATUSES = [s.value for s in JobStatus]
# Redis URLs (masked) already warned about in this process: warn once, not per client.
_WARNED_NO_PERSISTENCE: set[str] = set()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Subscription:
    """The iterator ``subscribe()`` returns: registered at once, so that events published
    right after ``subscribe()`` returns are not missed by a slow first ``__anext__``."""

    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(_SUBSCRIBER_QUEUE)
        self._done = False
        backend._subscribers.append(self)
        backend._start_events_listener()

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> Event:
        if self._done:
            raise StopAsyncIteration
        self._backend._start_events_listener()
        event = await self.queue.get()
        if event is None:
            self._finish()
            raise StopAsyncIteration
        return event

    def _finish(self) -> None:
        self._done = True
        with contextlib.suppress(ValueError):
            self._backend._subscribers.remove(self)

    async def aclose(self) -> None:
        self._finish()


class RedisBackend:
    """Jobs, schedules and workers in Redis under one key prefix (see ``keys.py``).

    Args:
        url: ``redis://``, ``rediss://``, ``redis+cluster://`` or ``redis+sentinel://``
            (see ``driver.py`` and ``docs/redis.md``).
        prefix: key prefix (wins over ``?prefix=``); default ``conveyor``.
        **options: ``socket_timeout`` (seconds a command may wait for its reply; default
            none: a dead connection is found by TCP keepalive within ~25 s) and ``socket_connect_timeout`` (default 5); other options are ignored.

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
    )

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url
        self._target = driver.parse(url, prefix=options.get("prefix") or None)
        self.keys = Keys(self._target.prefix)
        self._options = options
        self._lua = lua.scripts()
        # redis.asyncio clients belong to one event loop (and one process): made on first
        # use in each, with their registered scripts.
        self._client: Any = None
        self._client_home: tuple[asyncio.AbstractEventLoop, int] | None = None
        self._scripts: dict[str, Any] = {}
        self._sync_client: Any = None
        self._sync_scripts: dict[str, Any] = {}
        self._sync_pid = 0
        self._sync_lock = threading.Lock()
        # Tags this instance's event messages so that its own listener skips them:
        # local subscribers already got them directly from publish().
        self._origin = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._envelope_head = b'{"o":' + codec.dumps(self._origin) + b',"e":['  # _envelope's opening
        self._wakeup = LocalWakeup()
        self._wake_listener: ChannelListener | None = None
        self._events_listener: ChannelListener | None = None
        self._subscribers: list[_Subscription] = []
        self._bound: tuple[asyncio.AbstractEventLoop, int] | None = None
        self._closed = False

    # -- connection ------------------------------------------------------------------

    def _async(self) -> Any:
        """This event loop's client (a new one in another loop or a forked child)."""
        here = (asyncio.get_running_loop(), os.getpid())
        if self._client is None or self._client_home != here:
            self._same_loop()
            self._client, self._client_home = driver.async_client(self._target, self._options), here
            self._scripts = {name: self._client.register_script(s.text) for name, s in self._lua.items()}
        return self._client

    async def _call(self, what: str, command: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await command(*args, **kwargs)
        except driver.ERRORS as exc:
            driver.translate(self._target, exc, what)

    async def _run(self, name: str, *args: Any) -> Any:
        """Run script ``name`` (the prefix as its key and first argument)."""
        self._async()
        prefix = self.keys.prefix
        try:
            return await self._scripts[name](keys=(prefix,), args=(prefix, *args))
        except driver.ERRORS as exc:
            driver.translate(self._target, exc, f"script {name}")

    async def connect(self) -> None:
        self._closed = False
        await self.migrate()
        await self._warn_without_persistence()

    async def migrate(self) -> int:
        """Record (or upgrade to) the layout version. Redis has no schema: returns 1 the
        first time a prefix is used or when its layout was upgraded, then 0."""
        self._async()
        prefix = self.keys.prefix
        try:
            return int(await self._scripts["migrate"](keys=(prefix,), args=(prefix, LAYOUT_VERSION)))
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
        self._closed = True
        for listener in (self._wake_listener, self._events_listener):
            if listener is not None:
                await listener.stop()
        self._wake_listener = self._events_listener = None
        for sub in list(self._subscribers):
            if sub.queue.full():
                sub.queue.get_nowait()
            sub.queue.put_nowait(None)
        self._subscribers.clear()
        client, home, self._client = self._client, self._client_home, None
        if client is not None and home is not None and home[1] == os.getpid():
            try:
                same_loop = home[0] is asyncio.get_running_loop()
            except RuntimeError:
                same_loop = False
            if same_loop:  # another loop's connections cannot be closed from here
                with contextlib.suppress(Exception):
                    await driver.aclose(client)
        sync, self._sync_client = self._sync_client, None
        if sync is not None:
            with contextlib.suppress(Exception):
                driver.close(sync)

    async def ping(self) -> None:
        await self._call("PING", self._async().ping)

    # -- jobs ------------------------------------------------------------------------

    def _enqueue_args(
        self, jobs: Sequence[Job], connection: Any, events: Sequence[Event] | None
    ) -> tuple[list[Any], list[bytes]]:
        if connection is not None:
            raise ValidationError(
                "connection", "redis:// cannot join a caller's transaction; connection= needs SQLite or PostgreSQL"
            )
        # The script publishes the job.scheduled events of the jobs it inserted itself (no
        # second round trip): each job's events go after its fields, and the envelope's
        # opening last; the script closes it around the events it keeps.
        by_job: dict[str, list[bytes]] = {}
        for event in events or ():
            by_job.setdefault(event.job_id, []).append(codec.dumps(event))  # as Event.encode()
        args: list[Any] = [len(jobs)]
        payloads: list[bytes] = []
        for job in jobs:
            fields = record.encode_job(job)
            payloads.append(fields[5])  # type: ignore[arg-type]  # encode_job puts the payload 6th
            args.append(len(fields))
            args += fields
            mine = by_job.get(job.id)
            args.append(b"" if mine is None else b",".join(mine))
        args.append(self._envelope_head if events else b"")
        return args, payloads

    def _envelope(self, events: Sequence[Event]) -> bytes:
        """``{"o": origin, "e": [event, ...]}``: events tagged with this process (whose
        listener skips them: they were delivered here already)."""
        return self._envelope_head + b",".join(codec.dumps(e) for e in events) + b"]}"

    @staticmethod
    def _enqueued(jobs: Sequence[Job], payloads: list[bytes], replies: list[Any]) -> list[Job]:
        return [
            record.copy_as_stored(job, payload) if reply is None else record.decode_job(reply)
            for job, payload, reply in zip(jobs, payloads, replies, strict=True)
        ]

    async def enqueue(
        self, jobs: Sequence[Job], *, connection: Any = None, events: Sequence[Event] | None = None
    ) -> list[Job]:
        if not jobs:
            return []
        args, payloads = self._enqueue_args(jobs, connection, events)
        replies = await self._run("enqueue", *args)
        out = self._enqueued(jobs, payloads, replies)
        if events:
            # This process's subscribers (the channel skips our own messages).
            self._deliver(inserted_events(jobs, out, events))
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
        args, payloads = self._enqueue_args(jobs, connection, events)
        if self._sync_client is None or self._sync_pid != os.getpid():
            with self._sync_lock:  # callers' threads: one client, not one each
                if self._sync_client is None or self._sync_pid != os.getpid():
                    client = driver.sync_client(self._target, self._options)
                    self._sync_scripts = {"enqueue": client.register_script(self._lua["enqueue"].text)}
                    self._sync_client, self._sync_pid = client, os.getpid()
        prefix = self.keys.prefix
        try:
            replies = self._sync_scripts["enqueue"](keys=(prefix,), args=(prefix, *args))
        except driver.ERRORS as exc:
            driver.translate(self._target, exc, "script enqueue")
        out = self._enqueued(jobs, payloads, replies)
        bound = self._bound
        local = inserted_events(jobs, out, events) if events and self._subscribers else ()
        hand_over(bound[0] if bound else None, self._wakeup, self._deliver if self._subscribers else None, local)
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

    async def transition(
        self, job_id: str, *, allowed: frozenset[JobStatus], changes: Mapping[str, Any], action: str
    ) -> Job:
        set_, del_ = record.encode_changes(changes)
        reply = await self._run(
            "transition", job_id, action, len(allowed), *sorted(allowed), len(set_), *set_, len(del_), *del_
        )
        code = int(reply[0])
        if code == 1:
            raise JobNotFound(job_id)
        if code == 2:
            raise InvalidState(job_id, reply[1].decode(), action)
        if code == 3:
            raise InvalidState(job_id, reply[1].decode(), f"{action} (unique_key held by job {reply[2].decode()})")
        job = record.decode_job(reply[1])
        if job.status is JobStatus.PENDING:
            self.notify_local()
        return job

    async def delete(self, job_id: str, *, allowed: frozenset[JobStatus]) -> Job:
        reply = await self._run("delete", job_id, *sorted(allowed))
        code = int(reply[0])
        if code == 1:
            raise JobNotFound(job_id)
        if code == 2:
            raise InvalidState(job_id, reply[1].decode(), "delete")
        return record.decode_job(reply[1])

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
        args: list[Any] = [record.to_us(now), len(outcomes)]
        for o in outcomes:
            has_result = o.status is JobStatus.COMPLETED and o.result is not None
            args += (
                o.job_id,
                o.locked_by,
                str(o.attempts),
                o.status.value,
                record.to_us(o.run_at) if o.run_at is not None else "",
                "1" if has_result else "0",
                codec.dumps(o.result) if has_result else "",
                "1" if o.last_error is not None else "0",
                o.last_error or "",
                "1" if o.refund_attempt else "0",
            )
        replies = await self._run("finish", *args)
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

    # -- wake-ups --------------------------------------------------------------------

    def _same_loop(self) -> None:
        """Forget pub/sub state made in another event loop or before a fork: it belongs
        to a loop that is not running here (the sync facade makes a new one per process)."""
        here = (asyncio.get_running_loop(), os.getpid())
        if self._bound is not None and self._bound != here:
            self._wakeup.reset()
            self._wake_listener = self._events_listener = None
        self._bound = here

    def _pubsub_client(self, channel: str) -> Callable[[], Awaitable[Any]]:
        """For a ``ChannelListener``: the client to subscribe to ``channel`` with."""

        async def open_client() -> Any:
            client = self._async()
            if self._target.kind == "cluster":
                await client.initialize()  # the slot map (a no-op once known)
            return driver.pubsub_client(self._target, client, channel, self._options)

        return open_client

    def _start_wake_listener(self) -> None:
        if self._wake_listener is None and not self._closed:
            self._wake_listener = ChannelListener(
                self._pubsub_client(self.keys.wake),
                self.keys.wake,
                on_message=lambda _data: self.notify_local(),
                on_subscribed=self.notify_local,
            )
            self._wake_listener.start()

    async def wait_for_jobs(self, timeout: float) -> bool:
        self._same_loop()
        self._start_wake_listener()
        return await self._wakeup.wait(timeout)

    def notify_local(self) -> None:
        self._wakeup.notify()

    # -- events ----------------------------------------------------------------------

    def _deliver(self, events: Sequence[Event]) -> None:
        for sub in list(self._subscribers):
            for event in events:
                if sub.queue.full():
                    break  # a stalled subscriber loses events rather than stalling workers
                sub.queue.put_nowait(event)

    def _on_events_message(self, data: bytes) -> None:
        try:
            envelope = codec.loads(data)
            if envelope.get("o") == self._origin:
                return
            events = [Event.decode(codec.dumps(e)) for e in envelope["e"]]
        except Exception:
            log.exception("undecodable event message on %s", self.keys.events)
            return
        self._deliver(events)

    def _start_events_listener(self) -> None:
        if self._closed:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # started by the first __anext__ instead
        self._same_loop()
        if self._events_listener is not None:
            return
        self._events_listener = ChannelListener(
            self._pubsub_client(self.keys.events),
            self.keys.events,
            on_message=self._on_events_message,
            on_subscribed=lambda: None,
        )
        self._events_listener.start()

    async def events_ready(self, timeout: float = 5.0) -> bool:
        """Wait until this process receives events published elsewhere (tests, servers)."""
        self._start_events_listener()
        if self._events_listener is None:
            return False
        return await self._events_listener.wait_subscribed(timeout)

    async def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        self._deliver(events)
        await self._call("PUBLISH", self._async().execute_command, "PUBLISH", self.keys.events, self._envelope(events))

    def subscribe(self) -> AsyncIterator[Event]:
        return _Subscription(self)

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
            *record.encode_job(job),
        )
        code = int(reply[0])
        if code == 0:
            return None
        if code == 1:
            self.notify_local()
            return record.copy_as_stored(job)
        return record.decode_job(reply[1])
