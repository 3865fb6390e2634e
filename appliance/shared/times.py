"""Times: timezone-aware UTC inside, RFC 3339 on the wire and in the database."""

from __future__ import annotations

import re
from datetime import UTC, datetime

# RFC 3339 date-time: a date, "T" (or space, which RFC 3339 allows), a time and a mandatory offset.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_rfc3339(moment: datetime) -> str:
    """UTC, microseconds, 'Z' suffix: sorts as text in the same order as time."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_rfc3339() -> str:
    return to_rfc3339(utcnow())


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 date-time with an offset; ValueError for anything else."""
    if not isinstance(text, str) or not _RFC3339.match(text):
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2026-03-14T10:42:07-05:00")
    normalised = text.replace("z", "Z").replace("t", "T").replace(" ", "T")
    # fromisoformat accepts at most 6 fractional digits before 3.12 on some inputs: trim the rest.
    match = re.match(r"^(.*?\.\d{6})\d+(.*)$", normalised)
    if match:
        normalised = match.group(1) + match.group(2)
    try:
        return datetime.fromisoformat(normalised.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not a valid date-time: {exc}") from None
