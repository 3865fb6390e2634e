"""Wire types of the tablet and admin APIs (msgspec Structs): validation happens here, at the edge."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from appliance.core.config import MAX_COMMENT_CHARS
from appliance.shared.sheets import CurrentSheet, StoredSheet
from appliance.shared.status import FREEZE_REASON_MAX_CHARS, FreezeCategory
from appliance.shared.tablet_text import FREE_TEXT_PATTERN, ONE_LINE_PATTERN
from appliance.web.problems import Problem

ShortText = Annotated[str, Meta(min_length=1, max_length=200)]
# Text a tablet sends that the console and the CLI print later: no control or bidi characters.
DeviceName = Annotated[str, Meta(min_length=1, max_length=200, pattern=ONE_LINE_PATTERN)]
EntryId = Annotated[str, Meta(min_length=1, max_length=100)]
# The ceiling of every box; a box's comment_max_chars may set a lower one (tablet/controllers.py).
Comment = Annotated[str, Meta(max_length=MAX_COMMENT_CHARS, pattern=FREE_TEXT_PATTERN)]
Rfc3339 = Annotated[
    str,
    # No minimum length: a time without its offset gets check_time's words, not a length rule.
    Meta(
        max_length=40,
        description="RFC 3339 date-time with offset",
        extra_json_schema={"format": "date-time"},
    ),
]


# "damaged": the box found its database file damaged; it stores nothing more until a tech restores it.
DatabaseState = Literal["ok", "damaged"]


class Health(msgspec.Struct, kw_only=True):
    status: str
    box: str
    event: str | None
    frozen: bool
    version: str
    # The box's display name ("Main stage box"), for a pairing screen to show; null when degraded.
    name: str | None = None
    # This project's addition: whether the database file is sound (then status is "degraded").
    database: DatabaseState = "ok"


class PairIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    code: Annotated[str, Meta(min_length=1, max_length=32)]
    device_name: DeviceName


class Named(msgspec.Struct):
    id: str
    name: str


class PairOut(msgspec.Struct, kw_only=True):
    device_id: str
    token: str
    token_expires_at: str | None = None
    judge: Named
    event: Named
    # Hex SHA-256 of the box's TLS certificate, for the tablet to pin; null when served without TLS.
    tls_fingerprint: str | None = None


class TokenOut(msgspec.Struct, kw_only=True):
    device_id: str
    token: str
    expires_at: str


class SheetIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    sheet_id: uuid.UUID
    entry_id: EntryId
    values: Annotated[dict[Annotated[str, Meta(min_length=1, max_length=64)], float], Meta(max_length=64)]
    submitted_at: Rfc3339
    comment: Comment | None = None
    supersedes: uuid.UUID | None = None


class LedgerMark(msgspec.Struct, kw_only=True):
    """The ledger's epoch and safe watermark (PROTOCOL.md, "Recovery and the safe watermark"):
    every sheet with ``seq <= safe_seq`` is in a verified snapshot or acknowledged by the cloud, so
    a tablet may forget it; a new ``epoch`` means the box was rebuilt: send every kept sheet again."""

    epoch: str
    safe_seq: int


class SheetAnswer(StoredSheet, kw_only=True):
    """The answer to a single sheet: the stored sheet's receipt (identical on a replay), then the
    ledger mark."""

    ledger: LedgerMark


class BatchIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Items are checked one by one (each is independent), so the list holds raw JSON here.
    sheets: list[msgspec.Raw]


class SheetBatchIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A batch whose items are all well-formed (the fast path; also the documented body)."""

    sheets: Annotated[list[SheetIn], Meta(max_length=500)]


class BatchItem(msgspec.Struct, kw_only=True, omit_defaults=True):
    sheet_id: str | None
    status: int
    problem: Problem | None = None
    sheet: StoredSheet | None = None


class BatchOut(msgspec.Struct, kw_only=True):
    results: list[BatchItem]
    ledger: LedgerMark


class HeartbeatIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    sent_at: Rfc3339
    battery: Annotated[int, Meta(ge=0, le=100)] | None = None
    app_version: Annotated[str, Meta(max_length=64, pattern=ONE_LINE_PATTERN)] | None = None
    queue_depth: Annotated[int, Meta(ge=0, le=1_000_000)] | None = None


class HeartbeatOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    server_time: str
    frozen: bool
    next_heartbeat_s: int
    ledger: LedgerMark
    freeze_reason: str | None = None
    # The event's schedule version (GET /api/v1/event's event_version): a tablet that holds an older
    # one downloads the event again. Absent before an event is imported.
    event_version: int | None = None


