"""Finding boxes on the LAN by mDNS: each box announces ``_venuebox._tcp.local.`` with a TXT record
(docs/protocol.md: ``v``, ``box``, ``event``, ``api``, ``tls``, ``fp``), read here into a `BoxAddress`.

    box = discover()[0]
    client = TabletClient.for_box(box, Path("~/.tablet").expanduser())  # pins the TXT fingerprint
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from zeroconf import InterfaceChoice, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from appliance.shared.netloc import http_url
from appliance.shared.protocol_names import API_PATH, SERVICE_TYPE


@dataclass(frozen=True)
class BoxAddress:
    """A box found by mDNS, with its TXT record read."""

    name: str  # the instance name (the box's display name)
    host: str  # its host name, e.g. "venuebox-a.local."
    addresses: tuple[str, ...]
    port: int
    protocol: str  # TXT v
    box_id: str
    event_id: str | None
    api: str
    tls: bool
    fingerprint: str | None  # sha256 of the TLS certificate, hex, when tls

    @property
    def base_url(self) -> str:
        """``http(s)://<address>:<port>``, preferring an IPv4 address (no API path)."""
        scheme = "https" if self.tls else "http"
        ordered = sorted(self.addresses, key=lambda a: ":" in a)
        return http_url(scheme, ordered[0] if ordered else self.host.rstrip("."), self.port)


def discover(
    timeout_s: float = 5.0, *, max_boxes: int | None = None, interfaces: Sequence[str] | None = None
) -> list[BoxAddress]:
    """Boxes advertising ``_venuebox._tcp.local.``, browsing for up to ``timeout_s`` seconds (less
    once ``max_boxes`` are found). ``interfaces`` limits mDNS to those addresses (default: all).

    Blocking; from async code use `async_discover`."""
    return asyncio.run(async_discover(timeout_s, max_boxes=max_boxes, interfaces=interfaces))


async def async_discover(
    timeout_s: float = 5.0, *, max_boxes: int | None = None, interfaces: Sequence[str] | None = None
) -> list[BoxAddress]:
    """`discover` for async code."""
    aiozc = AsyncZeroconf(interfaces=list(interfaces) if interfaces else InterfaceChoice.All)
    found: dict[str, BoxAddress] = {}
    resolving: set[asyncio.Task[None]] = set()
    enough = asyncio.Event()
    resolve_ms = int(min(3.0, max(timeout_s, 0.5)) * 1000)

    async def resolve(name: str) -> None:
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if await info.async_request(aiozc.zeroconf, resolve_ms):
            found[name] = _box_address(name, info)
            if max_boxes is not None and len(found) >= max_boxes:
                enough.set()

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated):
            task = asyncio.ensure_future(resolve(name))
            resolving.add(task)
            task.add_done_callback(resolving.discard)
        elif state_change is ServiceStateChange.Removed:
            found.pop(name, None)

    browser = AsyncServiceBrowser(aiozc.zeroconf, SERVICE_TYPE, handlers=[on_change])
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(enough.wait(), timeout_s)
        if resolving and not enough.is_set():
            # Names seen near the end get a short grace to resolve.
            await asyncio.wait(set(resolving), timeout=resolve_ms / 1000)
    finally:
        for task in list(resolving):
            task.cancel()
        await browser.async_cancel()
        await aiozc.async_close()
    return sorted(found.values(), key=lambda b: b.name)


def _box_address(name: str, info: AsyncServiceInfo) -> BoxAddress:
    txt = {
        (k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)): (
            v.decode("utf-8", "replace") if isinstance(v, bytes) else (v or "")
        )
        for k, v in (info.properties or {}).items()
    }
    suffix = "." + SERVICE_TYPE
    return BoxAddress(
        name=name[: -len(suffix)] if name.endswith(suffix) else name,
        host=info.server or "",
        addresses=tuple(info.parsed_addresses()),
        port=int(info.port or 0),
        protocol=txt.get("v", ""),
        box_id=txt.get("box", ""),
        event_id=txt.get("event") or None,
        api=txt.get("api") or API_PATH,  # a box whose TXT record names none
        tls=txt.get("tls") == "1",
        fingerprint=txt.get("fp") or None,
    )
