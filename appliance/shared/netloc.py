"""Hosts and ports as a URL writes them: an IPv6 address goes in brackets (RFC 3986), so that
``::1`` port 8081 is ``[::1]:8081``, never the unreadable ``::1:8081``."""

from __future__ import annotations


def url_host(host: str) -> str:
    """``host`` as it stands in a URL: an IPv6 address bracketed, a name or IPv4 address as it is
    (a host already bracketed is left alone)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def host_port(host: str, port: int | None) -> str:
    """``host:port`` as a URL's authority writes it (``[::1]:8081``); the host alone without a port."""
    return f"{url_host(host)}:{port}" if port else url_host(host)


def http_url(scheme: str, host: str, port: int) -> str:
    """``scheme://host:port``, e.g. ``https://[fe80::1]:8080``, without a path."""
    return f"{scheme}://{url_host(host)}:{port}"