class Criterion(msgspec.Struct, kw_only=True):
    key: str
    label: str
    min: float
    max: float
    step: float


class EntryView(msgspec.Struct, kw_only=True):
    entry_id: str
    order: int
    scheduled_at: str | None
    title: str
    category: str | None
    division: str | None
    level: str | None
    studio: str | None
    # Scratched on the day: still listed (its sheets keep their entry), not to be scored.
    scratched: bool = False
    # Only when the event package sets tablets_see_participants: the names, in full.
    participants: list[str] | msgspec.UnsetType = msgspec.UNSET


class SessionView(msgspec.Struct, kw_only=True):
    id: str
    name: str
    stage: str | None
    starts_at: str | None
    on_panel: bool
    entries: list[EntryView]
    # When this judge signed the session off (null: not signed off), and whether the tech locked it:
    # either makes the session's sheets read-only for the judge (423 signed-off / session-locked).
    signed_off_at: str | None = None
    locked: bool = False


class EventMeta(msgspec.Struct, kw_only=True):
    id: str
    name: str
    timezone: str
    snapshot_id: str


class EventOut(msgspec.Struct, kw_only=True):
    event: EventMeta
    # The schedule version (1: as imported), also in each heartbeat's answer.
    event_version: int
    judge: Named
    criteria: list[Criterion]
    sessions: list[SessionView]
    sheets: list[CurrentSheet]


class SignOffIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A sign-off's body: empty, or ``{}``."""


class SignOffOut(msgspec.Struct, kw_only=True):
    """A judge's sign-off of a session (``POST /api/v1/sessions/{id}/final``): the same body again
    for a second sign-off."""

    session_id: str
    judge_id: str
    signed_off_at: str


# -- admin --------------------------------------------------------------------------------------


class FreezeIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, Meta(min_length=1, max_length=FREEZE_REASON_MAX_CHARS)]
    category: FreezeCategory = "other"


class PairingCodeIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    judge_id: ShortText
    ttl_s: Annotated[int, Meta(ge=10, le=7 * 24 * 3600)] | None = None


class UplinkRetryIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Quarantined records to send again: the ones named, or all of them when omitted."""

    record_ids: Annotated[list[ShortText], Meta(max_length=10_000)] | None = None


class ExportIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Where to export: a folder on the box (a USB key's mount point); omitted: the one key found."""

    to: Annotated[str, Meta(min_length=1, max_length=4096)] | None = None


class RevealIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Why the tech needs to see personal data in full: kept in the audit log's access record."""

    reason: Annotated[str, Meta(min_length=3, max_length=500)]


# Why the tech locks, unlocks or reopens: one line, kept in the audit log and shown in the console.
SessionReason = Annotated[str, Meta(min_length=1, max_length=500, pattern=ONE_LINE_PATTERN)]


class SessionReasonIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Why a session is locked or unlocked (required)."""

    reason: SessionReason


class ScheduleChangeIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One day-of change typed into the draft (``POST /admin/v1/schedule/draft``): ``kind`` and the
    fields it needs, and why. ``participants``: a walk-on's names separated by ``;`` (sealed on the
    box, never answered back)."""

    kind: Literal["scratch", "restore", "walk-on", "move", "retime"]
    reason: SessionReason
    entry_id: ShortText | None = None
    session_id: ShortText | None = None
    position: Annotated[int, Meta(ge=1, le=100_000)] | None = None
    scheduled_at: ShortText | None = None
    title: Annotated[str, Meta(min_length=1, max_length=500)] | None = None
    category: ShortText | None = None
    division: ShortText | None = None
    level: ShortText | None = None
    studio: ShortText | None = None
    participants: Annotated[str, Meta(max_length=5000)] | None = None


class ScheduleReasonIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Why the draft is published (required)."""

    reason: SessionReason


class RollbackIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Which version to copy as the next one, and why (required)."""

    version: Annotated[int, Meta(ge=1, le=1_000_000)]
    reason: SessionReason


class ReopenIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Whose sign-off of the session to take back, and why (required)."""

    judge_id: ShortText
    reason: SessionReason


class PersonalRevealIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Which personal field to show in full, and why (kept in the audit log's access record)."""

    field: Annotated[str, Meta(min_length=1, max_length=200)]
    reason: Annotated[str, Meta(min_length=3, max_length=500)]
