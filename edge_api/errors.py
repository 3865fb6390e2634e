"""The box's domain errors as RFC 9457 problem+json (appliance/web/problems.py): each error's status,
type and title in one table, the generic ones included, and the headers some of them carry."""

from __future__ import annotations

import math
from typing import Any

from litestar.types import ExceptionHandler

from appliance.core.export import ExportBusy, ExportRefused
from appliance.shared import errors as domain
from appliance.web import problems
from appliance.web.problems import GENERIC_TYPES, Problem, ProblemType, descriptions, exception_handlers

# The box's problem types: the generic ones (body decoding, storage) and the box's domain errors.
TYPES: dict[type[domain.DomainError], ProblemType] = GENERIC_TYPES | {
    domain.UnknownEntry: ProblemType(422, "unknown-entry", "No such entry in this event"),
    domain.IdempotencyMismatch: ProblemType(
        422, "idempotency-mismatch", "This sheet_id was used for different content"
    ),
    domain.EntryNotOnPanel: ProblemType(403, "not-on-panel", "This entry is not on your panel"),
    domain.PairingRefused: ProblemType(403, "pairing-refused", "Pairing code not valid"),
    domain.NotAuthenticated: ProblemType(401, "unauthenticated", "Device token missing, unknown or revoked"),
    domain.SheetConflict: ProblemType(409, "sheet-conflict", "This sheet conflicts with the current sheet"),
    domain.Frozen: ProblemType(423, "frozen", "Scoring is paused by the venue tech", retry_later=True),
    domain.SessionLocked: ProblemType(
        423, "session-locked", "This session is locked by the venue tech", retry_later=True
    ),
    domain.SignedOff: ProblemType(
        423, "signed-off", "You signed off this session; the venue tech can reopen it", retry_later=True
    ),
    domain.ScheduleConflict: ProblemType(409, "schedule-conflict", "The schedule change is refused"),
    domain.SessionNotOnPanel: ProblemType(403, "session-not-on-panel", "This session is not on your panel"),
    domain.TooManyRequests: ProblemType(429, "rate-limited", "Too many requests"),
    domain.NoEvent: ProblemType(503, "no-event", "No event is loaded on this box yet", retry_later=True),
    domain.DataKeyMismatch: ProblemType(
        503, "data-key-mismatch", "The personal-data key does not open this data"
    ),
    domain.UplinkNotConfigured: ProblemType(409, "uplink-not-configured", "The uplink is not configured"),
    domain.BadUplinkTarget: ProblemType(422, "bad-uplink-target", "This uplink target cannot be used"),
    ExportRefused: ProblemType(422, "export-refused", "The export cannot be made there"),
    ExportBusy: ProblemType(409, "export-busy", "An export is already running"),
}

# Plain-words descriptions served at /problems/{slug}, so a problem's type URI leads somewhere useful.
DESCRIPTIONS = descriptions(TYPES)
REALM = "venuebox"


def problem_for(
    exc: domain.DomainError, request_id: str, retry_after: int | None = None
) -> tuple[Problem, dict[str, str]]:
    """The problem body and extra headers for a domain error (also used per item in batches):
    ``Retry-After`` the limiter's wait for a rate limit, ``retry_after`` for a frozen, busy or
    damaged box, and a bearer challenge for a refused token."""
    problem, headers = problems.problem_for(exc, request_id, TYPES, retry_after)
    if isinstance(exc, domain.TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, domain.NotAuthenticated):
        headers["WWW-Authenticate"] = f'Bearer realm="{REALM}"'
    return problem, headers


def make_exception_handlers(retry_after_s: int) -> dict[int | type[Exception], ExceptionHandler[Any]]:
    """Litestar's exception handlers for the box's apps; ``retry_after_s`` goes in ``Retry-After``
    when the box is frozen, busy or has no event."""

    def problem_of(exc: domain.DomainError, request_id: str) -> tuple[Problem, dict[str, str]]:
        return problem_for(exc, request_id, retry_after_s)

    return exception_handlers(problem_of, DESCRIPTIONS, REALM)


def retry_after_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))
