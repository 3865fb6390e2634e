"""The one canonical JSON encoding used for hashes, idempotency keys and the chains.

msgspec's JSON encoder with sorted keys: no whitespace, UTF-8 (not ASCII-escaped), floats as the
shortest text that reads back to the same double (``9.4``, ``9.0``, ``1e16``). Any change here
changes every stored hash, so it never changes: a new encoding would be a new function. msgspec,
not the json module, because this runs four times per stored sheet and is ten times faster.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

_encoder = msgspec.json.Encoder(order="sorted")


def canonical_json(value: Any) -> str:
    return _encoder.encode(value).decode("utf-8")


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def content_hash(value: Any) -> str:
    return sha256_hex(canonical_json(value))


# The hash that the first row of a chain links to.
GENESIS = "0" * 64


def chain_hash(prev_hash: str, row: dict[str, Any]) -> str:
    """Hash of one chained row: the previous row's hash followed by the row's canonical encoding."""
    return sha256_hex(prev_hash + canonical_json(row))
