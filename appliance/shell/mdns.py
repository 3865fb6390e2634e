"""The box's mDNS/DNS-SD advertisement, so judge tablets on the venue Wi-Fi find it by name.

Nobody at a venue should type an IP address: the box announces itself as a ``_venuebox._tcp``
service (PROTOCOL.md, "Discovery"), instance name = its display name, host name derived from it,
and a TXT record that tells a tablet which box and event it is looking at before it connects. The
advertisement follows the box: re-announced when its addresses change (Wi-Fi reconnects, DHCP
renewals), withdrawn with goodbye packets on a clean shutdown so tablets drop it at once.

What a venue tech sees from a laptop on the same LAN::

    $ avahi-browse -rt _venuebox._tcp
    +  wlan0 IPv4 Main stage box                      _venuebox._tcp       local
    =  wlan0 IPv4 Main stage box                      _venuebox._tcp       local
       hostname = [main-stage-box.local]
       address = [192.168.1.20]
       port = [8443]
       txt = ["fp=3f9c…" "tls=1" "api=/api/v1" "event=spring-cup-2026" "box=7d1e…" "v=1"]

and on the box itself (or with ``@<box address>`` from a laptop), plain ``dig`` asks the
responder directly on port 5353::

    $ dig -p 5353 @127.0.0.1 _venuebox._tcp.local PTR +short
    Main\\032stage\\032box._venuebox._tcp.local.
    $ dig -p 5353 @127.0.0.1 main-stage-box.local A +short
    192.168.1.20

A second box with the same display name is renamed as DNS-SD says ("Main stage box (2)", host
``main-stage-box-2.local.``): before registering, the box asks who already uses the name with a
one-shot query from an ephemeral port. python-zeroconf's own probe cannot be relied on for that:
its unicast (QU) answers go to port 5353, where the kernel hands them to just one of the sockets
sharing it, so another responder on the same host usually misses them. The library's own rename
(``allow_name_change=True``, "Main stage box-2") stays as the safety net for a race.

The box advertises only addresses its tablet API listens on (``listen_host``): every LAN address
when it listens on all of them (``::``; ``0.0.0.0`` is IPv4 only, so the IPv4 ones), the one address
it is bound to otherwise (loopback included: a box on ``127.0.0.1`` answers on loopback alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time

import ifaddr
from zeroconf import InterfaceChoice, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from appliance.shared.fingerprint import normalise_fingerprint
from appliance.shared.hostnet import MAX_LABEL_BYTES, current_addresses, host_label
from appliance.shared.protocol_names import API_PATH, SERVICE_TYPE, TXT_VERSION

log = logging.getLogger(__name__)

# Advertised when the chosen interfaces have no LAN address, so the box still resolves locally.
LOOPBACK_ADDRESS = "127.0.0.1"
# How long to collect other boxes' answers before picking a name: the query leaves 20-120 ms after
# the start (RFC 6762 section 5.2) and answers to a query from an ephemeral port come straight back
# by unicast (on a venue LAN within a few ms; allow a Wi-Fi station's power-save wake-up too). A
# late answer is not lost either: the library's probe then renames the box ("Name-2").
_NAME_CHECK_S = 0.6


def _instance_label(name: str, number: int) -> str:
    """The instance name for the n-th box of a name: "Main stage box", "Main stage box (2)", ...

    Dots become spaces (python-zeroconf writes every dot as a label break) and the result fits in
    one 63-byte DNS label."""
    base = " ".join(name.replace(".", " ").split()) or "venuebox"
    suffix = "" if number == 1 else f" ({number})"
    while len((base + suffix).encode("utf-8")) > MAX_LABEL_BYTES:
        base = base[:-1].rstrip()
    return base + suffix


def txt_record(box_id: str, event_id: str | None, tls_fingerprint: str | None) -> dict[str, str]:
    """The TXT keys of PROTOCOL.md; ``fp`` (hex sha256 of the TLS certificate) only with TLS.
    ValueError when ``tls_fingerprint`` is not one (see `normalise_fingerprint`)."""
    txt = {"v": TXT_VERSION, "box": box_id, "event": event_id or "", "api": API_PATH}
    if tls_fingerprint is None:
        txt["tls"] = "0"
        return txt
    txt["tls"] = "1"
    txt["fp"] = normalise_fingerprint(tls_fingerprint)
    return txt


def advertised_addresses(listen_host: str | None, interfaces: list[str] | None = None) -> list[str]:
    """What to advertise for a tablet API listening on ``listen_host`` (its bound address).

    None, "" or "::" (every address, both families): the LAN addresses on ``interfaces``;
    "0.0.0.0" (every IPv4 address): the IPv4 ones; a specific address: that one alone, even
    loopback. Without any LAN address: loopback, so the box still resolves on itself."""
    if listen_host in (None, "", "::"):
        return current_addresses(interfaces) or [LOOPBACK_ADDRESS]
    if listen_host == "0.0.0.0":
        ipv4 = [a for a in current_addresses(interfaces) if ipaddress.ip_address(a).version == 4]
        return ipv4 or [LOOPBACK_ADDRESS]
    return [str(ipaddress.ip_address(listen_host.split("%", 1)[0]))]


def names_in_use(
    interfaces: list[str] | InterfaceChoice, window_s: float = _NAME_CHECK_S
) -> tuple[set[str], set[str]]:
    """The instance names (lower case, without the service type) and host names other boxes
    advertise, collected for ``window_s`` seconds. Blocking: python-zeroconf's synchronous API,
    which runs its own event loop thread."""
    seen: set[str] = set()

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            seen.discard(name)
        else:
            seen.add(name)

    # A one-shot query from ephemeral ports (RFC 6762 section 5.1): responders answer it by
    # unicast at once, to this socket alone, even when they run on this very host.
    querier = Zeroconf(interfaces=interfaces, unicast=True)
    try:
        browser = ServiceBrowser(querier, SERVICE_TYPE, handlers=[on_change])
        time.sleep(window_s)
        browser.cancel()
        found = set(seen)
        instances = {name[: -len(SERVICE_TYPE) - 1].lower() for name in found}
        hosts: set[str] = set()
        for name in found:
            other = ServiceInfo(SERVICE_TYPE, name)
            if other.load_from_cache(querier) and other.server:
                hosts.add(other.server.lower())
    finally:
        querier.close()
    return instances, hosts


class Advertisement:
    """The box's DNS-SD advertisement: ``await start()``, ``await update_event(...)``, ``await stop()``.

    Owns one AsyncZeroconf (the library's default sockets: port 5353 shared with SO_REUSEPORT, so
    several responders can run on one host) and a task that re-announces on address changes.
    ``listen_host`` is the tablet API's bound address (see ``advertised_addresses``; None: every
    address). The host name and addresses are known from the start (``tablet_urls`` use them);
    only a clash with another box changes the name."""

    def __init__(
        self,
        *,
        name: str,
        box_id: str,
        event_id: str | None,
        port: int,
        interfaces: list[str] | None = None,
        tls_fingerprint: str | None = None,
        address_poll_s: float = 5.0,
        listen_host: str | None = None,
    ) -> None:
        self._name = name
        self._box_id = box_id
        self._port = port
        self._interfaces = list(interfaces) if interfaces is not None else None
        self._listen_host = listen_host
        self._tls_fingerprint = tls_fingerprint
        self._address_poll_s = address_poll_s
        self._txt = txt_record(box_id, event_id, tls_fingerprint)
        self._instance = _instance_label(name, 1)
        self._host = f"{host_label(name)}.local."
        self._addresses = advertised_addresses(listen_host, self._interfaces)
        self._aiozc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._update_lock = asyncio.Lock()

    @property
    def instance_name(self) -> str:
        """The instance name actually registered (e.g. "Main stage box (2)" after a clash)."""
        return self._instance

    @property
    def host_name(self) -> str:
        """The advertised host name, e.g. "main-stage-box.local."."""
        return self._host

    @property
    def addresses(self) -> list[str]:
        """The addresses currently advertised."""
        return list(self._addresses)

    @property
    def started(self) -> bool:
        """Whether the name is registered (probed; announced, or being announced)."""
        return self._info is not None

    async def start(self, serving: asyncio.Event | None = None) -> None:
        """Pick a free name (0.6 s), then probe it (~1 s) and announce it (~0.5 s); returns once the
        announcements are sent. The box answers queries for its name once probing ends.

        ``serving`` (the daemon's "the listeners accept connections") is awaited after the name check
        and before probing, so no tablet finds a box that does not answer yet. Raises what zeroconf
        raises (no interface to listen on, ...); a failed start may be tried again."""
        if self._aiozc is not None:
            raise RuntimeError("the mDNS advertisement is already started")
        if self._interfaces is not None:
            known = {adapter.name for adapter in ifaddr.get_adapters()}
            if missing := [name for name in self._interfaces if name not in known]:
                log.warning("mDNS: no network interface named %s on this box (yet)", ", ".join(missing))
        self._addresses = advertised_addresses(self._listen_host, self._interfaces)
        await self._choose_name()
        if serving is not None:
            await serving.wait()
        aiozc = AsyncZeroconf(interfaces=self._socket_interfaces())
        self._aiozc = aiozc
        try:
            info = self._service_info()
            registered = await aiozc.async_register_service(info, allow_name_change=True)
            # Probed: the records are in the registry and the box answers for them from now on.
            self._info = info
            await registered
        except BaseException:
            self._aiozc = self._info = None
            await aiozc.async_close()
            raise
        # The library renames "X" to "X-2" itself if another box took the name meanwhile.
        self._instance = info.name[: -len(SERVICE_TYPE) - 1]
        if info.properties != self._service_info().properties:
            await self._reannounce()  # the event or certificate changed while it was probing
        self._poll_task = asyncio.create_task(self._follow_addresses(), name="mdns-address-poll")
        log.info(
            "mDNS: advertising %r as %s on %s port %d",
            self._instance,
            self._host,
            ", ".join(self._addresses),
            self._port,
        )

    async def update_event(self, event_id: str | None) -> None:
        """Re-announce with ``event=<event_id>`` (empty when None) in the TXT record (~0.5 s).

        Before ``start()`` it only sets what start will announce. A failed announcement is logged,
        not raised: discovery trouble must never fail the event import that called this."""
        self._txt = txt_record(self._box_id, event_id, self._tls_fingerprint)
        try:
            await self._reannounce()
        except Exception:
            log.warning("mDNS: could not re-announce event %r", event_id, exc_info=True)

    async def update_tls(self, fingerprint: str | None) -> None:
        """Re-announce with a new certificate fingerprint (after `venuebox tls rotate`)."""
        self._tls_fingerprint = fingerprint
        self._txt = txt_record(self._box_id, self._txt.get("event") or None, fingerprint)
        try:
            await self._reannounce()
        except Exception:
            log.warning("mDNS: could not re-announce the TLS fingerprint", exc_info=True)

    async def stop(self) -> None:
        """Send goodbye packets and close; safe to call twice, logs (never raises) shutdown problems."""
        aiozc, self._aiozc = self._aiozc, None
        task, self._poll_task = self._poll_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if aiozc is None:
            return
        # Under the lock, so a re-announce in flight finishes before the goodbyes go out.
        async with self._update_lock:
            info, self._info = self._info, None
            try:
                if info is not None:
                    await (await aiozc.async_unregister_service(info))
            except Exception:
                log.warning("mDNS: could not send goodbye packets for %r", self._instance, exc_info=True)
            try:
                await aiozc.async_close()
            except Exception:
                log.warning("mDNS: could not close the responder cleanly", exc_info=True)

    def _socket_interfaces(self) -> list[str] | InterfaceChoice:
        """Where zeroconf opens sockets: the IPv4 addresses of the chosen interfaces plus loopback
        (so tools on the box itself can resolve it); without chosen interfaces, the tablet API's own
        IPv4 address (plus loopback) when it listens on one, loopback alone when that is all it
        listens on, else the library default (all interfaces)."""
        if self._interfaces is not None:
            ipv4 = [a for a in current_addresses(self._interfaces) if ipaddress.ip_address(a).version == 4]
            return [*ipv4, LOOPBACK_ADDRESS]
        if self._listen_host in (None, "", "::", "0.0.0.0"):
            return InterfaceChoice.All
        address = ipaddress.ip_address(self._addresses[0])
        if address.is_loopback:
            return [LOOPBACK_ADDRESS]
        if address.version == 4:
            return [str(address), LOOPBACK_ADDRESS]
        return InterfaceChoice.All

    def _service_info(self) -> AsyncServiceInfo:
        return AsyncServiceInfo(
            SERVICE_TYPE,
            f"{self._instance}.{SERVICE_TYPE}",
            port=self._port,
            properties=self._txt,
            server=self._host,
            parsed_addresses=self._addresses,
        )

    async def _choose_name(self) -> None:
        """Take the first of "Name", "Name (2)", ... whose instance and host names no other box uses.

        The check runs on a thread of its own (``names_in_use``): while the daemon's event loop is
        busy starting (imports, building the apps), the query still goes out and the answers still
        come in, so the check costs no start-up time and its window is never cut short."""
        instances, hosts = await asyncio.to_thread(names_in_use, self._socket_interfaces())
        label, number = host_label(self._name), 1
        while True:
            instance = _instance_label(self._name, number)
            host = f"{label}.local." if number == 1 else f"{label}-{number}.local."
            if instance.lower() not in instances and host not in hosts:
                break
            number += 1
        if number > 1:
            log.info("mDNS: %r is taken on this LAN, advertising as %r", self._name, instance)
        self._instance, self._host = instance, host

    async def _reannounce(self) -> None:
        """Replace the registered records with the current name, TXT and addresses."""
        async with self._update_lock:
            if self._aiozc is None or self._info is None:
                return
            info = self._service_info()
            announced = await self._aiozc.async_update_service(info)
            self._info = info  # registered now, even if the announcements below are cut short
            await announced

    async def _follow_addresses(self) -> None:
        while True:
            await asyncio.sleep(self._address_poll_s)
            try:
                await self._refresh_addresses()
            except Exception:
                log.warning("mDNS: could not re-announce after an address change", exc_info=True)

    async def _refresh_addresses(self) -> None:
        addresses = advertised_addresses(self._listen_host, self._interfaces)
        if addresses == self._addresses or self._aiozc is None:
            return
        log.info("mDNS: addresses changed from %s to %s", self._addresses, addresses)
        self._addresses = addresses
        # Records first, then sockets: a sender added for a new interface re-announces the registry,
        # which then already holds the new addresses (a no-op when the interface set is unchanged).
        await self._reannounce()
        await self._aiozc.async_update_interfaces(self._socket_interfaces())
