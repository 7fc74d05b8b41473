"""The HTTP endpoints of docs/api.md (jobs, stats, schedules, workers, health, metrics).

Every endpoint goes through ``AsyncConveyor`` (``request.app.state.client``); the rules
live there. Responses are built from ``Job.to_dict`` plus the fields of ``JobOut``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from conveyor.api import limits
from conveyor.api import schedules as schedule_ops
from conveyor.api.auth import (
    ADMINS,
    ANY_ROLE,
    ENQUEUERS,
    READERS,
    Authenticator,
    Role,
    bearer_token,
    require,
    topic_allowed,
)
from conveyor.api.errors import error_body, status_for
from conveyor.api.jsonbody import StrictJsonRoute
from conveyor.api.metrics import CONTENT_TYPE, Metrics
from conveyor.api.schemas import (
    TOPIC_REGEX,
    EnqueueRequest,
    ErrorResponse,
    HealthOut,
    JobOut,
    JobPageOut,
    JobStatusOut,
    ScheduleOut,
    ScheduleRequest,
    StatsOut,
    UpdateRequest,
    WorkerOut,
)
from conveyor.api.websocket import EventHub
from conveyor.client import AsyncConveyor
from conveyor.core.duration import format_duration
from conveyor.core.errors import ConveyorError, JobNotFound, ValidationError
from conveyor.core.events import retry_count
from conveyor.core.job import Job, JobStatus
from conveyor.core.redact import redact
from conveyor.settings import Settings

MAX_PAGE = 100
JOB_ID = Annotated[str, Path(min_length=1, max_length=200, description="job id")]
SCHEDULE_NAME = Annotated[str, Path(pattern=TOPIC_REGEX, description="schedule name (the topic rule)")]
# The original API's status names are accepted too (running → processing, success → completed).
StatusQuery = Literal["pending", "processing", "completed", "failed", "cancelled", "running", "success"]
_STATUS_ALIASES = {"running": "processing", "success": "completed"}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "bad request",
        401: "missing or invalid token",
        403: "role or topic not allowed",
        404: "not found",
        409: "wrong state",
        413: "payload too large",
        422: "invalid input",
        503: "store unavailable",
    }
    return {c: {"model": ErrorResponse, "description": text[c]} for c in codes}


AUTH_ERRORS = (400, 401, 403, 422, 503)

router = APIRouter(route_class=StrictJsonRoute)


async def client_of(request: Request) -> AsyncConveyor:
    # A coroutine: FastAPI runs a plain def dependency in a worker thread, a thread
    # hand-off (milliseconds on a busy machine) on every request.
    client: AsyncConveyor = request.app.state.client
    return client


Client = Annotated[AsyncConveyor, Depends(client_of)]
ReadRole = Annotated[Role, Depends(require(READERS))]
AdminRole = Annotated[Role, Depends(require(ADMINS))]
EnqueueRole = Annotated[Role, Depends(require(ENQUEUERS))]
AnyRole = Annotated[Role, Depends(require(ANY_ROLE))]


def job_json(job: Job, now: datetime) -> dict[str, Any]:
    """``Job.to_dict`` plus ``next_run_in`` and the original API's field names."""
    out = job.to_dict()
    out["name"] = job.topic
    out["trigger_at"] = out["run_at"]
    out["retry_count"] = retry_count(job)
    out["is_repeat"] = job.schedule is not None
    next_run_in = None
    if job.status is JobStatus.PENDING:
        seconds = (job.run_at - now).total_seconds()
        next_run_in = format_duration(round(seconds) if seconds >= 1 else max(seconds, 0.0))
    out["next_run_in"] = next_run_in
    return out


