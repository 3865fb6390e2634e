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
from appliance.web.server import EmbeddedServer, bind, server_config
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
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A tablet whose TLS handshake is under way when the stop begins reaches HTTP after uvicorn told
    the open connections to close, while another request is finishing; left alone it idles until
    uvicorn's 5 s deadline, which uvicorn logs as an ERROR ("Cancel 0 running task(s), timeout
    graceful shutdown exceeded"). The request in flight is still answered."""
    key_pem, cert_pem = make_certificate("stage", ["127.0.0.1"])
    pem = tmp_path / "box.pem"
    pem.write_bytes(key_pem + cert_pem)

    async def scenario() -> float:
        sock = bind("127.0.0.1", 0)
        gate = ConnectionGate(per_address=8)
        server = EmbeddedServer(
            server_config(_hello, ssl_certfile=str(pem)),
            front=functools.partial(gated_factory, gate, handshake_timeout_s=10.0),
        )
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
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
