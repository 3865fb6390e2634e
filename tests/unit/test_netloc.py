"""Hosts and ports written into URLs: IPv6 addresses bracketed, everything else as it is."""

from __future__ import annotations

import httpx
import pytest

from appliance.shared.netloc import host_port, http_url, url_host


@pytest.mark.parametrize(
    ("host", "written"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("main-stage.local", "main-stage.local"),
        ("::1", "[::1]"),
        ("fe80::1%eth0", "[fe80::1%eth0]"),
        ("[::1]", "[::1]"),  # already bracketed: never twice
    ],
)
def test_an_ipv6_host_is_bracketed_and_others_are_left_alone(host: str, written: str) -> None:
    assert url_host(host) == written


def test_host_and_port_are_written_as_a_url_authority() -> None:
    assert host_port("127.0.0.1", 8081) == "127.0.0.1:8081"
    assert host_port("::1", 8081) == "[::1]:8081"
    assert host_port("::1", None) == "[::1]"
    assert host_port("box.local", 0) == "box.local"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "2001:db8::7", "main-stage.local"])
def test_a_url_made_here_reads_back_as_the_same_host_and_port(host: str) -> None:
    url = http_url("https", host, 8080)
    parsed = httpx.URL(url)
    assert (parsed.scheme, parsed.host, parsed.port) == ("https", host, 8080)
    assert http_url("http", "::1", 8081) == "http://[::1]:8081"
