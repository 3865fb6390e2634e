"""The box's health checks and the scheduler that runs them.

Each check is a plain function of a connection (inside the writer's transaction), the settings and
``now``: it looks at one thing and raises or clears that thing's alert (``appliance/core/alerts.py``).
``build_scheduler`` runs them periodically on the event loop; their I/O goes through the store, so
the loop keeps serving tablets while a check waits.

Alerts (fingerprint: severity):

* ``tablet-offline:<device_id>``: warning, a paired tablet that has sent heartbeats went silent.
* ``clock-skew:<device_id>``: warning, a tablet's clock is off by more than ``clock_skew_max_s``.
* ``disk-free``: warning, or critical (and an automatic freeze) when the data disk is nearly full.
* ``db-integrity``: critical (and an automatic freeze) when ``PRAGMA quick_check`` fails, or at once
  when any read or write of the store meets a damaged page (``Store.on_damage``).
* ``event-loop-stalled``: critical, the event loop woke later than ``loop_lag_critical_s``.
* ``pairing-flood``: warning, raised by the tablet API when the box-wide budget of failed pairing
  attempts is spent (edge_api/limits.py); cleared here once none has been refused for
  ``pair_flood_calm_s``.
* ``connection-flood:<address>``: warning, one client address has been refused connections (it held
  ``max_connections_per_address``, edge_api/connections.py) and kept at its cap for
  ``connection_flood_alert_s``; cleared once it has been below its cap, unrefused, for as long.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from appliance.core import alerts
from appliance.core.box import freeze, get_box
from appliance.core.config import DEFAULTS
from appliance.core.presence import presence_state
from appliance.core.storage import Store
from appliance.shared.errors import DAMAGED_DATABASE_SECTION, DatabaseDamaged
from appliance.shared.status import Alert
from appliance.shared.times import parse_rfc3339, utcnow
from appliance.storage.db import quick_check

log = logging.getLogger("venuebox.watchdog")

ACTOR = "watchdog"
DISK_FREEZE_REASON = "auto: disk"
INTEGRITY_FREEZE_REASON = "auto: database integrity"
MB = 1024 * 1024


class DiskUsage(NamedTuple):
    total: int
    used: int
    free: int


# How often the checks run (seconds). Not settings: no venue needs other figures; tests run faster.
PRESENCE_SWEEP_S = 5.0
DISK_CHECK_S = 30.0
LOOP_CHECK_S = 5.0
PAIRING_CHECK_S = 5.0
CONNECTION_CHECK_S = 5.0
# The check intervals above; every other field of WatchdogSettings is a setting of Config.
CHECK_INTERVALS = (
    "presence_sweep_s",
    "disk_check_s",
    "loop_check_s",
    "pairing_check_s",
    "connection_check_s",
)


@dataclass(frozen=True, kw_only=True)
class WatchdogSettings:
    """Thresholds (seconds, MB) and check intervals (seconds). The thresholds are the box's settings
    (``appliance/core/config.py``, same names, its defaults); the intervals are the constants above."""

    # Presence: the box's own settings, so the watchdog, the status and the console agree on "offline".
    presence_online_s: float = DEFAULTS.presence_online_s
    presence_stale_s: float = DEFAULTS.presence_stale_s
    clock_skew_max_s: float = DEFAULTS.clock_skew_max_s
    disk_warning_free_mb: float = DEFAULTS.disk_warning_free_mb
    disk_critical_free_mb: float = DEFAULTS.disk_critical_free_mb
    auto_freeze_on_disk_critical: bool = DEFAULTS.auto_freeze_on_disk_critical
    loop_lag_critical_s: float = DEFAULTS.loop_lag_critical_s
    # The pairing-flood alert clears after this long without a pairing attempt refused box-wide.
    pair_flood_calm_s: float = DEFAULTS.pair_flood_calm_s
    # A client address over its connection cap this long raises connection-flood:<address>.
    connection_flood_alert_s: float = DEFAULTS.connection_flood_alert_s
    quick_check_s: float = DEFAULTS.quick_check_s
    # A check that cannot get its write started by then is skipped (logged), not queued forever.
    write_timeout_s: float = DEFAULTS.write_timeout_s
    # Check intervals.
    presence_sweep_s: float = PRESENCE_SWEEP_S
    disk_check_s: float = DISK_CHECK_S
    loop_check_s: float = LOOP_CHECK_S
    pairing_check_s: float = PAIRING_CHECK_S
    connection_check_s: float = CONNECTION_CHECK_S

    def __post_init__(self) -> None:
        if not 0 < self.presence_online_s < self.presence_stale_s:
            raise ValueError("presence thresholds must satisfy 0 < presence_online_s < presence_stale_s")
        if not 0 <= self.disk_critical_free_mb <= self.disk_warning_free_mb:
            raise ValueError(
                "disk thresholds must satisfy 0 <= disk_critical_free_mb <= disk_warning_free_mb"
            )
        for name in (*CHECK_INTERVALS, "quick_check_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive number of seconds")

    @classmethod
    def from_config(cls, config: Any) -> WatchdogSettings:
        """Take every setting the config has, defaults for the rest (so config keys can come later)."""
        settings: dict[str, Any] = {f.name: getattr(config, f.name, f.default) for f in fields(cls)}
        return cls(**settings)


# -- presence -------------------------------------------------------------------------------------


def offline_fingerprint(device_id: str) -> str:
    return f"tablet-offline:{device_id}"


def clock_skew_fingerprint(device_id: str) -> str:
    return f"clock-skew:{device_id}"


def check_presence(
    conn: sqlite3.Connection,
    settings: WatchdogSettings,
    now: datetime,
    watching_since: datetime | None = None,
) -> dict[str, str]:
    """Sweep the paired tablets; returns each active device's state (online / stale / offline).

    A tablet that has sent a heartbeat and is now offline gets a warning; one that never sent any is
    just "offline" (not yet switched on). With ``watching_since`` (when the box started listening),
    no new offline alert is raised before ``presence_stale_s`` has passed since then: a tablet that
    was silent while the box was down has not had a chance to reach it yet."""
    active = {alert.fingerprint for alert in alerts.list_alerts(conn)}
    in_grace = (
        watching_since is not None and (now - watching_since).total_seconds() < settings.presence_stale_s
    )
    states: dict[str, str] = {}
    rows = conn.execute(
        """
        SELECT d.device_id, d.name, d.judge_id, d.revoked_at, j.name AS judge_name,
               p.last_seen_at, p.clock_skew_s
        FROM devices d
        LEFT JOIN judges j ON j.event_id = d.event_id AND j.judge_id = d.judge_id
        LEFT JOIN presence p ON p.device_id = d.device_id
        """
    ).fetchall()
    for row in rows:
        device_id = row["device_id"]
        offline_fp, skew_fp = offline_fingerprint(device_id), clock_skew_fingerprint(device_id)
        if row["revoked_at"] is not None:
            # A revoked tablet is expected to go quiet; its alerts end with it.
            for fingerprint in (offline_fp, skew_fp):
                if fingerprint in active:
                    alerts.clear_alert(conn, fingerprint, now)
            continue
        state = presence_state(
            row["last_seen_at"], now, settings.presence_online_s, settings.presence_stale_s
        )
        states[device_id] = state
        who = f"{row['judge_name'] or row['judge_id']}'s tablet ({row['name']})"
        if state == "offline" and row["last_seen_at"] is not None:
            if not in_grace or offline_fp in active:
                silent_s = (now - parse_rfc3339(row["last_seen_at"])).total_seconds()
                alerts.raise_alert(
                    conn,
                    offline_fp,
                    "warning",
                    f"{who} is offline",
                    f"No heartbeat for {_duration(silent_s)} (tablets send one every few seconds). "
                    "Check that the tablet is on, on the venue Wi-Fi and running the scoring app; "
                    "scores it saved meanwhile are kept on the tablet and sent when it reconnects.",
                    now,
                )
        elif state != "offline" and offline_fp in active:
            alerts.clear_alert(conn, offline_fp, now)

        skew = row["clock_skew_s"]
        if skew is not None and abs(skew) > settings.clock_skew_max_s:
            direction = "ahead of" if skew > 0 else "behind"
            alerts.raise_alert(
                conn,
                skew_fp,
                "warning",
                f"{who} has a wrong clock",
                f"Its clock is {_duration(abs(skew))} {direction} the box's (more than "
                f"{settings.clock_skew_max_s:g} s). Score times come from the tablet: turn on automatic "
                "date and time in the tablet's settings.",
                now,
            )
        elif skew_fp in active:
            alerts.clear_alert(conn, skew_fp, now)
    return states


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


# -- disk -----------------------------------------------------------------------------------------

DISK_FINGERPRINT = "disk-free"


def disk_free_mb(path: Path | str, disk_usage: Callable[[Any], Any] = shutil.disk_usage) -> float:
    """Free space (for this unprivileged process) on the filesystem holding ``path``, in MB."""
    return disk_usage(path).free / MB


def apply_disk_free(
    conn: sqlite3.Connection, settings: WatchdogSettings, free_mb: float, now: datetime
) -> str:
    """Raise, escalate or clear the disk alert for a reading; returns 'ok', 'warning' or 'critical'.

    Critical freezes the box (unless disabled): a full disk would fail writes half-way through an
    event, so scoring stops cleanly instead, with a reason the judges see."""
    if free_mb >= settings.disk_warning_free_mb:
        alerts.clear_alert(conn, DISK_FINGERPRINT, now)
        return "ok"
    free = f"{free_mb:.0f} MB free on the box's data disk"
    if free_mb >= settings.disk_critical_free_mb:
        alerts.raise_alert(
            conn,
            DISK_FINGERPRINT,
            "warning",
            "Data disk is getting full",
            f"{free} (warning below {settings.disk_warning_free_mb:g} MB, the box freezes scoring below "
            f"{settings.disk_critical_free_mb:g} MB). Move old backups and exports off the box.",
            now,
        )
        return "warning"
    if settings.auto_freeze_on_disk_critical and not get_box(conn)["frozen"]:
        freeze(conn, DISK_FREEZE_REASON, ACTOR, category="technical")
    action = (
        "Scoring is frozen so no score is lost half-written; the freeze stays until a tech unfreezes, "
        "even after this alert clears."
        if settings.auto_freeze_on_disk_critical
        else "Automatic freeze is off: score writes may start failing."
    )
    alerts.raise_alert(
        conn,
        DISK_FINGERPRINT,
        "critical",
        "Data disk is nearly full",
        f"{free} (critical below {settings.disk_critical_free_mb:g} MB). Move old backups and exports "
        f"off the box now. {action}",
        now,
    )
    return "critical"


def check_disk(
    conn: sqlite3.Connection,
    settings: WatchdogSettings,
    data_dir: Path | str,
    now: datetime,
    disk_usage: Callable[[Any], Any] = shutil.disk_usage,
) -> str:
    """Measure the data dir's filesystem and apply the reading (see ``apply_disk_free``)."""
    return apply_disk_free(conn, settings, disk_free_mb(data_dir, disk_usage), now)


