"""The box's status as one typed value: ``BoxStatus`` (what `venuebox status --json` prints and the
systemd status line reads), ``ConsoleStatus`` (that plus what the console shows: the admin API's
``GET /admin/v1/status``) and ``StatusGauges`` (what the /metrics state gauges read at each scrape).

Built by appliance/core/status.py from the parts each core module returns as these types
(``outbox.backlog``, ``uplink_state.uplink_view``, ``backup.backup_view``, ``recovery.recovery_view``,
``event.event_summary``, ``alerts``, ``progress.current_session_progress``); read by the CLI, the admin
API, the metrics collector, the daemon and the console. Field names and their order are the wire
contract of docs/protocol.md ("Status"): encoded with msgspec, a status is the JSON object that
section shows. The freeze words (categories, the longest reason) live here too: the admin API, the
CLI and the console's freeze dialog all offer them."""

from __future__ import annotations

from typing import Any, Literal, get_args

from msgspec import Struct

# -- words --------------------------------------------------------------------------------------

# Why a box is frozen, for the console to sort and count by; the free-text reason is what judges see.
FreezeCategory = Literal["dispute", "anomaly", "tabulation", "technical", "other"]
FREEZE_CATEGORIES: tuple[FreezeCategory, ...] = get_args(FreezeCategory)
# The longest freeze reason the admin API takes (and the console lets a tech type).
FREEZE_REASON_MAX_CHARS = 500

Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = get_args(Severity)

# A paired tablet by its last heartbeat (``revoked`` only in device lists, never counted as present).
Presence = Literal["online", "stale", "offline"]
DevicePresence = Literal["online", "stale", "offline", "revoked"]

# What the uplink worker is doing, in the words the console and `venuebox uplink status` show.
UplinkState = Literal["not configured", "idle", "sending", "backing off", "circuit open", "paused"]
UPLINK_STATES: tuple[UplinkState, ...] = get_args(UplinkState)

# How the current session was chosen: the entry of the newest sheet, the schedule, or the first one.
ChosenBy = Literal["latest-sheet", "schedule", "first"]
# A recovery's source: what `venuebox recover` could do with the salvaged file or the cloud.
RecoverySourceState = Literal["used", "skipped", "unreadable", "unreachable", "refused", "none"]
SnapshotLocation = Literal["here", "missing", "elsewhere"]
DatabaseState = Literal["ok", "damaged"]

# -- the parts ------------------------------------------------------------------------------------


class BoxInfo(Struct, kw_only=True):
    id: str
    name: str
    version: str


class ConsoleBoxInfo(BoxInfo, kw_only=True):
    """``BoxInfo`` plus where tablets reach the box, best first (daemon.json holds the same list)."""

    tablet_urls: list[str]


class EventSummary(Struct, kw_only=True):
    """The current event and how many of each thing it holds; ``extra``: the package's free-form keys."""

    id: str
    name: str
    timezone: str
    snapshot_id: str
    imported_at: str
    extra: dict[str, Any]
    sessions: int
    entries: int
    judges: int
    criteria: int


class FreezeView(Struct, kw_only=True):
    """Whether competition writes are halted; the rest is None while not frozen."""

    frozen: bool
    reason: str | None
    since: str | None
    by: str | None
    category: FreezeCategory | None


class TabletCounts(Struct, kw_only=True):
    """Paired (not revoked) tablets by presence."""

    online: int
    stale: int
    offline: int


class SheetCounts(Struct, kw_only=True):
    total: int
    last_5_min: int
    head_hash: str


class AuditCounts(Struct, kw_only=True):
    rows: int
    head_hash: str


class OutboxBacklog(Struct, kw_only=True):
    """What waits to go to the cloud: pending records and the oldest one's time and age, quarantined
    records, and acked ones still kept for the retention period."""

    records: int
    oldest_created_at: str | None
    quarantined: int
    acked_retained: int
    oldest_age_s: float | None


class UplinkTarget(Struct, kw_only=True):
    """Where the outbox goes (no secrets): from the settings ("config") or `venuebox uplink configure`."""

    url: str
    source: Literal["config", "configure"]
    ca_file: str | None


class UplinkBatch(Struct, kw_only=True):
    id: str
    records: int


class UplinkView(Struct, kw_only=True):
    """The uplink as the tech sees it: state, target, backlog and oldest age, quarantine, last
    success, last error in plain words, next attempt."""

    state: UplinkState
    configured: bool
    target: UplinkTarget | None
    breaker: str
    backlog: int
    oldest_created_at: str | None
    oldest_age_s: float | None
    quarantined: int
    acked_retained: int
    records_acked: int
    batch: UplinkBatch | None
    consecutive_failures: int
    last_attempt_at: str | None
    last_success_at: str | None
    last_error: str | None
    last_error_at: str | None
    paused_reason: str | None
    next_attempt_at: str | None
    next_attempt_in_s: float | None
    sync_requested_at: str | None


class RecoverySource(Struct, kw_only=True):
    state: RecoverySourceState
    detail: str


class RecoverySheets(Struct, kw_only=True):
    """Sheets the recovery took from each source."""

    snapshot: int
    salvage: int
    cloud: int


