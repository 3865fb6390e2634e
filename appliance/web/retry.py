"""Waiting before a retry: exponential backoff with full jitter, and the server's ``Retry-After``.

The one owner for both clients that retry over HTTP: the uplink worker (box to cloud) and the tablet
client (tablet to box). Full jitter (a uniform wait between 0 and the capped exponential) keeps many
clients that failed together from coming back together.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass, field
from datetime import UTC
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

# A server's Retry-After is honoured up to an hour: a broken or hostile one cannot park a client for days.
RETRY_AFTER_MAX_S = 3600.0
# A client that is told nothing else (the tablet's: a box on the LAN is back within a minute).
DEFAULT_BACKOFF_BASE_S = 1.0
DEFAULT_BACKOFF_CAP_S = 60.0


def backoff_ceiling(base_s: float, cap_s: float, failures: int) -> float:
    """The longest wait after ``failures`` failures in a row (1: the first): ``base_s``, doubled for
    each further failure, at most ``cap_s``."""
    return min(cap_s, base_s * 2.0 ** min(max(failures - 1, 0), 62))


def full_jitter(base_s: float, cap_s: float, failures: int, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^(failures-1))]."""
    return rng.uniform(0.0, backoff_ceiling(base_s, cap_s, failures))


@dataclass
class Backoff:
    """Exponential backoff with full jitter, as an object a client holds (with its RNG, so a test
    can make the waits reproducible). ``failures`` counts the failures in a row, 1 for the first."""

    base_s: float = DEFAULT_BACKOFF_BASE_S
    cap_s: float = DEFAULT_BACKOFF_CAP_S
    rng: random.Random = field(default_factory=random.Random)

    def ceiling(self, failures: int) -> float:
        return backoff_ceiling(self.base_s, self.cap_s, failures)

    def delay(self, failures: int) -> float:
        return self.rng.uniform(0.0, self.ceiling(failures))


def parse_retry_after(
    value: str | None, now: float | None = None, cap_s: float = RETRY_AFTER_MAX_S
) -> float | None:
    """A ``Retry-After`` value as seconds to wait, or None when absent or unreadable (the caller's
    backoff applies then).

    Delta-seconds (RFC 9110: digits only, so "-5", "1.5" and "inf" are ignored) or an HTTP date
    (a date in the past is 0; one without a zone is GMT, as every HTTP date is), at most ``cap_s``.
    ``now`` is the wall clock in seconds since the epoch, ``time.time()`` when not given."""
    text = (value or "").strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return min(float(text), cap_s)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    wall = time.time() if now is None else now
    return min(max(0.0, when.timestamp() - wall), cap_s)


def retry_after_s(
    response: httpx.Response, now: float | None = None, cap_s: float = RETRY_AFTER_MAX_S
) -> float | None:
    """A response's ``Retry-After`` header as seconds (see ``parse_retry_after``), None when absent."""
    return parse_retry_after(response.headers.get("retry-after"), now, cap_s)
