"""One page of a job listing and the keyset cursors that lead to its neighbours. Pure.

Listings are newest first (job ids sort by creation time). A page is reached either by
``offset`` (cost grows with the offset) or by a keyset cursor (constant cost at any
depth): ``after=<id>`` gives the jobs just older than that id, ``before=<id>`` the jobs
just newer, still newest first. A page's ``next`` is the ``after`` cursor of the page
of older jobs, ``prev`` the ``before`` cursor of the page of newer ones; each is None
when no matching job lies beyond that edge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.core.job import Job


@dataclass(frozen=True, slots=True)
class JobPage:
    """A page of jobs, newest first.

    Attributes:
        total: how many jobs match the filters (over every page).
        items: the jobs of this page.
        limit: the page size asked for.
        offset: how many matching jobs were skipped (0 for a keyset page).
        next: pass as ``after=`` for the page of older jobs; None on the last page.
        prev: pass as ``before=`` for the page of newer jobs; None on the first page.
        total_exact: False when ``total`` is an estimate (no backend estimates today:
            each keeps exact counts).
    """

    total: int
    items: list[Job]
    limit: int
    offset: int
    next: str | None = None
    prev: str | None = None
    total_exact: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "total_exact": self.total_exact,
            "items": [j.to_dict() for j in self.items],
            "limit": self.limit,
            "offset": self.offset,
            "next": self.next,
            "prev": self.prev,
        }


def keyset_page(
    walked: Sequence[Job],
    *,
    total: int,
    limit: int,
    offset: int = 0,
    before: str | None = None,
    beyond: bool,
) -> JobPage:
    """Build a page from the rows a backend read in walking order.

    Args:
        walked: up to ``limit + 1`` matching jobs read away from the cursor: newest first
            for an offset or ``after`` page (ids below the cursor), oldest first for a
            ``before`` page (ids above it). The extra row only tells that more follow.
        total: the count of matching jobs.
        limit: the page size.
        offset: the offset of an offset page (0 for keyset pages).
        before: the ``before`` cursor, if the page was read with one.
        beyond: whether a matching job lies behind the cursor: for an ``after`` page a
            job with id >= the cursor, for a ``before`` page one with id <= it, for an
            offset page ``offset > 0``.
    """
    rows = list(walked[:limit])
    more = len(walked) > limit
    if before is None:
        items, older, newer = rows, more, beyond
    else:
        items, older, newer = rows[::-1], beyond, more
    return JobPage(
        total=total,
        items=items,
        limit=limit,
        offset=offset,
        next=items[-1].id if items and older else None,
        prev=items[0].id if items and newer else None,
    )
