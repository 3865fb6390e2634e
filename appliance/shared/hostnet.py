"""This host on the network: its LAN addresses and the DNS label of its name. Read by the TLS
certificate (its subject names) and by the mDNS advertisement."""

from __future__ import annotations

import ipaddress
import re
import unicodedata

import ifaddr

# One DNS label (RFC 1035).
MAX_LABEL_BYTES = 63


def host_label(name: str) -> str:
    """The DNS-safe host label for a display name: "Main stage box" -> "main-stage-box"."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    label = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return label[:MAX_LABEL_BYTES].rstrip("-") or "venuebox"


def current_addresses(interfaces: list[str] | None = None) -> list[str]:
    """The box's LAN addresses on ``interfaces`` (names such as "eth0"; None = all), IPv4 first.

    Loopback is left out, and so is IPv6 link-local: an AAAA record cannot carry the zone a
    fe80:: address needs. IPv4 link-local (169.254/16) stays, it is what a LAN without DHCP has."""
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for adapter in ifaddr.get_adapters():
        if interfaces is not None and adapter.name not in interfaces:
            continue
        for ip in adapter.ips:
            address = ipaddress.ip_address(ip.ip if isinstance(ip.ip, str) else ip.ip[0])
            if address.is_loopback or (address.version == 6 and address.is_link_local):
                continue
            found.add(address)
    return [str(a) for a in sorted(found, key=lambda a: (a.version, int(a)))]