def _json(content: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(content, status_code=status)


def _auth(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


# -- jobs --------------------------------------------------------------------------------


@router.post(
    "/api/jobs",
    status_code=201,
    response_model=JobOut | JobStatusOut,
    responses=_errors(413, *AUTH_ERRORS),
    summary="Enqueue a job (cron + is_repeat: create a schedule and return its first job)",
    tags=["jobs"],
)
@router.post(
    "/api/jobs/enqueue",
    status_code=201,
    response_model=JobOut | JobStatusOut,
    responses=_errors(413, *AUTH_ERRORS),
    summary="Enqueue a job (alias of POST /api/jobs)",
    tags=["jobs"],
)
async def enqueue_job(body: EnqueueRequest, client: Client, request: Request, role: EnqueueRole) -> Response:
    topic = body.resolved_topic()
    _auth(request).check_topic(topic)
    settings: Settings = request.app.state.settings
    limits.check_retry_options(body.job_options(), settings, admin=role is Role.ADMIN)
    cron = body.resolved_cron()
    if body.is_repeat or cron is not None:
        if cron is None:
            raise ValidationError("cron", "is_repeat needs a cron expression (cron or cron_expr)")
        if not body.is_repeat:
            raise ValidationError("is_repeat", "a cron expression needs is_repeat: true (it creates a schedule)")
        if body.resolved_run_at() is not None or body.delay is not None:
            raise ValidationError("cron", "cron and run_at/delay are mutually exclusive")
        if body.unique_key is not None:
            raise ValidationError("unique_key", "not supported with a cron schedule")
        if role is not Role.ADMIN:
            limits.check_schedule_interval(cron, body.timezone, client.clock.now(), settings)
        job, armed = await schedule_ops.create_and_arm(
            client,
            name=body.schedule or topic,
            cron=cron,
            topic=topic,
            payload=body.payload,
            timezone=body.timezone,
            options=body.job_options(),
            may_replace=role is Role.ADMIN,
        )
        if not armed and role not in READERS:
            # The job already armed for that instant (the same call sent again), which
            # someone may have changed since: as a unique key's holder, id and status only.
            return _json({"id": job.id, "status": job.status.value}, 201)
    else:
        if body.timezone is not None or body.schedule is not None:
            field = "timezone" if body.timezone is not None else "schedule"
            raise ValidationError(field, "only valid with cron and is_repeat: true")
        new = client.build_job(
            topic,
            body.payload,
            run_at=body.resolved_run_at(),
            delay=body.delay,
            unique_key=body.unique_key,
            **body.job_options(),
        )
        (job,) = await client.insert([new])
        if job.id != new.id and role not in READERS:
            # The unique key's holder: a caller that may not read jobs learns only its id and status.
            return _json({"id": job.id, "status": job.status.value}, 201)
    return _json(job_json(job, client.clock.now()), 201)


@router.get("/api/jobs", response_model=JobPageOut, responses=_errors(*AUTH_ERRORS), summary="List jobs", tags=["jobs"])
async def list_jobs(
    client: Client,
    _role: ReadRole,
    status: Annotated[StatusQuery | None, Query(description="filter by status")] = None,
    topic: Annotated[str | None, Query(min_length=1, max_length=200, description="filter by topic")] = None,
    name: Annotated[str | None, Query(min_length=1, max_length=200, description="alias of topic")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="page size, 1-100")] = 50,
    offset: Annotated[int, Query(ge=0, le=2**62, description="items to skip")] = 0,
    after: Annotated[
        str | None, Query(min_length=1, max_length=200, description="job id: the page of older jobs (a page's next)")
    ] = None,
    before: Annotated[
        str | None, Query(min_length=1, max_length=200, description="job id: the page of newer jobs (a page's prev)")
    ] = None,
) -> Response:
    """Jobs newest first. Deep pages: follow the ``next``/``prev`` cursors with
    ``after``/``before`` (constant time at any depth) rather than ``offset``."""
    if topic is not None and name is not None and topic != name:
        raise ValidationError("topic", "topic and its alias name disagree; give one of them")
    st = _STATUS_ALIASES.get(status, status) if status is not None else None
    page = await client.list(status=st, topic=topic or name, limit=limit, offset=offset, after=after, before=before)
    now = client.clock.now()
    return _json(
        {
            "total": page.total,
            "total_exact": page.total_exact,
            "items": [job_json(j, now) for j in page.items],
            "limit": page.limit,
            "offset": page.offset,
            "next": page.next,
            "prev": page.prev,
        }
    )


@router.get("/api/jobs/stats", response_model=StatsOut, responses=_errors(*AUTH_ERRORS), tags=["stats"])
@router.get("/api/stats", response_model=StatsOut, responses=_errors(*AUTH_ERRORS), tags=["stats"])
async def stats(client: Client, _role: ReadRole) -> Response:
    """Counts per status and per topic, totals, live workers, server uptime (seconds)."""
    return _json(await client.stats())


@router.get(
    "/api/jobs/{job_id}",
    response_model=JobOut | JobStatusOut,
    responses=_errors(404, *AUTH_ERRORS),
    summary="A job (an enqueue token gets only its id and status)",
    tags=["jobs"],
)
async def get_job(job_id: JOB_ID, client: Client, request: Request, role: AnyRole) -> Response:
    """The job. An enqueue token, which may not read jobs, gets ``{id, status}`` only: enough
    to follow the job it enqueued, nothing of its payload, result or errors; a job of a topic
    this server does not allow is a 404 to it."""
    job = await client.get(job_id)
    if role not in READERS:
        if not topic_allowed(job.topic, _auth(request).allowed_topics):
            raise JobNotFound(job_id)
        return _json({"id": job.id, "status": job.status.value})
    return _json(job_json(job, client.clock.now()))


@router.patch(
    "/api/jobs/{job_id}",
    response_model=JobOut,
    responses=_errors(404, 409, 413, *AUTH_ERRORS),
    summary="Update a pending job",
    tags=["jobs"],
)
@router.put("/api/jobs/{job_id}", response_model=JobOut, responses=_errors(404, 409, 413, *AUTH_ERRORS), tags=["jobs"])
async def update_job(
    job_id: JOB_ID, body: UpdateRequest, client: Client, request: Request, _role: AdminRole
) -> Response:
    limits.check_max_retries(body.max_retries, request.app.state.settings)
    job = await client.update(job_id, **body.changes())
    return _json(job_json(job, client.clock.now()))


@router.delete(
    "/api/jobs/{job_id}",
    status_code=204,
    response_class=Response,
    responses=_errors(404, 409, *AUTH_ERRORS),
    summary="Delete a job (any state but processing)",
    tags=["jobs"],
)
async def delete_job(job_id: JOB_ID, client: Client, _role: AdminRole) -> Response:
    await client.delete(job_id)
    return Response(status_code=204)


@router.post(
    "/api/jobs/{job_id}/cancel", response_model=JobOut, responses=_errors(404, 409, *AUTH_ERRORS), tags=["jobs"]
)
async def cancel_job(job_id: JOB_ID, client: Client, _role: AdminRole) -> Response:
    """Cancel a pending job, or request the cancellation of a running one."""
    return _json(job_json(await client.cancel(job_id), client.clock.now()))


@router.post(
    "/api/jobs/{job_id}/requeue", response_model=JobOut, responses=_errors(404, 409, *AUTH_ERRORS), tags=["jobs"]
)
@router.post(
    "/api/jobs/{job_id}/retry", response_model=JobOut, responses=_errors(404, 409, *AUTH_ERRORS), tags=["jobs"]
)
async def requeue_job(job_id: JOB_ID, client: Client, _role: AdminRole) -> Response:
    """Run a failed or cancelled job again now, with a fresh retry budget."""
    return _json(job_json(await client.requeue(job_id), client.clock.now()))


# -- schedules ---------------------------------------------------------------------------


@router.get("/api/schedules", response_model=list[ScheduleOut], responses=_errors(*AUTH_ERRORS), tags=["schedules"])
async def list_schedules(client: Client, _role: ReadRole) -> Response:
    return _json([s.to_dict() for s in await schedule_ops.list_all(client)])


@router.post(
    "/api/schedules",
    status_code=201,
    response_model=ScheduleOut,
    responses=_errors(*AUTH_ERRORS),
    summary="Add (or replace) a schedule",
    tags=["schedules"],
)
async def create_schedule(body: ScheduleRequest, client: Client, request: Request, _role: AdminRole) -> Response:
    if body.name is None:
        raise ValidationError("name", "is required")
    schedule = await _save_schedule(body.name, body, client, request)
    return _json(schedule, 201)


@router.get(
    "/api/schedules/{name}", response_model=ScheduleOut, responses=_errors(404, *AUTH_ERRORS), tags=["schedules"]
)
async def get_schedule(name: SCHEDULE_NAME, client: Client, _role: ReadRole) -> Response:
    return _json((await schedule_ops.get(client, name)).to_dict())


@router.put(
    "/api/schedules/{name}",
    response_model=ScheduleOut,
    responses=_errors(*AUTH_ERRORS),
    summary="Update the schedule of this name (fields not in the body are kept), or add it",
    tags=["schedules"],
)
async def put_schedule(
    name: SCHEDULE_NAME, body: ScheduleRequest, client: Client, request: Request, _role: AdminRole
) -> Response:
    """An existing schedule keeps every field the body does not name (a job option given
    as null is removed); a new one needs ``cron`` and ``topic``, as with POST."""
    if body.name is not None and body.name != name:
        raise ValidationError("name", "differs from the name in the path")
    existing = await schedule_ops.find(client, name)
    if existing is None:
        return _json(await _save_schedule(name, body, client, request))
    named = body.model_fields_set - {"name", "cron_expr"}
    given = {key: getattr(body, key) for key in named if key != "cron"}
    if named & {"cron"} or "cron_expr" in body.model_fields_set:
        given["cron"] = body.resolved_cron()
    if "topic" in given:
        given["topic"] = body.resolved_topic()
    args = schedule_ops.merged(existing, given)
    _auth(request).check_topic(args["topic"])
    limits.check_max_retries(body.max_retries, request.app.state.settings)
    schedule = await schedule_ops.save(client, name=name, **args)
    return _json(schedule.to_dict())


async def _save_schedule(name: str, body: ScheduleRequest, client: AsyncConveyor, request: Request) -> dict[str, Any]:
    topic = body.resolved_topic()
    _auth(request).check_topic(topic)
    limits.check_max_retries(body.max_retries, request.app.state.settings)
    schedule = await schedule_ops.save(
        client,
        name=name,
        cron=body.resolved_cron(),
        topic=topic,
        payload=body.payload,
        timezone=body.timezone,
        enabled=body.enabled,
        options=body.job_options(),
    )
    return schedule.to_dict()


async def _check_schedule_topic(name: str, client: AsyncConveyor, request: Request) -> None:
    """``CONVEYOR_ALLOWED_TOPICS`` for a schedule about to enqueue (run, enable): its
    topic may have been allowed when it was saved, or saved from code (403, or 404)."""
    _auth(request).check_topic((await schedule_ops.get(client, name)).topic)


@router.delete(
    "/api/schedules/{name}",
    status_code=204,
    response_class=Response,
    responses=_errors(404, *AUTH_ERRORS),
    tags=["schedules"],
)
async def delete_schedule(name: SCHEDULE_NAME, client: Client, _role: AdminRole) -> Response:
    await schedule_ops.remove(client, name)
    return Response(status_code=204)


@router.post(
    "/api/schedules/{name}/enable",
    response_model=ScheduleOut,
    responses=_errors(404, *AUTH_ERRORS),
    tags=["schedules"],
)
async def enable_schedule(name: SCHEDULE_NAME, client: Client, request: Request, _role: AdminRole) -> Response:
    await _check_schedule_topic(name, client, request)
    return _json((await schedule_ops.set_enabled(client, name, True)).to_dict())


@router.post(
    "/api/schedules/{name}/disable",
    response_model=ScheduleOut,
    responses=_errors(404, *AUTH_ERRORS),
    tags=["schedules"],
)
async def disable_schedule(name: SCHEDULE_NAME, client: Client, _role: AdminRole) -> Response:
    return _json((await schedule_ops.set_enabled(client, name, False)).to_dict())


@router.post(
    "/api/schedules/{name}/run",
    status_code=201,
    response_model=JobOut,
    responses=_errors(404, *AUTH_ERRORS),
    summary="Enqueue one job of the schedule now (its next fire time is unchanged)",
    tags=["schedules"],
)
async def run_schedule(name: SCHEDULE_NAME, client: Client, request: Request, _role: AdminRole) -> Response:
    """One job with the schedule's topic, payload and options, due now; works on a
    disabled schedule too."""
    await _check_schedule_topic(name, client, request)
    return _json(job_json(await client.run_schedule(name), client.clock.now()), 201)


# -- workers, job types, health ----------------------------------------------------------


@router.get("/api/workers", response_model=list[WorkerOut], responses=_errors(*AUTH_ERRORS), tags=["workers"])
async def workers(client: Client, _role: ReadRole) -> Response:
    """Live workers: id, host, pid, topics, concurrency, active jobs, last heartbeat."""
    return _json([w.to_dict() for w in await client.workers()])


@router.get("/api/job-types", response_model=list[str], responses=_errors(*AUTH_ERRORS), tags=["workers"])
async def job_types(client: Client, _role: ReadRole) -> Response:
    """Topics that live workers handle."""
    return _json(await client.job_types())


def version() -> str:
    try:
        return importlib.metadata.version("conveyor")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


@router.get(
    "/api/health",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "store unreachable"}},
    tags=["health"],
)
async def health(client: Client, request: Request) -> Response:
    """No token needed. ``degraded`` past the pending threshold; 503 when the store is down.

    Without a token only ``{status, time, version, backend}`` (the URL scheme) comes
    back: no store error text, path or host name. The pending count is one status
    count (``list_jobs`` total), never the whole ``stats()``."""
    now = datetime.now(UTC)
    auth: Authenticator = request.app.state.auth
    detailed = auth.role_of(bearer_token(request.headers.get("authorization"))) is not None
    body: dict[str, Any] = {
        "status": "healthy",
        "time": now.isoformat(),
        "version": version(),
        "backend": client.url.split("://", 1)[0].lower(),
    }
    try:
        store = await client.connect()
        await store.ping()
        pending = (await store.list_jobs(status=JobStatus.PENDING, limit=1)).total
    except (ConveyorError, OSError) as exc:
        body["status"] = "unhealthy"
        if detailed:
            code = status_for(exc)[1] if isinstance(exc, ConveyorError) else "backend_unavailable"
            body.update(error_body(code, redact(str(exc))))
        return _json(body, 503)
    if pending > client.settings.pending_threshold:
        body["status"] = "degraded"
    if detailed:
        body["pending"] = pending
    return _json(body)