# -- database integrity ---------------------------------------------------------------------------

INTEGRITY_FINGERPRINT = "db-integrity"


def apply_integrity(
    conn: sqlite3.Connection, settings: WatchdogSettings, problems: list[str], now: datetime
) -> bool:
    """Raise (and freeze) or clear the integrity alert for a quick_check result; returns ok."""
    if not problems:
        alerts.clear_alert(conn, INTEGRITY_FINGERPRINT, now)
        return True
    if not get_box(conn)["frozen"]:
        freeze(conn, INTEGRITY_FREEZE_REASON, ACTOR, category="technical")
    shown = "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
    alerts.raise_alert(
        conn,
        INTEGRITY_FINGERPRINT,
        "critical",
        "Database integrity check failed",
        f"SQLite reported: {shown}. Scoring is frozen and the box stores nothing more: stop the service, "
        f'copy the whole data dir to a USB key now and follow "{DAMAGED_DATABASE_SECTION}" in the '
        "runbook (docs/operations.md). The freeze stays until a tech unfreezes, even if a later check "
        "passes and this alert clears.",
        now,
    )
    return False


def check_integrity(store: Store, settings: WatchdogSettings, now: datetime | None = None) -> bool:
    """Blocking form for scripts and tests: quick_check on a read connection, then the alert write."""
    problems = store.query(quick_check)
    if problems:
        store.mark_damaged(problems)
    return store.write_sync(
        lambda conn: apply_integrity(conn, settings, problems, now or utcnow()), damaged_ok=True
    )


