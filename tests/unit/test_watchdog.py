"""The watchdog's checks on a real box: real pairing and heartbeats, a real event loop and scheduler.

The only stand-in is the disk usage function, injected to simulate a nearly full disk."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from appliance.core import alerts, devices
from appliance.core.box import get_box
from appliance.core.config import Config, ConfigError, load_config
from appliance.core.devices import Device
from appliance.core.keys import pairing_key
from appliance.core.pairing import create_code, redeem
from appliance.core.presence import record_heartbeat
from appliance.core.storage import Store
from appliance.core.watchdog import (
    CHECK_INTERVALS,
    DiskUsage,
    LoopLagProbe,
    WatchdogSettings,
    apply_integrity,
    build_scheduler,
    check_disk,
    check_event_loop,
    check_integrity,
    check_presence,
    quick_check,
)
from appliance.shared.times import parse_rfc3339, to_rfc3339, utcnow
from tests.conftest import make_box

MB = 1024 * 1024


@dataclass
class Box:
    config: Config
    store: Store


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    config = make_box(tmp_path / "box")
    with Store(config.db_path) as store:
        yield Box(config, store)


def pair(store: Store, judge_id: str = "J1", name: str = "Tablet A") -> Device:
    key = pairing_key(Config(data_dir=store.path.parent))

    def run(conn: sqlite3.Connection) -> dict[str, Any]:
        code = create_code(conn, judge_id, 600, "test", key=key)["code"]
        return redeem(conn, code, name, "10.0.0.21", key=key)

    paired = store.write_sync(run)
    return Device(paired["device_id"], paired["event"]["id"], judge_id, name)


def heartbeat(store: Store, device: Device, sent_at: datetime | None = None) -> datetime:
    """A real heartbeat; returns when the box recorded it."""
    sent = to_rfc3339(sent_at or utcnow())
    store.write_sync(lambda c: record_heartbeat(c, device, sent, 80, "1.4.0", 0, "10.0.0.21", 360))
    return parse_rfc3339(store.query(lambda c: last_seen(c, device.device_id)))


def last_seen(conn: sqlite3.Connection, device_id: str) -> str:
    return conn.execute("SELECT last_seen_at FROM presence WHERE device_id = ?", (device_id,)).fetchone()[0]


def sweep(store: Store, settings: WatchdogSettings, now: datetime, **kw: Any) -> dict[str, str]:
    return store.write_sync(lambda c: check_presence(c, settings, now, **kw))


def active(store: Store) -> dict[str, str]:
    """Active alerts: fingerprint -> severity."""
    return {a.fingerprint: a.severity for a in store.query(alerts.list_alerts)}


def usage(free_mb: float) -> Any:
    def disk_usage(path: Any) -> DiskUsage:
        assert Path(path).is_dir()
        return DiskUsage(total=32_000 * MB, used=32_000 * MB - int(free_mb * MB), free=int(free_mb * MB))

    return disk_usage


def test_settings_come_from_the_config_with_defaults_for_keys_it_lacks(box: Box) -> None:
    settings = WatchdogSettings.from_config(box.config)
    assert (settings.presence_online_s, settings.presence_stale_s) == (30, 120)
    assert settings.disk_critical_free_mb == 256

    later = WatchdogSettings.from_config(SimpleNamespace(disk_warning_free_mb=2048, quick_check_s=60))
    assert (later.disk_warning_free_mb, later.quick_check_s, later.presence_sweep_s) == (2048, 60, 5)
    with pytest.raises(ValueError, match="presence"):
        WatchdogSettings(presence_online_s=200)


def test_a_tablet_goes_online_stale_offline_and_its_alert_clears_on_the_next_heartbeat(box: Box) -> None:
    settings = WatchdogSettings()
    tablet = pair(box.store, "J1")
    never_on = pair(box.store, "J2", "Spare tablet")
    seen = heartbeat(box.store, tablet)
    fp = f"tablet-offline:{tablet.device_id}"

    assert sweep(box.store, settings, seen + timedelta(seconds=10))[tablet.device_id] == "online"
    assert sweep(box.store, settings, seen + timedelta(seconds=60))[tablet.device_id] == "stale"
    assert active(box.store) == {}

    states = sweep(box.store, settings, seen + timedelta(seconds=200))
    assert states == {tablet.device_id: "offline", never_on.device_id: "offline"}
    # Only the tablet that was once on is an alert; a tablet never switched on is not.
    assert active(box.store) == {fp: "warning"}
    alert = box.store.query(lambda c: alerts.get_alert(c, fp))
    assert alert is not None
    assert "Marisol Vega" in alert.title
    assert "3 min 20 s" in alert.detail

    back = heartbeat(box.store, tablet)
    assert sweep(box.store, settings, back + timedelta(seconds=1))[tablet.device_id] == "online"
    assert active(box.store) == {}
    cleared = box.store.query(lambda c: alerts.get_alert(c, fp))
    assert cleared is not None
    assert (cleared.active, cleared.count) == (False, 1)


def test_the_offline_alert_follows_the_configured_presence_stale_s(box: Box) -> None:
    """docs/operations.md: `tablet-offline` is raised after `presence_stale_s`, whatever it is set to."""
    (box.config.data_dir / "venuebox.toml").write_text("presence_stale_s = 300\n", encoding="utf-8")
    settings = WatchdogSettings.from_config(load_config(box.config.data_dir, environ={}))
    tablet = pair(box.store)
    seen = heartbeat(box.store, tablet)

    # Past the default 120 s the tablet is only stale: no alert yet.
    assert sweep(box.store, settings, seen + timedelta(seconds=200))[tablet.device_id] == "stale"
    assert active(box.store) == {}
    assert sweep(box.store, settings, seen + timedelta(seconds=301))[tablet.device_id] == "offline"
    assert active(box.store) == {f"tablet-offline:{tablet.device_id}": "warning"}


def test_no_offline_alert_until_the_box_has_listened_long_enough(box: Box) -> None:
    """After a restart, tablets silent while the box was down get presence_stale_s to reconnect."""
    settings = WatchdogSettings()
    tablet = pair(box.store)
    seen = heartbeat(box.store, tablet)
    now = seen + timedelta(hours=1)

    sweep(box.store, settings, now, watching_since=now - timedelta(seconds=30))
    assert active(box.store) == {}
    sweep(box.store, settings, now, watching_since=now - timedelta(seconds=121))
    assert active(box.store) == {f"tablet-offline:{tablet.device_id}": "warning"}


def test_a_revoked_tablet_loses_its_alerts(box: Box) -> None:
    settings = WatchdogSettings()
    tablet = pair(box.store)
    seen = heartbeat(box.store, tablet)
    sweep(box.store, settings, seen + timedelta(seconds=500))
    assert active(box.store)

    box.store.write_sync(lambda c: devices.revoke(c, tablet.device_id, "tech"))
    assert sweep(box.store, settings, seen + timedelta(seconds=505)) == {}
    assert active(box.store) == {}


def test_a_tablet_clock_off_by_30_s_is_flagged_and_cleared_once_fixed(box: Box) -> None:
    settings = WatchdogSettings()
    tablet = pair(box.store)
    fp = f"clock-skew:{tablet.device_id}"

    seen = heartbeat(box.store, tablet, sent_at=utcnow() + timedelta(seconds=30))
    sweep(box.store, settings, seen)
    assert active(box.store) == {fp: "warning"}
    alert = box.store.query(lambda c: alerts.get_alert(c, fp))
    assert alert is not None
    assert "ahead of" in alert.detail

    seen = heartbeat(box.store, tablet)
    sweep(box.store, settings, seen)
    assert active(box.store) == {}


def test_a_filling_disk_warns_then_freezes_the_box_and_the_freeze_outlives_the_alert(box: Box) -> None:
    settings = WatchdogSettings()

    def check(free_mb: float) -> str:
        data_dir = box.config.data_dir
        return box.store.write_sync(lambda c: check_disk(c, settings, data_dir, utcnow(), usage(free_mb)))

    assert check(5000) == "ok"
    assert active(box.store) == {}

    assert check(800) == "warning"
    assert active(box.store) == {"disk-free": "warning"}
    assert not box.store.query(get_box)["frozen"]

    assert check(100) == "critical"
    assert active(box.store) == {"disk-free": "critical"}
    frozen = box.store.query(get_box)
    assert (frozen["frozen"], frozen["freeze_reason"], frozen["frozen_by"]) == (1, "auto: disk", "watchdog")

    assert check(5000) == "ok"
    assert active(box.store) == {}
    assert box.store.query(get_box)["frozen"] == 1


def test_no_automatic_freeze_when_it_is_turned_off(box: Box) -> None:
    settings = WatchdogSettings(auto_freeze_on_disk_critical=False)
    data_dir = box.config.data_dir
    box.store.write_sync(lambda c: check_disk(c, settings, data_dir, utcnow(), usage(10)))
    assert active(box.store) == {"disk-free": "critical"}
    assert box.store.query(get_box)["frozen"] == 0


def test_the_disk_free_alert_follows_the_thresholds_in_venuebox_toml(box: Box) -> None:
    """docs/operations.md: `disk-free` follows `disk_warning_free_mb` and `disk_critical_free_mb`."""
    (box.config.data_dir / "venuebox.toml").write_text(
        "disk_warning_free_mb = 4096\ndisk_critical_free_mb = 2048\nauto_freeze_on_disk_critical = false\n",
        encoding="utf-8",
    )
    settings = WatchdogSettings.from_config(load_config(box.config.data_dir, environ={}))
    data_dir = box.config.data_dir

    def check(free_mb: float) -> str:
        return box.store.write_sync(lambda c: check_disk(c, settings, data_dir, utcnow(), usage(free_mb)))

    # 3000 MB free is fine under the defaults (1024 / 256 MB), not under these settings.
    assert check(5000) == "ok"
    assert check(3000) == "warning"
    assert active(box.store) == {"disk-free": "warning"}
    assert check(1500) == "critical"
    assert active(box.store) == {"disk-free": "critical"}
    assert box.store.query(get_box)["frozen"] == 0  # auto_freeze_on_disk_critical = false


def test_the_clock_skew_alert_follows_clock_skew_max_s_in_venuebox_toml(box: Box) -> None:
    (box.config.data_dir / "venuebox.toml").write_text("clock_skew_max_s = 60\n", encoding="utf-8")
    settings = WatchdogSettings.from_config(load_config(box.config.data_dir, environ={}))
    tablet = pair(box.store)

    seen = heartbeat(box.store, tablet, sent_at=utcnow() + timedelta(seconds=30))
    sweep(box.store, settings, seen)
    assert active(box.store) == {}  # 30 s off: an alert under the default 5 s, not under 60 s
    seen = heartbeat(box.store, tablet, sent_at=utcnow() + timedelta(seconds=90))
    sweep(box.store, settings, seen)
    assert active(box.store) == {f"clock-skew:{tablet.device_id}": "warning"}


def test_every_watchdog_threshold_is_a_setting_of_the_config_with_its_default() -> None:
    """No second copy of a default: every field but the check intervals is Config's, same default."""
    defaults = Config()
    settings = WatchdogSettings.from_config(defaults)
    thresholds = {f.name for f in fields(WatchdogSettings)} - set(CHECK_INTERVALS)
    assert thresholds <= set(Config.__struct_fields__)
    assert {name: getattr(WatchdogSettings(), name) for name in thresholds} == {
        name: getattr(defaults, name) for name in thresholds
    }
    assert settings == WatchdogSettings()


