"""Pairing URLs: what the console's QR code and `venuebox pair new` carry, and how the tablet client
reads them (the certificate fingerprint rides in the fragment, which browsers never send)."""

from __future__ import annotations

import pytest

from appliance.core.tls import pairing_url
from appliance.shared.fingerprint import grouped, short_fingerprint
from appliance.tablet_client.pinning import PairingLink, parse_pairing_url

FP = "5d0c2e8fa1b7436e9f20d4c1b8a3e6f7d2c5b9a01e4f7a3c6d8b2e5f9a1c4d70"


def test_a_pairing_url_carries_the_code_and_the_fingerprint_and_reads_back() -> None:
    url = pairing_url("https://main-stage.local:8080", "PKFM-XYDM", FP)
    assert url == f"https://main-stage.local:8080/?pair=PKFM-XYDM#fp={FP}"
    assert parse_pairing_url(url) == PairingLink("https://main-stage.local:8080", "PKFM-XYDM", FP)
    # An IPv6 box, a fingerprint written as a person would: the same pin.
    upper = ":".join(FP[i : i + 2] for i in range(0, 64, 2)).upper()
    link = parse_pairing_url(f"https://[fd00::20]:8080/?pair=AB-CD#fp={upper}")
    assert (link.base_url, link.fingerprint) == ("https://[fd00::20]:8080", FP)
    # A plain-HTTP box (a lab) has no certificate to name.
    assert pairing_url("http://127.0.0.1:8080/", "AB-CD", None) == "http://127.0.0.1:8080/?pair=AB-CD"
    assert parse_pairing_url("http://127.0.0.1:8080/?pair=AB-CD").fingerprint is None


@pytest.mark.parametrize(
    "url",
    [
        f"https://box.local:8080/#fp={FP}",  # no code
        "https://box.local:8080/?pair=AB-CD",  # https without the certificate to check
        "https://box.local:8080/?pair=AB-CD#fp=abc",  # not a sha256
        f"ftp://box.local/?pair=AB-CD#fp={FP}",
    ],
)
def test_a_pairing_url_the_client_cannot_check_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_pairing_url(url)


def test_the_short_fingerprint_is_the_start_of_the_grouped_one() -> None:
    assert short_fingerprint(FP) == "5D0C 2E8F A1B7 436E"
    assert grouped(FP).startswith(short_fingerprint(FP) + " ")
