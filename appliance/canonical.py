"""The one canonical JSON encoding used for hashes, idempotency keys and the chains.

Sorted keys, no whitespace, UTF-8 (not ASCII-escaped), floats as Python's shortest repr. Any
change here changes every stored hash, so it never changes: a new encoding would be a new function.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def content_hash(value: Any) -> str:
    return sha256_hex(canonical_json(value))


# The hash that the first row of a chain links to.
GENESIS = "0" * 64


def chain_hash(prev_hash: str, row: dict[str, Any]) -> str:
    """Hash of one chained row: the previous row's hash followed by the row's canonical encoding."""
    return sha256_hex(prev_hash + canonical_json(row))
