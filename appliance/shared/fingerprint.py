"""A certificate's SHA-256 fingerprint as people read it: in groups of four, whole or its start."""

from __future__ import annotations

# How many groups of four a judge compares (64 bits): short enough to read off a console and a
# browser's certificate viewer, far more than anyone can forge a certificate to match in an event.
SHORT_GROUPS = 4


def grouped(fingerprint: str) -> str:
    """'ab12cd34...' -> 'AB12 CD34 ...': how a person reads it aloud or compares it on a screen."""
    upper = fingerprint.upper()
    return " ".join(upper[i : i + 4] for i in range(0, len(upper), 4))


def short_fingerprint(fingerprint: str) -> str:
    """The first groups of `grouped` ('AB12 CD34 EF56 7890'): what the console and `venuebox pair
    new` show next to a pairing code, for a judge to compare with the certificate a browser shows."""
    return " ".join(grouped(fingerprint).split()[:SHORT_GROUPS])
