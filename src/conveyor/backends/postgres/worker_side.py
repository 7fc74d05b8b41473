"""The worker's side of the PostgreSQL backend: its round trip (events, attempt
outcomes and a claim in one statement), "when is the next job due", heartbeats and the
maintenance pass's queries.

Imports only ``conveyor.core``, ``conveyor.backends.base`` and this package.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from psycopg.rows import DictRow

from conveyor.backends.base import ClaimRequest, HeartbeatResult
from conveyor.backends.postgres.db import Database
from conveyor.backends.postgres.rows import job_from_row, json_or_none, unstorable, utc
from conveyor.core import codec
from conveyor.core.errors import BackendError, BackendUnavailable
from conveyor.core.job import Job, JobStatus, claim_order
from conveyor.core.lifecycle import Outcome, error_entry

logger = logging.getLogger("conveyor.backends.postgres")


_NO_CLAIM: dict[str, Any] = {"topics": [], "limit": 0, "worker_id": "", "locked_until": None}


def outcomes_json(batch: Sequence[Outcome], now: datetime) -> str:
    """The ``outcomes`` parameter of ``take_work``: one JSON array of objects, the keys
    of finish_jobs' record (migration 0012)."""
    return codec.dumps_str(
        [
            {
                "id": o.job_id,
                "locked_by": o.locked_by,
                "attempts": o.attempts,
                "status": JobStatus(o.status).value,
                "run_at": None if o.run_at is None else o.run_at.isoformat(),
                "result": json_or_none(o.result),
                "last_error": o.last_error,
                "refund": o.refund_attempt,
                "snooze": o.snooze,
                "entry": codec.dumps_str(error_entry(o, now)) if o.failure else None,
            }
            for o in batch
        ]
    )


async def take_work(
    db: Database, *, now: datetime, outcomes: Sequence[Outcome], claim: ClaimRequest | None, async_ack: bool
) -> tuple[list[DictRow], list[Job]]:
    """One round trip (the ``take_work`` query): the events waiting to ride along, the
    outcomes, the claim. Returns the rows the outcomes were stored on and the jobs
    claimed, in claim order. Under ``async_ack`` only a round trip that acknowledges
    and claims nothing commits asynchronously: a claim PostgreSQL forgot in a crash
    could let a second worker start a job the first still runs."""
    params: dict[str, Any] = {
        "now": now,
        "async_ack": async_ack and bool(outcomes) and claim is None,
        "outcomes": outcomes_json(outcomes, now),
    }
    if claim is None:
        params.update(_NO_CLAIM)
    else:
        params.update(
            topics=list(claim.topics), limit=claim.limit, worker_id=claim.worker_id, locked_until=claim.locked_until
        )
    rows = await db.fetch_with_events("take_work", params)
    stored = [r for r in rows if not r["claimed"]]
    jobs = [job_from_row(r) for r in rows if r["claimed"]]
    # RETURNING does not keep the claim order.
    jobs.sort(key=claim_order)
    return stored, jobs


async def claim(db: Database, *, now: datetime, request: ClaimRequest) -> list[Job]:
    _, jobs = await take_work(db, now=now, outcomes=(), claim=request, async_ack=False)
    return jobs


async def next_run_at(db: Database, *, topics: Sequence[str]) -> datetime | None:
    rows = await db.fetch("next_run_at", {"topics": list(topics)})
    return utc(rows[0]["run_at"]) if rows else None


async def heartbeat(db: Database, *, worker_id: str, job_ids: Sequence[str], locked_until: datetime) -> HeartbeatResult:
    params = {"locked_until": locked_until, "ids": list(job_ids), "worker_id": worker_id}
    rows = await db.fetch("heartbeat", params)
    held = {r["id"] for r in rows}
    return HeartbeatResult(
        lost=frozenset(j for j in job_ids if j not in held),
        cancel_requested=frozenset(r["id"] for r in rows if r["cancel_requested"]),
    )


async def finish(
    db: Database,
    outcomes: Sequence[Outcome],
    *,
    now: datetime,
    async_ack: bool,
    claim: ClaimRequest | None = None,
) -> tuple[list[Job | None], list[Job]]:
    """Stores the outcomes (one per job and batch: a second one could never pass the
    fence) and, in the same round trip, makes the claim if one is given. Returns per
    outcome the job as stored (None when the fence refused it), and the jobs claimed."""
    seen: set[str] = set()
    batch: list[Outcome] = []
    for o in outcomes:
        if o.job_id not in seen:
            seen.add(o.job_id)
            batch.append(o)
    try:
        rows, claimed = await take_work(db, now=now, outcomes=batch, claim=claim, async_ack=async_ack)
    except BackendUnavailable:
        raise
    except BackendError as exc:
        # Something in the batch cannot be stored: one bad outcome must not hold back
        # the others, so each is tried alone, and one that still fails is recorded as a
        # failure that says why instead of being retried forever. The claim waits for
        # the next round trip.
        logger.warning("storing %d outcomes failed (%s); storing them one by one", len(batch), exc)
        rows, claimed = [], []
        for o in batch:
            try:
                rows += (await take_work(db, now=now, outcomes=[o], claim=None, async_ack=async_ack))[0]
            except BackendUnavailable:
                raise
            except BackendError as item_exc:
                logger.error("job %s: its outcome cannot be stored (%s); recording a failure", o.job_id, item_exc)
                bad = [unstorable(o, item_exc)]
                rows += (await take_work(db, now=now, outcomes=bad, claim=None, async_ack=async_ack))[0]
    updated = {job.id: job for job in map(job_from_row, rows)}
    out: list[Job | None] = []
    used: set[str] = set()
    for o in outcomes:
        out.append(updated.get(o.job_id) if o.job_id not in used else None)
        used.add(o.job_id)
    return out, claimed


async def expired(db: Database, *, now: datetime, limit: int) -> list[Job]:
    return [job_from_row(r) for r in await db.fetch("expired_jobs", {"now": now, "limit": limit})]


async def prune(db: Database, *, finished_before: datetime, limit: int) -> int:
    async with db.conn() as conn:
        cur = await conn.execute(db.sql("prune_jobs"), {"finished_before": finished_before, "limit": limit})
        row = await cur.fetchone()
        pruned = int(row["pruned"]) if row else 0
        # The maintenance pass keeps the counters' deltas short (see docs/postgres.md).
        await conn.execute(db.sql("compact_counts"))
        return pruned


async def count_finished(db: Database, *, since: datetime, bucket_seconds: int) -> list[tuple[datetime, str, int]]:
    rows = await db.fetch("count_finished", {"bucket": bucket_seconds, "since": since})
    return [(datetime.fromtimestamp(r["bucket"] * bucket_seconds, UTC), r["status"], int(r["n"])) for r in rows]