# -- event loop -----------------------------------------------------------------------------------

LOOP_FINGERPRINT = "event-loop-stalled"


class LoopLagProbe:
    """Measures how late the event loop wakes a task that sleeps ``interval`` seconds.

    ``lag_s`` is the latest lateness; ``last_beat`` the monotonic time of the latest wake-up. A
    blocked loop cannot run its own checks, so two views exist: ``take_peak_lag()`` (on the loop)
    reports the worst stall since the last call, after the fact; ``seconds_since_beat()`` (safe
    from any thread, e.g. a watchdog thread) grows while the loop is stuck."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.lag_s = 0.0
        self.last_beat = time.monotonic()
        self._peak_lag_s = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start beating on the running loop (idempotent)."""
        if self._task is not None and not self._task.done():
            return
        self.last_beat = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._beat(), name="venuebox-loop-probe")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _beat(self) -> None:
        while True:
            expected = time.monotonic() + self.interval
            await asyncio.sleep(self.interval)
            woke = time.monotonic()
            self.lag_s = max(0.0, woke - expected)
            self._peak_lag_s = max(self._peak_lag_s, self.lag_s)
            self.last_beat = woke

    def seconds_since_beat(self) -> float:
        return time.monotonic() - self.last_beat

    def current_lag_s(self) -> float:
        """The lag as of now: the last measurement, or longer if the next beat is overdue."""
        return max(self.lag_s, self.seconds_since_beat() - self.interval)

    def take_peak_lag(self) -> float:
        """The worst lag since the previous call (including a beat overdue right now), then reset."""
        peak = max(self._peak_lag_s, self.current_lag_s())
        self._peak_lag_s = 0.0
        return peak

    def is_healthy(self, max_lag_s: float) -> bool:
        return self.current_lag_s() <= max_lag_s


