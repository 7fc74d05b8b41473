"""``AsyncConveyor.find_jobs`` and ``resolve_job_id``, mixed into the client: the
operator's searches (pending views, jobs of a schedule, an id suffix, payload text).

A search walks the jobs of its status (all jobs without one) newest first, through
the store's keyset listing in batches, and keeps those ``JobQuery`` matches. It is a
scan: each request reads at most ``scan`` jobs and hands back a cursor to go on from,
so its cost is bounded whatever the store holds. Its ``total`` is exact when the
filters are only status and topic (the store's counts) or when the scan read every job
they select; otherwise it is an estimate from the share of matches among the jobs read
(``total_exact`` False), and ``exact_total=True`` counts by reading every one of them.
Reference: docs/api.md ("Search").

Imports only ``conveyor.core``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.core.errors import JobNotFound, ValidationError
from conveyor.core.job import Job, JobStatus
from conveyor.core.query import JobQuery, PendingView

if TYPE_CHECKING:
    from datetime import datetime

    from conveyor.core.clock import Clock
    from conveyor.core.page import JobPage

SCAN_BATCH = 500
DEFAULT_SCAN = 10_000
MAX_SCAN = 100_000
# A job id is a UUID (36 characters); shorter input is taken as the end of one.
FULL_ID_LENGTH = 36
MIN_SUFFIX = 4


@dataclass(frozen=True, slots=True)
class FoundJobs:
    """One page of a search, newest first.

    Attributes:
        items: the matching jobs (at most the limit asked for).
        next: pass as ``after=`` to go on searching older jobs; None when every job
            was read.
        scanned: how many jobs this request read.
        total: how many jobs match, over every page; an estimate when ``total_exact``
            is False.
        total_exact: False when ``total`` was estimated from the jobs read.
    """

    items: list[Job]
    next: str | None
    scanned: int
    limit: int = field(default=50)
    total: int = 0
    total_exact: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": [j.to_dict() for j in self.items],
            "next": self.next,
            "scanned": self.scanned,
            "limit": self.limit,
            "total": self.total,
            "total_exact": self.total_exact,
        }


class FinderMethods:
    """Searches over the client's own ``list`` and ``get``."""

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

        async def get(self, job_id: str) -> Job: ...

    async def find_jobs(
        self,
        *,
        status: str | JobStatus | None = None,
        topic: str | None = None,
        view: PendingView | None = None,
        schedule: str | None = None,
        id_suffix: str | None = None,
        text: str | None = None,
        limit: int = 50,
        after: str | None = None,
        scan: int = DEFAULT_SCAN,
        exact_total: bool = False,
    ) -> FoundJobs:
        """Jobs matching every filter given, newest first (a bounded scan).

        Args:
            status, topic: as for ``list``.
            view: ``due``, ``scheduled`` or ``retrying`` (pending jobs only).
            schedule: only jobs made by this schedule.
            id_suffix: only jobs whose id ends with this.
            text: only jobs whose payload's JSON contains this (case-insensitive).
            limit: the most jobs to return (1-100).
            after: a job id: search jobs older than it (``next`` of the last page).
            scan: the most jobs to read in this request (1-100,000).
            exact_total: count the matches exactly, reading every job of the status
                and topic (not bounded by ``scan``); else ``total`` is estimated when
                counting would need that read.

        Raises:
            ValidationError: a bad filter (the message names it).
        """
        query = JobQuery(view=view, schedule=schedule, id_suffix=id_suffix, text=text)
        if view is not None:
            if status not in (None, JobStatus.PENDING, JobStatus.PENDING.value):
                raise ValidationError("view", "a pending view needs status pending (or none)")
            status = JobStatus.PENDING
        if not isinstance(limit, int) or not 1 <= limit <= 100:
            raise ValidationError("limit", "expected an integer from 1 to 100")
        if not isinstance(scan, int) or not 1 <= scan <= MAX_SCAN:
            raise ValidationError("scan", f"expected an integer from 1 to {MAX_SCAN}")
        now = self.clock.now()
        found: list[Job] = []
        scanned = matched = 0
        cursor = after
        beyond = False  # a match read after the page was full
        while True:
            batch = min(SCAN_BATCH, scan - scanned)
            page = await self.list(status=status, topic=topic, limit=batch, after=cursor)
            for job in page.items:
                scanned += 1
                cursor = job.id
                if query.matches(job, now):
                    matched += 1
                    if len(found) < limit:
                        found.append(job)
                    else:
                        beyond = True
            # The batch is read to its end: its matches past the page count for the total.
            if page.next is None or scanned >= scan or len(found) == limit:
                break
        if len(found) == limit and (beyond or page.next is not None):
            more: str | None = found[-1].id  # more may match further on
        else:
            more = cursor if page.next is not None else None  # the scan budget ran out, or every job was read
        read_all = after is None and page.next is None  # every job of the status and topic
        total, exact = await self._search_total(query, status, topic, read_all, scanned, matched, exact_total, now)
        return FoundJobs(found, more, scanned, limit, total=total, total_exact=exact)

    async def _search_total(
        self,
        query: JobQuery,
        status: str | JobStatus | None,
        topic: str | None,
        read_all: bool,
        scanned: int,
        matched: int,
        exact_total: bool,
        now: datetime,
    ) -> tuple[int, bool]:
        """The search's total and whether it is exact (see the module docstring)."""
        if query == JobQuery():
            return (await self.list(status=status, topic=topic, limit=1)).total, True
        if read_all:
            return matched, True
        if exact_total:
            count, cursor = 0, None
            while True:
                page = await self.list(status=status, topic=topic, limit=SCAN_BATCH, after=cursor)
                count += sum(query.matches(job, now) for job in page.items)
                if page.next is None:
                    return count, True
                cursor = page.next
        population = (await self.list(status=status, topic=topic, limit=1)).total
        return (round(population * matched / scanned) if scanned else 0), False

    async def resolve_job_id(self, id_or_suffix: str) -> str:
        """The full id of the job ``id_or_suffix`` names: a full id, or the end of one
        (at least 4 characters, e.g. the 10 the dashboard shows) that only one job has.

        Raises:
            JobNotFound: no job has that id or id ending.
            ValidationError: on ``id``, when several jobs end that way.
        """
        text = id_or_suffix.strip()
        if len(text) >= FULL_ID_LENGTH or len(text) < MIN_SUFFIX:
            return text
        try:
            return (await self.get(text)).id
        except JobNotFound:
            pass
        found = await self.find_jobs(id_suffix=text.lstrip("…"), limit=2, scan=MAX_SCAN)
        if not found.items:
            raise JobNotFound(id_or_suffix)
        if len(found.items) > 1:
            ids = ", ".join(j.id for j in found.items)
            raise ValidationError("id", f"{id_or_suffix!r} ends more than one job id ({ids}, ...): give more of it")
        return found.items[0].id
