"""Domain errors -> RFC 9457 problem+json, in one place. Nothing else in the project knows statuses."""

from __future__ import annotations

import logging
import math
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.types import ExceptionHandler

from appliance.core.export import ExportBusy, ExportRefused
from appliance.shared import errors as domain
from edge_api.middleware import request_id_of
from edge_api.schemas import Problem

log = logging.getLogger("venuebox.api")

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "/problems/"

# exception class -> (status, type slug, title)
_DOMAIN: dict[type[domain.DomainError], tuple[int, str, str]] = {
    domain.MalformedRequest: (400, "malformed-request", "The request body is not valid JSON"),
    domain.InvalidInput: (422, "invalid-input", "Some fields are not valid"),
    domain.UnknownEntry: (422, "unknown-entry", "No such entry in this event"),
    domain.IdempotencyMismatch: (422, "idempotency-mismatch", "This sheet_id was used for different content"),
    domain.EntryNotOnPanel: (403, "not-on-panel", "This entry is not on your panel"),
    domain.PairingRefused: (403, "pairing-refused", "Pairing code not valid"),
    domain.NotAuthenticated: (401, "unauthenticated", "Device token missing, unknown or revoked"),
    domain.SheetConflict: (409, "sheet-conflict", "This sheet conflicts with the current sheet"),
    domain.Frozen: (423, "frozen", "Scoring is paused by the venue tech"),
    domain.TooManyRequests: (429, "rate-limited", "Too many requests"),
    domain.NotFound: (404, "not-found", "Not found"),
    domain.NoEvent: (503, "no-event", "No event is loaded on this box yet"),
    domain.Unavailable: (503, "unavailable", "The box cannot store this right now"),
    domain.NotInitialised: (503, "not-initialised", "The box is not set up yet"),
    domain.DataKeyMismatch: (503, "data-key-mismatch", "The personal-data key does not open this data"),
    domain.DatabaseDamaged: (503, "database-damaged", "The box's database is damaged"),
    domain.UplinkNotConfigured: (409, "uplink-not-configured", "The uplink is not configured"),
    domain.BadUplinkTarget: (422, "bad-uplink-target", "This uplink target cannot be used"),
    ExportRefused: (422, "export-refused", "The export cannot be made there"),
    ExportBusy: (409, "export-busy", "An export is already running"),
}

# Plain-words descriptions served at /problems/{slug}, so a problem's type URI leads somewhere useful.
DESCRIPTIONS: dict[str, str] = {slug: title for (_, slug, title) in _DOMAIN.values()} | {
    "not-found": "Not found",
    "method-not-allowed": "This method is not allowed here",
    "payload-too-large": "The request body is larger than the box accepts",
    "forbidden": "This client may not use this endpoint",
    "http-error": "The request could not be handled",
    "internal-error": "Something went wrong inside the box; nothing was stored",
    "headers-too-large": "The request headers are larger than the box accepts",
    "request-timeout": "The request body came too slowly; nothing was stored",
}


def problem_for(
    exc: domain.DomainError, request_id: str, retry_after: int | None = None
) -> tuple[Problem, dict[str, str]]:
    """The problem body and extra headers for a domain error (also used per item in batches)."""
    status, slug, title = _lookup(exc)
    problem = Problem(
        type=PROBLEM_BASE + slug,
        title=title,
        status=status,
        detail=exc.detail,
        request_id=request_id,
        errors=exc.extra.get("errors"),
        current_sheet_id=exc.extra.get("current_sheet_id"),
        sheet_id=exc.extra.get("sheet_id"),
    )
    headers = {}
    if isinstance(exc, domain.TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after)
    elif (
        isinstance(exc, domain.Frozen | domain.Unavailable | domain.NoEvent | domain.DatabaseDamaged)
        and retry_after
    ):
        headers["Retry-After"] = str(retry_after)
    if isinstance(exc, domain.NotAuthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="venuebox"'
    return problem, headers


def _lookup(exc: domain.DomainError) -> tuple[int, str, str]:
    for cls in type(exc).__mro__:
        if cls in _DOMAIN:
            return _DOMAIN[cls]
    return 400, "http-error", "The request could not be handled"


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(
        content=msgspec.json.encode(problem),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=headers or {},
    )


def make_exception_handlers(retry_after_s: int) -> dict[int | type[Exception], ExceptionHandler[Any]]:
    def on_domain(request: Request[Any, Any, Any], exc: domain.DomainError) -> Response[bytes]:
        problem, headers = problem_for(exc, request_id_of(request.scope), retry_after_s)
        return problem_response(problem, headers)

    def on_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
        status = exc.status_code
        slug = {
            404: "not-found",
            405: "method-not-allowed",
            413: "payload-too-large",
            403: "forbidden",
            401: "unauthenticated",
        }.get(status, "http-error")
        detail = exc.detail or DESCRIPTIONS.get(slug, "")
        errors = None
        if isinstance(exc, ValidationException):
            # Litestar's own parameter checks (path and query parameters) land here.
            status, slug = 422, "invalid-input"
            errors = [
                {"field": str(e.get("key", "")), "message": str(e.get("message", ""))}
                for e in (exc.extra or [])
                if isinstance(e, dict)
            ] or None
        problem = Problem(
            type=PROBLEM_BASE + slug,
            title=DESCRIPTIONS.get(slug, "Error"),
            status=status,
            detail=str(detail),
            request_id=request_id_of(request.scope),
            errors=errors,
        )
        headers = dict(exc.headers or {})
        if isinstance(exc, NotAuthorizedException):
            headers.setdefault("WWW-Authenticate", 'Bearer realm="venuebox"')
        return problem_response(problem, headers)

    def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
        rid = request_id_of(request.scope)
        # The traceback goes to the log with the request id; the client sees no internals.
        log.exception("unhandled error", extra={"request_id": rid})
        problem = Problem(
            type=PROBLEM_BASE + "internal-error",
            title=DESCRIPTIONS["internal-error"],
            status=500,
            detail="an internal error occurred; the request id identifies it in the box's log",
            request_id=rid,
        )
        return problem_response(problem)

    return {domain.DomainError: on_domain, HTTPException: on_http, Exception: on_unexpected}


def retry_after_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))