@pytest.mark.parametrize(
    ("toml", "refused"),
    [
        ("disk_warning_free_mb = 100\ndisk_critical_free_mb = 200\n", "disk thresholds"),
        ("clock_skew_max_s = 0\n", "clock_skew_max_s"),
    ],
)
def test_inconsistent_watchdog_thresholds_stop_the_box_with_a_reason(
    tmp_path: Path, toml: str, refused: str
) -> None:
    (tmp_path / "venuebox.toml").write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError, match=refused):
        load_config(tmp_path, environ={})


def test_a_sound_database_passes_quick_check_without_an_alert(box: Box) -> None:
    assert check_integrity(box.store, WatchdogSettings()) is True
    assert active(box.store) == {}


def test_a_damaged_database_file_fails_quick_check_and_freezes_the_box(box: Box, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.sqlite"
    conn = sqlite3.connect(damaged)
    conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)")
    conn.executemany("INSERT INTO t (b) VALUES (?)", [("x" * 200,) for _ in range(200)])
    conn.commit()
    conn.close()
    with damaged.open("r+b") as f:
        f.seek(3 * 4096)  # a b-tree page of the table
        f.write(b"\x0d" + b"\xff" * 7)
    conn = sqlite3.connect(damaged)
    problems = quick_check(conn)
    conn.close()
    assert problems

    settings = WatchdogSettings()
    assert box.store.write_sync(lambda c: apply_integrity(c, settings, problems, utcnow())) is False
    assert active(box.store) == {"db-integrity": "critical"}
    assert box.store.query(get_box)["freeze_reason"] == "auto: database integrity"
    alert = box.store.query(lambda c: alerts.get_alert(c, "db-integrity"))
    assert alert is not None
    assert "freeze stays" in alert.detail

    # A later check passes: the alert clears, the freeze waits for a tech.
    assert check_integrity(box.store, settings) is True
    assert active(box.store) == {}
    assert box.store.query(get_box)["frozen"] == 1


