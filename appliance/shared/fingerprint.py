"""A certificate's SHA-256 fingerprint: computed from its DER bytes, read from what people type, and
shown as people read it (in groups of four, whole or its start).

The fingerprint (PROTOCOL.md) is the lowercase hex SHA-256 of the certificate's DER bytes: what the
box advertises in its mDNS TXT record (``fp=``) and its pairing URL (``#fp=``), and what a tablet pins.
"""

from __future__ import annotations

import hashlib

# How many groups of four a judge compares (64 bits): short enough to read off a console and a
# browser's certificate viewer, far more than anyone can forge a certificate to match in an event.
SHORT_GROUPS = 4
_HEX_DIGITS = frozenset("0123456789abcdef")


def fingerprint_of_der(der: bytes) -> str:
    """The fingerprint of a DER certificate: its SHA-256, 64 lowercase hex digits."""
    return hashlib.sha256(der).hexdigest()


def normalise_fingerprint(value: str) -> str:
    """'AB:12:…' or 'ab12 …' -> 'ab12…' (64 lowercase hex digits); ValueError otherwise."""
    text = "".join(ch for ch in value if ch not in ": ").lower()
    if len(text) != 64 or not set(text) <= _HEX_DIGITS:
        raise ValueError(f"a certificate fingerprint is 64 hex digits (sha256), got {value!r}")
    return text


def grouped(fingerprint: str) -> str:
    """'ab12cd34...' -> 'AB12 CD34 ...': how a person reads it aloud or compares it on a screen."""
    upper = fingerprint.upper()
    return " ".join(upper[i : i + 4] for i in range(0, len(upper), 4))


def short_fingerprint(fingerprint: str) -> str:
    """The first groups of `grouped` ('AB12 CD34 EF56 7890'): what the console and `venuebox pair
    new` show next to a pairing code, for a judge to compare with the certificate a browser shows."""
    return " ".join(grouped(fingerprint).split()[:SHORT_GROUPS])
