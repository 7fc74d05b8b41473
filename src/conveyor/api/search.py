"""``GET /api/jobs/search``: the operator's searches (read role): a pending view (due,
scheduled, retrying), the jobs of a schedule, a job id or its end, payload text.
A bounded scan through ``AsyncConveyor.find_jobs``; reference: docs/api.md ("Search").

Mounted by ``create_app`` BEFORE the routes of single jobs, whose ``/api/jobs/{id}``
would otherwise take ``search`` for a job id.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from conveyor.api.auth import READERS, Role, require
from conveyor.api.routes import StatusQuery, job_json
from conveyor.api.schemas import ErrorResponse, JobOut
from conveyor.bulk import STATUS_ALIASES
from conveyor.client import AsyncConveyor
from conveyor.core.errors import JobNotFound
from conveyor.core.query import PendingView
from conveyor.finder import DEFAULT_SCAN, FULL_ID_LENGTH, MAX_SCAN

router = APIRouter()
ReadRole = Annotated[Role, Depends(require(READERS))]


class FoundOut(BaseModel):
    items: list[JobOut]
    next: str | None = Field(description="pass as after= to search older jobs; null when every job was read")
    scanned: int = Field(description="jobs read by this request")
    limit: int
    total: int = Field(description="jobs matching every filter, over every page; an estimate when total_exact is false")
    total_exact: bool = Field(
        description="false when total was estimated from the share of matches among the jobs read; "
        "pass exact_total=true to count them all"
    )


@router.get(
    "/api/jobs/search",
    response_model=FoundOut,
    responses={422: {"model": ErrorResponse, "description": "a bad filter"}},
    summary="Search jobs: pending views, a schedule's jobs, an id or its end, payload text",
    tags=["jobs"],
)
async def search_jobs(
    request: Request,
    _role: ReadRole,
    job_id: Annotated[
        str | None, Query(alias="id", min_length=4, max_length=200, description="a job id, or its end")
    ] = None,
    text: Annotated[str | None, Query(min_length=1, max_length=200, description="text in the payload")] = None,
    view: Annotated[PendingView | None, Query(description="pending jobs: due, scheduled or retrying")] = None,
    schedule: Annotated[str | None, Query(min_length=1, max_length=200, description="made by this schedule")] = None,
    status: Annotated[StatusQuery | None, Query(description="filter by status")] = None,
    topic: Annotated[str | None, Query(min_length=1, max_length=200, description="filter by topic")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="most jobs returned")] = 50,
    after: Annotated[
        str | None, Query(min_length=1, max_length=200, description="search jobs older than this id")
    ] = None,
    scan: Annotated[int, Query(ge=1, le=MAX_SCAN, description="most jobs read by this request")] = DEFAULT_SCAN,
    exact_total: Annotated[
        bool,
        Query(
            description="count the matches exactly, reading every job of the status and topic (slow on a large store)"
        ),
    ] = False,
) -> JSONResponse:
    """A scan of the jobs of ``status`` (every job without one), newest first, keeping
    those that match every filter given; at most ``scan`` jobs are read per request
    (continue with ``after=next``). A full job id is looked up directly."""
    client: AsyncConveyor = request.app.state.client
    now = client.clock.now()
    st = STATUS_ALIASES.get(status, status) if status is not None else None
    wanted = job_id.strip().lstrip("…") if job_id is not None else None
    if wanted is not None and len(wanted) >= FULL_ID_LENGTH:
        try:
            job = await client.get(wanted)
        except JobNotFound:
            items: list[dict[str, Any]] = []
        else:
            items = [job_json(job, now)]
        return JSONResponse(
            {
                "items": items,
                "next": None,
                "scanned": len(items),
                "limit": limit,
                "total": len(items),
                "total_exact": True,
            }
        )
    found = await client.find_jobs(
        status=st,
        topic=topic,
        view=view,
        schedule=schedule,
        id_suffix=wanted,
        text=text,
        limit=limit,
        after=after,
        scan=scan,
        exact_total=exact_total,
    )
    return JSONResponse(
        {
            "items": [job_json(j, now) for j in found.items],
            "next": found.next,
            "scanned": found.scanned,
            "limit": limit,
            "total": found.total,
            "total_exact": found.total_exact,
        }
    )