def test_the_loop_probe_sees_a_blocked_event_loop_and_its_recovery(box: Box) -> None:
    settings = WatchdogSettings(loop_lag_critical_s=1.0)
    seen_from_thread: list[float] = []

    async def scenario() -> tuple[bool, bool]:
        probe = LoopLagProbe(interval=0.05)
        probe.start()
        await asyncio.sleep(0.2)
        assert probe.is_healthy(1.0)
        # A watchdog thread can tell the loop is stuck while it is stuck.
        sampler = threading.Timer(1.2, lambda: seen_from_thread.append(probe.seconds_since_beat()))
        sampler.start()
        time.sleep(1.5)  # a deliberate block of the event loop
        sampler.join()
        await asyncio.sleep(0.2)
        stalled = await box.store.write(lambda c: check_event_loop(c, settings, probe, utcnow()))
        assert active(box.store) == {"event-loop-stalled": "critical"}
        await asyncio.sleep(0.2)
        recovered = await box.store.write(lambda c: check_event_loop(c, settings, probe, utcnow()))
        assert probe.is_healthy(1.0)
        probe.stop()
        return stalled, recovered

    assert asyncio.run(scenario()) == (False, True)
    assert seen_from_thread[0] > 1.0
    assert active(box.store) == {}


def test_the_scheduler_raises_the_offline_alert_for_a_silent_tablet(box: Box) -> None:
    settings = WatchdogSettings(
        presence_online_s=0.2,
        presence_stale_s=0.5,
        presence_sweep_s=0.2,
        disk_check_s=0.2,
        quick_check_s=0.3,
        loop_check_s=0.2,
    )
    tablet = pair(box.store)
    heartbeat(box.store, tablet)
    an_hour_ago = to_rfc3339(utcnow() - timedelta(hours=1))
    box.store.write_sync(
        lambda c: c.execute(
            "UPDATE presence SET last_seen_at = ? WHERE device_id = ?", (an_hour_ago, tablet.device_id)
        )
    )
    changes: list[dict[str, str]] = []

    async def on_change() -> None:
        changes.append(active(box.store))

    async def scenario() -> dict[str, str]:
        probe = LoopLagProbe(interval=0.05)
        probe.start()
        scheduler = build_scheduler(box.store, settings, probe, on_change, disk_usage=usage(50_000))
        scheduler.start()
        try:
            # A 0.2 s sweep: the generous deadline only bounds a broken scheduler, it times nothing.
            deadline = time.monotonic() + 15
            while not active(box.store):
                assert time.monotonic() < deadline, "no alert from the scheduler"
                await asyncio.sleep(0.05)
            # Let the integrity job's first run happen too.
            await asyncio.sleep(0.5)
            return active(box.store)
        finally:
            scheduler.shutdown(wait=False)
            probe.stop()
            await asyncio.sleep(0.05)

    assert asyncio.run(scenario()) == {f"tablet-offline:{tablet.device_id}": "warning"}
    assert changes and changes[0] == {f"tablet-offline:{tablet.device_id}": "warning"}