def apply_loop_lag(conn: sqlite3.Connection, settings: WatchdogSettings, lag_s: float, now: datetime) -> bool:
    """Raise or clear the stalled-loop alert for a measured lag; returns whether the loop is healthy."""
    if lag_s <= settings.loop_lag_critical_s:
        alerts.clear_alert(conn, LOOP_FINGERPRINT, now)
        return True
    alerts.raise_alert(
        conn,
        LOOP_FINGERPRINT,
        "critical",
        "The box stopped responding for a moment",
        f"The event loop was {lag_s:.1f} s late (limit {settings.loop_lag_critical_s:g} s): tablets "
        "waited that long for answers. If this repeats, check the box's CPU load and temperature and "
        "send the daemon log to support.",
        now,
    )
    return False


def check_event_loop(
    conn: sqlite3.Connection, settings: WatchdogSettings, probe: LoopLagProbe, now: datetime
) -> bool:
    """Apply the worst lag the probe saw since the previous check (see ``apply_loop_lag``)."""
    return apply_loop_lag(conn, settings, probe.take_peak_lag(), now)


# -- pairing flood --------------------------------------------------------------------------------

PAIRING_FLOOD_FINGERPRINT = "pairing-flood"


def raise_pairing_flood(
    conn: sqlite3.Connection, per_minute: int, addresses: list[str], now: datetime
) -> Alert:
    """The box-wide budget of failed pairing attempts is spent (the tablet API calls this, at most
    every few seconds while it refuses attempts); ``addresses``: those refused since, most first."""
    shown = ", ".join(addresses[:3]) + (f" and {len(addresses) - 3} more" if len(addresses) > 3 else "")
    return alerts.raise_alert(
        conn,
        PAIRING_FLOOD_FINGERPRINT,
        "warning",
        "Many wrong pairing codes",
        f"More than {per_minute} pairing attempts a minute failed (wrong, used or expired codes)"
        + (f", lately from {shown}" if shown else "")
        + ": something on the venue network may be guessing codes. Until it calms down every pairing "
        "attempt is told to try again shortly, a judge's right code too; paired tablets keep scoring. "
        "If it goes on, find that device on the network; a tablet that cannot pair can try again "
        "in a minute.",
        now,
    )


def check_pairing_calm(conn: sqlite3.Connection, settings: WatchdogSettings, now: datetime) -> bool:
    """Clear the pairing-flood alert once no pairing attempt has been refused box-wide for
    ``pair_flood_calm_s`` (its ``last_seen``); returns whether pairing is calm."""
    alert = alerts.get_alert(conn, PAIRING_FLOOD_FINGERPRINT)
    if alert is None or not alert.active:
        return True
    if (now - parse_rfc3339(alert.last_seen)).total_seconds() < settings.pair_flood_calm_s:
        return False
    alerts.clear_alert(conn, PAIRING_FLOOD_FINGERPRINT, now)
    return True


