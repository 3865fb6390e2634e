"""The embedded uvicorn server's stop: clean, quick, and an ERROR only when a request really was cut."""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from appliance.core.tls import make_certificate
from appliance.web.server import GRACEFUL_SHUTDOWN_S, EmbeddedServer, bind, server_config
from edge_api.connections import ConnectionGate, gated_factory

SLOW_S = 1.0  # a request in flight when the stop begins


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = (await receive())["type"]  # lifespan.startup, then lifespan.shutdown
            await send({"type": message + ".complete"})
            if message == "lifespan.shutdown":
                return
    if scope["path"] == "/slow":
        await asyncio.sleep(SLOW_S)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    """A key and self-signed certificate in one PEM file, as the box serves its own."""
    key_pem, cert_pem = make_certificate("stage", ["127.0.0.1"])
    path = tmp_path / "box.pem"
    path.write_bytes(key_pem + cert_pem)
    return path


async def _serving(pem: Path) -> tuple[EmbeddedServer, socket.socket, asyncio.Task[None]]:
    """`_hello` served over TLS behind the connection gate, as the daemon's tablet listener is, on a
    free loopback port: (server, its socket, the task serving), once the server has started."""
    sock = bind("127.0.0.1", 0)
    gate = ConnectionGate(per_address=8)
    server = EmbeddedServer(
        server_config(_hello, ssl_certfile=str(pem)),
        front=functools.partial(gated_factory, gate, handshake_timeout_s=10.0),
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    return server, sock, serving


def _handshake(sock: socket.socket) -> ssl.SSLSocket:
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    return client.wrap_socket(sock)


def _slow_request(sock: socket.socket) -> bytes:
    tls_sock = _handshake(sock)
    tls_sock.sendall(b"GET /slow HTTP/1.1\r\nHost: box\r\n\r\n")
    answer = b""
    while chunk := tls_sock.recv(4096):  # until the server closes: it stops after this answer
        answer += chunk
    tls_sock.close()
    return answer


def test_a_tls_connection_that_arrives_as_the_server_stops_does_not_hold_the_stop(
    pem: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A tablet whose TLS handshake is under way when the stop begins reaches HTTP after uvicorn told
    the open connections to close, while another request is finishing; left alone it idles until
    uvicorn's 5 s deadline, which uvicorn logs as an ERROR ("Cancel 0 running task(s), timeout
    graceful shutdown exceeded"). The request in flight is still answered."""

    async def scenario() -> float:
        server, sock, serving = await _serving(pem)
        address = sock.getsockname()[:2]
        busy = asyncio.create_task(asyncio.to_thread(_slow_request, socket.create_connection(address)))
        tablet = socket.create_connection(address)  # accepted, no ClientHello yet
        while not server.server_state.tasks:  # the slow request is in flight
            await asyncio.sleep(0.01)
        stopping = time.monotonic()
        server.should_exit = True
        await asyncio.sleep(0.3)  # uvicorn's shutdown has told the connections it had
        tls_tablet = await asyncio.to_thread(_handshake, tablet)  # then it reaches HTTP, idle
        try:
            await asyncio.wait_for(serving, timeout=15)
            answer = await busy
        finally:
            tls_tablet.close()
            sock.close()
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok")
        return time.monotonic() - stopping

    with caplog.at_level(logging.INFO):
        took = asyncio.run(scenario())
    assert took < SLOW_S + 1.5  # not uvicorn's whole 5 s
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def _answered_then_silent(sock: socket.socket) -> ssl.SSLSocket:
    """A client that asks the server to close after the answer, reads it, then neither reads on
    nor closes: it never sends its close_notify."""
    tls_sock = _handshake(sock)
    tls_sock.sendall(b"GET / HTTP/1.1\r\nHost: box\r\nConnection: close\r\n\r\n")
    answer = b""
    while not answer.endswith(b"ok"):
        answer += tls_sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200")
    return tls_sock


def test_a_tls_connection_closed_after_its_answer_does_not_hold_the_stop(
    pem: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client answered with ``Connection: close`` that never sends its close_notify: HTTP has
    closed the connection, and the stop closes it again, after which Python 3.11's TLS transport no
    longer reaches the socket and the stop's sweep cannot drop it. The gate's TLS shutdown deadline
    closes it before uvicorn's 5 s deadline, which uvicorn would log as an ERROR ("Cancel 0 running
    task(s), timeout graceful shutdown exceeded")."""

    async def scenario() -> float:
        server, sock, serving = await _serving(pem)
        address = sock.getsockname()[:2]
        silent = await asyncio.to_thread(_answered_then_silent, socket.create_connection(address))
        stopping = time.monotonic()
        server.should_exit = True
        try:
            await asyncio.wait_for(serving, timeout=15)
        finally:
            silent.close()
            sock.close()
        return time.monotonic() - stopping

    with caplog.at_level(logging.INFO):
        took = asyncio.run(scenario())
    assert took < GRACEFUL_SHUTDOWN_S - 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class _Transport:
    def __init__(self, abort_raises: bool) -> None:
        self.abort_raises = abort_raises
        self.aborted = False

    def is_closing(self) -> bool:
        return True

    def abort(self) -> None:
        if self.abort_raises:
            raise AttributeError("'NoneType' object has no attribute '_abort'")
        self.aborted = True


class _IdleConnection:
    """What the stop's sweep reads of a uvicorn HTTP connection: no request, a closing transport."""

    def __init__(self, transport: _Transport) -> None:
        self.cycle = None
        self.transport = transport


def test_the_stop_sweep_goes_on_past_a_connection_whose_transport_raises(pem: Path) -> None:
    """One connection's transport raising (a TLS transport closed twice) must not end the sweep:
    the connections after it are still dropped."""
    config = server_config(_hello, ssl_certfile=str(pem))
    config.load()
    server = EmbeddedServer(config)
    broken, waiting = _Transport(abort_raises=True), _Transport(abort_raises=False)
    # In the order the sweep meets them (uvicorn keeps a set; a list fixes the order here).
    server.server_state.connections = [_IdleConnection(broken), _IdleConnection(waiting)]  # type: ignore[assignment]

    async def one_sweep() -> None:
        sweep = asyncio.create_task(server._hurry_idle_connections())
        await asyncio.sleep(0.5)
        sweep.cancel()

    asyncio.run(one_sweep())
    assert waiting.aborted
