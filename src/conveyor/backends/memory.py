"""MemoryBackend: the reference semantics of the storage protocol, in one process.

Real, not a mock: used for fast tests and embedded use. Not shared between processes.
Every method runs without awaiting in between, so each is atomic on the event loop.
Like the real stores it keeps indexes up to date as jobs change, so that claims,
listings and stats() cost the same with a million jobs as with ten: per topic and
priority a claim heap, and per status and topic the ids in order, whose lengths are
the counts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

from sortedcontainers import SortedList

from conveyor.backends.base import (
    Applied,
    Capabilities,
    HeartbeatResult,
    StoreStats,
    WorkerInfo,
    applied,
    finished_bucket,
    inserted_events,
    wakes,
)
from conveyor.backends.wakeup import LocalWakeup, hand_over
from conveyor.core import codec, lifecycle, operation
from conveyor.core.errors import DuplicateJob, JobNotFound, ValidationError
from conveyor.core.events import Event
from conveyor.core.job import ACTIVE, FINISHED, Job, JobStatus
from conveyor.core.lifecycle import Outcome
from conveyor.core.operation import KEEP, JobOp
from conveyor.core.page import JobPage, keyset_page
from conveyor.core.schedule import Schedule

_SUBSCRIBER_QUEUE = 10_000
P = ParamSpec("P")
T = TypeVar("T")


def _locked(
    method: Callable[Concatenate[MemoryBackend, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[MemoryBackend, P], Coroutine[Any, Any, T]]:
    """Run a method under the store's lock. Safe on a coroutine only because no method
    here suspends while holding it: the lock guards against ``enqueue_blocking`` callers
    on other threads, not against other coroutines."""

    async def run(self: MemoryBackend, /, *args: P.args, **kwargs: P.kwargs) -> T:
        with self._lock:
            return await method(self, *args, **kwargs)

    return run


class MemoryBackend:
    capabilities = Capabilities(
        push_wakeups=True,
        cross_process_events=False,
        transactional_enqueue=False,
        multi_process=False,
        blocking_enqueue=True,
        enqueue_events=True,
    )

    def __init__(self, url: str = "memory://", **_: Any) -> None:
        self.url = url
        self._jobs: dict[str, Job] = {}
        # topic → priority → heap of (run_at, id): the claim index (see _push_pending).
        self._pending: dict[str, dict[int, list[tuple[datetime, str]]]] = {}
        # (status, topic) → the ids of its jobs in order (ids sort by creation time), and
        # the same per status, per topic and for every job (None for "any"): listings
        # walk them from either end or a cursor, totals and stats are their lengths.
        self._ids: dict[tuple[JobStatus | None, str | None], SortedList[str]] = {}
        # (topic, unique_key) → id of the active job holding it (keys are scoped per topic).
        self._unique: dict[tuple[str, str], str] = {}
        self._workers: dict[str, WorkerInfo] = {}
        self._leader: tuple[str, datetime] | None = None  # the maintenance lease: holder, expires
        self._schedules: dict[str, Schedule] = {}
        self._wakeup = LocalWakeup()
        self._subscribers: list[asyncio.Queue[Event | None]] = []
        self._closed = False
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None

    # Copies keep callers from mutating stored state (as with a real store).
    @staticmethod
    def _copy(job: Job) -> Job:
        clone = job.copy()
        # JSON values are immutable to the caller only if they are fresh objects.
        if isinstance(job.payload, dict | list):
            clone.payload = codec.loads(codec.dumps(job.payload))
        if isinstance(job.result, dict | list):
            clone.result = codec.loads(codec.dumps(job.result))
        clone.metadata = dict(job.metadata)
        clone.errors = [dict(e) for e in job.errors]
        return clone

    def _push_pending(self, job: Job) -> None:
        """Index a pending job for claims: per topic and priority, a heap by (run_at, id),
        so that a delayed job of a higher priority never hides due ones of a lower one.
        Entries go stale when the job changes; readers drop stale ones (``_head``)."""
        heap = self._pending.setdefault(job.topic, {}).setdefault(job.priority, [])
        heapq.heappush(heap, (job.run_at, job.id))

    def _head(self, priority: int, heap: list[tuple[datetime, str]]) -> tuple[datetime, str] | None:
        """The earliest pending job of one priority level, dropping stale entries."""
        while heap:
            run_at, job_id = heap[0]
            job = self._jobs.get(job_id)
            if (
                job is not None
                and job.status is JobStatus.PENDING
                and job.priority == priority
                and job.run_at == run_at
            ):
                return heap[0]
            heapq.heappop(heap)
        return None

    def _levels(self, topics: Sequence[str]) -> list[tuple[int, list[tuple[datetime, str]]]]:
        return [level for t in set(topics) for level in self._pending.get(t, {}).items()]

    def _index(self, job_id: str, status: JobStatus, topic: str, *, add: bool) -> None:
        """Add a job's id to (or remove it from) the ordered ids of its status and topic."""
        for key in ((status, topic), (status, None), (None, topic), (None, None)):
            ids = self._ids.get(key)
            if add:
                if ids is None:
                    ids = self._ids[key] = SortedList()
                ids.add(job_id)
            elif ids is not None:
                ids.discard(job_id)

    def _restatus(self, job_id: str, topic: str, old: JobStatus, new: JobStatus) -> None:
        if old is not new:
            for key in ((old, topic), (old, None)):
                self._ids[key].discard(job_id)
            for key in ((new, topic), (new, None)):
                self._ids.setdefault(key, SortedList()).add(job_id)

    def _ids_of(self, statuses: Sequence[JobStatus]) -> list[str]:
        return [i for s in statuses for i in self._ids.get((s, None), ())]

    async def connect(self) -> None:
        self._closed = False
        self._loop = asyncio.get_running_loop()

    async def migrate(self) -> int:
        return 0

    async def close(self) -> None:
        self._closed = True
        for q in self._subscribers:
            q.put_nowait(None)
        self._subscribers.clear()

    async def ping(self) -> None:
        return None

    def _release_unique(self, job: Job) -> None:
        if job.unique_key is not None and self._unique.get((job.topic, job.unique_key)) == job.id:
            del self._unique[(job.topic, job.unique_key)]

    async def enqueue(
        self, jobs: Sequence[Job], *, connection: Any = None, events: Sequence[Event] | None = None
    ) -> list[Job]:
        with self._lock:
            out = self._insert(jobs, connection)
        if events:
            self._deliver(inserted_events(jobs, out, events))
        self.notify_local()
        return out

    def accepts_blocking(self, jobs: Sequence[Job], connection: Any) -> bool:
        return True

    def enqueue_blocking(
        self, jobs: Sequence[Job], *, connection: Any = None, events: Sequence[Event] | None = None
    ) -> list[Job]:
        """``enqueue`` from another thread (the sync facade's caller)."""
        with self._lock:
            out = self._insert(jobs, connection)
        delivered = inserted_events(jobs, out, events) if events and self._subscribers else ()
        hand_over(self._loop, self._wakeup, self._deliver if self._subscribers else None, delivered)
        return out

    def _insert(self, jobs: Sequence[Job], connection: Any) -> list[Job]:
        if connection is not None:
            raise ValidationError("connection", "memory:// has no transactions; connection= needs SQLite or PostgreSQL")
        taken = next((job.id for job in jobs if job.id in self._jobs), None)
        if taken is not None:
            raise DuplicateJob(taken)
        out: list[Job] = []
        for job in jobs:
            if job.unique_key is not None and (job.topic, job.unique_key) in self._unique:
                out.append(self._copy(self._jobs[self._unique[(job.topic, job.unique_key)]]))
                continue
            # Round-trip through JSON like every other store does.
            stored = job.copy()
            stored.payload = codec.loads(codec.dumps(job.payload))
            stored.metadata = codec.loads(codec.dumps(job.metadata))
            self._jobs[job.id] = stored
            self._index(job.id, stored.status, stored.topic, add=True)
            self._push_pending(stored)
            if job.unique_key is not None:
                self._unique[(job.topic, job.unique_key)] = job.id
            out.append(self._copy(stored))
        return out

    @_locked
    async def get(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        return self._copy(job) if job else None

    @_locked
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
        ids = self._ids.get((status, topic)) or SortedList()
        size = len(ids)
        # Walk the ordered ids away from the cursor (or the newest end): limit + 1 of them.
        if before is not None:
            start = ids.bisect_right(before)
            walked, beyond = list(ids.islice(start, start + limit + 1)), start > 0
        elif after is not None:
            end = ids.bisect_left(after)
            walked, beyond = list(ids.islice(max(0, end - limit - 1), end, reverse=True)), end < size
        else:
            end = max(0, size - offset)
            walked, beyond = list(ids.islice(max(0, end - limit - 1), end, reverse=True)), offset > 0
        jobs = [self._copy(self._jobs[i]) for i in walked]
        return keyset_page(jobs, total=size, limit=limit, offset=offset, before=before, beyond=beyond)

    @_locked
    async def stats(self) -> StoreStats:
        by_status = {s.value: 0 for s in JobStatus}
        by_topic: dict[str, dict[str, int]] = {}
        for (status, topic), ids in self._ids.items():
            if status is not None and topic is not None and ids:
                by_status[status.value] += len(ids)
                by_topic.setdefault(topic, {})[status.value] = len(ids)
        return StoreStats(by_status=by_status, by_topic=by_topic)

    def _store(self, before: Job, after: Job) -> Job:
        """Replace ``before`` (the stored job) by ``after``; keep the indexes right."""
        if before.status in ACTIVE and after.status not in ACTIVE:
            self._release_unique(before)
        elif lifecycle.reactivates(before, after):
            self._unique[(after.topic, after.unique_key)] = after.id  # type: ignore[index]
        self._jobs[after.id] = after
        self._restatus(after.id, after.topic, before.status, after.status)
        if after.status is JobStatus.PENDING:
            self._push_pending(after)
        return self._copy(after)

    async def apply(self, op: JobOp, *, now: datetime) -> Job:
        return applied((await self.apply_many([op], now=now))[0])

    @_locked
    async def apply_many(self, ops: Sequence[JobOp], *, now: datetime) -> list[Applied]:
        out = [self._apply(op, now) for op in ops]
        if wakes(ops, out):
            self.notify_local()
        return out

    def _apply(self, op: JobOp, now: datetime) -> Applied:
        job = self._jobs.get(op.job_id)
        if job is None:
            return JobNotFound(op.job_id)
        new = lifecycle.apply(job, op, now)
        if new is None:
            return operation.refused(op, job.status.value)
        if op.remove:
            self._release_unique(job)
            del self._jobs[job.id]
            self._index(job.id, job.status, job.topic, add=False)
            return new
        if lifecycle.reactivates(job, new):
            holder = self._unique.get((new.topic, new.unique_key))  # type: ignore[arg-type]
            if holder is not None and holder != job.id:
                return operation.refused(op, job.status.value, holder=holder)
        if op.payload is not KEEP:
            new.payload = codec.loads(codec.dumps(op.payload))
        if new.status is JobStatus.COMPLETED:
            new.result = codec.loads(codec.dumps(new.result))
        return self._store(job, new)

    @_locked
    async def claim(
        self, *, worker_id: str, topics: Sequence[str], limit: int, now: datetime, locked_until: datetime
    ) -> list[Job]:
        out: list[Job] = []
        levels = self._levels(topics)
        while len(out) < limit:
            # Due jobs only; among levels, the best (priority, run_at, id) first.
            best: tuple[tuple[int, datetime, str], list[tuple[datetime, str]]] | None = None
            for priority, heap in levels:
                head = self._head(priority, heap)
                if head is not None and head[0] <= now and (best is None or (-priority, *head) < best[0]):
                    best = ((-priority, *head), heap)
            if best is None:
                break
            job = self._jobs[heapq.heappop(best[1])[1]]
            self._restatus(job.id, job.topic, job.status, JobStatus.PROCESSING)
            job.status = JobStatus.PROCESSING
            job.attempts += 1
            job.locked_by = worker_id
            job.locked_until = locked_until
            job.started_at = now
            job.updated_at = now
            out.append(self._copy(job))
        return out

    @_locked
    async def next_run_at(self, *, topics: Sequence[str]) -> datetime | None:
        heads = [head[0] for priority, heap in self._levels(topics) if (head := self._head(priority, heap))]
        return min(heads) if heads else None

    @_locked
    async def heartbeat(self, *, worker_id: str, job_ids: Sequence[str], locked_until: datetime) -> HeartbeatResult:
        lost, cancel = set(), set()
        for job_id in job_ids:
            job = self._jobs.get(job_id)
            if job is None or job.status is not JobStatus.PROCESSING or job.locked_by != worker_id:
                lost.add(job_id)
                continue
            job.locked_until = locked_until
            if job.cancel_requested:
                cancel.add(job_id)
        return HeartbeatResult(lost=frozenset(lost), cancel_requested=frozenset(cancel))

    @_locked
    async def finish(self, outcomes: Sequence[Outcome], *, now: datetime) -> list[Job | None]:
        out: list[Job | None] = []
        woke = False
        for o in outcomes:
            job = self._jobs.get(o.job_id)
            new = None if job is None else lifecycle.apply(job, o, now)
            if job is None or new is None:
                out.append(None)
                continue
            if new.status is JobStatus.COMPLETED:
                new.result = codec.loads(codec.dumps(new.result))
            woke = woke or new.status is JobStatus.PENDING
            out.append(self._store(job, new))
        if woke:
            self.notify_local()
        return out

    @_locked
    async def expired(self, *, now: datetime, limit: int) -> list[Job]:
        processing = (self._jobs[i] for i in self._ids_of([JobStatus.PROCESSING]))
        found = [j for j in processing if j.locked_until is not None and j.locked_until < now]
        found.sort(key=lambda j: (j.locked_until, j.id))
        return [self._copy(j) for j in found[:limit]]

    @_locked
    async def prune(self, *, finished_before: datetime, limit: int) -> int:
        finished = (self._jobs[i] for i in self._ids_of(tuple(FINISHED)))
        doomed = [j for j in finished if j.finished_at is not None and j.finished_at < finished_before][:limit]
        for job in doomed:
            del self._jobs[job.id]
            self._index(job.id, job.status, job.topic, add=False)
        return len(doomed)

    @_locked
    async def count_finished(self, *, since: datetime, bucket_seconds: int) -> list[tuple[datetime, str, int]]:
        finished = (self._jobs[i] for i in self._ids_of(tuple(FINISHED)))
        counts = Counter(
            (finished_bucket(j.finished_at, bucket_seconds), j.status.value)
            for j in finished
            if j.finished_at is not None and j.finished_at >= since
        )
        return [(start, status, n) for (start, status), n in counts.items()]

    async def wait_for_jobs(self, timeout: float) -> bool:
        return await self._wakeup.wait(timeout)

    def notify_local(self) -> None:
        self._wakeup.notify()

    def events_wanted(self) -> bool:
        return bool(self._subscribers)  # events never leave this process

    async def publish(self, events: Sequence[Event]) -> None:
        self._deliver(events)

    def _deliver(self, events: Sequence[Event]) -> None:
        for q in list(self._subscribers):
            for event in events:
                if q.full():
                    break  # a stalled subscriber loses events rather than stalling workers
                q.put_nowait(event)

    async def subscribe(self) -> AsyncIterator[Event]:
        # Registered now, not at the first __anext__: nothing published after this call is missed.
        q: asyncio.Queue[Event | None] = asyncio.Queue(_SUBSCRIBER_QUEUE)
        self._subscribers.append(q)
        return _Subscription(q, self._subscribers)

    async def save_worker(self, info: WorkerInfo) -> None:
        self._workers[info.id] = dataclasses.replace(info, topics=list(info.topics), active_jobs=list(info.active_jobs))

    async def remove_worker(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)

    async def list_workers(self, *, alive_since: datetime) -> list[WorkerInfo]:
        for wid in [w.id for w in self._workers.values() if w.last_heartbeat and w.last_heartbeat < alive_since]:
            del self._workers[wid]
        return sorted((dataclasses.replace(w) for w in self._workers.values()), key=lambda w: w.id)

    # -- the maintenance leader ----------------------------------------------------------

    async def acquire_leadership(self, *, holder: str, now: datetime, until: datetime) -> bool:
        if self._leader is not None and self._leader[0] != holder and self._leader[1] > now:
            return False
        self._leader = (holder, until)
        return True

    async def release_leadership(self, *, holder: str) -> None:
        if self._leader is not None and self._leader[0] == holder:
            self._leader = None

    async def current_leader(self, *, now: datetime) -> str | None:
        return self._leader[0] if self._leader is not None and self._leader[1] > now else None

    async def save_schedule(self, schedule: Schedule) -> Schedule:
        old = self._schedules.get(schedule.name)
        stored = dataclasses.replace(schedule, options=dict(schedule.options))
        if old is not None:
            stored.created_at = old.created_at
            if old.last_fired_at and (stored.last_fired_at is None or stored.last_fired_at < old.last_fired_at):
                stored.last_fired_at = old.last_fired_at
        self._schedules[schedule.name] = stored
        return dataclasses.replace(stored)

    async def add_schedule(self, schedule: Schedule) -> Schedule | None:
        if schedule.name in self._schedules:
            return None
        return await self.save_schedule(schedule)

    async def get_schedule(self, name: str) -> Schedule | None:
        s = self._schedules.get(name)
        return dataclasses.replace(s) if s else None

    async def list_schedules(self) -> list[Schedule]:
        return [dataclasses.replace(self._schedules[n]) for n in sorted(self._schedules)]

    async def delete_schedule(self, name: str) -> bool:
        return self._schedules.pop(name, None) is not None

    async def set_schedule_enabled(self, name: str, enabled: bool, *, next_run_at: datetime | None) -> Schedule | None:
        s = self._schedules.get(name)
        if s is None:
            return None
        s.enabled = enabled
        s.next_run_at = next_run_at
        return dataclasses.replace(s)

    @_locked
    async def fire_schedule(
        self, name: str, *, fire_at: datetime, next_run_at: datetime | None, job: Job
    ) -> Job | None:
        s = self._schedules.get(name)
        if s is None or not s.enabled or (s.last_fired_at is not None and s.last_fired_at >= fire_at):
            return None
        s.last_fired_at = fire_at
        s.next_run_at = next_run_at
        return (await self.enqueue([job]))[0]


class _Subscription:
    def __init__(self, queue: asyncio.Queue[Event | None], registry: list[asyncio.Queue[Event | None]]) -> None:
        self._queue = queue
        self._registry = registry

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> Event:
        event = await self._queue.get()
        if event is None:
            self.close()
            raise StopAsyncIteration
        return event

    def close(self) -> None:
        if self._queue in self._registry:
            self._registry.remove(self._queue)

    async def aclose(self) -> None:
        self.close()
