"""`venuebox run` as systemd and the venue LAN see it: a real subprocess, real mDNS, a real
NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from zeroconf import ServiceBrowser, ServiceStateChange, Zeroconf

from appliance.core.config import Config
from appliance.shared.hostnet import current_addresses
from tests.conftest import ROOT, NotifySocket, RunningBox, make_box, needs_tool, panel_entries, wait_for
from tests.integration.test_mdns import dig, lookup

SERVICE = "_venuebox._tcp.local."


class Browser:
    """A python-zeroconf browser recording what it sees of our service type."""

    def __init__(self) -> None:
        self.zc = Zeroconf()
        self.added: dict[str, dict[str, str | None]] = {}
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


def hear(systemd: NotifySocket, heard: list[str]) -> list[str]:
    """Add what the daemon told systemd since (waiting up to 0.2 s) to ``heard``; all heard so far."""
    heard.extend(systemd.messages(0.2))
    return heard


def runtime_of(config: Config) -> dict[str, Any]:
    return json.loads((config.data_dir / "daemon.json").read_text())


def advertised_runtime(config: Config, timeout: float = 20.0) -> dict[str, Any]:
    """daemon.json once the daemon says its mDNS advertisement is done (READY=1 does not wait)."""
    return wait_for(
        "daemon.json says mdns_state advertised",
        lambda: (runtime := runtime_of(config)).get("mdns_state") == "advertised" and runtime,
        timeout,
    )


def named_box(path: Path, **settings: Any) -> Config:
    """A box with mDNS on and a display name of its own, so boxes of parallel runs never clash."""
    config = make_box(path, mdns_enabled=True, **settings)
    conn = sqlite3.connect(config.db_path)
    with conn:
        conn.execute("UPDATE box SET name = ? WHERE id = 1", (f"Daemon box {uuid.uuid4().hex[:6]}",))
    conn.close()
    return config


def start_daemon(
    config: Config, *run_args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """`venuebox run` with ``run_args`` (after ``prefix``, e.g. ``unshare -n``), once its daemon.json
    is written; its output goes to daemon.log in the data dir."""
    runtime = config.data_dir / "daemon.json"
    runtime.unlink(missing_ok=True)
    command = [*prefix, sys.executable, "-m", "appliance", "--data-dir", str(config.data_dir), "run"]
    with (config.data_dir / "daemon.log").open("ab") as log:
        process = subprocess.Popen(
            [*command, "--port", "0", "--admin-port", "0", *run_args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
    try:
        wait_for(
            "daemon.json of the new daemon",
            lambda: (
                process.poll() is not None or (runtime.exists() and runtime_of(config)["pid"] == process.pid)
            ),
        )
        assert process.poll() is None, (config.data_dir / "daemon.log").read_text()
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


def stop_daemon(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def test_daemon_is_discovered_and_says_goodbye_on_sigterm(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box", mdns_enabled=True)
    browser = Browser()
    box = RunningBox(config).start()
    try:
        runtime = advertised_runtime(config)
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
            assert seen["server"] is not None
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
        assert first.process is not None
        assert len(lines) == 1 and f"pid {first.process.pid}" in lines[0] and "already running" in lines[0]
        # The first daemon is untouched: same runtime file, still answering.
        assert json.loads((first.config.data_dir / "daemon.json").read_text()) == runtime
        with first.client() as c:
            assert c.get("/api/v1/health").status_code == 200
    finally:
        first.kill()  # SIGKILL: the lock goes with the process, nothing to clean up
    again = RunningBox(first.config).start()
    again.stop()


# -- READY first, mDNS in the background (issue 17, item 7) -------------------------------------------


def status_lines(messages: list[str]) -> list[str]:
    return [m.removeprefix("STATUS=") for m in messages if m.startswith("STATUS=")]


def test_ready_does_not_wait_for_mdns_and_the_status_line_says_when_advertised(tmp_path: Path) -> None:
    config = named_box(tmp_path / "box", mdns_interfaces=["lo"])
    systemd = NotifySocket(tmp_path / "notify.sock")
    # A 1 s WatchdogSec: the feeder sends WATCHDOG=1 and its STATUS line every 0.5 s.
    box = RunningBox(config, env={"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "1000000"})
    box.start()
    try:
        heard: list[str] = []
        wait_for(
            "a STATUS line saying the box is advertised",
            lambda: any("advertised on the LAN as" in m for m in hear(systemd, heard)),
        )
        ready = heard.index("READY=1")
        advertised = next(i for i, m in enumerate(heard) if "advertised on the LAN as" in m)
        # READY=1 came first, with a STATUS line saying mDNS is still at work; "advertised" later.
        assert ready < advertised, heard
        assert heard[ready + 1].startswith("STATUS=") and "announcing on the LAN" in heard[ready + 1]
        runtime = advertised_runtime(config)
        assert f"advertised on the LAN as {runtime['mdns_name']!r}" in heard[advertised]
        assert runtime["mdns_error"] is None
        # And a real mDNS client finds it by that name.
        info = asyncio.run(lookup(runtime["mdns_name"]))
        assert info is not None and info.port == httpx.URL(box.tablet_url).port
        # The feeder's periodic STATUS lines keep saying it.
        later = status_lines(systemd.messages(1.5))
        assert later and all("advertised on the LAN as" in line for line in later), later
    finally:
        box.stop()
        systemd.close()


def in_own_network_namespace() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@needs_tool(in_own_network_namespace(), "a network namespace of its own needs root and unshare(1)")
def test_a_box_whose_network_is_down_is_ready_raises_an_alert_and_advertises_once_it_is_up(
    tmp_path: Path,
) -> None:
    """The box boots before its network: mDNS cannot start ("no interfaces to listen on"). The box
    comes up anyway, says so (STATUS, alert, daemon.json), and advertises once the network is up."""
    config = named_box(tmp_path / "box")
    systemd = NotifySocket(tmp_path / "notify.sock")
    # A network namespace of its own, whose only interface (loopback) is down.
    daemon = start_daemon(config, env={"NOTIFY_SOCKET": str(systemd.path)}, prefix=("unshare", "-n"))
    try:
        heard: list[str] = []
        wait_for(
            "READY=1 and a STATUS line saying the box is not advertised",
            lambda: (
                "READY=1" in hear(systemd, heard) and any("NOT advertised on the LAN" in m for m in heard)
            ),
        )
        alert = wait_for("the mDNS alert", lambda: active_alert(config, "mdns-advertisement"))
        assert alert["severity"] == "warning" and "No interfaces" in alert["detail"]
        runtime = runtime_of(config)
        assert runtime["mdns_state"] == "failed" and "No interfaces" in runtime["mdns_error"]
        assert daemon.poll() is None

        # The network comes up: the next try advertises the box, the alert clears.
        in_box_net = ("nsenter", "-t", str(daemon.pid), "-n")
        subprocess.run([*in_box_net, "ip", "link", "set", "lo", "up"], check=True, timeout=10)
        runtime = advertised_runtime(config, timeout=30)
        wait_for(
            "the advertised STATUS line",
            lambda: any("advertised on the LAN as" in m for m in hear(systemd, heard)),
        )
        wait_for("the alert cleared", lambda: active_alert(config, "mdns-advertisement") is None)
        health = subprocess.run(
            [*in_box_net, sys.executable, "-c", HEALTH, runtime["tablet_url"]],
            capture_output=True,
            timeout=30,
        )
        assert health.stdout.strip() == b"200", health.stderr
        if shutil.which("dig"):
            pointers = subprocess.run(
                [*in_box_net, "dig", "-p", "5353", "@127.0.0.1", "_venuebox._tcp.local", "PTR", "+short"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert runtime["mdns_name"].replace(" ", "\\032") in pointers.stdout, pointers
        assert stop_daemon(daemon) == 0
    finally:
        stop_daemon(daemon)
        systemd.close()


HEALTH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1] + '/api/v1/health').status)"


def active_alert(config: Config, fingerprint: str) -> dict[str, Any] | None:
    conn = sqlite3.connect(config.db_path)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute(
            "SELECT * FROM alerts WHERE fingerprint = ? AND active = 1", (fingerprint,)
        ).fetchone()
    finally:
        conn.close()
    return dict(row) if row else None


# -- only the addresses the tablet API listens on (issue 17, item 8) ----------------------------------

LAN_ADDRESSES = current_addresses()
LAN_IPV4 = [a for a in LAN_ADDRESSES if ipaddress.ip_address(a).version == 4]


def advertised_addresses_of(runtime: dict[str, Any]) -> set[str]:
    info = asyncio.run(lookup(runtime["mdns_name"]))
    assert info is not None, "a real mDNS client did not find the box"
    return set(info.parsed_addresses())


@needs_tool(bool(LAN_ADDRESSES), "this machine has no LAN address to leave out")
def test_a_box_listening_on_loopback_advertises_loopback_alone(tmp_path: Path) -> None:
    config = named_box(tmp_path / "box")
    box = RunningBox(config).start()  # --host 127.0.0.1
    try:
        runtime = advertised_runtime(config)
        port = httpx.URL(box.tablet_url).port
        host = runtime["tablet_urls"][0]  # the advertised host name
        assert runtime["tablet_urls"] == [host, f"http://127.0.0.1:{port}"]
        assert httpx.URL(host).host.endswith(".local") and httpx.URL(host).port == port
        assert advertised_addresses_of(runtime) == {"127.0.0.1"}
        if shutil.which("dig"):
            name = httpx.URL(host).host
            assert asyncio.run(dig(name, "A", bool)) == ["127.0.0.1"]
        with box.admin() as admin:
            assert admin.get("/admin/v1/status").json()["box"]["tablet_urls"] == runtime["tablet_urls"]
    finally:
        box.stop()


@needs_tool(bool(LAN_IPV4), "this machine has no LAN IPv4 address to listen on")
def test_a_box_listening_on_one_lan_address_advertises_that_one_alone(tmp_path: Path) -> None:
    address = LAN_IPV4[0]
    config = named_box(tmp_path / "box")
    daemon = start_daemon(config, "--host", address)
    try:
        runtime = advertised_runtime(config)
        port = httpx.URL(runtime["tablet_url"]).port
        assert runtime["tablet_url"] == f"http://{address}:{port}"
        assert runtime["tablet_urls"][1:] == [f"http://{address}:{port}"]
        assert advertised_addresses_of(runtime) == {address}
    finally:
        assert stop_daemon(daemon) == 0


# -- /metrics state gauges read at scrape time (issue 17, item 9) -----------------------------------


def gauge(box: RunningBox, line_start: str) -> float:
    with box.admin() as admin:
        text = admin.get("/metrics").raise_for_status().text
    [value] = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
    return value


def test_metrics_state_gauges_are_current_at_scrape_time(running_box: RunningBox) -> None:
    # The feeder refreshes its snapshot every status_interval_s (10 s): each scrape below comes
    # well within that, so only a scrape-time read sees the change.
    assert gauge(running_box, "venuebox_frozen ") == 0.0
    sheets = gauge(running_box, "venuebox_sheets_total ")
    with running_box.admin() as admin:
        admin.post("/admin/v1/freeze", json={"reason": "protest on entry 4"}).raise_for_status()
    assert gauge(running_box, "venuebox_frozen ") == 1.0
    assert gauge(running_box, 'venuebox_alerts_active{severity="critical"}') == 0.0
    with running_box.admin() as admin:
        admin.post("/admin/v1/unfreeze").raise_for_status()
    assert gauge(running_box, "venuebox_frozen ") == 0.0

    tablet = running_box.pair("J1")
    assert gauge(running_box, 'venuebox_tablets{state="offline"}') == 1.0  # paired, not heard from yet
    outbox = gauge(running_box, "venuebox_outbox_records ")
    with tablet.client() as client:
        beat = {
            "sent_at": datetime.now(UTC).isoformat(),
            "battery": 80,
            "app_version": "test",
            "queue_depth": 0,
        }
        client.post("/api/v1/heartbeat", json=beat).raise_for_status()
        assert gauge(running_box, 'venuebox_tablets{state="online"}') == 1.0
        stored = client.post("/api/v1/sheets", json=tablet.sheet_for(panel_entries(tablet.event())[0]))
    assert stored.status_code == 201, stored.text
    assert gauge(running_box, "venuebox_sheets_total ") == sheets + 1
    assert gauge(running_box, "venuebox_outbox_records ") > outbox
