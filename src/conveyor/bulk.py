"""The bulk job operations of ``AsyncConveyor``, mixed into the client: requeue,
cancel or delete every job of a status (and optionally a topic) in batches.

One implementation serves the Python API, ``POST /api/jobs/bulk/{action}`` and the
CLI's ``conveyor jobs requeue|cancel|delete --status S [--topic T]``. Each batch is one
listing of matching jobs followed by the per-job operation of the client (the same
rules, events and fences as a single ``requeue``), in the store's process: no HTTP
round trip per job. A job that changed state in the meantime is stepped over, not an
error. Rules and figures: docs/api.md ("Bulk operations").

Imports only ``conveyor.core``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

from conveyor.core.errors import InvalidState, JobNotFound, ValidationError
from conveyor.core.job import Job, JobStatus
from conveyor.core.operation import ALLOWED_FROM
from conveyor.core.options import validate_topic

if TYPE_CHECKING:
    from conveyor.core.clock import Clock
    from conveyor.core.page import JobPage

logger = logging.getLogger("conveyor")

BulkAction = Literal["requeue", "cancel", "delete"]
BULK_ACTIONS: tuple[BulkAction, ...] = ("requeue", "cancel", "delete")
# Jobs read per listing: big enough that listing costs little next to the updates,
# small enough that one batch's jobs are cheap to hold.
BULK_BATCH = 500
# Per-job operations in flight at once within a batch.
BULK_CONCURRENCY = 16
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
    """``bulk_requeue``, ``bulk_cancel`` and ``bulk_delete`` over the client's own
    per-job operations."""

    if TYPE_CHECKING:
        clock: Clock

        async def list(
            self,
            *,
            status: str | JobStatus | None = None,
            topic: str | None = None,
            limit: int = 50,
            after: str | None = None,
        ) -> JobPage: ...

        async def requeue(self, job_id: str) -> Job: ...

        async def cancel(self, job_id: str) -> Job: ...

        async def delete(self, job_id: str) -> None: ...

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

    @staticmethod
    async def _bulk_one(one: Callable[[str], Awaitable[Any]], job_id: str) -> bool:
        try:
            await one(job_id)
        except (InvalidState, JobNotFound):
            return False  # changed state since the listing (or its unique key is taken)
        return True

    async def bulk(self, action: BulkAction, *, status: str | JobStatus, topic: str | None = None) -> int:
        """Apply ``action`` (requeue, cancel or delete) to every job of ``status`` and
        ``topic``, newest first, in batches; return how many it applied to. Jobs that
        leave the filter meanwhile (another operator, a worker) are stepped over."""
        st = bulk_status(action, status)
        if topic is not None:
            validate_topic(topic)
        one: Callable[[str], Awaitable[Any]] = getattr(self, action)
        done = 0
        # Keyset walk, newest first: constant cost per batch at any depth, and jobs
        # enqueued meanwhile (newer than the first listed) are not touched.
        after: str | None = None
        while True:
            page = await self.list(status=st, topic=topic, limit=BULK_BATCH, after=after)
            items: list[Job] = page.items
            # A few operations in flight at once: a store with a connection pool or
            # pipelining (PostgreSQL, Redis) overlaps their round trips; SQLite runs them
            # one after the other anyway.
            for start in range(0, len(items), BULK_CONCURRENCY):
                chunk = items[start : start + BULK_CONCURRENCY]
                applied = await asyncio.gather(*(self._bulk_one(one, job.id) for job in chunk))
                done += sum(applied)
            if not items or len(items) < BULK_BATCH:
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
