"""The uplink's wire contract, shared by the box's sender and the reference receiver.

PROTOCOL.md fixes the request: ``POST {cloud}/v1/boxes/{box_id}/records`` with
``Idempotency-Key: <batch id>`` and ``{"records": [{"id", "kind", "created_at", "payload"}]}``,
answered ``200 {"acked": [record id, ...]}`` (the box takes any 2xx with a readable ack); a record
leaves the box's send queue only once acked, and a receiver treats a record id it has already stored
as stored (acked again, never twice).

What this project adds, in the same spirit:

* ``Authorization: Bearer <uplink token>``: the token the receiver issued for this box.
* ``X-Venuebox-Signature: t=<unix seconds>,v1=<hex>``: HMAC-SHA256, keyed with the uplink token, of
  ``"<t>." + body``. The receiver refuses a signature more than ``SIGNATURE_TOLERANCE_S`` away from
  its clock, so a captured request cannot be replayed later, and refuses a body that was changed.
* ``"rejected": [{"id", "status": 422, "reason"}]`` in the 2xx answer: records the receiver will
  never store as sent (malformed). The box quarantines those with the reason and keeps sending the
  rest; a rejected record is not acked.
* A signature time outside the tolerance is 401 with its own problem type, ``signature-clock-skew``:
  the box then signs with the receiver's time (its ``Date`` header) and retries at once.
* The same ``Idempotency-Key`` with the same body gets the first 2xx answer again (a refusal is not
  remembered: the batch is judged again); with another body, 422 ``idempotency-mismatch``. The box's
  keys match ``BATCH_KEY_PATTERN`` (a batch) or ``CHECK_KEY_PATTERN`` (`venuebox uplink check`).
* One record per chain place: a ``sheet`` record carries its ledger ``seq`` and ``hash``, an
  ``audit`` record its audit-log ``seq`` and ``hash``; the receiver keys a place by (box, chain,
  seq), the chain ``sheets`` or ``audit``. The same place with the same hash is acked and not
  stored again (whatever the record id), with another hash the whole batch is refused, 409
  ``chain-fork`` naming the ``chain``, nothing of it stored; the box pauses.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import msgspec

SIGNATURE_HEADER = "X-Venuebox-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_TOLERANCE_S = 300
MAX_BATCH_RECORDS = 1000
MAX_BATCH_BYTES = 4 * 1024 * 1024
RECORD_KINDS = ("sheet", "audit", "heartbeat", "event", "alert")
# The Idempotency-Key the box sends: a batch's id, a random (version 4) UUID in lowercase; and the
# key of `venuebox uplink check`'s empty batch. docs/protocol.md states both, character for character.
_UUID4 = "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
BATCH_KEY_PATTERN = f"^{_UUID4}$"
CHECK_KEY_PATTERN = f"^check-{_UUID4}$"


class BadSignature(Exception):
    """The signature header is missing, malformed, stale or does not match; the message says which."""


class StaleSignature(BadSignature):
    """The signature's time is outside the tolerance: the two clocks disagree (or a replay)."""


class Record(msgspec.Struct, kw_only=True):
    """One outbox record as it travels. Fields are checked one by one by the receiver, so a bad
    record is rejected alone (``rejected``) instead of failing its whole batch."""

    id: Any = None
    kind: Any = None
    created_at: Any = None
    payload: Any = None


class RecordsIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    records: list[Record]


class Rejected(msgspec.Struct, kw_only=True):
    id: str
    status: int
    reason: str


class RecordsAck(msgspec.Struct, kw_only=True):
    acked: list[str]
    rejected: list[Rejected] = msgspec.field(default_factory=list)


def signature(token: str, timestamp: int, body: bytes) -> str:
    """The ``X-Venuebox-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds)."""
    mac = hmac.new(token.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(token: str, header: str | None, body: bytes, now: float) -> None:
    """Raise BadSignature unless ``header`` signs ``body`` with ``token`` within the tolerance."""
    if not header:
        raise BadSignature(f"no {SIGNATURE_HEADER} header")
    parts = dict(part.strip().partition("=")[::2] for part in header.split(","))
    try:
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        raise BadSignature(f"{SIGNATURE_HEADER} must look like t=<unix seconds>,v1=<hex>") from None
    if abs(now - timestamp) > SIGNATURE_TOLERANCE_S:
        raise StaleSignature(
            f"signature time {timestamp} is {abs(now - timestamp):.0f} s from the receiver's clock "
            f"(at most {SIGNATURE_TOLERANCE_S} s): check the box's clock"
        )
    expected = signature(token, timestamp, body).partition("v1=")[2]
    if not hmac.compare_digest(expected, given):
        raise BadSignature("signature does not match the body (wrong token, or the body was changed)")
