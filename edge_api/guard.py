"""What keeps one client on the venue LAN from starving the others, before any handler runs.

* ``ClientGuard`` (plain ASGI, around the tablet app): a token bucket per client address (429 with
  ``Retry-After``), a cap on the total size of the request headers (431), and a deadline for the
  request body (408): the body is read here, up to ``max_body_bytes`` (413), within
  ``body_timeout_s``, then handed to the app. A client that trickles its body ties up nothing
  but its own request, for a bounded time.
* ``GuardedProtocol`` (uvicorn's httptools protocol): a deadline for the request line and
  headers, counted from the connection or from the previous response, so a client that sends its
  head a byte at a time (slowloris) is cut off, and a cap on the bytes one head may buffer.
  (uvicorn's h11 parser bounds heads by itself, but costs about twice the CPU per request:
  bench/lan_side.py.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from typing import Any

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from appliance.core.config import Config
from appliance.shared.errors import TooManyRequests
from appliance.web.middleware import request_id_of
from appliance.web.problems import PROBLEM_BASE, PROBLEM_JSON, Problem
from edge_api.limits import TokenBuckets

log = logging.getLogger("venuebox.api")


async def _send_problem(
    send: Any,
    scope: MutableMapping[str, Any],
    status: int,
    slug: str,
    title: str,
    detail: str,
    headers: dict[str, str],
) -> None:
    problem = Problem(
        type=PROBLEM_BASE + slug, title=title, status=status, detail=detail, request_id=request_id_of(scope)
    )
    body = msgspec.json.encode(problem)
    raw = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class ClientGuard:
    """Per-address rate limit, header size cap and body deadline; see the module docstring."""

    def __init__(self, app: Any, config: Config) -> None:
        self.app = app
        self.max_header_bytes = config.max_header_bytes
        self.max_body_bytes = config.max_body_bytes
        self.body_timeout_s = config.body_timeout_s
        self.addresses = TokenBuckets(config.address_rate_per_s, config.address_burst)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        address = scope["client"][0] if scope.get("client") else "unknown"
        try:
            self.addresses.take(address, "requests from this address")
        except TooManyRequests as exc:
            retry = {"Retry-After": str(exc.retry_after)}
            await _send_problem(send, scope, 429, "rate-limited", "Too many requests", exc.detail, retry)
            return
        header_bytes = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if header_bytes > self.max_header_bytes:
            detail = f"the headers are {header_bytes} bytes; the box accepts {self.max_header_bytes}"
            title = "Request headers too large"
            await _send_problem(send, scope, 431, "headers-too-large", title, detail, {"Connection": "close"})
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        body = await self._read_body(scope, receive, send)
        if body is None:
            return
        delivered = False

        async def replay() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only a disconnect can come

        await self.app(scope, replay, send)

    async def _read_body(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> bytes | None:
        """The whole body within the deadline and the size limit; None when refused (answered)."""
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(scope, send)
            return None
        chunks: list[bytes] = []
        size = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                detail = f"the body did not arrive within {self.body_timeout_s:g} s; nothing was stored"
                title = "The request body came too slowly"
                close = {"Connection": "close"}
                await _send_problem(send, scope, 408, "request-timeout", title, detail, close)
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(scope, send)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, scope: MutableMapping[str, Any], send: Any) -> None:
        detail = f"the box accepts request bodies up to {self.max_body_bytes} bytes"
        title = "The request body is larger than the box accepts"
        await _send_problem(send, scope, 413, "payload-too-large", title, detail, {"Connection": "close"})


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a byte cap for each request's head.

    The deadline starts when the connection opens and again when a response completes; it is
    cleared once a request's head is complete. (uvicorn's own keep-alive timer does not do this:
    any byte received cancels it.) The cap bounds what the parser buffers for one head: past
    ``head_cap_bytes`` the request is refused (400) and the connection closed. ClientGuard answers
    431 in words for heads over ``max_header_bytes`` but under this cap."""

    head_timeout_s: float = 10.0
    head_cap_bytes: int = 65_536
    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes: int = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        self._head_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()  # the head arrived in time
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.head_cap_bytes:
            # Raised inside a parser callback: uvicorn answers 400 and closes the connection.
            raise ValueError("request head too large")

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        cycle = self.cycle
        waiting = cycle is None or cycle.response_complete
        if waiting and not self.transport.is_closing():
            log.info("closing a connection that did not send a request head in %.0f s", self.head_timeout_s)
            self.transport.close()


def guarded_protocol(head_timeout_s: float, max_header_bytes: int) -> type[GuardedProtocol]:
    """The protocol class uvicorn builds per connection, with this deadline and a cap of four
    times ``max_header_bytes`` (at least 64 KiB) on what one request head may buffer."""
    cap = max(65_536, 4 * max_header_bytes)
    settings = {"head_timeout_s": head_timeout_s, "head_cap_bytes": cap}
    return type("GuardedProtocol", (GuardedProtocol,), settings)
