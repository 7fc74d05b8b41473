"""The arguments of the Redis backend's scripts: jobs, outcomes and job operations
encoded as the strings enqueue.lua, finish.lua and apply.lua read, and enqueue.lua's
replies decoded. Pure: no I/O.

Imports only ``conveyor.core`` and this package.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from conveyor.backends.redis import record
from conveyor.core import codec
from conveyor.core.errors import DuplicateJob, ValidationError
from conveyor.core.events import Event
from conveyor.core.job import Job, JobStatus
from conveyor.core.lifecycle import ERRORS_KEPT, Outcome, error_entry
from conveyor.core.operation import KEEP, JobOp


def enqueue_args(
    jobs: Sequence[Job], connection: Any, events: Sequence[Event] | None, envelope_head: bytes
) -> tuple[list[Any], list[bytes]]:
    """enqueue.lua's arguments (after the prefix) and each job's encoded payload."""
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
    args: list[Any] = []
    payloads: list[bytes] = []
    for job in jobs:
        payload = codec.dumps(job.payload)
        payloads.append(payload)
        args.append(record.encode_job(job, payload))
        mine = by_job.get(job.id)
        args.append(b"" if mine is None else b",".join(mine))
    args.append(envelope_head if events else b"")
    return args, payloads


def enqueued(jobs: Sequence[Job], payloads: list[bytes], replies: list[Any]) -> list[Job]:
    """The jobs as stored, from enqueue.lua's replies."""
    if replies and isinstance(replies[0], bytes):  # {'duplicate', id}: nothing stored
        raise DuplicateJob(replies[1].decode())
    return [
        record.copy_as_stored(job, payload) if reply is None else record.decode_job(reply)
        for job, payload, reply in zip(jobs, payloads, replies, strict=True)
    ]


def finish_args(outcomes: Sequence[Outcome], now: datetime) -> tuple[Any, ...]:
    """finish.lua's arguments (after the prefix) for a batch of outcomes."""
    # The whole batch as ONE script argument (a JSON array of outcomes, 12 strings
    # each): redis-py's asyncio client packs every argument in Python.
    rows = []
    for o in outcomes:
        has_result = o.status is JobStatus.COMPLETED and o.result is not None
        rows.append(
            (
                o.job_id,
                o.locked_by,
                str(o.attempts),
                o.status.value,
                record.to_us(o.run_at) if o.run_at is not None else "",
                "1" if has_result else "0",
                codec.dumps_str(o.result) if has_result else "",
                "1" if o.last_error is not None else "0",
                o.last_error or "",
                "1" if o.refund_attempt else "0",
                "1" if o.snooze else "0",
                codec.dumps_str(error_entry(o, now)) if o.failure else "",
            )
        )
    return record.to_us(now), ERRORS_KEPT, codec.dumps(rows)


def op_args(op: JobOp) -> tuple[str, ...]:
    """The 17 strings of one op in apply.lua's list ('' keeps a field)."""
    has_result = op.status is JobStatus.COMPLETED and op.result is not None
    return (
        op.job_id,
        "" if op.status is None else op.status.value,
        "1" if has_result else "0",
        codec.dumps_str(op.result) if has_result else "",
        "1" if op.restart else "0",
        "" if op.run_at is None else record.to_us(op.run_at),
        "0" if op.payload is KEEP else "1",
        "" if op.payload is KEEP else codec.dumps_str(op.payload),
        "" if op.priority is None else str(op.priority),
        "" if op.max_retries is None else str(op.max_retries),
        "0" if op.metadata is None else "1",
        "" if op.metadata is None else codec.dumps_str(op.metadata),
        "0" if op.last_error is None else "1",
        op.last_error or "",
        "" if op.cancel_requested is None else "1" if op.cancel_requested else "0",
        "1" if op.remove else "0",
        ",".join(sorted(s.value for s in op.allowed)),
    )
