"""Pinning a box's self-signed TLS certificate by its fingerprint (hex SHA-256 of the DER).

The fingerprint comes from the mDNS TXT ``fp``, the box's console, or a pairing URL
(``https://<box>:<port>/?pair=CODE#fp=<sha256 hex>``, the console's QR code), which carries the pin
itself. Before the first request the client reads the certificate the box presents
(`presented_certificate`, nothing is sent over that connection), compares it with the pin, and from
then on trusts exactly that certificate in every handshake (`pinned_context`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

import httpx

from appliance.shared.fingerprint import fingerprint_of_der, normalise_fingerprint
from appliance.tablet_client.errors import BoxUnreachable


@dataclass(frozen=True)
class PairingLink:
    """A pairing URL as the box's console and `venuebox pair new` give it (its QR code):
    ``https://<box>:<port>/?pair=CODE#fp=<sha256 hex>``."""

    base_url: str  # scheme://host:port, where the tablet API lives
    code: str
    fingerprint: str | None  # the certificate the box must present (None: a plain-HTTP box)


def parse_pairing_url(url: str) -> PairingLink:
    """Read a pairing URL; ValueError when it has no ``pair`` code or a malformed ``fp``. The
    fingerprint sits in the fragment, which a browser never sends anywhere."""
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"a pairing URL is http(s)://<box>:<port>/?pair=CODE#fp=…, got {url!r}")
    code = parsed.params.get("pair")
    if not code:
        raise ValueError(f"the pairing URL has no ?pair= code: {url!r}")
    fragment = httpx.QueryParams(parsed.fragment)
    fp = fragment.get("fp")
    fingerprint = normalise_fingerprint(fp) if fp else None
    if parsed.scheme == "https" and fingerprint is None:
        raise ValueError("the pairing URL names no certificate (#fp=…): ask the venue tech for its QR code")
    base = parsed.copy_with(path="/", query=None, fragment=None)
    return PairingLink(base_url=str(base).rstrip("/"), code=code, fingerprint=fingerprint)


async def presented_certificate(url: httpx.URL, connect_s: float) -> bytes:
    """The DER certificate the box at ``url`` shows in a TLS handshake (nothing is sent over it).
    Raises BoxUnreachable when no handshake completes within ``connect_s`` or no certificate is shown."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # read only, to compare with the pin
    host, port = url.host, url.port or 443
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=context), connect_s)
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise BoxUnreachable(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    if not der:
        raise BoxUnreachable("the box did not present a TLS certificate")
    return der


async def presented_fingerprint(url: httpx.URL, connect_s: float) -> str | None:
    """The fingerprint of the certificate the box at ``url`` shows, None when it cannot be read."""
    try:
        return fingerprint_of_der(await presented_certificate(url, connect_s))
    except BoxUnreachable:
        return None


def pinned_context(der: bytes) -> ssl.SSLContext:
    """A TLS context that trusts exactly the certificate ``der`` in every handshake. Host names are
    not checked (a box is reached by address as often as by name)."""
    context = ssl.create_default_context(cadata=der)
    context.check_hostname = False
    return context


def certificate_refused(exc: BaseException) -> bool:
    """Whether a transport error comes from a failed certificate check in the TLS handshake."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)