# -- connection floods ----------------------------------------------------------------------------

CONNECTION_FLOOD_PREFIX = "connection-flood:"


def connection_flood_fingerprint(address: str) -> str:
    return CONNECTION_FLOOD_PREFIX + address


def check_connection_floods(
    conn: sqlite3.Connection,
    settings: WatchdogSettings,
    floods: dict[str, dict[str, Any]],
    now: datetime,
) -> set[str]:
    """``floods``: the client addresses flooding the LAN listeners now (``ConnectionGate.floods``).
    One that has for ``connection_flood_alert_s`` or longer gets (or keeps) its warning; an alert
    whose address is not flooding any more clears (after a restart too: the gate starts empty).
    Returns the addresses alerted."""
    alerted = {a for a, f in floods.items() if f["for_s"] >= settings.connection_flood_alert_s}
    active = conn.execute(
        "SELECT fingerprint FROM alerts WHERE active = 1 AND fingerprint LIKE ?",
        (CONNECTION_FLOOD_PREFIX + "%",),
    ).fetchall()
    for (fingerprint,) in active:
        address = fingerprint[len(CONNECTION_FLOOD_PREFIX) :]
        if address not in floods:
            alerts.clear_alert(conn, fingerprint, now)
    for address in sorted(alerted):
        flood = floods[address]
        alerts.raise_alert(
            conn,
            connection_flood_fingerprint(address),
            "warning",
            f"Too many connections from {address}",
            f"{address} has held its {flood['open']} connections, the most one address may have "
            f"(max_connections_per_address), for {flood['for_s']:.0f} s, and {flood['refused']} more were "
            "closed at once. Tablets on other addresses keep scoring. A device there may be flooding the "
            "box; or many tablets reach the box through one router (NAT) and share its address: then "
            "raise max_connections_per_address (docs/operations.md).",
            now,
        )
    return alerted


# -- scheduler ------------------------------------------------------------------------------------


def _alert_state(conn: sqlite3.Connection) -> frozenset[tuple[str, str]]:
    return frozenset(conn.execute("SELECT fingerprint, severity FROM alerts WHERE active = 1").fetchall())


def _tracked(fn: Callable[[sqlite3.Connection], Any]) -> Callable[[sqlite3.Connection], bool]:
    """``fn`` wrapped to report whether it changed which alerts are active (or their severity)."""

    def run(conn: sqlite3.Connection) -> bool:
        before = _alert_state(conn)
        fn(conn)
        return _alert_state(conn) != before

    return run


