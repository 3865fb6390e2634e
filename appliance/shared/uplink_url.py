"""The uplink receiver's URL: what the box accepts as one (``check_url``, for `venuebox uplink
configure --url` and the ``uplink_url`` setting alike) and the form of it that is safe to show or log
(``shown_url``)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit

from appliance.shared.errors import BadUplinkTarget
from appliance.shared.netloc import host_port


def check_url(url: str, insecure_http: bool = False, opt_in: str = "pass --insecure-http") -> str:
    """The URL, or BadUplinkTarget: http(s), a host, no credentials in it (they would be logged), and
    https:// unless the receiver is on this machine (loopback) or ``insecure_http`` accepts plain
    HTTP (``opt_in``: how a tech says so, named in the refusal)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadUplinkTarget(f"uplink URL {shown_url(url)!r} must be http:// or https:// with a host name")
    if parts.scheme == "http" and not insecure_http and not is_loopback(parts.hostname):
        # The token travels in every request: anyone on the venue LAN or the way to the cloud could
        # read it and the scores, and send records in the box's name.
        raise BadUplinkTarget(
            f"uplink URL {shown_url(url)!r} is plain HTTP to another machine: the uplink token and every "
            f"score would cross the network readable by anyone on the way; use https:// (or {opt_in} "
            "to send in the clear anyway)"
        )
    if parts.username or parts.password:
        raise BadUplinkTarget(
            "the uplink URL must not hold a user or password: the token goes in --token-file"
        )
    if parts.query or parts.fragment:
        raise BadUplinkTarget("the uplink URL must not have a ?query or #fragment")
    return url.rstrip("/")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a URL's host name) is this machine: localhost, 127.0.0.0/8 or ::1."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def shown_url(url: str) -> str:
    """The URL safe to show or log: without any user, password, query or fragment."""
    try:
        parts = urlsplit(url)
        return urlunsplit((parts.scheme, host_port(parts.hostname or "", parts.port), parts.path, "", ""))
    except ValueError:
        return "(unreadable URL)"
