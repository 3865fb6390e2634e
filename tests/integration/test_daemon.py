"""`venuebox run` as systemd and the venue LAN see it: a real subprocess, real mDNS, a real
NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from zeroconf import ServiceBrowser, ServiceStateChange, Zeroconf

from tests.conftest import NotifySocket, RunningBox, make_box
from tests.integration.test_mdns import dig

SERVICE = "_venuebox._tcp.local."


class Browser:
    """A python-zeroconf browser recording what it sees of our service type."""

    def __init__(self) -> None:
        self.zc = Zeroconf()
        self.added: dict[str, dict[str, str]] = {}
        self.removed: set[str] = set()
        self.browser = ServiceBrowser(self.zc, SERVICE, handlers=[self._on_change])

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange):
        if state_change is ServiceStateChange.Added:
            info = zeroconf.get_service_info(service_type, name, timeout=3000)
            if info is not None:
                txt = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
                self.added[name] = {**txt, "port": str(info.port), "server": info.server}
        elif state_change is ServiceStateChange.Removed:
            self.removed.add(name)

    def wait(self, predicate, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        self.browser.cancel()
        self.zc.close()


def test_daemon_is_discovered_and_says_goodbye_on_sigterm(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box", mdns_enabled=True)
    browser = Browser()
    box = RunningBox(config).start()
    try:
        runtime = json.loads((config.data_dir / "daemon.json").read_text())
        name = runtime["mdns_name"]
        full_name = f"{name}.{SERVICE}"
        assert browser.wait(lambda: full_name in browser.added), browser.added
        seen = browser.added[full_name]
        box_row = sqlite3.connect(config.db_path).execute("SELECT box_id, event_id FROM box").fetchone()
        assert seen["v"] == "1" and seen["api"] == "/api/v1" and seen["tls"] == "0"
        assert (seen["box"], seen["event"]) == box_row
        assert seen["port"] == box.tablet_url.rsplit(":", 1)[1]

        if shutil.which("dig"):
            # A real mDNS client, retried from fresh source ports (see tests/integration/test_mdns.py).
            ptr = asyncio.run(
                dig("_venuebox._tcp.local", "PTR", lambda lines: any(name in ln for ln in lines))
            )
            assert any(name.replace(" ", "\\032") in line or name in line for line in ptr), ptr
            a_records = asyncio.run(dig(seen["server"], "A", bool))
            assert a_records, f"no A record for {seen['server']}"

        started = time.monotonic()
        assert box.stop() == 0
        assert time.monotonic() - started < 10
        assert browser.wait(lambda: full_name in browser.removed, timeout=5), "no goodbye seen"
    finally:
        box.stop()
        browser.close()


def test_systemd_hears_ready_status_and_watchdog_until_the_database_stops_answering(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box")
    systemd = NotifySocket(tmp_path / "notify.sock")
    box = RunningBox(config)
    box.env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "1000000"}
    box.start()
    try:
        first = systemd.messages(2.5)
        assert "READY=1" in first
        assert any(m.startswith("STATUS=") and "tablets" in m for m in first)
        assert first.count("WATCHDOG=1") >= 2  # every 0.5 s with a 1 s WatchdogSec

        # Another process takes the database's write lock and holds it: the single writer cannot
        # write, so the daemon must stop telling systemd it is healthy.
        blocker = sqlite3.connect(config.db_path, isolation_level=None, timeout=10)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            systemd.messages(1.0)  # let in-flight feeds drain
            starved = systemd.messages(3.0)
            assert "WATCHDOG=1" not in starved
            assert any("database not answering" in m for m in starved)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        recovered = systemd.messages(8.0)
        assert "WATCHDOG=1" in recovered
        assert box.stop() == 0
        assert "STOPPING=1" in systemd.messages(1.0)
    finally:
        box.stop()
        systemd.close()


def test_sigterm_during_requests_exits_zero(tmp_path: Path) -> None:
    box = RunningBox(make_box(tmp_path / "box")).start()
    try:
        assert box.process is not None
        box.process.send_signal(signal.SIGTERM)
        assert box.process.wait(10) == 0
        assert not (box.config.data_dir / "daemon.json").exists()
    finally:
        box.stop()


def test_start_to_ready_is_recorded(tmp_path: Path) -> None:
    box = RunningBox(make_box(tmp_path / "box")).start()
    try:
        runtime = json.loads((box.config.data_dir / "daemon.json").read_text())
        assert 0 < runtime["ready_after_s"] < 10
    finally:
        box.stop()


def test_a_second_daemon_on_the_same_data_dir_is_refused_in_one_line(tmp_path: Path) -> None:
    first = RunningBox(make_box(tmp_path / "box")).start()
    try:
        runtime = json.loads((first.config.data_dir / "daemon.json").read_text())
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "appliance",
                "--data-dir",
                str(first.config.data_dir),
                "run",
                "--port",
                "0",
                "--admin-port",
                "0",
                "--no-mdns",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"pid {first.process.pid}" in lines[0] and "already running" in lines[0]
        # The first daemon is untouched: same runtime file, still answering.
        assert json.loads((first.config.data_dir / "daemon.json").read_text()) == runtime
        with first.client() as c:
            assert c.get("/api/v1/health").status_code == 200
    finally:
        first.kill()  # SIGKILL: the lock goes with the process, nothing to clean up
    again = RunningBox(first.config).start()
    again.stop()
