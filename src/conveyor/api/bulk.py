"""``POST /api/jobs/bulk/{requeue|cancel|delete}``: act on every job of a status (and
optionally a topic) server-side, in batches, through ``AsyncConveyor.bulk`` (the one
implementation the CLI uses too). Admin only. Body ``{"status": ..., "topic": ...}``,
answer ``{"count": n}``. Reference: docs/api.md ("Bulk operations").

Mounted by ``create_app`` BEFORE the routes of single jobs, whose
``/api/jobs/{id}/cancel`` would otherwise take ``bulk`` for a job id.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from conveyor.api.auth import ADMINS, Role, require
from conveyor.api.jsonbody import StrictJsonRoute
from conveyor.api.schemas import ErrorResponse
from conveyor.bulk import BulkAction
from conveyor.client import AsyncConveyor

router = APIRouter(route_class=StrictJsonRoute)
AdminRole = Annotated[Role, Depends(require(ADMINS))]


class BulkRequest(BaseModel):
    """Which jobs a bulk operation acts on."""

    model_config = ConfigDict(extra="forbid")

    status: str = Field(
        description="required: failed or cancelled (requeue); pending or processing/running (cancel); "
        "any but processing (delete); running and success name processing and completed",
    )
    topic: str | None = Field(default=None, min_length=1, max_length=200, description="only jobs of this topic")


class BulkOut(BaseModel):
    count: int = Field(description="jobs the operation applied to")


_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorResponse, "description": "a missing or unknown status, one the action does not apply to"},
}


@router.post(
    "/api/jobs/bulk/{action}",
    response_model=BulkOut,
    responses=_RESPONSES,
    summary="Requeue, cancel or delete every job of a status (and topic), in batches",
    tags=["jobs"],
)
async def bulk(action: BulkAction, body: BulkRequest, request: Request, _role: AdminRole) -> JSONResponse:
    """requeue: failed/cancelled jobs run again now with a fresh retry budget; cancel:
    pending jobs end cancelled, running ones are asked to stop; delete: jobs in any
    state but processing. Jobs that change state meanwhile are stepped over."""
    client: AsyncConveyor = request.app.state.client
    count = await client.bulk(action, status=body.status, topic=body.topic)
    return JSONResponse({"count": count})
