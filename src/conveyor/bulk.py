"""The bulk job operations of ``AsyncConveyor``, mixed into the client: requeue,
cancel or delete every job of a status (and optionally a topic) in batches.

One implementation serves the Python API, ``POST /api/jobs/bulk/{action}`` and the
CLI's ``conveyor jobs requeue|cancel|delete --status S [--topic T]``. Each batch is one
listing of matching jobs followed by one ``Backend.apply_many`` of their operations
(one transaction; the same rules, fences and events as a single ``requeue``), in the
store's process: no HTTP round trip per job. A job that changed state in the meantime
is stepped over, not an error. Rules and figures: docs/api.md ("Bulk operations").

Imports only ``conveyor.core`` and ``conveyor.backends.base``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from conveyor.core import operation
from conveyor.core.errors import ValidationError
from conveyor.core.events import Event, job_event, scheduled_event
from conveyor.core.job import Job, JobStatus
from conveyor.core.operation import ALLOWED_FROM, JobOp
from conveyor.core.options import validate_topic

if TYPE_CHECKING:
    from conveyor.backends.base import Backend
    from conveyor.core.clock import Clock

logger = logging.getLogger("conveyor")

BulkAction = Literal["requeue", "cancel", "delete"]
BULK_ACTIONS: tuple[BulkAction, ...] = ("requeue", "cancel", "delete")
# Jobs per listing and per apply_many: big enough that listing costs little next to
# the updates, small enough that one batch's jobs and transaction are cheap to hold.
BULK_BATCH = 500
# The original API's status names, accepted wherever a status filter is.
STATUS_ALIASES = {"running": JobStatus.PROCESSING.value, "success": JobStatus.COMPLETED.value}


def bulk_status(action: BulkAction, status: object) -> JobStatus:
    """The status filter of a bulk ``action``: required, one the action applies to
    (``running``/``success`` name processing/completed).

    Raises:
        ValidationError: on ``status`` (unknown, or the action never applies to it).
    """
    if action not in BULK_ACTIONS:
        raise ValidationError("action", f"unknown bulk action {action!r}: expected {', '.join(BULK_ACTIONS)}")
    if status is None or status == "":
        raise ValidationError("status", "is required: the status of the jobs to act on")
    text = STATUS_ALIASES.get(str(status), str(status))
    try:
        parsed = JobStatus(text)
    except ValueError:
        names = ", ".join([*(s.value for s in JobStatus), *STATUS_ALIASES])
        raise ValidationError("status", f"unknown status {status!r}: expected one of {names}") from None
    allowed = ALLOWED_FROM[action] | ({JobStatus.PROCESSING} if action == "cancel" else set())
    if parsed not in allowed:
        can = ", ".join(sorted(s.value for s in allowed))
        raise ValidationError("status", f"{action} applies to {can} jobs, not {parsed.value}")
    return parsed


class BulkMethods:
    """``bulk_requeue``, ``bulk_cancel`` and ``bulk_delete`` over the store's
    ``apply_many``."""

    if TYPE_CHECKING:
        clock: Clock

        async def connect(self) -> Backend: ...

        def emit(self, events: Iterable[Event]) -> None: ...

    async def bulk_requeue(self, *, status: str | JobStatus = JobStatus.FAILED, topic: str | None = None) -> int:
        """Requeue every ``failed`` (or ``cancelled``) job, of ``topic`` if given.

        Returns:
            How many jobs were requeued.

        Raises:
            ValidationError: a status requeue does not apply to, or a bad topic.
        """
        return await self.bulk("requeue", status=status, topic=topic)

    async def bulk_cancel(self, *, status: str | JobStatus = JobStatus.PENDING, topic: str | None = None) -> int:
        """Cancel every ``pending`` job, or ask every ``processing`` one to stop.

        Returns:
            How many jobs were cancelled or asked to stop.

        Raises:
            ValidationError: a status cancel does not apply to, or a bad topic.
        """
        return await self.bulk("cancel", status=status, topic=topic)

    async def bulk_delete(self, *, status: str | JobStatus, topic: str | None = None) -> int:
        """Delete every job of ``status`` (any but ``processing``), of ``topic`` if given.

        Returns:
            How many jobs were deleted.

        Raises:
            ValidationError: ``processing`` (a running job cannot be deleted), or a bad topic.
        """
        return await self.bulk("delete", status=status, topic=topic)

    async def bulk(self, action: BulkAction, *, status: str | JobStatus, topic: str | None = None) -> int:
        """Apply ``action`` (requeue, cancel or delete) to every job of ``status`` and
        ``topic``, newest first, in batches; return how many it applied to. Jobs that
        leave the filter meanwhile (another operator, a worker) are stepped over."""
        st = bulk_status(action, status)
        if topic is not None:
            validate_topic(topic)
        store = await self.connect()
        done = 0
        # Keyset walk, newest first: constant cost per batch at any depth, and jobs
        # enqueued meanwhile (newer than the first listed) are not touched.
        after: str | None = None
        while True:
            page = await store.list_jobs(status=st, topic=topic, limit=BULK_BATCH, after=after)
            items: list[Job] = page.items
            if items:
                now = self.clock.now()
                ops = [_bulk_op(action, st, job.id, now) for job in items]
                # A refused op: changed state since the listing (or its unique key is taken).
                changed = [j for j in await store.apply_many(ops, now=now) if isinstance(j, Job)]
                done += len(changed)
                self.emit(_bulk_events(action, st, changed, now))
            if len(items) < BULK_BATCH:
                break
            after = items[-1].id
        logger.info(
            "%s: %d %s jobs%s",
            action,
            done,
            st.value,
            f" of {topic}" if topic else "",
            extra={"event": f"bulk_{action}", "count": done, "status": st.value, "topic": topic},
        )
        return done


def _bulk_op(action: BulkAction, status: JobStatus, job_id: str, now: datetime) -> JobOp:
    """The operation of ``action`` on a job listed with ``status``."""
    if action == "requeue":
        return operation.requeue(job_id, now)
    if action == "delete":
        return operation.delete(job_id)
    if status is JobStatus.PROCESSING:
        return operation.request_cancel(job_id)
    return operation.cancel(job_id)


def _bulk_events(action: BulkAction, status: JobStatus, jobs: list[Job], now: datetime) -> list[Event]:
    """What the single operations publish: job.scheduled for a requeue, job.cancelled
    for a pending job cancelled (a running one's attempt ends it later)."""
    if action == "requeue":
        return [scheduled_event(job, now, requeued=True) for job in jobs]
    if action == "cancel" and status is JobStatus.PENDING:
        return [job_event("job.cancelled", job, now) for job in jobs]
    return []
