"""The admin API's answers (``/admin/v1``, docs/protocol.md "Admin API"), as msgspec Structs: what the
core's reads return (progress, alerts, devices, audit, chain, export, uplink_state), what
edge_api/admin/controllers.py encodes and what the console's client (tui/client.py) decodes. The
status answer is ``ConsoleStatus`` (appliance/shared/status.py); the request bodies stay with the
API (edge_api/schemas.py), which validates them.

Field order is wire order: msgspec encodes a Struct's fields in order, a subclass's after its base's.
"""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

from appliance.shared.status import DevicePresence, Judge, UplinkView

# -- pairing and devices ----------------------------------------------------------------------------


class NewPairingCode(Struct, kw_only=True):
    """A new pairing code (the only time it is readable) and what a QR code on the console carries:
    the tablet web app told which code to redeem, and the certificate fingerprint a tablet should see
    (in the URL's fragment; null without TLS)."""

    code: str
    code_id: str
    judge: Judge
    event_id: str
    expires_at: str
    ttl_s: int
    url: str
    tls_fingerprint: str | None


class ActiveCode(Struct, kw_only=True):
    """An unused, unexpired pairing code: its id and judge, never the code."""

    code_id: str
    judge_id: str
    created_at: str
    expires_at: str


class Device(Struct, kw_only=True):
    """A paired tablet with its last heartbeat, its presence and the seconds since that heartbeat
    (None before the first)."""

    device_id: str
    judge_id: str
    judge_name: str | None
    name: str
    paired_at: str
    revoked_at: str | None
    last_seen_at: str | None
    battery: int | None
    app_version: str | None
    queue_depth: int | None
    clock_skew_s: float | None
    address: str | None
    presence: DevicePresence
    last_seen_age_s: float | None


class RevokedDevice(Struct, kw_only=True):
    device_id: str
    judge_id: str
    name: str
    revoked_at: str


class JudgeRow(Struct, kw_only=True):
    """A judge of the current event; ``sessions``: the sessions of its panels, ';'-separated."""

    judge_id: str
    name: str
    sessions: str | None


# -- scoring progress -----------------------------------------------------------------------------

GridCell = Literal["scored", "corrected", "missing"]


class SessionHead(Struct, kw_only=True):
    id: str
    name: str
    stage: str | None
    starts_at: str | None


class SessionOverview(SessionHead, kw_only=True):
    """A session of the current event with its panel and progress counts."""

    position: int
    entries: int
    judges: list[Judge]
    complete: int
    partial: int
    not_started: int


class GridEntry(Struct, kw_only=True):
    """An entry of the grid; ``cells``: one per panel judge, in the grid's ``judges`` order."""

    entry_id: str
    order: int
    title: str
    category: str | None
    division: str | None
    studio: str | None
    cells: list[GridCell]


class SessionGrid(Struct, kw_only=True):
    """A session's entries x panel judges: which sheets are in."""

    session: SessionHead
    judges: list[Judge]
    entries: list[GridEntry]


class FeedSheet(Struct, kw_only=True):
    """A sheet of the ledger's live feed, with its entry's title and its judge's name."""

    seq: int
    sheet_id: str
    entry_id: str
    entry_title: str | None
    session_id: str | None
    judge_id: str
    judge_name: str | None
    device_id: str
    comment: str | None
    submitted_at: str
    received_at: str
    supersedes: str | None
    values: dict[str, float]
    total: float


class SheetFeed(Struct, kw_only=True):
    """Sheets oldest first, and the ledger's newest seq (0 when empty), so a poller knows whether it
    has caught up."""

    sheets: list[FeedSheet]
    last_seq: int


class EntryDetail(Struct):
    """An entry of the event (no participants). Positional too, in the entries table's column order
    (appliance/core/tabulation.py builds it from a row's first eight columns)."""

    entry_id: str
    session_id: str
    order: int
    title: str
    category: str | None
    division: str | None
    level: str | None
    studio: str | None


class ChainSheet(Struct, kw_only=True):
    """A sheet of a judge's chain for an entry; ``current``: the head of the chain."""

    seq: int
    sheet_id: str
    values: dict[str, float]
    total: float
    comment: str | None
    submitted_at: str
    received_at: str
    supersedes: str | None
    hash: str
    current: bool


class JudgeChain(Struct, kw_only=True):
    id: str
    name: str
    chain: list[ChainSheet]


class EntryChains(Struct, kw_only=True):
    """An entry (no participants) and each judge's chain of sheets for it, original to head."""

    entry: EntryDetail
    judges: list[JudgeChain]


# -- personal data --------------------------------------------------------------------------------

# A personal field's value: participants as a list of names, another column as text, null when the
# entry has none.
PersonalValue = list[str] | str | None


class Participants(Struct, kw_only=True):
    """An entry's participants, masked to initials or (revealed, with an access record) in full."""

    entry_id: str
    participants: list[str]
    masked: bool


class PersonalOut(Struct, kw_only=True):
    """Every personal field of an entry, masked: names to initials, other values to their first
    character and '•••'."""

    entry_id: str
    masked: bool
    fields: dict[str, PersonalValue]


class PersonalRevealOut(Struct, kw_only=True):
    entry_id: str
    field: str
    value: PersonalValue
    masked: bool


# -- audit and verify -----------------------------------------------------------------------------


class AuditRow(Struct, kw_only=True):
    """A row of the audit log; ``detail``: its JSON object, as stored (text)."""

    seq: int
    at: str
    actor: str
    action: str
    detail: str
    request_id: str | None
    hash: str


class ChainCheck(Struct, kw_only=True):
    """One hash chain checked: intact (``ok``), or the first altered row and what is wrong with it."""

    table: str
    rows: int
    ok: bool
    first_bad_seq: int | None
    problem: str | None
    head_hash: str


class VerifyReport(Struct, kw_only=True):
    ok: bool
    chains: list[ChainCheck]


# -- uplink ---------------------------------------------------------------------------------------


class QuarantinedRecord(Struct, kw_only=True):
    """A record the receiver refused, set aside: what it carries (the sheet's ids for a sheet) and why."""

    record_id: str
    kind: str
    created_at: str
    quarantined_at: str
    quarantine_reason: str | None
    sheet_id: str | None
    entry_id: str | None
    judge_id: str | None


class UplinkAnswer(UplinkView, kw_only=True):
    """``GET /admin/v1/uplink``: the uplink as in the status, plus the first quarantined records."""

    quarantine: list[QuarantinedRecord]


class SyncRequested(Struct, kw_only=True):
    requested_at: str


class Requeued(Struct, kw_only=True):
    requeued: int


# -- USB export -----------------------------------------------------------------------------------

ExportState = Literal["idle", "running", "done", "failed"]


class ExportJobView(Struct, kw_only=True):
    """The daemon's export in progress (or the last one): ``fraction`` done and the ``step`` under way;
    at the end the export's ``path``, or the ``error`` that stopped it."""

    state: ExportState
    fraction: float
    step: str
    target: str | None
    path: str | None
    error: str | None
    started_at: str | None
    finished_at: str | None


class UsbKey(Struct, kw_only=True):
    """A USB key the box sees mounted: where, the device, its filesystem and free space."""

    path: str
    device: str
    filesystem: str
    removable: bool
    free_mb: float


class ExportStatus(Struct, kw_only=True):
    job: ExportJobView
    targets: list[UsbKey]


class ExportStarted(Struct, kw_only=True):
    job: ExportJobView
