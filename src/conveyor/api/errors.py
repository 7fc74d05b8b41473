"""HTTP error mapping: every ``ConveyorError`` class to one status, and one error body
``{"error": {"code": ..., "message": ...}}`` for every failure, FastAPI's own request
validation errors and 404/405 included.

Imports ``conveyor.core`` and FastAPI/Starlette only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from conveyor.core.errors import (
    BackendUnavailable,
    ConfigurationError,
    ConveyorError,
    DuplicateJob,
    InvalidState,
    JobError,
    JobNotFound,
    MigrationRequired,
    MissingDependencyError,
    PayloadTooLarge,
    ScheduleExists,
    ScheduleNotFound,
    ValidationError,
)

logger = logging.getLogger("conveyor.api")

# Most specific class first: the first isinstance match wins.
STATUS_BY_ERROR: tuple[tuple[type[ConveyorError], int, str], ...] = (
    (PayloadTooLarge, 413, "payload_too_large"),
    (ValidationError, 422, "validation_error"),
    (JobNotFound, 404, "job_not_found"),
    (ScheduleNotFound, 404, "schedule_not_found"),
    (ScheduleExists, 409, "schedule_exists"),
    (InvalidState, 409, "invalid_state"),
    (DuplicateJob, 409, "duplicate_job"),
    (JobError, 400, "job_error"),
    (BackendUnavailable, 503, "backend_unavailable"),
    (MigrationRequired, 503, "migration_required"),
    (ConfigurationError, 500, "configuration_error"),
    (MissingDependencyError, 500, "missing_dependency"),
)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An HTTP error raised by the API layer itself (auth, unknown routes, body limits)."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def status_for(exc: ConveyorError) -> tuple[int, str]:
    """The HTTP status and error code of a conveyor error."""
    for cls, status, code in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal_error"


def describe_validation(errors: Sequence[Any]) -> str:
    """One readable line naming the bad field(s) of a pydantic/FastAPI validation error."""
    parts = []
    for err in errors[:5]:
        if err.get("type") == "json_invalid":
            reason = err.get("ctx", {}).get("error", "")
            parts.append(f"body: invalid JSON{f' ({reason})' if reason else ''}")
            continue
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        field = ".".join(loc) or "body"
        parts.append(f"{field}: {err.get('msg', 'invalid value')}")
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    return "; ".join(parts) or "invalid request"


async def _conveyor_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConveyorError)
    status, code = status_for(exc)
    if status >= 500:
        logger.error("request failed: %s: %s", type(exc).__name__, exc)
    return error_response(status, code, str(exc))


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


def _not_json(request: Request, errors: Sequence[Any]) -> str | None:
    """The content type of a body that was sent as something else than JSON (a form,
    text), when that is why the body failed validation; else None."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return None
    if not any(tuple(err.get("loc", ()))[:1] == ("body",) for err in errors):
        return None
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not content_type:
        # A body sent without a content type is not parsed either (a missing body is
        # the usual 422).
        sent = any(tuple(err.get("loc", ())) == ("body",) and err.get("type") != "missing" for err in errors)
        return "" if sent else None
    if content_type == "application/json" or content_type.endswith("+json"):
        return None
    return content_type


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    content_type = _not_json(request, exc.errors())
    if content_type is not None:
        # e.g. curl -d without -H: FastAPI never parsed the body, so say what to send.
        return error_response(
            400,
            "bad_request",
            "body: expected a JSON body sent with content-type: application/json, got "
            + (f"content-type {content_type}" if content_type else "no content-type"),
        )
    return error_response(422, "validation_error", describe_validation(exc.errors()))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    detail = exc.detail if isinstance(exc.detail, str) else "request failed"
    if status == 404 and detail == "Not Found":
        detail = "no such endpoint"
    headers = dict(exc.headers) if exc.headers else None
    if status == 405:
        # Starlette names only the methods of the first route matching the path; several
        # routes share a path here (GET/PATCH/PUT/DELETE /api/jobs/{id}).
        allowed = allowed_methods(request)
        headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        detail = f"method {request.method} not allowed here; allowed: {', '.join(allowed)}"
    return error_response(status, _HTTP_CODES.get(status, f"http_{status}"), detail, headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route answers at the request's path (HEAD with GET), from the
    app's ``state.http_routes`` (the routes of its routers, set by ``create_app``)."""
    matching = [
        route
        for route in getattr(request.app.state, "http_routes", ())
        if route.matches(request.scope)[0] is not Match.NONE
    ]
    # The most specific resource: /api/jobs/stats, not /api/jobs/{job_id} with id "stats".
    fewest = min((route.path.count("{") for route in matching), default=0)
    methods: set[str] = set()
    for route in matching:
        if route.path.count("{") == fewest:
            methods.update(route.methods or ())
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error while handling a request", exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ConveyorError, _conveyor_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
