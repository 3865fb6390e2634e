"""Response helpers shared by the tablet and admin controllers."""

from __future__ import annotations

from litestar.datastructures import CacheControlHeader
from litestar.openapi.datastructures import ResponseSpec

from appliance.web.problems import PROBLEM_JSON, Problem

# For every answer that carries a token or personal data (names): no cache on the way, and no
# browser or HTTP library on a tablet, may keep a copy of it (RFC 9111, 5.2.2.5).
NO_STORE = CacheControlHeader(no_store=True)

_STATUS_WORDS = {
    400: "Malformed JSON body",
    401: "Device token missing, unknown or revoked",
    403: "Forbidden (pairing code not valid, entry not on the judge's panel, or not from loopback)",
    404: "No such thing (device, judge)",
    408: "The request body came too slowly (body_timeout_s); nothing was stored, send it again",
    409: "Conflicts with the judge's current sheet for the entry",
    413: "Request body too large",
    422: "Invalid fields, unknown entry, or sheet_id reused with different content",
    423: "The box is frozen: competition writes are paused",
    429: "Rate limited (this device or this address); see Retry-After",
    431: "Request headers larger than the box accepts (max_header_bytes)",
    503: "The box cannot take this now (busy, or no event loaded); retry later",
}


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the problem+json answers an endpoint can give."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=_STATUS_WORDS[status],
            media_type=PROBLEM_JSON,
            generate_examples=False,
        )
        for status in statuses
    }


def not_modified(if_none_match: str, etag: str) -> bool:
    """Does an ``If-None-Match`` header match ``etag``? RFC 9110's weak comparison: ``W/"x"`` matches
    ``"x"`` (a proxy that compresses may weaken a tag), and ``*`` matches any current representation."""
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag.removeprefix("W/") in tags
