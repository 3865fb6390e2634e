"""In-memory token buckets for per-device and per-address rate limits (429 + Retry-After), and the
box-wide budget of failed pairing attempts."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

from appliance.core.watchdog import raise_pairing_flood
from appliance.shared.errors import TooManyRequests
from appliance.shared.times import utcnow
from edge_api.errors import retry_after_seconds

log = logging.getLogger("venuebox.api")


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
        tokens = self.check(key, what, now)
        if len(self._buckets) >= self.max_keys and key not in self._buckets:
            self._forget_full_buckets(now)
        self._buckets[key] = (tokens - 1.0, now)

    def check(self, key: str, what: str = "requests", now: float | None = None) -> float:
        """Raise TooManyRequests, as ``take`` does, when ``key`` has no token left; spend nothing.
        Returns the tokens left."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self.rate if self.rate > 0 else 60.0
            raise TooManyRequests(
                f"too many {what}; retry in {retry_after_seconds(wait)} s", retry_after_seconds(wait)
            )
        return tokens

    def spend(self, key: str) -> bool:
        """Spend one token for something that already happened (never below zero); returns whether
        ``key`` has none left now."""
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = max(0.0, min(self.burst, tokens + (now - last) * self.rate) - 1.0)
        if len(self._buckets) >= self.max_keys and key not in self._buckets:
            self._forget_full_buckets(now)
        self._buckets[key] = (tokens, now)
        return tokens < 1.0

    def _forget_full_buckets(self, now: float) -> None:
        # A bucket that has refilled completely carries no information; drop those to bound memory.
        full_after = self.burst / self.rate if self.rate > 0 else 0
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}


Write = Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]


class PairingFloodGuard:
    """The box-wide budget of failed pairing attempts (wrong, used or expired codes), whatever the
    client address: ``per_minute`` a minute, refilled continuously. Someone guessing codes from many
    addresses gets past the per-address limit, not past this.

    While the budget is spent every pairing attempt answers 429 + Retry-After, as the per-address
    limit does (a right code too: the tablet tries again after Retry-After), and the
    ``pairing-flood`` alert is raised; its ``last_seen`` is refreshed at most every ``refresh_s``
    while attempts keep being refused, so a flood costs the writer almost nothing, and the
    watchdog clears it once none has been refused for ``pair_flood_calm_s``."""

    KEY = "box"
    WHAT = "failed pairing attempts on this box (from any address)"
    MAX_ADDRESSES = 1000

    def __init__(self, per_minute: int, calm_s: float, write: Write) -> None:
        self.per_minute = per_minute
        self.budget = TokenBuckets(per_minute / 60.0, per_minute, max_keys=1)
        self.refresh_s = min(10.0, calm_s / 2)
        self._write = write
        self._alerted_at: float | None = None
        # The addresses of the attempts refused since the alert was last written (for its detail).
        self._addresses: dict[str, int] = {}

    async def admit(self, address: str) -> None:
        """Before a pairing attempt: TooManyRequests while the budget is spent."""
        try:
            self.budget.check(self.KEY, self.WHAT)
        except TooManyRequests:
            await self._flooded(address)
            raise

    async def failed(self, address: str) -> None:
        """A pairing attempt was refused: it spends from the budget, and the one that spends the
        last of it raises the alert."""
        if self.budget.spend(self.KEY):
            await self._flooded(address)

    async def _flooded(self, address: str) -> None:
        if address in self._addresses or len(self._addresses) < self.MAX_ADDRESSES:
            self._addresses[address] = self._addresses.get(address, 0) + 1
        now = time.monotonic()
        if self._alerted_at is not None and now - self._alerted_at < self.refresh_s:
            return
        self._alerted_at = now
        addresses = sorted(self._addresses, key=lambda a: -self._addresses[a])
        self._addresses = {}
        log.warning(
            "pairing flood: more than %d failed pairing attempts a minute on this box; pairing answers 429",
            self.per_minute,
            extra={"addresses": addresses[:5]},
        )
        at = utcnow()
        try:
            await self._write(lambda conn: raise_pairing_flood(conn, self.per_minute, addresses, at))
        except Exception:  # the 429 goes out whatever happens to the alert
            log.exception("pairing flood: the alert could not be stored")
