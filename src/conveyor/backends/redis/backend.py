"""RedisBackend: the storage protocol on Redis, one atomic Lua script per state change.

Imports only ``conveyor.core``, ``conveyor.backends.base`` and this package. Every
method is one round trip (one EVALSHA or one MULTI); every state change runs inside
one script, so a crash between two commands cannot lose or duplicate a job. Scripts
are loaded once per connection and re-loaded when Redis answers NOSCRIPT (after a
restart or SCRIPT FLUSH). redis-py exceptions never leave this module: connection
problems become ``BackendUnavailable``, anything else ``BackendError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from conveyor.backends.base import Capabilities, HeartbeatResult, StoreStats, WorkerInfo, inserted_events
from conveyor.backends.wakeup import LocalWakeup, hand_over
from conveyor.core import codec, lifecycle
from conveyor.core.errors import (
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    InvalidState,
    JobNotFound,
    MissingDependencyError,
    ValidationError,
)
from conveyor.core.events import Event
from conveyor.core.job import Job, JobStatus
from conveyor.core.lifecycle import Outcome
from conveyor.core.schedule import Schedule

try:
    import hiredis  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("hiredis", "redis") from exc

from conveyor.backends.redis import lua, record
from conveyor.backends.redis.connection import BlockingConnection, Endpoint, RespConnection, RespError
from conveyor.backends.redis.keys import DEFAULT_PREFIX, LAYOUT_VERSION, Keys
from conveyor.backends.redis.pubsub import ChannelListener
from conveyor.backends.redis.push import PushReceiver

log = logging.getLogger("conveyor.backends.redis")

T = TypeVar("T")

_SUBSCRIBER_QUEUE = 10_000
_STATUSES = [s.value for s in JobStatus]
_UNAVAILABLE = (OSError, TimeoutError)  # ConnectionError is an OSError
# Error replies that mean "Redis cannot serve right now", not "the command is wrong".
_TRANSIENT_REPLIES = ("LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "READONLY", "CLUSTERDOWN")


def _parse_url(url: str, options: Mapping[str, Any]) -> tuple[str, str]:
    """(URL for redis-py without conveyor's own query parameters, key prefix)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = str(options.get("prefix") or "")
    kept = []
    for name, value in query:
        if name == "prefix":
            prefix = prefix or value
        else:
            kept.append((name, value))
    if parts.path not in ("", "/"):
        db = parts.path.lstrip("/")
        if not db.isdigit():
            raise ConfigurationError(f"invalid Redis URL {url!r}: the path must be a database number like /0")
    return urlunsplit(parts._replace(query=urlencode(kept))), prefix or DEFAULT_PREFIX


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


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
        url: ``redis://[user:password@]host:port/db[?prefix=name]`` (``rediss://`` for TLS).
        prefix: key prefix (wins over ``?prefix=``); default ``conveyor``.
        **options: ``socket_timeout`` (seconds a command may wait for its reply, default
            30) and ``socket_connect_timeout`` (default 5); other options are ignored.
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
        client_url, prefix = _parse_url(url, options)
        try:
            self.keys = Keys(prefix)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from exc
        self._display_url = _safe_url(url)
        self._connect_timeout = float(options.get("socket_connect_timeout") or 5.0)
        self._conn = RespConnection(
            Endpoint.from_url(client_url),
            connect_timeout=self._connect_timeout,
            command_timeout=float(options.get("socket_timeout") or 30.0),
        )
        self._endpoint = Endpoint.from_url(client_url)
        self._blocking = BlockingConnection(
            self._endpoint, connect_timeout=self._connect_timeout, command_timeout=self._conn.command_timeout
        )
        self._scripts = lua.scripts()
        # Tags this instance's event messages so that its own listener skips them:
        # local subscribers already got them directly from publish().
        self._origin = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._envelope_head = b'{"o":' + codec.dumps(self._origin) + b',"e":['  # _envelope's opening
        self._wakeup = LocalWakeup()
        self._wake_listener: ChannelListener | None = None
        self._events_listener: ChannelListener | None = None
        self._push = PushReceiver(self._endpoint, self.keys, self._run, self.notify_local)
        self._subscribers: list[_Subscription] = []
        self._bound: tuple[asyncio.AbstractEventLoop, int] | None = None
        self._closed = False

    # -- connection ------------------------------------------------------------------

    def _unavailable(self, exc: BaseException) -> NoReturn:
        raise BackendUnavailable(f"redis at {self._display_url} is unavailable: {exc}") from exc

    def _reply_error(self, exc: RespError, what: str) -> NoReturn:
        if str(exc).startswith(_TRANSIENT_REPLIES):
            self._unavailable(exc)
        raise BackendError(f"redis {what} failed: {exc}") from exc

    async def _command(self, *args: Any) -> Any:
        try:
            return await self._conn.execute(*args)
        except RespError as exc:
            self._reply_error(exc, str(args[0]))
        except _UNAVAILABLE as exc:
            self._unavailable(exc)

    async def _run(self, name: str, *args: Any, poll: bool = False) -> Any:
        """EVALSHA a script (prefix first); load it and run again on NOSCRIPT.
        ``poll``: see ``RespConnection.execute``."""
        script = self._scripts[name]
        conn = self._conn
        try:
            try:
                return await conn.execute("EVALSHA", script.sha, 0, self.keys.prefix, *args, poll=poll)
            except RespError as exc:
                if not exc.noscript:
                    raise
                # Nothing ran: safe to load and run again (SCRIPT FLUSH or a restart).
                await conn.execute("SCRIPT", "LOAD", script.text)
                return await conn.execute("EVALSHA", script.sha, 0, self.keys.prefix, *args)
        except RespError as exc:
            self._reply_error(exc, f"script {name}")
        except _UNAVAILABLE as exc:
            self._unavailable(exc)

    async def connect(self) -> None:
        self._closed = False
        await self.migrate()

    async def migrate(self) -> int:
        """Load the scripts and record (or upgrade to) the layout version. Redis has no
        schema: returns 1 the first time a prefix is used or when its layout was
        upgraded, then 0."""
        commands: list[tuple[Any, ...]] = [("SCRIPT", "LOAD", script.text) for script in self._scripts.values()]
        commands.append(("EVALSHA", self._scripts["migrate"].sha, 0, self.keys.prefix, LAYOUT_VERSION))
        try:
            replies = await self._conn.pipeline(commands)
        except _UNAVAILABLE as exc:
            self._unavailable(exc)
        for reply in replies:
            if isinstance(reply, RespError):
                if str(reply).startswith("CONVEYOR layout version"):  # migrate.lua: a newer layout
                    raise ConfigurationError(
                        f"redis prefix {self.keys.prefix!r}: {str(reply).removeprefix('CONVEYOR ')}"
                    )
                self._reply_error(reply, "migrate")
        return int(replies[-1])

    async def close(self) -> None:
        self._closed = True
        for listener in (self._wake_listener, self._events_listener):
            if listener is not None:
                await listener.stop()
        self._wake_listener = self._events_listener = None
        await self._push.close()
        for sub in list(self._subscribers):
            if sub.queue.full():
                sub.queue.get_nowait()
            sub.queue.put_nowait(None)
        self._subscribers.clear()
        with contextlib.suppress(Exception):
            await self._conn.close()
        self._blocking.close()

    async def ping(self) -> None:
        await self._command("PING")

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
        replies = await self._run("enqueue", *args, poll=True)  # a client's call: its latency matters
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
        over a blocking socket of its own: no hop to the loop thread."""
        if not jobs:
            return []
        args, payloads = self._enqueue_args(jobs, connection, events)
        script = self._scripts["enqueue"]
        conn = self._blocking
        try:
            try:
                replies = conn.execute("EVALSHA", script.sha, 0, self.keys.prefix, *args)
            except RespError as exc:
                if not exc.noscript:
                    raise
                conn.execute("SCRIPT", "LOAD", script.text)
                replies = conn.execute("EVALSHA", script.sha, 0, self.keys.prefix, *args)
        except RespError as exc:
            self._reply_error(exc, "script enqueue")
        except _UNAVAILABLE as exc:
            self._unavailable(exc)
        out = self._enqueued(jobs, payloads, replies)
        bound = self._bound
        local = inserted_events(jobs, out, events) if events and self._subscribers else ()
        hand_over(bound[0] if bound else None, self._wakeup, self._deliver if self._subscribers else None, local)
        return out

    async def get(self, job_id: str) -> Job | None:
        flat = await self._command("HGETALL", self.keys.job(job_id))
        return record.decode_job(flat) if flat else None

    async def list_jobs(
        self, *, status: JobStatus | None = None, topic: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[int, list[Job]]:
        reply = await self._run(
            "list_jobs",
            status.value if status is not None else "",
            topic or "",
            max(limit, 0),
            max(offset, 0),
            *_STATUSES,
        )
        if limit <= 0:
            return int(reply[0]), []
        return int(reply[0]), [record.decode_job(flat) for flat in reply[1:]]

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
        pushed = self._push.take(worker_id, limit, now)
        if pushed:
            return pushed
        wanted = list(dict.fromkeys(topics))
        replies = await self._run(
            "claim", worker_id, limit, record.to_us(now), record.to_us(locked_until), len(wanted), *wanted
        )
        jobs = [record.decode_job(flat) for flat in replies]
        self._same_loop()
        lease_us = (locked_until - now) // timedelta(microseconds=1)
        self._push.claimed(worker_id, wanted, limit - len(jobs), lease_us)
        return jobs

    async def next_run_at(self, *, topics: Sequence[str]) -> datetime | None:
        if not topics:
            return None
        reply = await self._run("next_run_at", *dict.fromkeys(topics))
        return None if reply is None else record.from_us(reply)

    async def heartbeat(self, *, worker_id: str, job_ids: Sequence[str], locked_until: datetime) -> HeartbeatResult:
        held = self._push.held(worker_id)  # pushed, not taken yet: their leases run too
        if not job_ids and not held:
            return HeartbeatResult()
        lost, cancel = await self._run("heartbeat", worker_id, record.to_us(locked_until), *job_ids, *held)
        result = HeartbeatResult(
            lost=frozenset(x.decode() for x in lost), cancel_requested=frozenset(x.decode() for x in cancel)
        )
        if held:
            self._push.renewed(worker_id, locked_until, result.lost)
        return result

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

    # -- wake-ups --------------------------------------------------------------------

    def _same_loop(self) -> None:
        """Forget pub/sub state made in another event loop or before a fork: it belongs
        to a loop that is not running here (the sync facade makes a new one per process)."""
        here = (asyncio.get_running_loop(), os.getpid())
        if self._bound is not None and self._bound != here:
            self._wakeup.reset()
            self._wake_listener = self._events_listener = None
            self._push.forget()
        self._bound = here

    def _start_wake_listener(self) -> None:
        if self._wake_listener is None and not self._closed:
            self._wake_listener = ChannelListener(
                self._endpoint,
                self.keys.wake,
                on_message=lambda _data: self.notify_local(),
                on_subscribed=self.notify_local,
            )
            self._wake_listener.start()

    async def wait_for_jobs(self, timeout: float) -> bool:
        self._same_loop()
        self._start_wake_listener()
        if await self._push.before_wait(timeout):
            return True
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
            self._endpoint, self.keys.events, on_message=self._on_events_message, on_subscribed=lambda: None
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
        await self._command("PUBLISH", self.keys.events, self._envelope(events))

    def subscribe(self) -> AsyncIterator[Event]:
        return _Subscription(self)

    # -- live workers ----------------------------------------------------------------

    async def save_worker(self, info: WorkerInfo) -> None:
        score = record.to_us(info.last_heartbeat) if info.last_heartbeat else "+inf"
        await self._run("workers", "save", info.id, score, record.encode_worker(info))

    async def remove_worker(self, worker_id: str) -> None:
        untaken = await self._push.unregister(worker_id)
        if untaken:
            now = datetime.now(UTC)
            await self.finish([lifecycle.released(j, worker_id, now) for j in untaken], now=now)
        await self._run("workers", "remove", worker_id)

    async def list_workers(self, *, alive_since: datetime) -> list[WorkerInfo]:
        replies = await self._run("workers", "list", record.to_us(alive_since))
        return sorted((record.decode_worker(raw) for raw in replies), key=lambda w: w.id)

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
