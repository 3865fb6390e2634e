"""In-memory token buckets for per-device and per-address rate limits (429 + Retry-After)."""

from __future__ import annotations

import time

from appliance.errors import TooManyRequests
from edge_api.errors import retry_after_seconds


class TokenBuckets:
    """One bucket per key: ``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: int, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, what: str = "requests") -> None:
        """Spend one token or raise TooManyRequests saying when to come back."""
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self.rate if self.rate > 0 else 60.0
            raise TooManyRequests(
                f"too many {what}; retry in {retry_after_seconds(wait)} s", retry_after_seconds(wait)
            )
        if len(self._buckets) >= self.max_keys and key not in self._buckets:
            self._forget_full_buckets(now)
        self._buckets[key] = (tokens - 1.0, now)

    def _forget_full_buckets(self, now: float) -> None:
        # A bucket that has refilled completely carries no information; drop those to bound memory.
        full_after = self.burst / self.rate if self.rate > 0 else 0
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}