def build_scheduler(
    store: Store,
    settings: WatchdogSettings,
    probe: LoopLagProbe,
    on_change: Callable[[], Any] | None = None,
    *,
    disk_usage: Callable[[Any], Any] = shutil.disk_usage,
    connection_floods: Callable[[], dict[str, dict[str, Any]]] | None = None,
) -> AsyncIOScheduler:
    """The watchdog's jobs on an ``AsyncIOScheduler``; the caller starts it on the running loop
    (``scheduler.start()``) after ``probe.start()``, and shuts it down before closing the store.

    ``on_change`` (a function or coroutine function) is called after a job changed the active
    alerts, e.g. to refresh systemd's STATUS line or a metric. ``connection_floods``: the addresses
    flooding the LAN listeners now (``ConnectionGate.floods``), for the connection-flood alerts."""
    data_dir = store.path.parent
    started = utcnow()
    loop = asyncio.get_running_loop()
    responses: set[asyncio.Task[None]] = set()

    async def write_checked(
        name: str, fn: Callable[[sqlite3.Connection], Any], *, damaged_ok: bool = False
    ) -> None:
        if store.damaged is not None and not damaged_ok:
            return  # nothing but the integrity alert is written to a damaged file
        try:
            changed = await store.write(_tracked(fn), timeout=settings.write_timeout_s, damaged_ok=damaged_ok)
        except DatabaseDamaged as exc:
            log.error(
                "watchdog: the %s check could not store its result: the database is damaged",
                name,
                extra={"problems": exc.problems[:5]},
            )
            return
        except Exception:
            log.exception("watchdog: the %s check could not store its result", name)
            return
        if changed and on_change is not None:
            try:
                result = on_change()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("watchdog: on_change failed after the %s check", name)

    async def presence_job() -> None:
        now = utcnow()
        await write_checked("presence", lambda conn: check_presence(conn, settings, now, started))

    async def disk_job() -> None:
        try:
            # statvfs is quick, but on a failing SD card any file system call can hang: off the loop.
            free_mb = await asyncio.to_thread(disk_free_mb, data_dir, disk_usage)
        except OSError:
            log.exception("watchdog: could not read free space of %s", data_dir)
            return
        now = utcnow()
        await write_checked("disk", lambda conn: apply_disk_free(conn, settings, free_mb, now))

    async def integrity_job(met: DatabaseDamaged | None = None) -> None:
        """quick_check, then the alert (and freeze) or its clearing. ``met``: damage a read or a
        write met just now, which quick_check may not see (an index, the free list): it counts."""
        try:
            problems = await store.read(quick_check)
        except DatabaseDamaged as exc:
            problems = exc.problems
        except Exception:
            log.exception("watchdog: quick_check could not run")
            return
        if met is not None and not problems:
            problems = met.problems
        if problems:
            log.error("watchdog: the database is damaged: %s", problems[:10])
            # In memory first: the alert's own write may fail on the damaged file, and the box must
            # still say so (health, status) and refuse every other write.
            store.mark_damaged(problems)
        now = utcnow()
        await write_checked(
            "integrity", lambda conn: apply_integrity(conn, settings, problems, now), damaged_ok=True
        )

    def damage_met(damage: DatabaseDamaged) -> None:
        """A read or write met a damaged page (on any thread): the integrity response runs now, not
        at the next quick_check_s."""

        def respond() -> None:
            task = loop.create_task(integrity_job(damage), name="venuebox-integrity-now")
            responses.add(task)
            task.add_done_callback(responses.discard)

        loop.call_soon_threadsafe(respond)

    store.on_damage(damage_met)

    async def loop_job() -> None:
        lag_s = probe.take_peak_lag()
        if lag_s > settings.loop_lag_critical_s:
            log.warning("watchdog: event loop was %.1f s late", lag_s)
        now = utcnow()
        await write_checked("event loop", lambda conn: apply_loop_lag(conn, settings, lag_s, now))

    async def pairing_job() -> None:
        now = utcnow()
        await write_checked("pairing flood", lambda conn: check_pairing_calm(conn, settings, now))

    async def connections_job() -> None:
        assert connection_floods is not None
        floods = connection_floods()
        now = utcnow()
        await write_checked("connections", lambda conn: check_connection_floods(conn, settings, floods, now))

    scheduler = AsyncIOScheduler(timezone=UTC)
    soon = datetime.now(UTC)
    jobs: list[tuple[Callable[[], Any], str, float, datetime]] = [
        (presence_job, "presence", settings.presence_sweep_s, soon),
        (disk_job, "disk", settings.disk_check_s, soon),
        # The first integrity check once start-up is over, then every quick_check_s.
        (
            integrity_job,
            "integrity",
            settings.quick_check_s,
            soon + timedelta(seconds=min(60.0, settings.quick_check_s)),
        ),
        (loop_job, "event-loop", settings.loop_check_s, soon + timedelta(seconds=settings.loop_check_s)),
        (pairing_job, "pairing", settings.pairing_check_s, soon),
    ]
    if connection_floods is not None:
        jobs.append((connections_job, "connections", settings.connection_check_s, soon))
    for func, job_id, interval, first_run in jobs:
        name = f"watchdog {job_id} check"
        add_interval_job(scheduler, func, f"watchdog-{job_id}", name, interval, first_run)
    return scheduler


def add_interval_job(
    scheduler: Any, func: Callable[[], Any], job_id: str, name: str, interval_s: float, first_run: datetime
) -> None:
    """A periodic job on the daemon's scheduler, as every one of its jobs runs: never two runs at
    once, missed runs coalesced into one, and a run late by more than one interval skipped (the
    next one will do the work anyway)."""
    scheduler.add_job(
        func,
        "interval",
        seconds=interval_s,
        id=job_id,
        name=name,
        next_run_time=first_run,
        max_instances=1,
        coalesce=True,
        misfire_grace_time=max(1, round(interval_s)),
    )
