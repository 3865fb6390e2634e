"""A fault-injecting HTTP/1.1 proxy for uplink tests.

It sits between the box and a receiver and drops, resets, delays, refuses or cuts requests on purpose,
so a test can prove the outbox survives the network a venue really has. Standard library only; it runs
its own asyncio loop in a background thread, so plain synchronous tests can use it as easily as async
ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import random
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

logger = logging.getLogger(__name__)

UPSTREAM_TIMEOUT_S = 30.0
CONTROL_TIMEOUT_S = 5.0
COUNTER_NAMES = (
    "connections",
    "requests",
    "forwarded",
    "drop",
    "reset_before",
    "delay",
    "status_500",
    "status_503",
    "status_429",
    "cut_after_commit",
    "cut_mid_response",
    "bad_gateway",
)
# Checked per request in this order; the order is part of what makes a seeded run reproducible.
FAULT_NAMES = (
    "drop",
    "reset_before",
    "delay",
    "status_500",
    "status_503",
    "status_429",
    "cut_after_commit",
    "cut_mid_response",
)
# A proxy must not pass these on (RFC 9110 §7.6.1); the two connections are managed separately.
_HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection"}
_REASONS = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
# What a broken or silent upstream can raise while we talk to it; the client then gets a 502.
_UPSTREAM_ERRORS = (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


@dataclass(frozen=True)
class Faults:
    """Per-request probabilities (0..1), checked in field order with the proxy's seeded RNG.

    ``drop`` and ``reset_before`` end the request unforwarded. ``delay`` only adds latency, so the
    checks after it still apply. The first status or cut fault that fires decides the answer.
    Frozen, so a running proxy can swap a whole set in one assignment.
    """

    drop: float = 0.0
    reset_before: float = 0.0
    delay: float = 0.0
    status_500: float = 0.0
    status_503: float = 0.0
    status_429: float = 0.0
    cut_after_commit: float = 0.0
    cut_mid_response: float = 0.0
    delay_s: float = 0.5
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        for name in FAULT_NAMES:
            probability = getattr(self, name)
            if not 0.0 <= probability <= 1.0:
                raise ValueError(f"Faults.{name} is {probability}: a probability must be between 0 and 1")
        if self.delay_s < 0 or self.retry_after_s < 0:
            raise ValueError("Faults.delay_s and Faults.retry_after_s must not be negative")


class _Head:
    """A message's start line and raw header lines, kept byte for byte so that forwarding changes
    nothing but the hop-by-hop headers."""

    def __init__(self, raw: bytes) -> None:
        self.start, *self.lines = raw.removesuffix(b"\r\n\r\n").split(b"\r\n")
        if len(self.start.split(b" ")) < 2:
            raise ValueError(f"malformed start line {self.start[:80]!r}")

    def get(self, name: bytes) -> bytes | None:
        for line in self.lines:
            key, colon, value = line.partition(b":")
            if colon and key.strip().lower() == name:
                return value.strip()
        return None

    def encode(self, connection: bytes | None) -> bytes:
        kept = [line for line in self.lines if line.partition(b":")[0].strip().lower() not in _HOP_BY_HOP]
        if connection is not None:
            kept.append(b"Connection: " + connection)
        return b"\r\n".join([self.start, *kept]) + b"\r\n\r\n"


class FaultProxy:
    """An HTTP/1.1 proxy on 127.0.0.1 that injects ``Faults`` between a client and one upstream.

    Each client request gets a fresh upstream connection (``Connection: close`` upstream); the client
    connection is kept alive between requests unless a fault, or the client, closes it.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        faults: Faults,
        seed: int = 0,
        *,
        upstream_timeout_s: float = UPSTREAM_TIMEOUT_S,
    ) -> None:
        if not _is_loopback(upstream_host):
            raise ValueError(f"upstream {upstream_host!r} is not a loopback address: the proxy is for tests")
        self._upstream_host = upstream_host
        self._upstream_port = upstream_port
        self._upstream_timeout_s = upstream_timeout_s
        self._faults = faults
        # Only the loop thread draws from it, so a seed gives the same faults for the same requests.
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTER_NAMES, 0)
        self._port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        # Loop-thread state below.
        self._stopping: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    # -- control, from the test's thread -------------------------------------------------------

    def start(self) -> Self:
        """Starts listening on a free loopback port in a background thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("this FaultProxy was already started; make a new one")
        self._thread = threading.Thread(target=self._run, name="faultproxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(CONTROL_TIMEOUT_S):
            raise RuntimeError(f"fault proxy did not start listening within {CONTROL_TIMEOUT_S} s")
        if self._start_error is not None:
            raise RuntimeError("fault proxy could not start listening") from self._start_error
        return self

    def stop(self) -> None:
        """Closes the listener and every open connection, then joins the thread."""
        if self._thread is None:
            return
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            # RuntimeError: the loop already ended, because it failed to start.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        self._thread.join(CONTROL_TIMEOUT_S * 2)
        if self._thread.is_alive():
            raise RuntimeError("fault proxy thread did not stop")

    def __enter__(self) -> Self:
        return self if self._thread is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("fault proxy is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._faults

    def set_faults(self, faults: Faults) -> None:
        """Applies ``faults`` from the next request on; a request already being handled keeps its own."""
        with self._lock:
            self._faults = faults

    @property
    def counts(self) -> dict[str, int]:
        """A snapshot of the counters (see ``COUNTER_NAMES``)."""
        with self._lock:
            return dict(self._counts)

    def refuse(self, down: bool) -> None:
        """``True`` simulates an outage: the listening socket closes (new connections get
        ECONNREFUSED) and open client connections close, as when a receiver goes down.
        ``False`` listens again on the same port."""
        self._call(self._go_down() if down else self._come_up())

    # -- the loop thread -----------------------------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            coroutine.close()
            raise RuntimeError("fault proxy is not running")
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(CONTROL_TIMEOUT_S)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        try:
            await self._come_up()
        except OSError as exc:
            self._start_error = exc
            return
        finally:
            self._ready.set()
        await self._stopping.wait()
        await self._go_down()

    async def _come_up(self) -> None:
        if self._server is not None:
            return
        # Port 0 on first start; the same port afterwards, so the box's configured URL stays right.
        self._server = await asyncio.start_server(self._serve_connection, "127.0.0.1", self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def _go_down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        connections = list(self._connections.items())
        for task, writer in connections:
            writer.transport.abort()
            task.cancel()
        await asyncio.gather(*(task for task, _ in connections), return_exceptions=True)
        # One more turn of the loop runs the aborted transports' callbacks, which close the sockets.
        await asyncio.sleep(0)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _fires(self, probability: float) -> bool:
        return probability >= 1.0 or (probability > 0.0 and self._random.random() < probability)

    def _inject(self, fault: str, head: _Head) -> None:
        self._count(fault)
        logger.debug("fault proxy: %s on %s", fault, head.start.decode(errors="replace"))

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        self._count("connections")
        try:
            while await self._serve_request(reader, writer):
                pass
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # the client went away or sent something we do not speak: just close
        except asyncio.CancelledError:
            # Our own shutdown. Ending normally matters: Python 3.11's start_server calls
            # task.exception() on a cancelled handler and logs a spurious error.
            pass
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def _serve_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Handles one request; returns whether the client connection stays open for another."""
        try:
            head = _Head(await reader.readuntil(b"\r\n\r\n"))
        except asyncio.IncompleteReadError:
            return False  # the client closed between requests
        if head.get(b"transfer-encoding") is not None:
            writer.write(_problem(501, "the fault proxy reads Content-Length bodies only", close=True))
            await writer.drain()
            return False
        body = await reader.readexactly(int(head.get(b"content-length") or b"0"))
        connection = (head.get(b"connection") or b"").lower()
        keep_alive = head.start.endswith(b"HTTP/1.1") and b"close" not in connection
        self._count("requests")
        faults = self.faults

        if self._fires(faults.drop):
            self._inject("drop", head)
            return False  # the caller closes: FIN, nothing sent
        if self._fires(faults.reset_before):
            self._inject("reset_before", head)
            _reset(writer)
            return False
        if self._fires(faults.delay):
            self._inject("delay", head)
            # The request is forwarded after the sleep even if the client gave up meanwhile: the
            # receiver gets it while the box saw a timeout, the case idempotency keys exist for.
            await asyncio.sleep(faults.delay_s)
        for status in (500, 503, 429):
            if self._fires(getattr(faults, f"status_{status}")):
                self._inject(f"status_{status}", head)
                retry_after_s = None if status == 500 else faults.retry_after_s
                detail = "injected by the fault proxy; the request was not forwarded"
                writer.write(_problem(status, detail, retry_after_s=retry_after_s, close=not keep_alive))
                await writer.drain()
                return keep_alive
        cut = None
        if self._fires(faults.cut_after_commit):
            cut = "cut_after_commit"
        elif self._fires(faults.cut_mid_response):
            cut = "cut_mid_response"

        try:
            response, response_body, framed = await self._exchange(head, body)
        except _UPSTREAM_ERRORS as exc:
            self._count("bad_gateway")
            detail = f"fault proxy could not get a response from upstream: {exc!r}"
            writer.write(_problem(502, detail, close=not keep_alive))
            await writer.drain()
            return keep_alive
        # An HTTP/1.0 or close-delimited response cannot be followed by another on the same connection.
        keep_alive = keep_alive and framed and response.start.startswith(b"HTTP/1.1")
        data = response.encode(None if keep_alive else b"close") + response_body
        if cut == "cut_after_commit":
            self._inject(cut, head)
            return False  # upstream has answered; the client gets a FIN and none of it
        if cut == "cut_mid_response":
            self._inject(cut, head)
            writer.write(data[: len(data) // 2])
            await writer.drain()
            return False
        writer.write(data)
        await writer.drain()
        return keep_alive

    async def _exchange(self, head: _Head, body: bytes) -> tuple[_Head, bytes, bool]:
        """Sends one request upstream on a fresh connection and reads the whole response: its head,
        its body bytes as sent, and whether the body was framed (Content-Length or chunked)."""
        async with asyncio.timeout(self._upstream_timeout_s):
            reader, writer = await asyncio.open_connection(self._upstream_host, self._upstream_port)
            try:
                writer.write(head.encode(b"close") + body)
                await writer.drain()
                self._count("forwarded")
                response = _Head(await reader.readuntil(b"\r\n\r\n"))
                status = int(response.start.split(b" ")[1])
                if head.start.startswith(b"HEAD ") or status in (204, 304):
                    return response, b"", True
                if b"chunked" in (response.get(b"transfer-encoding") or b"").lower():
                    return response, await _read_chunked(reader), True
                length = response.get(b"content-length")
                if length is not None:
                    return response, await reader.readexactly(int(length)), True
                return response, await reader.read(), False
            finally:
                writer.close()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    """A chunked body's bytes exactly as sent, trailers included, so the client can parse them."""
    parts = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        parts.append(size_line)
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            break
        parts.append(await reader.readexactly(size + 2))
    while True:
        line = await reader.readuntil(b"\r\n")
        parts.append(line)
        if line == b"\r\n":
            return b"".join(parts)


def _problem(status: int, detail: str, *, retry_after_s: int | None = None, close: bool) -> bytes:
    """A whole RFC 9457 problem+json response, as a receiver or its front proxy would send one."""
    title = _REASONS[status]
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()
    lines = [
        f"HTTP/1.1 {status} {title}",
        "Content-Type: application/problem+json",
        f"Content-Length: {len(body)}",
    ]
    if retry_after_s is not None:
        lines.append(f"Retry-After: {retry_after_s}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _reset(writer: asyncio.StreamWriter) -> None:
    """Closes with a TCP RST instead of a FIN: SO_LINGER on with a zero timeout discards the socket."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
