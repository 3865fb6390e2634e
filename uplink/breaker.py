"""The uplink's circuit breaker: after ``uplink_breaker_failures`` failures in a row, one trial
request per backoff until one succeeds."""

from __future__ import annotations

from enum import StrEnum


class BreakerState(StrEnum):
    """As the uplink state row stores it (appliance/core/storage/schema.py, ``uplink_state.breaker``)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """closed: requests flow; after ``threshold`` failures in a row, open: nothing is sent until the
    backoff has passed; then half-open: one trial request, which closes it (success) or opens it
    again (failure)."""

    def __init__(self, threshold: int, failures: int = 0, state: str = BreakerState.CLOSED) -> None:
        """``failures`` and ``state`` as the uplink state row stored them: a breaker that was
        half-open (or is unknown) resumes open when the failures reached ``threshold``, else closed."""
        self.threshold = threshold
        self.failures = failures
        self.state = (
            BreakerState.OPEN
            if state == BreakerState.OPEN or (state != BreakerState.CLOSED and failures >= threshold)
            else BreakerState.CLOSED
        )

    def before_attempt(self) -> None:
        if self.state is BreakerState.OPEN:
            self.state = BreakerState.HALF_OPEN

    def success(self) -> None:
        self.failures = 0
        self.state = BreakerState.CLOSED

    def failure(self) -> None:
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.threshold:
            self.state = BreakerState.OPEN
