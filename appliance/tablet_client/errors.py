"""What the tablet client raises, and how a box's refusal becomes one of them.

Every error is a `TabletError`. A box that cannot be reached is `BoxUnreachable` (with
`CertificateMismatch` when it is reached but shows another certificate than the pinned one); a box
that answered with a status the call cannot use is `BoxError`, carrying the box's problem body.
"""

from __future__ import annotations

from typing import Any

import httpx

from appliance.web.retry import retry_after_s


class TabletError(Exception):
    """Base of everything this client raises."""


class BoxUnreachable(TabletError):
    """No answer from the box: connection refused, timeout, network down."""


class BoxError(TabletError):
    """The box answered with a status the call cannot use; ``problem`` is its problem body."""

    def __init__(self, status: int, problem: dict[str, Any], retry_after_s: float | None = None) -> None:
        self.status = status
        self.problem = problem
        self.retry_after_s = retry_after_s
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}".strip())


class PairingRefused(BoxError):
    """403 on pairing: the code is wrong, used or expired. Ask the venue tech for a new one."""


class RateLimited(BoxError):
    """429: too many requests; try again after ``retry_after_s``."""


class NeedsPairing(TabletError):
    """The tablet has no valid token (never paired, or the box answered 401). Pair again."""


class CertificateMismatch(BoxUnreachable):
    """The box presented a TLS certificate other than the pinned one: an impostor, or a box whose
    certificate was rotated (then pin the new fingerprint, shown on its console, and pair again).
    Nothing was sent to it; queued sheets stay queued."""

    def __init__(self, pinned: str, presented: str) -> None:
        self.pinned = pinned
        self.presented = presented
        super().__init__(
            f"the box's TLS certificate {presented[:16]}… is not the pinned {pinned[:16]}…; "
            "refusing to talk to it"
        )


def error_for(response: httpx.Response, refused: type[BoxError] = BoxError) -> TabletError:
    """The error for an answer a call cannot use: NeedsPairing for 401, ``refused`` for 403,
    RateLimited for 429, BoxError otherwise (with the answer's ``Retry-After``)."""
    problem = problem_of(response)
    status = response.status_code
    if status == 401:
        return NeedsPairing(detail(problem) or "the box does not accept this tablet's token: pair again")
    cls = {403: refused, 429: RateLimited}.get(status, BoxError)
    return cls(status, problem, retry_after_s(response))


def problem_of(response: httpx.Response) -> dict[str, Any]:
    """The answer's problem body; one made of its status, reason and text when the body is not a
    JSON object (a proxy's error page, say)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    return {"status": response.status_code, "title": response.reason_phrase, "detail": response.text[:500]}


def detail(problem: dict[str, Any] | None) -> str | None:
    """A problem's ``detail`` as text, None when it has none."""
    return str(problem["detail"]) if problem and problem.get("detail") else None
