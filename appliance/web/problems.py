"""RFC 9457 problem+json, for the box's APIs and the receiver: every error a client gets is a
``Problem`` whose ``type`` is ``/problems/<slug>``.

* ``ProblemType``: what a domain error means over HTTP (status, slug, title). ``GENERIC_TYPES`` holds
  those of the errors raised below the APIs (body decoding, the SQLite engine) and ``NotFound``; an
  app adds its own (edge_api/errors.py, uplink/receiver.py).
* ``problem_for``: a domain error as a problem and its headers, from an app's table.
* ``problem_page``: the ``GET /problems/{slug}`` route a problem's ``type`` leads to.
* ``exception_handlers``: Litestar's handlers for an app: domain errors through the app's
  ``problem_of``, Litestar's own HTTP errors (unrouted path, wrong method, body too large, bad query
  parameter) and, for anything else, a 500 that names the request id and logs the traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import msgspec
from litestar import Request, Response, get
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from litestar.types import ExceptionHandler

from appliance.shared.errors import (
    DatabaseDamaged,
    DomainError,
    InvalidInput,
    MalformedRequest,
    NotFound,
    NotInitialised,
    Unavailable,
)
from appliance.web.middleware import request_id_of

log = logging.getLogger("venuebox.api")

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "/problems/"


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """RFC 9457 problem details. ``errors`` lists per-field messages (``invalid-input``);
    ``current_sheet_id`` and ``sheet_id`` are the tablet API's members for a sheet conflict."""

    type: str
    title: str
    status: int
    detail: str
    request_id: str
    errors: list[dict[str, str]] | None = None
    current_sheet_id: str | None = None
    sheet_id: str | None = None


class ProblemType(NamedTuple):
    """What a domain error means over HTTP. With ``retry_later`` the answer says ``Retry-After``
    (the app's wait) when the app has one."""

    status: int
    slug: str
    title: str
    retry_later: bool = False


ProblemTypes = Mapping[type[DomainError], ProblemType]
# A domain error and the request id -> the problem and its extra headers.
ProblemOf = Callable[[DomainError, str], tuple[Problem, dict[str, str]]]

GENERIC_TYPES: dict[type[DomainError], ProblemType] = {
    MalformedRequest: ProblemType(400, "malformed-request", "The request body is not valid JSON"),
    InvalidInput: ProblemType(422, "invalid-input", "Some fields are not valid"),
    NotFound: ProblemType(404, "not-found", "Not found"),
    Unavailable: ProblemType(503, "unavailable", "The box cannot store this right now", retry_later=True),
    NotInitialised: ProblemType(503, "not-initialised", "The box is not set up yet"),
    DatabaseDamaged: ProblemType(503, "database-damaged", "The box's database is damaged", retry_later=True),
}
# The slugs of Litestar's own HTTP errors and of the 500, with the words served at /problems/{slug}.
HTTP_DESCRIPTIONS: dict[str, str] = {
    "not-found": "Not found",
    "method-not-allowed": "This method is not allowed here",
    "payload-too-large": "The request body is larger than the box accepts",
    "forbidden": "This client may not use this endpoint",
    "http-error": "The request could not be handled",
    "internal-error": "Something went wrong inside the box; nothing was stored",
    "headers-too-large": "The request headers are larger than the box accepts",
    "request-timeout": "The request body came too slowly; nothing was stored",
}
_HTTP_SLUGS = {
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
    403: "forbidden",
    401: "unauthenticated",
}
_UNKNOWN = ProblemType(400, "http-error", "The request could not be handled")


def descriptions(types: ProblemTypes) -> dict[str, str]:
    """The words served at /problems/{slug} for an app answering with ``types``: each type's title,
    then Litestar's HTTP errors'."""
    return {t.slug: t.title for t in types.values()} | HTTP_DESCRIPTIONS


def type_of(exc: DomainError, types: ProblemTypes) -> ProblemType:
    """The entry of ``types`` for the error's class or its nearest base; a 400 ``http-error`` for none."""
    for cls in type(exc).__mro__:
        if cls in types:
            return types[cls]
    return _UNKNOWN


def problem_for(
    exc: DomainError, request_id: str, types: ProblemTypes, retry_after: int | None = None
) -> tuple[Problem, dict[str, str]]:
    """The problem body and extra headers for a domain error: its type from ``types``, its detail,
    and the members its ``extra`` carries; ``Retry-After: retry_after`` for a ``retry_later`` type."""
    status, slug, title, retry_later = type_of(exc, types)
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
    headers = {"Retry-After": str(retry_after)} if retry_later and retry_after else {}
    return problem, headers


def problem_page(words: Mapping[str, str]) -> HTTPRouteHandler:
    """The ``GET /problems/{slug}`` route for an app whose slugs ``words`` describes."""

    @get(PROBLEM_BASE + "{slug:str}", include_in_schema=False, media_type="text/plain")
    async def problem_type(slug: FromPath[str]) -> str:
        """Where a problem's ``type`` URI leads: one line saying what it means."""
        return words.get(slug, "Unknown problem type") + "\n"

    return problem_type


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(
        content=msgspec.json.encode(problem),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=headers or {},
    )


def exception_handlers(
    problem_of: ProblemOf, words: Mapping[str, str], realm: str
) -> dict[int | type[Exception], ExceptionHandler[Any]]:
    """Litestar's exception handlers for an app: a domain error answered as ``problem_of`` says,
    Litestar's HTTP errors with their titles from ``words`` (a 401 asking for a bearer token of
    ``realm``), anything else a 500."""

    def on_domain(request: Request[Any, Any, Any], exc: DomainError) -> Response[bytes]:
        problem, headers = problem_of(exc, request_id_of(request.scope))
        return problem_response(problem, headers)

    def on_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
        status = exc.status_code
        slug = _HTTP_SLUGS.get(status, "http-error")
        detail = exc.detail or words.get(slug, "")
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
            title=words.get(slug, "Error"),
            status=status,
            detail=str(detail),
            request_id=request_id_of(request.scope),
            errors=errors,
        )
        headers = dict(exc.headers or {})
        if isinstance(exc, NotAuthorizedException):
            headers.setdefault("WWW-Authenticate", f'Bearer realm="{realm}"')
        return problem_response(problem, headers)

    def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
        rid = request_id_of(request.scope)
        # The traceback goes to the log with the request id; the client sees no internals.
        log.exception("unhandled error", extra={"request_id": rid})
        problem = Problem(
            type=PROBLEM_BASE + "internal-error",
            title=words["internal-error"],
            status=500,
            detail="an internal error occurred; the request id identifies it in the box's log",
            request_id=rid,
        )
        return problem_response(problem)

    return {DomainError: on_domain, HTTPException: on_http, Exception: on_unexpected}
