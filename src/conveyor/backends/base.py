"""The storage contract every backend implements.

A backend stores jobs, schedules and the live-worker registry, and carries wake-ups
and job events between processes. It changes jobs only by typed job operations
(``conveyor.core.operation.JobOp``) and attempt outcomes (``lifecycle.Outcome``), each
with the compare-and-set conditions it carries (allowed source states, lease fences),
by the rules of ``conveyor.core.lifecycle.apply``.

Imports only ``conveyor.core``. Driver exceptions never escape a backend: they are
translated into ``conveyor.core.errors`` (connection problems → ``BackendUnavailable``).
All datetimes in and out are timezone-aware UTC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from conveyor.core.errors import InvalidState, JobNotFound
from conveyor.core.events import Event
from conveyor.core.job import Job, JobStatus
from conveyor.core.lifecycle import Outcome
from conveyor.core.operation import JobOp
from conveyor.core.page import JobPage
from conveyor.core.schedule import Schedule


@dataclass(frozen=True, slots=True)
class Capabilities:
    # Wake-ups from other processes arrive without waiting for the poll interval.
    push_wakeups: bool = False
    # Events published here reach subscribers in other processes.
    cross_process_events: bool = False
    # enqueue(..., connection=...) joins the caller's open transaction.
    transactional_enqueue: bool = False
    # Several processes may share the store (False only for memory://).
    multi_process: bool = True
    # Implements ``BlockingEnqueue``: the sync facade inserts from the caller's thread.
    blocking_enqueue: bool = False
    # ``enqueue(events=...)`` (and ``enqueue_blocking``) publish the events with the
    # insert itself: one round trip instead of two, and ordered before any start.
    enqueue_events: bool = False
    # Implements ``FinishAndClaim``: a worker stores outcomes and claims the jobs for
    # the slots they free in one round trip.
    finish_and_claim: bool = False


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    # Jobs this worker no longer holds (lease lost: fenced off).
    lost: frozenset[str] = frozenset()
    # Jobs whose cancellation was requested while they run.
    cancel_requested: frozenset[str] = frozenset()


@dataclass(slots=True)
class WorkerInfo:
    id: str
    host: str
    pid: int
    topics: list[str]
    concurrency: int
    active_jobs: list[str] = field(default_factory=list)
    started_at: datetime | None = None
    last_heartbeat: datetime | None = None
    # Holds the store's maintenance lease (set when read by ``AsyncConveyor.workers``).
    leader: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "topics": list(self.topics),
            "concurrency": self.concurrency,
            "active_jobs": list(self.active_jobs),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "last_heartbeat": self.last_heartbeat.isoformat() if self.last_heartbeat else None,
            "leader": self.leader,
        }


@dataclass(frozen=True, slots=True)
class StoreStats:
    by_status: Mapping[str, int]
    # topic → status → count
    by_topic: Mapping[str, Mapping[str, int]]


@runtime_checkable
class Backend(Protocol):
    """The storage protocol. Every method is a coroutine unless noted."""

    capabilities: Capabilities
    url: str

    # -- lifecycle of the connection -------------------------------------------------

    async def connect(self) -> None:
        """Open connections and apply pending migrations. Idempotent."""

    async def migrate(self) -> int:
        """Apply pending schema migrations; return how many were applied. Idempotent
        and safe when several processes run it at once."""

    async def close(self) -> None:
        """Release every connection and background task. Idempotent."""

    async def ping(self) -> None:
        """One cheap round trip; raises ``BackendUnavailable`` when the store is down."""

    # -- jobs ------------------------------------------------------------------------

    async def enqueue(
        self, jobs: Sequence[Job], *, connection: Any = None, events: Sequence[Event] | None = None
    ) -> list[Job]:
        """Insert new ``pending`` jobs, all or nothing, in one transaction.

        Job ids are unique: a job whose id is already stored raises ``DuplicateJob``
        and nothing of the batch is stored. The batch's ids are distinct (the client
        refuses a batch giving one twice, ``core.job.check_distinct_ids``).

        For a job with a ``unique_key`` while another job with that key is ``pending``
        or ``processing`` (including one earlier in this same batch), nothing is
        inserted for it and that existing job is returned in its place. Returns the
        stored jobs in input order. Wakes idle workers (in this process at once, in
        other processes through the backend's notification channel).

        ``connection``: an open driver connection/transaction of the caller
        (``sqlite3.Connection`` for SQLite, psycopg ``Connection``/``AsyncConnection``
        for PostgreSQL). The jobs are written through it and become visible only when
        the caller commits. Backends without ``transactional_enqueue`` raise
        ``ValidationError("connection", ...)``.

        ``events``: the jobs' ``job.scheduled`` events. Only those of jobs actually
        inserted are published (``inserted_events``): not the event of a job whose
        unique key's holder was returned in its place. A backend with
        ``enqueue_events`` publishes them with the insert, in its transaction where it
        has one; with ``connection``, in the caller's transaction, so that they are
        delivered only if it commits. Any other backend publishes them as ``publish``
        would, after the insert.
        """

    async def get(self, job_id: str) -> Job | None:
        """The job, or None."""

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
        """One page of the jobs matching the filters, newest first (id descending), with
        ``total`` (the count of every matching job) and the ``next``/``prev`` cursors.

        ``after``: the jobs with ids below it (older); ``before``: those with ids above
        it (newer), still returned newest first. The caller never passes both, nor a
        cursor with ``offset``. A keyset page costs the same at any depth. A cursor
        need not be the id of a stored job. Build the result with
        ``conveyor.core.page.keyset_page``; the total and the page come from one
        snapshot where the store has snapshots.
        """

    async def stats(self) -> StoreStats:
        """Counts of jobs by status and by topic and status."""

    async def apply(self, op: JobOp, *, now: datetime) -> Job:
        """Apply one manual operation atomically, with the rules of
        ``conveyor.core.lifecycle.apply`` (the op's fields only; nothing else changes);
        return the updated job, or for a ``remove`` op the job as it was deleted. Wakes
        waiting workers when the job becomes ``pending``. ``apply_many`` of one op.

        Raises:
            JobNotFound: no such job.
            InvalidState: the job's status is not in ``op.allowed`` (message uses
                ``op.action``), or the op would make a second active job with the same
                ``unique_key`` (``lifecycle.reactivates``; the message names the holder).
        """

    async def apply_many(self, ops: Sequence[JobOp], *, now: datetime) -> list[Applied]:
        """Apply manual operations in order, each judged by ``apply``'s rules against
        the state the ops before it left (two ops of one job in a batch: the second
        meets the first's result), in one transaction and one round trip where the store
        allows it (PostgreSQL: an op refused by the unique index rolls the batch back,
        which is then applied op by op). Returns, per op, what ``apply`` would return or
        the ``JobNotFound`` / ``InvalidState`` it would raise: a refused op does not stop
        the others."""

    # -- the worker's side -----------------------------------------------------------

    async def claim(
        self, *, worker_id: str, topics: Sequence[str], limit: int, now: datetime, locked_until: datetime
    ) -> list[Job]:
        """Claim up to ``limit`` due jobs (``pending``, ``run_at <= now``, topic in ``topics``)
        ordered by priority descending, then run_at, then id. Each becomes ``processing``
        with attempts + 1, ``locked_by = worker_id``, ``locked_until``, ``started_at = now``.
        A job is never returned to two concurrent claims (compare-and-set / row locks).
        """

    async def next_run_at(self, *, topics: Sequence[str]) -> datetime | None:
        """Earliest run_at of the pending jobs of these topics (None if none): lets an
        idle worker sleep exactly until the next delayed job is due."""

    async def heartbeat(self, *, worker_id: str, job_ids: Sequence[str], locked_until: datetime) -> HeartbeatResult:
        """Extend the lease of the listed jobs still held by ``worker_id`` (``processing``
        and ``locked_by = worker_id``); report those no longer held and those whose
        cancellation was requested. One round trip."""

    async def finish(self, outcomes: Sequence[Outcome], *, now: datetime) -> list[Job | None]:
        """Apply attempt outcomes in one transaction (one round trip); return, per
        outcome, the updated job or None when the fence did not hold.

        The rules are ``conveyor.core.lifecycle.apply``'s: fenced on ``processing`` with
        the outcome's ``locked_by`` and ``attempts``; a ``pending`` outcome of a job
        whose cancellation was requested ends ``cancelled``; ``result`` only when
        ``completed``; ``last_error`` kept unless the outcome has one; refund, snooze
        count, the ``errors`` entry of a failure (newest ``ERRORS_KEPT``),
        ``finished_at``, lease cleared, ``updated_at = now``. Of two outcomes of one job
        in a batch only the first can hold the fence.
        """

    async def expired(self, *, now: datetime, limit: int) -> list[Job]:
        """Up to ``limit`` ``processing`` jobs whose lease ended before ``now`` (their
        worker is gone), the longest expired first (by ``locked_until``; the order of
        equal leases is unspecified)."""

    async def prune(self, *, finished_before: datetime, limit: int) -> int:
        """Delete up to ``limit`` finished jobs with ``finished_at < finished_before``."""

    async def count_finished(self, *, since: datetime, bucket_seconds: int) -> list[tuple[datetime, str, int]]:
        """How many jobs finished (``completed``, ``failed``, ``cancelled``) at or after
        ``since``, per bucket of ``bucket_seconds`` (aligned on the epoch) and status:
        ``(bucket start, status, count)`` rows, in no particular order. Read through the
        index of finished jobs by ``finished_at`` (what ``prune`` uses): the dashboard's
        throughput history, kept in the store so that it survives a server restart."""

    async def wait_for_jobs(self, timeout: float) -> bool:
        """Wait until new jobs may be due (an enqueue in this or another process, a
        requeue, a retry made due) or ``timeout`` seconds pass. True if woken early.
        Backends without ``push_wakeups`` only wake for enqueues in this process."""

    def notify_local(self) -> None:
        """Wake this process's waiters now (not a coroutine)."""

    # -- events ----------------------------------------------------------------------

    async def publish(self, events: Sequence[Event]) -> None:
        """Deliver events to every subscriber of this store, in this and other processes."""

    def events_wanted(self) -> bool:
        """Whether events published now may reach a subscriber, in this process or
        another (not a coroutine; callable from any thread). False lets a publisher skip
        building them. Once any ``subscribe()`` has returned, in any process, every later
        call returns True; True when in doubt."""

    async def subscribe(self) -> AsyncIterator[Event]:
        """A live subscription: returns once every event published after it returns,
        by any process, will be delivered to the iterator (no settling time). Ends when
        the backend closes; ``aclose()`` ends it.

        Raises:
            BackendUnavailable: the store's event channel could not be joined in time.
        """

    # -- live workers ----------------------------------------------------------------

    async def save_worker(self, info: WorkerInfo) -> None:
        """Insert or replace a worker's registry entry (upsert by id)."""

    async def remove_worker(self, worker_id: str) -> None: ...

    async def list_workers(self, *, alive_since: datetime) -> list[WorkerInfo]:
        """Workers whose last heartbeat is at or after ``alive_since``; older entries may
        be deleted on the way."""

    # -- the maintenance leader ------------------------------------------------------

    async def acquire_leadership(self, *, holder: str, now: datetime, until: datetime) -> bool:
        """Take or renew the store's one maintenance lease: atomically, when no one
        holds it, its holder's lease ended (``expires <= now``) or ``holder`` holds it,
        make ``holder`` the leader until ``until`` and return True; otherwise change
        nothing and return False. Of any number of concurrent callers, at most one holds
        an unexpired lease at a time. Kept in the store itself (a row, a key), never in a
        connection's session, so it works through a transaction-pooling proxy."""

    async def release_leadership(self, *, holder: str) -> None:
        """End the lease if ``holder`` holds it (another can take it at once); else a no-op."""

    async def current_leader(self, *, now: datetime) -> str | None:
        """The holder of the unexpired maintenance lease, or None."""

    # -- schedules -------------------------------------------------------------------

    async def save_schedule(self, schedule: Schedule) -> Schedule:
        """Insert or replace by name. ``last_fired_at`` of an existing schedule is kept
        unless the caller's value is newer; return the stored schedule."""

    async def add_schedule(self, schedule: Schedule) -> Schedule | None:
        """Insert only: the stored schedule, or None (nothing written) when a schedule
        of that name exists. Atomic: of concurrent adds of one name, one wins."""

    async def get_schedule(self, name: str) -> Schedule | None: ...

    async def list_schedules(self) -> list[Schedule]:
        """All schedules by name."""

    async def delete_schedule(self, name: str) -> bool:
        """True if it existed."""

    async def set_schedule_enabled(self, name: str, enabled: bool, *, next_run_at: datetime | None) -> Schedule | None:
        """Enable/disable and set next_run_at; None if there is no such schedule."""

    async def fire_schedule(
        self, name: str, *, fire_at: datetime, next_run_at: datetime | None, job: Job
    ) -> Job | None:
        """Exactly-once firing: in one transaction, if the schedule exists, is enabled and
        its ``last_fired_at`` is NULL or earlier than ``fire_at``, set ``last_fired_at =
        fire_at`` and ``next_run_at``, insert ``job`` and return it; otherwise change
        nothing and return None. Several schedulers may race; one wins per instant."""


@runtime_checkable
class BlockingEnqueue(Protocol):
    """Optional: a backend whose enqueue can run, blocking, on any thread (SQLite: its
    statements block anyway). The sync facade uses it to skip the hop to its loop thread."""

    def accepts_blocking(self, jobs: Sequence[Job], connection: Any) -> bool:
        """Whether ``enqueue_blocking`` takes these jobs; the caller uses ``enqueue``
        (on the backend's loop) for the others."""

    def enqueue_blocking(
        self, jobs: Sequence[Job], *, connection: Any = None, events: Sequence[Event] | None = None
    ) -> list[Job]:
        """``Backend.enqueue``'s contract, thread-safe, from a thread other than the
        backend's event loop; wakes local waiters through their loop. ``events`` (the
        jobs' ``job.scheduled`` events) are published as ``publish`` would, with the
        insert where the store allows it."""


Applied = Job | JobNotFound | InvalidState
"""What ``Backend.apply_many`` says of one op: the job it left (for a ``remove`` op, the
deleted job), or why it was refused."""


def applied(result: Applied) -> Job:
    """The job of one ``apply_many`` result, or its error raised: ``Backend.apply``."""
    if isinstance(result, Job):
        return result
    raise result


def wakes(ops: Sequence[JobOp], results: Sequence[Applied]) -> bool:
    """Whether ``apply_many`` made a job ``pending``: waiting workers are to be woken."""
    return any(
        isinstance(job, Job) and job.status is JobStatus.PENDING and not op.remove
        for op, job in zip(ops, results, strict=True)
    )


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """``Backend.claim``'s arguments, for a claim made together with ``finish``."""

    worker_id: str
    topics: Sequence[str]
    limit: int
    locked_until: datetime


@runtime_checkable
class FinishAndClaim(Protocol):
    """Optional: a backend that stores outcomes and claims the next jobs in one round
    trip (Redis: one script). A worker uses it, when the capability is set, to claim
    the jobs for the slots a batch of outcomes frees; with any other backend it calls
    ``finish``, then ``claim`` once the slots are free."""

    async def finish_and_claim(
        self, outcomes: Sequence[Outcome], *, now: datetime, claim: ClaimRequest
    ) -> tuple[list[Job | None], list[Job]]:
        """``finish(outcomes, now=now)``, then ``claim(**claim, now=now)``, atomically:
        returns both results."""


def inserted_events(jobs: Sequence[Job], stored: Sequence[Job], events: Sequence[Event]) -> Sequence[Event]:
    """``events`` without those of jobs an enqueue did not insert: a job whose unique
    key's holder came back in its place (``stored`` is ``enqueue``'s result)."""
    if all(job.unique_key is None for job in jobs):
        return events
    kept = {job.id for job, got in zip(jobs, stored, strict=True) if got.id == job.id}
    return [e for e in events if e.job_id in kept]


def finished_bucket(at: datetime, bucket_seconds: int) -> datetime:
    """The start of the bucket of ``bucket_seconds`` (aligned on the epoch) that holds
    ``at``: ``count_finished``'s bucket keys."""
    return datetime.fromtimestamp(int(at.timestamp()) // bucket_seconds * bucket_seconds, UTC)