# -- metrics -----------------------------------------------------------------------------


@router.get(
    "/metrics",
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"},
        **_errors(*AUTH_ERRORS),
    },
    tags=["metrics"],
)
async def metrics(request: Request, client: Client, _role: AnyRole) -> Response:
    """Prometheus text format; any role's token."""
    registry: Metrics = request.app.state.metrics
    hub: EventHub = request.app.state.hub
    await hub.start()
    stats = await client.stats()
    # Rendering is CPU work (many label sets): off the event loop, so that other
    # requests (health checks) do not wait behind a scrape.
    body = await asyncio.to_thread(registry.render, stats, ws_clients=len(tuple(hub.subscribers)))
    return Response(body, media_type=CONTENT_TYPE)


def document_common_errors(app_routes: list[Any]) -> None:
    """Declare the errors every authenticated endpoint may answer (400, 401, 403, 422,
    503) on every API route, including routes added by other modules, so that the
    OpenAPI schema matches what the server does."""
    from fastapi.routing import APIRoute

    common = _errors(*AUTH_ERRORS)
    for route in app_routes:
        if not isinstance(route, APIRoute) or route.path == "/api/health":
            continue
        if route.path.startswith("/api/") or route.path == "/metrics":
            for code, spec in common.items():
                route.responses.setdefault(code, spec)
