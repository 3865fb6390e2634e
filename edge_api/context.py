"""What the API handlers share: the store, the config and the rate limiters. Built by create_app."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from litestar import Request

from appliance import __version__
from appliance.config import Config
from appliance.devices import Device, authenticate
from appliance.errors import Unavailable
from appliance.storage.db import Store
from edge_api.limits import TokenBuckets

T = TypeVar("T")


@dataclass
class ApiContext:
    store: Store
    config: Config
    box_id: str
    version: str = __version__
    device_limits: TokenBuckets = field(init=False)
    pair_limits: TokenBuckets = field(init=False)

    def __post_init__(self) -> None:
        self.device_limits = TokenBuckets(self.config.device_rate_per_s, self.config.device_burst)
        self.pair_limits = TokenBuckets(
            self.config.pair_attempts_per_minute / 60.0, self.config.pair_attempts_per_minute
        )

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A write with the configured deadline; past it the client hears 503 and retries safely."""
        try:
            return await asyncio.wait_for(self.store.write(fn), self.config.write_timeout_s)
        except TimeoutError:
            raise Unavailable("the box is too busy to store this right now; retry shortly") from None

    def device(self, request: Request[Any, Any, Any]) -> Device:
        """The paired device behind the request's bearer token (401 otherwise), rate-limited."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        device = self.store.query(
            lambda conn: authenticate(conn, token.strip() if scheme.lower() == "bearer" else None)
        )
        self.device_limits.take(device.device_id)
        return device


def context_of(request: Request[Any, Any, Any]) -> ApiContext:
    return request.app.state.ctx
