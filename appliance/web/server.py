"""uvicorn embedded in a process that owns its event loop and its signals: the daemon's tablet,
admin and landing listeners, and the reference receiver.

* ``bind``: the listening socket, made before the server starts (so ``--port 0`` is known at once
  and a busy port fails before anything else starts).
* ``server_config``: how every listener runs under uvicorn (no logging setup of its own, no access
  log, 5 s to finish the requests in flight at stop).
* ``EmbeddedServer``: uvicorn's server, served on those sockets, which leaves signals to the process
  (uvicorn re-raises a signal it captured after its shutdown, and the process would not exit 0),
  can put a protocol factory in front of uvicorn's (the daemon's connection gate) and stops without
  waiting on connections that carry no request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator
from ssl import SSLContext
from typing import Any

import uvicorn

from appliance.shared.netloc import http_url

log = logging.getLogger("venuebox.web")

ProtocolFactory = Callable[[], asyncio.Protocol]
# Given uvicorn's protocol factory and the listener's TLS context, the factory the listener is
# created with (TLS then started by it: the listener itself is created without).
FrontFactory = Callable[[ProtocolFactory, SSLContext | None], ProtocolFactory]
GRACEFUL_SHUTDOWN_S = 5
BACKLOG = 2048
# How often a stopping server looks for connections to hurry along (see EmbeddedServer.shutdown).
_SHUTDOWN_SWEEP_S = 0.2


def bind(host: str, port: int, *, inheritable: bool = False) -> socket.socket:
    """A listening TCP socket on ``host`` (an IPv6 address or an IPv4 one) and ``port`` (0: any)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns TCP_NODELAY on for accepted connections only when the
    # listening socket says TCP, and without it a reply's body waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    if inheritable:
        sock.set_inheritable(True)
    return sock


def socket_url(sock: socket.socket, scheme: str = "http") -> str:
    """The URL of a listening socket (a wildcard address answers on loopback too)."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return http_url(scheme, host, port)


def server_config(app: Any, **options: Any) -> uvicorn.Config:
    """How an app runs under an ``EmbeddedServer``: on the process's own loop, without uvicorn's
    logging setup or access log, 5 s to finish requests in flight at stop; ``options`` on top."""
    return uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        loop="none",
        **{"http": "auto", **options},
    )


class EmbeddedServer(uvicorn.Server):
    """uvicorn's server for a process that owns its signals: set ``should_exit`` to stop it.

    With a ``front`` (the daemon's LAN-facing listeners: edge_api/connections.py), every accepted
    connection meets it before TLS or HTTP, and it starts TLS itself."""

    def __init__(self, config: uvicorn.Config, front: FrontFactory | None = None) -> None:
        super().__init__(config)
        self.front = front

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if self.front is None or not sockets:
            await super().startup(sockets)
            return
        # uvicorn's startup for sockets it is given, with the front's factory in front of its protocol
        # and TLS started by the front.
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            raise SystemExit(uvicorn.server.STARTUP_FAILURE)
        config = self.config

        def create_protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )

        factory = self.front(create_protocol, config.ssl)
        loop = asyncio.get_running_loop()
        self.servers = [
            await loop.create_server(factory, sock=sock, backlog=config.backlog) for sock in sockets
        ]
        self.started = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's graceful shutdown (stop accepting, finish the requests in flight within
        ``timeout_graceful_shutdown``), hurrying along the connections that carry no request, which
        it would otherwise wait on for its whole timeout and then log as an ERROR:

        * a connection that reaches HTTP after the shutdown began (a TLS handshake under way: the
          front hands it to HTTP only once done) never heard it: it is told now;
        * a TLS connection HTTP has closed waits for the client's close_notify, and an idle
          keep-alive client that is not reading never sends one: it is dropped.

        A connection whose transport raises when hurried is left to its own close (logged at debug);
        the others are still hurried. The sweep cannot reach the socket of a TLS connection HTTP
        closed twice (Python 3.11's TLS transport lets go of its protocol at the second close); on
        a gated listener, the gate's TLS shutdown deadline closes it (edge_api/connections.py)."""
        sweeper = asyncio.create_task(self._hurry_idle_connections())
        try:
            await super().shutdown(sockets)
        finally:
            sweeper.cancel()

    async def _hurry_idle_connections(self) -> None:
        while True:
            await asyncio.sleep(_SHUTDOWN_SWEEP_S)
            for connection in list(self.server_state.connections):
                try:
                    self._hurry(connection)
                except Exception:
                    log.debug("could not hurry a connection along at stop", exc_info=True)

    def _hurry(self, connection: Any) -> None:
        cycle = getattr(connection, "cycle", None)
        transport = getattr(connection, "transport", None)
        idle = cycle is None or getattr(cycle, "response_complete", False)
        if not idle or transport is None:
            return
        if not transport.is_closing():
            connection.shutdown()  # a late one: closes it, as uvicorn did the others
        elif self.config.ssl is not None:
            transport.abort()
