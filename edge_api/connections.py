"""Connections on the LAN-facing listeners, counted before TLS or HTTP: what keeps one client
address from holding every file descriptor the box has.

* ``ConnectionGate``: the connections each client address holds open. One more than
  ``max_connections_per_address`` is closed as soon as it is accepted (nothing is read from it,
  no handshake is started), and counted; an address that keeps being refused is a *flood*, which
  the watchdog turns into the ``connection-flood:<address>`` alert (appliance/core/watchdog.py).
* ``gated_factory``: the protocol factory the listener is created with. Each accepted connection
  meets the gate first; admitted, it is handed to TLS (with a deadline for the handshake, so a
  connection that never sends a ClientHello is closed after ``tls_handshake_timeout_s``, and one
  for the close, ``TLS_SHUTDOWN_TIMEOUT_S``), then to uvicorn's HTTP protocol, or to HTTP directly
  on a plain listener.

The gate counts connections from the moment they are accepted, so idle connections that never
start TLS count too: those are what a connection flood is made of.
"""

from __future__ import annotations

import asyncio
import logging
import time
from asyncio.sslproto import SSLProtocol
from collections.abc import Callable
from dataclasses import dataclass
from ssl import SSLContext
from typing import Any, cast

from appliance.web.server import GRACEFUL_SHUTDOWN_S

log = logging.getLogger("venuebox.api")

# How long a TLS connection HTTP has closed may take to send the rest of its answer and its
# close_notify and to hear the client's, before its socket is closed. asyncio's default (30 s)
# outlasts the server's grace at stop (GRACEFUL_SHUTDOWN_S). The stop drops the connections that
# wait on a client's close_notify (EmbeddedServer.shutdown), but it cannot reach the socket of one
# HTTP closed twice (one answered with ``Connection: close``, then told to close by the stop: the
# second close makes Python 3.11's TLS transport let go of its protocol), which would hold the stop
# until uvicorn gives up on it and logs an ERROR. Half the grace: such a connection is gone well
# before that deadline, even one closed as the stop begins.
TLS_SHUTDOWN_TIMEOUT_S = GRACEFUL_SHUTDOWN_S / 2


@dataclass
class Flood:
    """An address's refused connections since it first went over its cap (monotonic seconds)."""

    since: float
    last_refused: float
    refused: int = 0


class ConnectionGate:
    """Open connections per client address, at most ``per_address`` each; see the module docstring.

    Runs on the event loop only (no locking). ``on_refused`` is called for each connection refused
    (a metric's ``inc``)."""

    # Addresses whose flood is tracked for the alert: beyond, connections are still refused and
    # counted, only not named.
    MAX_FLOODS = 1000

    def __init__(
        self,
        per_address: int,
        on_refused: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_address = per_address
        self.on_refused = on_refused
        self.clock = clock
        self.refused = 0
        self._open: dict[str, int] = {}
        self._floods: dict[str, Flood] = {}

    def open_from(self, address: str) -> int:
        return self._open.get(address, 0)

    @property
    def open_total(self) -> int:
        return sum(self._open.values())

    def admit(self, address: str) -> bool:
        """A connection from ``address`` was accepted: True if it may stay (it is counted until
        ``release``), False if it must be closed at once (the address holds its whole cap)."""
        held = self._open.get(address, 0)
        if held < self.per_address:
            self._open[address] = held + 1
            return True
        self.refused += 1
        if self.on_refused is not None:
            self.on_refused()
        now = self.clock()
        flood = self._floods.get(address)
        if flood is None:
            if len(self._floods) >= self.MAX_FLOODS:
                return False
            flood = self._floods[address] = Flood(since=now, last_refused=now)
            log.warning(
                "closing connections from %s at once: it holds %d open, the most one address may",
                address,
                held,
            )
        flood.last_refused = now
        flood.refused += 1
        return False

    def release(self, address: str) -> None:
        """An admitted connection from ``address`` has closed."""
        held = self._open.get(address, 0) - 1
        if held > 0:
            self._open[address] = held
        else:
            self._open.pop(address, None)

    def floods(self, calm_s: float) -> dict[str, dict[str, Any]]:
        """The addresses flooding now, each with how long (``for_s``), its connections refused and
        open. A flood ends once the address is below its cap and has not been refused for
        ``calm_s``; ended floods are forgotten here."""
        now = self.clock()
        current: dict[str, dict[str, Any]] = {}
        for address, flood in list(self._floods.items()):
            held = self._open.get(address, 0)
            if held < self.per_address and now - flood.last_refused >= calm_s:
                del self._floods[address]
                continue
            current[address] = {"for_s": now - flood.since, "refused": flood.refused, "open": held}
        return current


class _Gatekeeper(asyncio.Protocol):
    """The first protocol of every accepted connection: asks the gate, then hands the connection
    over (``transport.set_protocol``) before anything is read from it."""

    def __init__(
        self,
        gate: ConnectionGate,
        app_factory: Callable[[], asyncio.Protocol],
        sslcontext: SSLContext | None,
        handshake_timeout_s: float,
    ) -> None:
        self.gate = gate
        self.app_factory = app_factory
        self.sslcontext = sslcontext
        self.handshake_timeout_s = handshake_timeout_s

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server hands every accepted connection a full Transport.
        transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if peer else "unknown"
        if not self.gate.admit(address):
            transport.abort()
            return
        app = self.app_factory()
        inner: asyncio.BaseProtocol = app
        if self.sslcontext is not None:
            inner = SSLProtocol(
                asyncio.get_running_loop(),
                app,
                self.sslcontext,
                # typeshed wants a Future waiter and an int timeout; CPython takes None and a float.
                None,  # type: ignore[arg-type]
                server_side=True,
                ssl_handshake_timeout=self.handshake_timeout_s,  # type: ignore[arg-type]
                ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT_S,
            )
        inner_lost = inner.connection_lost
        gate = self.gate

        def connection_lost(exc: Exception | None) -> None:
            gate.release(address)
            inner_lost(exc)

        inner.connection_lost = connection_lost  # type: ignore[method-assign]  # wraps this one instance's hook
        transport.set_protocol(inner)
        inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # a refused connection: nothing was counted


def gated_factory(
    gate: ConnectionGate,
    app_factory: Callable[[], asyncio.Protocol],
    sslcontext: SSLContext | None,
    handshake_timeout_s: float,
) -> Callable[[], asyncio.Protocol]:
    """The protocol factory for ``loop.create_server`` (with ``ssl=None``: TLS is started here, for
    admitted connections only, with ``sslcontext``)."""
    return lambda: _Gatekeeper(gate, app_factory, sslcontext, handshake_timeout_s)
