"""The box's status (appliance/shared/status.py), read from the database: ``snapshot`` for `venuebox
status` and the systemd status line (the uplink's state included); ``gauges``, what the metrics read
at each scrape; ``console_snapshot`` (the snapshot plus alerts, the current session's progress, disk,
backups, the database's state and the settings the console words things by) for the admin API's
status, which the venue console polls."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

from appliance import __version__
from appliance.core import alerts, outbox, progress
from appliance.core.backup import backup_view
from appliance.core.box import get_box
from appliance.core.chain import head
from appliance.core.config import Config
from appliance.core.devices import list_devices
from appliance.core.event import event_summary
from appliance.core.presence import presence_state
from appliance.core.recovery import recovery_view
from appliance.core.storage import Store
from appliance.core.uplink_state import uplink_view
from appliance.shared.admin_wire import Device
from appliance.shared.status import (
    AuditCounts,
    BoxInfo,
    BoxStatus,
    ConsoleBoxInfo,
    ConsoleSettings,
    ConsoleStatus,
    DatabaseView,
    DevicePresence,
    DiskView,
    FreezeView,
    SheetCounts,
    StatusGauges,
    TabletCounts,
)
from appliance.shared.times import parse_rfc3339, to_rfc3339, utcnow

MB = 1024 * 1024
TOP_ALERTS = 5

S = TypeVar("S", bound=BoxStatus)
# The box row (``box.get_box``), or the state ``box.freeze`` and ``box.unfreeze`` return.
Row = Mapping[str, Any]


def tablet_counts(conn: sqlite3.Connection, config: Config, now: datetime) -> TabletCounts:
    """Paired (not revoked) tablets by presence state: online, stale, offline."""
    tablets = {"online": 0, "stale": 0, "offline": 0}
    for row in conn.execute(
        "SELECT p.last_seen_at FROM devices d LEFT JOIN presence p ON p.device_id = d.device_id"
        " WHERE d.revoked_at IS NULL"
    ):
        tablets[presence_state(row[0], now, config.presence_online_s, config.presence_stale_s)] += 1
    return TabletCounts(**tablets)


def freeze_view(box: Row) -> FreezeView:
    """The freeze state of the box row (``box.get_box``, or what ``box.freeze`` returns)."""
    return FreezeView(
        frozen=bool(box["frozen"]),
        reason=box["freeze_reason"],
        since=box["frozen_at"],
        by=box["frozen_by"],
        category=box["freeze_category"],
    )


def snapshot(conn: sqlite3.Connection, config: Config, now: datetime | None = None) -> BoxStatus:
    """The box at a glance: what `venuebox status` prints and the systemd status line reads."""
    box = get_box(conn)
    info = BoxInfo(id=box["box_id"], name=box["name"], version=__version__)
    return _status(BoxStatus, conn, config, now or utcnow(), box, info)


def _status(
    kind: type[S],
    conn: sqlite3.Connection,
    config: Config,
    now: datetime,
    box: Row,
    info: BoxInfo,
    **more: Any,
) -> S:
    """A ``kind`` of status of the box row ``box`` at ``now``: ``BoxStatus``'s fields, and ``more``."""
    five_min_ago = to_rfc3339(now - timedelta(minutes=5))
    ledger_rows, ledger_head = head(conn, "sheets")
    audit_rows, audit_head = head(conn, "audit_log")
    return kind(
        box=info,
        event=event_summary(conn),
        freeze=freeze_view(box),
        tablets=tablet_counts(conn, config, now),
        sheets=SheetCounts(
            total=ledger_rows,
            last_5_min=conn.execute(
                "SELECT count(*) FROM sheets WHERE received_at >= ?", (five_min_ago,)
            ).fetchone()[0],
            head_hash=ledger_head,
        ),
        audit=AuditCounts(rows=audit_rows, head_hash=audit_head),
        outbox=outbox.backlog(conn, now),
        uplink=uplink_view(conn, config, now),
        recovery=recovery_view(conn),
        **more,
    )


def gauges(conn: sqlite3.Connection, config: Config, now: datetime | None = None) -> StatusGauges:
    """What the /metrics state gauges read (tablets, freeze, sheets, outbox, uplink, alerts), cheap
    enough for every scrape: a few indexed reads (no event summary, hashes or recovery)."""
    now = now or utcnow()
    uplink = uplink_view(conn, config, now)
    return StatusGauges(
        frozen=bool(get_box(conn)["frozen"]),
        tablets=tablet_counts(conn, config, now),
        sheets_total=head(conn, "sheets")[0],
        outbox_records=uplink.backlog,
        uplink=uplink,
        alerts_active=alerts.active_counts(conn),
    )


def console_snapshot(
    conn: sqlite3.Connection,
    config: Config,
    tablet_urls: list[str],
    store: Store,
    now: datetime | None = None,
) -> ConsoleStatus:
    """``snapshot`` plus what the console's screens show: the box's clock (the console says "12 s
    ago" against it), the URLs tablets open, active alerts (counts and the five most severe), the
    current session's progress, the data disk, backups, whether ``store`` found its file damaged,
    and the settings the console words presence and clock skew by."""
    now = now or utcnow()
    box = get_box(conn)
    info = ConsoleBoxInfo(
        id=box["box_id"], name=box["name"], version=__version__, tablet_urls=list(tablet_urls)
    )
    return _status(
        ConsoleStatus,
        conn,
        config,
        now,
        box,
        info,
        server_time=to_rfc3339(now),
        alerts_active=alerts.active_counts(conn),
        alerts_top=alerts.list_alerts(conn)[:TOP_ALERTS],
        session=progress.current_session_progress(conn, now),
        disk=disk(config),
        backup=backup_view(conn, config, now),
        database=database_view(store),
        settings=ConsoleSettings(
            presence_online_s=config.presence_online_s, clock_skew_max_s=config.clock_skew_max_s
        ),
    )


def database_view(store: Store) -> DatabaseView:
    """Whether this process found the database file damaged (``Store.damaged``): ``state`` "ok" or
    "damaged", with SQLite's first problems and the line a tech reads (the runbook's first steps)."""
    damage = store.damaged
    return DatabaseView(
        path=str(store.path),
        state="ok" if damage is None else "damaged",
        problems=[] if damage is None else damage.problems[:5],
        detail=None if damage is None else damage.detail,
    )


def disk(config: Config) -> DiskView:
    """The data dir's filesystem: free and total MB, and how full it is."""
    usage = shutil.disk_usage(config.data_dir)
    return DiskView(
        path=str(config.data_dir),
        free_mb=round(usage.free / MB, 1),
        total_mb=round(usage.total / MB, 1),
        used_pct=round(100 * usage.used / usage.total, 1) if usage.total else 0.0,
    )


def devices_with_presence(
    conn: sqlite3.Connection, config: Config, include_revoked: bool = True, now: datetime | None = None
) -> list[Device]:
    """Paired devices (``devices.list_devices``) with their presence (online, stale, offline, or
    revoked) and the seconds since their last heartbeat (None before the first)."""
    now = now or utcnow()
    found = []
    for device in list_devices(conn):
        revoked = device["revoked_at"] is not None
        if revoked and not include_revoked:
            continue
        seen = device["last_seen_at"]
        presence: DevicePresence = (
            "revoked"
            if revoked
            else presence_state(seen, now, config.presence_online_s, config.presence_stale_s)
        )
        age = None if seen is None else round((now - parse_rfc3339(seen)).total_seconds(), 3)
        found.append(Device(**device, presence=presence, last_seen_age_s=age))
    return found