class RecoveryView(Struct, kw_only=True):
    """The newest recovery that built this data dir (docs/protocol.md, "Status", ``recovery``)."""

    at: str
    snapshot: str
    sheets: RecoverySheets
    since: int
    salvage: RecoverySource
    cloud: RecoverySource
    known_head: int
    recovered_head: int
    missing_sheet_ids: list[str]
    missing_unnamed: int


class AlertCounts(Struct, kw_only=True):
    """Active alerts by severity, every severity present."""

    info: int
    warning: int
    critical: int


class Alert(Struct, kw_only=True):
    """One alert as stored: ``count`` times between ``first_seen`` and ``last_seen``."""

    fingerprint: str
    severity: Severity
    title: str
    detail: str
    first_seen: str
    last_seen: str
    count: int
    active: bool
    cleared_at: str | None
    acknowledged_at: str | None
    acknowledged_by: str | None


class Judge(Struct, kw_only=True):
    id: str
    name: str


class MissingEntry(Struct, kw_only=True):
    """An entry of a session that needs attention: a panel judge has no sheet for it (``partial``),
    or none has while the panel scored a later entry (``skipped``)."""

    entry_id: str
    order: int
    title: str
    kind: Literal["partial", "skipped"]
    missing_judges: list[Judge]


class SessionProgress(Struct, kw_only=True):
    """The current session's progress: counts of its entries, and the missing ones (at most 50 in
    ``missing``, all of them in ``missing_total``)."""

    id: str
    name: str
    stage: str | None
    starts_at: str | None
    chosen_by: ChosenBy
    entries: int
    complete: int
    partial: int
    not_started: int
    missing_total: int
    missing: list[MissingEntry]


class DiskView(Struct, kw_only=True):
    """The data dir's filesystem."""

    path: str
    free_mb: float
    total_mb: float
    used_pct: float


class LastSnapshot(Struct, kw_only=True):
    """The newest encrypted local snapshot and its check (``verified`` None: not checked yet)."""

    name: str
    created_at: str
    age_s: float
    bytes: int
    sha256: str
    ledger_rows: int
    verified: bool | None
    verify_problem: str | None


class VerifiedSnapshot(Struct, kw_only=True):
    """The newest snapshot that verified: the one to restore from."""

    name: str
    path: str
    created_at: str
    age_s: float
    bytes: int
    ledger_rows: int
    location: SnapshotLocation


class BackupView(Struct, kw_only=True):
    """The box's encrypted local snapshots: the last one, the newest verified one, how many are kept,
    who can decrypt them (``configured``: an organiser's key or a passphrase), and whether the backup
    dir is there and on another disk than the database (``other_disk`` None: the dir is missing)."""

    configured: bool
    directory: str
    interval_s: float
    recipients: int
    passphrase: bool
    kept: int
    kept_bytes: int
    last: LastSnapshot | None
    last_verified_ok_at: str | None
    newest_verified: VerifiedSnapshot | None
    directory_exists: bool
    other_disk: bool | None


class DatabaseView(Struct, kw_only=True):
    """Whether the daemon found the database file damaged, with SQLite's first problems and the line
    a tech reads (the runbook's first steps)."""

    path: str
    state: DatabaseState
    problems: list[str]
    detail: str | None


class ConsoleSettings(Struct, kw_only=True):
    """The box's settings the console words things by: a tablet is online while its last heartbeat
    is younger than ``presence_online_s``; a clock off by ``clock_skew_max_s`` raises an alert."""

    presence_online_s: int
    clock_skew_max_s: float


# -- the status -----------------------------------------------------------------------------------


class BoxStatus(Struct, kw_only=True):
    """The box at a glance: `venuebox status` and the systemd status line."""

    box: BoxInfo
    event: EventSummary | None
    freeze: FreezeView
    tablets: TabletCounts
    sheets: SheetCounts
    audit: AuditCounts
    outbox: OutboxBacklog
    uplink: UplinkView
    recovery: RecoveryView | None


class ConsoleStatus(BoxStatus, kw_only=True):
    """``BoxStatus`` plus what the console's screens show: the box's clock (the console says "12 s
    ago" against it), the URLs tablets open, active alerts (counts and the five most severe), the
    current session's progress, the data disk, backups, the database's state and the settings the
    console words presence and clock skew by."""

    box: ConsoleBoxInfo
    server_time: str
    alerts_active: AlertCounts
    alerts_top: list[Alert]
    session: SessionProgress | None
    disk: DiskView
    backup: BackupView
    database: DatabaseView
    settings: ConsoleSettings


class StatusGauges(Struct, kw_only=True):
    """What the /metrics state gauges read at each scrape: a few indexed reads, no hashes. Without
    ``alerts_active`` the alert gauges are left out."""

    frozen: bool
    tablets: TabletCounts
    sheets_total: int
    outbox_records: int
    uplink: UplinkView
    alerts_active: AlertCounts | None


def gauges_of(status: BoxStatus, alerts_active: AlertCounts | None = None) -> StatusGauges:
    """The gauges a full ``status`` gives (the same figures the cheaper scrape-time read gives)."""
    return StatusGauges(
        frozen=status.freeze.frozen,
        tablets=status.tablets,
        sheets_total=status.sheets.total,
        outbox_records=status.outbox.records,
        uplink=status.uplink,
        alerts_active=alerts_active,
    )
