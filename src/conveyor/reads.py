"""The read methods of ``AsyncConveyor``, mixed into the client: one job, a page of
jobs, counts, and the store's live job events."""

from __future__ import annotations

import builtins
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from conveyor.core.errors import JobNotFound, ValidationError
from conveyor.core.events import Event
from conveyor.core.job import Job, JobStatus
from conveyor.core.options import validate_int, validate_text, validate_topic
from conveyor.core.page import JobPage
from conveyor.core.text import is_storable

if TYPE_CHECKING:
    from conveyor.backends.base import Backend, WorkerInfo

MAX_LIST_LIMIT = 1000


class ReadMethods:
    """``get``, ``list``, ``stats``, ``subscribe`` and ``events``, through ``connect()``."""

    started_at: float

    if TYPE_CHECKING:

        async def connect(self) -> Backend: ...

        async def workers(self) -> builtins.list[WorkerInfo]: ...

    async def get(self, job_id: str) -> Job:
        """The job with this id.

        Args:
            job_id: the job's id.

        Returns:
            The job as stored.

        Raises:
            JobNotFound: no job has this id (or it was pruned).
        """
        job = await (await self.connect()).get(job_id_arg(job_id))
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def list(
        self,
        *,
        status: str | JobStatus | None = None,
        topic: str | None = None,
        limit: int = 50,
        offset: int = 0,
        after: str | None = None,
        before: str | None = None,
    ) -> JobPage:
        """One page of jobs, newest first, with the total count of matching jobs.

        Args:
            status: only jobs in this state (``pending``, ``processing``, ``completed``,
                ``failed``, ``cancelled``).
            topic: only jobs of this topic.
            limit: page size (1-1000).
            offset: matching jobs to skip (cost grows with it; prefer cursors).
            after: a job id: the page of jobs older than it (``page.next`` of the page
                before); constant cost at any depth.
            before: a job id: the page of jobs newer than it (``page.prev``).

        Returns:
            The page: ``items``, ``total``, ``limit``, ``offset``, ``next``, ``prev``.

        Raises:
            ValidationError: a bad filter, ``after`` with ``before``, or a cursor with
                an offset.
        """
        st = _status(status)
        if topic is not None:
            validate_topic(topic)
        limit = validate_int(limit, field="limit", low=1, high=MAX_LIST_LIMIT)
        offset = validate_int(offset, field="offset", low=0, high=2**62)
        if after is not None:
            after = _cursor(after, "after")
        if before is not None:
            before = _cursor(before, "before")
            if after is not None:
                raise ValidationError("before", "give after or before, not both")
        if offset and (after is not None or before is not None):
            raise ValidationError("offset", "cannot be combined with an after/before cursor")
        store = await self.connect()
        return await store.list_jobs(status=st, topic=topic, limit=limit, offset=offset, after=after, before=before)

    async def stats(self) -> dict[str, Any]:
        """Job counts: one key per status, ``by_status``, ``by_topic`` (topic → counts per
        status), ``total``, ``workers`` (live ones) and this client's ``uptime`` (s)."""
        store = await self.connect()
        s = await store.stats()
        workers = await self.workers()
        by_status = {st.value: int(s.by_status.get(st.value, 0)) for st in JobStatus}
        return {
            **by_status,
            "by_status": by_status,
            "by_topic": {t: dict(c) for t, c in sorted(s.by_topic.items())},
            "total": sum(by_status.values()),
            "workers": len(workers),
            "uptime": round(time.time() - self.started_at, 3),
        }

    async def subscribe(self) -> AsyncIterator[Event]:
        """A subscription, registered on return, to every job event on this store from
        any process. Iterate it with ``async for``; ``aclose()`` ends it. On PostgreSQL
        a process's first one returns after ~0.25 s: until then another process may
        still skip building events nobody heard (docs/postgres.md)."""
        store = await self.connect()
        return await store.subscribe()

    async def events(self) -> AsyncIterator[Event]:
        """Every job event on this store, from any process, from the first iteration on."""
        async for event in await self.subscribe():
            yield event


def job_id_arg(job_id: object) -> str:
    """A job id argument, checked.

    Raises:
        ValidationError: not a string of 1-200 characters.
        JobNotFound: text no store holds (a NUL, a lone surrogate): no job has that id.
    """
    if not isinstance(job_id, str) or not job_id or len(job_id) > 200:
        raise ValidationError("id", f"invalid job id {job_id!r}")
    if not is_storable(job_id):
        raise JobNotFound(job_id)
    return job_id


def _cursor(value: object, field: str) -> str:
    # Any text up to 200 characters (it need not be a stored id), but no NUL: no store's
    # text column holds one, and the store's own error must not be the answer.
    return validate_text(value, field=field, max_length=200)


def _status(status: object) -> JobStatus | None:
    if status is None:
        return None
    try:
        return JobStatus(str(status))
    except ValueError:
        raise ValidationError(
            "status", f"unknown status {status!r}: expected one of {', '.join(s.value for s in JobStatus)}"
        ) from None
