"""A score sheet as the box holds it and as it travels: the one definition of its fields.

A stored sheet is a row of the ledger (``appliance/core/ledger.py``). Two shapes of it go out:

* ``StoredSheet``, what names a stored sheet: its ids, the sheet it corrects, and its place and hash
  in the ledger's chain. It is the answer to a submitted sheet (``POST /api/v1/sheets``, 201, and
  the same bytes on a 200 replay, since it is built only from what is stored) and each stored item
  of a batch's answer; the tablet API's answer adds its own fields to it (``edge_api/schemas.py``).
* ``SheetRecord``, the whole ledger row: ``StoredSheet``'s fields, then the rest. It is the payload
  of an uplink ``sheet`` record (docs/protocol.md, "payload of a sheet record"), built from the
  ledger row when the record is read for sending (``appliance/core/outbox.py``).

``CurrentSheet`` is a judge's current sheet in the tablet's event download (``GET /api/v1/event``):
what a tablet needs to show and correct it, in the order PROTOCOL.md v1 fixed.

Field order is wire order (msgspec encodes a Struct's fields in order, a subclass's after its
base's), so none of these may be reordered. None of them is hashed: the ledger chains its row
dict, canonically encoded (``appliance/shared/canonical.py``).
"""

from __future__ import annotations

import msgspec


class StoredSheet(msgspec.Struct, kw_only=True):
    """A stored sheet as its receipt names it."""

    sheet_id: str
    entry_id: str
    judge_id: str
    # The sheet this one corrects (the judge's current sheet for the entry when it was stored).
    supersedes: str | None
    seq: int  # its place in the ledger's chain
    received_at: str  # when the box stored it (RFC 3339, UTC)
    hash: str  # its ledger chain hash


class SheetRecord(StoredSheet, kw_only=True):
    """A stored sheet in full: the ledger row, with the judge's values as the stored canonical JSON
    (sent as it is, not parsed and encoded again: the uplink reads a thousand of these per batch)."""

    event_id: str
    device_id: str  # the tablet that sent it
    values: msgspec.Raw  # criterion key -> score, canonical JSON
    comment: str | None
    submitted_at: str  # the tablet's time, as it sent it
    content_hash: str  # what "the same sheet" means for a replay (``SheetSubmission.idempotency_content``)
    prev_hash: str  # the ledger chain hash of the sheet before it


class CurrentSheet(msgspec.Struct, kw_only=True):
    """A judge's current sheet (the head of its correction chain) as their tablet downloads it."""

    sheet_id: str
    entry_id: str
    values: dict[str, float]
    comment: str | None
    submitted_at: str
    received_at: str
    supersedes: str | None
