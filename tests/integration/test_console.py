"""The venue console driven by Textual's pilot against a real daemon process.

Each test starts `venuebox run` (tests/conftest.py RunningBox), runs the console App headless in this
process with the real admin client, presses keys as a tech would, and checks both what the console
shows and what the box's APIs answer.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from textual.message import Message
from textual.notifications import Notification, Notify
from textual.pilot import Pilot
from textual.widgets import Input, ProgressBar, Static

from appliance.core import personal, tls
from appliance.core.export import MANIFEST, verify_export
from appliance.shared.fingerprint import short_fingerprint
from appliance.shared.secrets_files import write_secret
from appliance.shell.console import DaemonLocator
from tests.conftest import RunningBox, Tablet, make_box, panel_entries
from tests.personal_package import participants_of_sample, personal_package
from tui.app import ConsoleApp
from tui.client import AdminClient, AdminError
from tui.screens.dialogs import ConfirmScreen, FreezeDialog
from tui.screens.export import ExportDialog
from tui.screens.pairing import PairingScreen
from tui.screens.scores import ScoresScreen
from tui.screens.tablets import TabletsScreen
from tui.widgets.table import LinedTable

SIZE = (120, 40)


def plain(renderable: Any) -> str:
    """What a widget shows, as plain text."""
    if hasattr(renderable, "plain"):
        return renderable.plain
    if isinstance(renderable, str):
        return renderable
    console = Console(width=200, color_system=None, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def shown(app: ConsoleApp, selector: str) -> str:
    return plain(app.screen.query_one(selector, Static).content)


async def until(pilot: Pilot[Any], check: Callable[[], object], what: str, timeout: float = 10.0) -> float:
    """Wait (letting the console run) until ``check()``; returns how long it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        await pilot.pause(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


async def type_text(pilot: Pilot[Any], text: str) -> None:
    await pilot.press(*("space" if ch == " " else ch for ch in text))


def console_for(box: RunningBox) -> ConsoleApp:
    return ConsoleApp(AdminClient(DaemonLocator(box.config)))


def on_screen(app: ConsoleApp, selector: str) -> list[str]:
    """The lines a widget draws at the console's size, borders and ellipses included."""
    widget = app.screen.query_one(selector)
    return [widget.render_line(y).text for y in range(widget.size.height)]


def notifications(messages: list[Message]) -> list[Notification]:
    return [m.notification for m in messages if isinstance(m, Notify)]


def toasts(app: ConsoleApp) -> str:
    """The notifications on screen (the pilot must run with ``notifications=True``)."""
    return "\n".join(str(toast.render()) for toast in app.screen.query("Toast"))


def heartbeat(tablet: Tablet) -> None:
    with tablet.client() as c:
        c.post(
            "/api/v1/heartbeat",
            json={"sent_at": datetime.now(UTC).isoformat(), "battery": 64, "app_version": "pilot-1"},
        ).raise_for_status()


def submit(tablet: Tablet, entry_id: str) -> httpx.Response:
    with tablet.client() as c:
        return c.post("/api/v1/sheets", json=tablet.sheet_for(entry_id))


def test_pairing_screen_pairs_a_tablet_that_then_shows_presence_changes(tmp_path: Path) -> None:
    # A box as shipped: TLS on, so the console also shows the fingerprint a tablet must see.
    box = RunningBox(make_box(tmp_path / "box", presence_online_s=2, presence_stale_s=4, tls=True)).start()
    fingerprint = tls.load_identity(box.config.data_dir).fingerprint
    try:

        async def scenario() -> None:
            app = ConsoleApp(AdminClient(DaemonLocator(box.config)), start_screen="pairing")
            async with app.run_test(size=SIZE) as pilot:
                screen = app.screen
                assert isinstance(screen, PairingScreen)
                await until(pilot, lambda: len(screen.judges) == 5, "the judges are listed")
                screen.query_one("#judges").focus()
                await pilot.press("down", "enter")  # the second judge, J2
                await until(pilot, lambda: screen.code is not None, "a code is shown")
                code = screen.code
                assert code is not None and code.judge.id == "J2"
                big = shown(app, "#code-big")
                assert " ".join(code.code) in big and "Daniel O'Connor" in big
                # The URL pins the box's certificate for a client that can check it (#fp=).
                assert code.url.endswith(f"/?pair={code.code}#fp={fingerprint}")
                assert code.url in shown(app, "#code-url") and code.url.startswith("https://")
                assert code.tls_fingerprint == fingerprint
                # The certificate words a judge compares, right under the code (docs/operations.md).
                assert f"certificate {short_fingerprint(fingerprint)}" in shown(app, "#code-cert")
                assert "expires in" in shown(app, "#code-expiry")
                assert "█" in shown(app, "#code-qr") or "▀" in shown(app, "#code-qr")

                # A stranger's tablet types the code shown on the console.
                async with httpx.AsyncClient(base_url=box.tablet_url, verify=box.verify) as http:
                    answer = await http.post(
                        "/api/v1/pair", json={"code": code.code, "device_name": "pilot tablet"}
                    )
                assert answer.status_code == 201, answer.text
                tablet = Tablet(box, answer.json())
                await until(pilot, lambda: "pilot tablet" in shown(app, "#paired"), "paired list shows it")
                await until(pilot, lambda: "used" in shown(app, "#code-expiry"), "code marked used")
                assert shown(app, "#code-qr") == "" and shown(app, "#code-url") == ""

                await pilot.press("2")
                tablets = app.screen
                assert isinstance(tablets, TabletsScreen)
                table = tablets.query_one("#tablets", LinedTable)
                device_id = tablet.pairing["device_id"]

                def presence() -> str:
                    return table.cell_text(device_id, "presence") if table.row_count else ""

                await until(pilot, lambda: presence() == "○ offline", "no heartbeat yet: offline")
                await asyncio.to_thread(heartbeat, tablet)
                await until(pilot, lambda: presence() == "● online", "online after a heartbeat")
                assert table.cell_text(device_id, "judge") == "Daniel O'Connor"
                assert table.cell_text(device_id, "battery") == "64%"
                assert table.cell_text(device_id, "app") == "pilot-1"
                await until(pilot, lambda: presence() == "◐ stale", "stale after 2 s", timeout=6)
                await until(pilot, lambda: presence() == "○ offline", "offline after 4 s", timeout=6)
                assert "0 online" in shown(app, "#tablets-summary")

        asyncio.run(scenario())
    finally:
        box.stop()


def test_freeze_through_the_dialog_locks_the_api_and_unfreeze_opens_it(tmp_path: Path) -> None:
    box = RunningBox(make_box(tmp_path / "box")).start()
    try:
        tablet = box.pair("J1")
        entries = panel_entries(tablet.event())

        async def scenario() -> None:
            app = console_for(box)
            async with app.run_test(size=(80, 24)) as pilot:
                await until(pilot, lambda: app.status is not None, "first status")
                await pilot.press("f")
                assert isinstance(app.screen, FreezeDialog)
                # Without a category the dialog refuses and says why.
                app.screen.query_one("#freeze-reason").focus()
                await type_text(pilot, "Score dispute on entry 104")
                await pilot.press("enter")
                assert isinstance(app.screen, FreezeDialog)
                assert "Choose what kind" in shown(app, "#freeze-problem")
                await pilot.press("down", "enter")  # focus is back on the categories: "anomaly"
                await pilot.press("enter")  # reason already typed: submit
                assert isinstance(app.screen, ConfirmScreen)
                assert "Reason (anomaly): Score dispute on entry 104" in shown(app, "#confirm-detail")
                await pilot.press("y")
                await until(pilot, lambda: app.screen.query_one("#banner").has_class("-frozen"), "banner")
                banner = shown(app, "#banner")
                assert "FROZEN" in banner and "Score dispute on entry 104" in banner and "anomaly" in banner

                refused = await asyncio.to_thread(submit, tablet, entries[0])
                assert refused.status_code == 423
                assert refused.json()["detail"] == "Score dispute on entry 104"

                # Every screen shows it.
                for key in "23456":
                    await pilot.press(key)
                    assert app.screen.query_one("#banner").has_class("-frozen"), key
                await pilot.press("1", "f")
                assert isinstance(app.screen, ConfirmScreen)
                await pilot.press("n")  # cancel: still frozen
                assert not isinstance(app.screen, ConfirmScreen)
                assert (await asyncio.to_thread(submit, tablet, entries[0])).status_code == 423
                await pilot.press("f", "y")
                await until(pilot, lambda: not app.screen.query_one("#banner").has_class("-frozen"), "open")
                assert "scoring open" in shown(app, "#banner")
                assert (await asyncio.to_thread(submit, tablet, entries[0])).status_code == 201

        asyncio.run(scenario())
        with box.admin() as admin:
            actions = [a["action"] for a in admin.get("/admin/v1/audit", params={"limit": 10}).json()]
        assert actions[:2] == ["unfreeze", "freeze"]
    finally:
        box.stop()


def test_a_freeze_from_the_cli_shows_on_the_console_within_a_second(tmp_path: Path) -> None:
    box = RunningBox(make_box(tmp_path / "box")).start()
    try:

        async def scenario() -> None:
            app = console_for(box)
            async with app.run_test(size=SIZE) as pilot:
                await pilot.press("3")  # any screen
                await until(pilot, lambda: app.status is not None, "first status")
                cli = [sys.executable, "-m", "appliance", "--data-dir", str(box.config.data_dir)]
                await asyncio.to_thread(
                    subprocess.run,
                    [*cli, "freeze", "--category", "technical", "--reason", "Power cut"],
                    check=True,
                )
                took = await until(
                    pilot, lambda: app.screen.query_one("#banner").has_class("-frozen"), "CLI freeze"
                )
                assert took <= 1.0, f"the freeze took {took:.2f} s to show"
                assert "Power cut" in shown(app, "#banner")
                await asyncio.to_thread(subprocess.run, [*cli, "unfreeze"], check=True)
                took = await until(
                    pilot, lambda: not app.screen.query_one("#banner").has_class("-frozen"), "CLI unfreeze"
                )
                assert took <= 1.0

        asyncio.run(scenario())
    finally:
        box.stop()


def test_the_console_survives_the_daemon_dying_and_reconnects_by_itself(tmp_path: Path) -> None:
    box = RunningBox(make_box(tmp_path / "box"))
    try:

        async def scenario() -> None:
            # Started before the daemon: unreachable from the start, then it appears.
            app = console_for(box)
            async with app.run_test(size=SIZE) as pilot:
                banner = lambda: shown(app, "#banner")  # noqa: E731
                # No daemon.json: not running, and no guess at a default port.
                await until(pilot, lambda: "DAEMON NOT RUNNING" in banner(), "not running at start")
                assert "no daemon.json in" in banner() and ":8081" not in banner()
                await asyncio.to_thread(box.start)
                await until(pilot, lambda: "scoring open" in banner() and "NOT RUNNING" not in banner(), "up")
                tablet = await asyncio.to_thread(box.pair, "J1")
                entry = panel_entries(await asyncio.to_thread(tablet.event))[0]
                assert (await asyncio.to_thread(submit, tablet, entry)).status_code == 201
                await until(pilot, lambda: app.status is not None and app.status.sheets.total == 1, "1")

                was_on = box.admin_url.removeprefix("http://")
                await asyncio.to_thread(box.kill)  # SIGKILL: no goodbye, daemon.json left behind
                await until(pilot, lambda: "DAEMON NOT RUNNING" in banner(), "not running after the kill")
                assert app.link is not None and not app.link.ok and app.link.not_running
                assert f"it was on {was_on}" in banner()
                assert "Figures below are from before" in banner()
                await pilot.press("2")  # the console stays usable
                await pilot.press("1")

                await asyncio.to_thread(box.start)  # new ports: found again through daemon.json
                await until(pilot, lambda: "NOT RUNNING" not in banner(), "reconnected", timeout=15)
                assert app.link is not None and app.link.ok
                assert (
                    await asyncio.to_thread(submit, tablet, entry)
                ).status_code == 409  # same box, same data
                second = next(e for e in panel_entries(await asyncio.to_thread(tablet.event)) if e != entry)
                assert (await asyncio.to_thread(submit, tablet, second)).status_code == 201
                await until(pilot, lambda: app.status is not None and app.status.sheets.total == 2, "2")

        asyncio.run(scenario())
    finally:
        box.stop()


def test_a_stopped_daemon_is_not_running_on_the_port_it_was_on_not_unreachable_on_the_default(
    tmp_path: Path,
) -> None:
    """A clean stop removes daemon.json: the console says "not running" and where the daemon was (a
    port of its own here, as `venuebox run --admin-port` gives), never "cannot connect" to the
    settings' default port; the daemon started again is found by itself."""
    box = RunningBox(make_box(tmp_path / "box"))
    box.start()
    try:

        async def scenario() -> None:
            app = console_for(box)
            async with app.run_test(size=SIZE) as pilot:
                banner = lambda: shown(app, "#banner")  # noqa: E731
                await until(pilot, lambda: app.status is not None, "first status")
                was_on = box.admin_url.removeprefix("http://")
                assert not was_on.endswith(":8081")
                assert await asyncio.to_thread(box.stop) == 0
                assert not (box.config.data_dir / "daemon.json").exists()
                await until(pilot, lambda: "DAEMON NOT RUNNING" in banner(), "not running")
                assert f"it was on {was_on}" in banner()
                for wrong in ("UNREACHABLE", "cannot connect", "connection refused", "8081"):
                    assert wrong not in banner(), wrong
                assert "systemctl start venuebox" in banner()
                # The other actions say it in the same words.
                messages_before = len(app._notifications)
                await pilot.press("f")
                assert len(app._notifications) == messages_before + 1
                assert "The daemon is not running" in list(app._notifications)[-1].message

                await asyncio.to_thread(box.start)  # another free port: found through daemon.json
                await until(pilot, lambda: "NOT RUNNING" not in banner() and "scoring open" in banner(), "up")

        asyncio.run(scenario())
    finally:
        box.stop()


def test_scores_grid_feed_and_entry_detail_follow_the_ledger(tmp_path: Path) -> None:
    box = RunningBox(make_box(tmp_path / "box")).start()
    try:
        tablet = box.pair("J1")
        entries = panel_entries(tablet.event())
        first = tablet.sheet_for(entries[0])
        with tablet.client() as c:
            c.post("/api/v1/sheets", json=first).raise_for_status()
            c.post("/api/v1/sheets", json=tablet.sheet_for(entries[0], supersedes=first["sheet_id"]))
            c.post("/api/v1/sheets", json=tablet.sheet_for(entries[1])).raise_for_status()

        async def scenario() -> None:
            app = ConsoleApp(AdminClient(DaemonLocator(box.config)), start_screen="scores")
            async with app.run_test(size=SIZE) as pilot:
                grid = app.screen.query_one("#grid", LinedTable)
                await until(pilot, lambda: grid.row_count > 0, "grid rows")
                assert grid.cell_text(entries[0], "judge:J1") == "✎"
                assert grid.cell_text(entries[1], "judge:J1") == "✓"
                assert grid.cell_text(entries[2], "judge:J1") == "·"
                feed = app.screen.query_one("#feed", LinedTable)
                await until(pilot, lambda: feed.row_count == 3, "3 sheets in the feed")
                assert [feed.cell_text(key, "note") for key in feed.row_keys()] == ["", "correction", ""]

                with tablet.client() as c:
                    c.post("/api/v1/sheets", json=tablet.sheet_for(entries[2])).raise_for_status()
                await until(pilot, lambda: grid.cell_text(entries[2], "judge:J1") == "✓", "live grid")
                await until(pilot, lambda: feed.row_count == 4, "live feed")

                grid.focus()
                await pilot.press("enter")  # the first entry: its chain of two sheets
                await until(pilot, lambda: app.screen.query("#entry-chains"), "entry detail")
                detail = shown(app, "#entry-chains")
                assert first["sheet_id"][:8] in detail
                assert "superseded" in detail and "current (correction)" in detail
                await pilot.press("escape")

        asyncio.run(scenario())
    finally:
        box.stop()


def test_an_entry_shows_its_participants_masked_and_the_console_reveals_nothing(tmp_path: Path) -> None:
    package = personal_package(tmp_path / "package")
    box = RunningBox(make_box(tmp_path / "box", package=package)).start()
    try:

        async def scenario() -> None:
            app = ConsoleApp(AdminClient(DaemonLocator(box.config)), start_screen="scores")
            async with app.run_test(size=SIZE) as pilot:
                grid = app.screen.query_one("#grid", LinedTable)
                await until(pilot, lambda: grid.row_count > 0, "grid rows")
                grid.focus()
                await pilot.press("down", "down")
                entry_id = grid.selected_key()
                assert entry_id is not None
                await pilot.press("enter")
                await until(pilot, lambda: app.screen.query("#entry-personal"), "entry detail")
                names = participants_of_sample()[entry_id]
                initials = ", ".join(personal.mask(n) for n in names)
                assert shown(app, "#entry-personal") == f"Participants: {initials} · guardian_phone: +•••"
                drawn = " ".join(on_screen(app, "#entry-personal"))
                assert drawn.startswith("Participants: " + initials.split(", ")[0])
                assert not any(name in drawn for name in names) and "555" not in drawn
                await pilot.press("escape")

        asyncio.run(scenario())
        with box.admin() as admin:
            assert admin.get("/admin/v1/audit", params={"action": "personal.reveal"}).json() == []
    finally:
        box.stop()


def test_audit_verify_and_alert_acknowledge(tmp_path: Path) -> None:
    # Presence alerts come from the watchdog: a tablet that stops heartbeating goes offline fast here.
    box = RunningBox(make_box(tmp_path / "box", presence_online_s=1, presence_stale_s=2)).start()
    try:
        tablet = box.pair("J2")
        heartbeat(tablet)

        async def scenario() -> None:
            app = ConsoleApp(AdminClient(DaemonLocator(box.config)), start_screen="audit")
            async with app.run_test(size=SIZE) as pilot:
                await pilot.press("v")
                await until(pilot, lambda: "chains intact" in shown(app, "#verify-result"), "verified")
                assert "sheets: 0 rows" in shown(app, "#verify-result")
                audit = app.screen.query_one("#audit", LinedTable)
                await until(pilot, lambda: audit.row_count > 0, "audit rows")
                await pilot.press("slash")
                await type_text(pilot, "device.pair")
                assert audit.row_count >= 1
                assert all(audit.cell_text(key, "action") == "device.pair" for key in audit.row_keys())

                await pilot.press("escape", "5")
                table = app.screen.query_one("#alerts", LinedTable)
                await until(pilot, lambda: table.row_count > 0, "an offline alert", timeout=60)
                table.focus()
                await pilot.press("a")
                first = table.row_keys()[0]
                await until(pilot, lambda: "acknowledged" in table.cell_text(first, "state"), "acknowledged")

        asyncio.run(scenario())
        with box.admin() as admin:
            alerts = admin.get("/admin/v1/alerts").json()
        assert any(a["acknowledged_by"] for a in alerts)
    finally:
        box.stop()


def test_console_cli_refuses_a_dir_without_a_box(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "--data-dir", str(tmp_path / "nothing"), "console"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no box in" in lines[0] and "venuebox init" in lines[0]


def test_ids_reach_the_api_intact(tmp_path: Path) -> None:
    """Entry ids are the event's own strings: the client quotes them as one path segment."""
    box = RunningBox(make_box(tmp_path / "box")).start()
    try:

        async def scenario() -> None:
            client = AdminClient(DaemonLocator(box.config))
            try:
                entry = await client.entry("101")
                assert entry.entry.entry_id == "101"
                try:
                    await client.entry(f"no/such {uuid.uuid4()}")
                except AdminError as exc:
                    assert exc.status == 404 and exc.request_id
                else:
                    raise AssertionError("an unknown entry must be a 404 problem")
            finally:
                await client.aclose()

        asyncio.run(scenario())
    finally:
        box.stop()


def test_revoke_from_the_tablets_screen_asks_first_then_locks_the_tablet_out(tmp_path: Path) -> None:
    box = RunningBox(make_box(tmp_path / "box")).start()
    try:
        tablet = box.pair("J4", device_name="lost tablet")
        heartbeat(tablet)

        async def scenario() -> None:
            app = ConsoleApp(AdminClient(DaemonLocator(box.config)), start_screen="tablets")
            async with app.run_test(size=SIZE) as pilot:
                table = app.screen.query_one("#tablets", LinedTable)
                await until(pilot, lambda: table.row_count == 1, "the tablet is listed")
                table.focus()
                await pilot.press("r")
                assert isinstance(app.screen, ConfirmScreen)
                assert "lost tablet" in plain(app.screen.query_one(".dialog-title", Static).content)
                await pilot.press("escape")  # changed my mind: nothing happens
                assert (await asyncio.to_thread(tablet.event))["judge"]["id"] == "J4"
                await pilot.press("r", "y")
                device_id = tablet.pairing["device_id"]
                await until(pilot, lambda: table.cell_text(device_id, "presence") == "× revoked", "revoked")

        asyncio.run(scenario())
        with tablet.client() as c:
            assert c.get("/api/v1/event").status_code == 401
    finally:
        box.stop()


def test_the_feed_shows_the_newest_sheets_after_a_burst(tmp_path: Path) -> None:
    """More sheets than the feed holds arrive between two looks (a queue flushing after an
    unfreeze): the feed shows the newest of them, not the oldest."""
    box = RunningBox(make_box(tmp_path / "box", device_rate_per_s=1000.0, device_burst=1000)).start()
    try:
        tablet = box.pair("J3")  # on every session's panel
        entries = panel_entries(tablet.event())
        assert len(entries) >= 13

        async def scenario() -> None:
            app = ConsoleApp(AdminClient(DaemonLocator(box.config)), start_screen="scores")
            async with app.run_test(size=SIZE) as pilot:
                screen = app.screen
                assert isinstance(screen, ScoresScreen)
                screen.feed_size = 5
                feed = screen.query_one("#feed", LinedTable)
                assert (await asyncio.to_thread(submit, tablet, entries[0])).status_code == 201
                await until(pilot, lambda: feed.row_count == 1, "the first sheet")
                burst = [tablet.sheet_for(entry) for entry in entries[1:13]]
                with tablet.client() as c:
                    answer = c.post("/api/v1/sheets/batch", json={"sheets": burst})
                assert [r["status"] for r in answer.json()["results"]] == [201] * 12
                newest = f"{entries[12]} "
                await until(
                    pilot, lambda: feed.cell_text(feed.row_keys()[0], "entry").startswith(newest), "newest"
                )
                assert feed.row_count == 5
                shown = [feed.cell_text(key, "entry").split()[0] for key in feed.row_keys()]
                assert shown == list(reversed(entries[8:13]))

        asyncio.run(scenario())
    finally:
        box.stop()


def closed_port() -> int:
    """A loopback port nothing listens on: bound by us, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def uplink_of(box: RunningBox) -> dict[str, Any]:
    with box.admin() as admin:
        return admin.get("/admin/v1/uplink").raise_for_status().json()


def test_overview_shows_an_uplink_that_cannot_connect_and_u_asks_it_to_try_now(tmp_path: Path) -> None:
    token_file = tmp_path / "uplink.token"
    write_secret(token_file, "a-token-for-a-receiver-that-is-not-there")
    port = closed_port()
    config = make_box(
        tmp_path / "box",
        uplink_url=f"http://127.0.0.1:{port}",
        uplink_token_file=str(token_file),
        uplink_backoff_base_s=0.2,
        uplink_backoff_cap_s=1.0,
        uplink_breaker_failures=2,
        uplink_poll_s=0.2,
    )
    box = RunningBox(config).start()  # its audit records (init, event import) wait in the outbox
    try:

        async def scenario() -> None:
            app = console_for(box)
            messages: list[Message] = []
            async with app.run_test(size=(80, 24), message_hook=messages.append, notifications=True) as pilot:

                def uplink_on_screen() -> list[str]:
                    """The box panel's uplink lines as the tech sees them at 80x24."""
                    lines = [line.strip("│ ") for line in on_screen(app, "#ov-box")]
                    start = next((i for i, line in enumerate(lines) if line.startswith("Uplink")), None)
                    return [] if start is None else lines[start : start + 4]

                def in_trouble() -> bool:
                    lines = uplink_on_screen()
                    return (
                        len(lines) == 4
                        and lines[0].startswith(("Uplink  backing off", "Uplink  circuit open"))
                        and lines[2].startswith("next try")
                        and lines[3].startswith("connection refused")
                    )

                await until(pilot, in_trouble, "the uplink backing off, its next try and its error")
                lines = uplink_on_screen()
                assert lines[0].endswith("· nothing sent yet"), lines
                assert lines[1].startswith("backlog ") and "· oldest " in lines[1], lines
                assert lines[3].startswith("connection refused by http://127.0."), lines
                assert lines[3].endswith("…"), lines  # cut to the panel; the words that matter stay
                whole = f"connection refused by http://127.0.0.1:{port}: the receiver is down"
                assert whole in shown(app, "#ov-box")
                assert (await asyncio.to_thread(uplink_of, box))["sync_requested_at"] is None

                await pilot.press("u")
                await until(pilot, lambda: bool(notifications(messages)), "the console says how it went")
                [note] = notifications(messages)
                assert note.message.startswith("Uplink sync requested") and note.severity == "information"
                await until(pilot, lambda: "Uplink sync requested" in toasts(app), "the notification shows")
                assert (await asyncio.to_thread(uplink_of, box))["sync_requested_at"] is not None

        asyncio.run(scenario())
        with box.admin() as admin:
            actions = [a["action"] for a in admin.get("/admin/v1/audit", params={"limit": 50}).json()]
        assert "uplink.sync" in actions
    finally:
        box.stop()


def test_a_box_without_an_uplink_says_not_configured_and_u_says_how_to_configure_it(tmp_path: Path) -> None:
    box = RunningBox(make_box(tmp_path / "box")).start()
    try:

        async def scenario() -> None:
            app = console_for(box)
            messages: list[Message] = []
            async with app.run_test(size=(80, 24), message_hook=messages.append, notifications=True) as pilot:
                await until(
                    pilot, lambda: "Uplink  not configured" in shown(app, "#ov-box"), "not configured"
                )
                await pilot.press("2", "u")  # from any screen
                await until(pilot, lambda: bool(notifications(messages)), "the console says how it went")
                [note] = notifications(messages)
                assert note.title == "The uplink is not configured" and note.severity == "warning"
                assert "venuebox uplink configure --url URL --token-file FILE" in note.message
                await until(
                    pilot, lambda: "venuebox uplink configure" in toasts(app), "the notification shows"
                )

        asyncio.run(scenario())
        assert uplink_of(box)["sync_requested_at"] is None
    finally:
        box.stop()


def test_e_refuses_a_folder_that_does_not_exist_then_exports_to_a_real_one(tmp_path: Path) -> None:
    box = RunningBox(make_box(tmp_path / "box", export_roots=[tempfile.gettempdir()])).start()
    # Stands in for a USB key's mount point; short like one (/media/usb), as the tech types it key by key.
    usb = Path(tempfile.mkdtemp(prefix="vb-usb-"))
    try:
        tablet = box.pair("J1")
        assert submit(tablet, panel_entries(tablet.event())[0]).status_code == 201

        async def scenario() -> str:
            app = console_for(box)
            async with app.run_test(size=(80, 24)) as pilot:
                await until(pilot, lambda: app.status is not None, "first status")
                await pilot.press("e")
                assert isinstance(app.screen, ExportDialog)
                dialog = app.screen
                await until(pilot, lambda: dialog.phase == "pick", "the window asks where to")
                folder = dialog.query_one("#export-to", Input)
                folder.focus()  # a machine with a key mounted under /media lists it first

                missing = usb / "gone"
                await type_text(pilot, str(missing))
                await pilot.press("enter")
                await until(pilot, lambda: "is not a directory" in shown(app, "#export-problem"), "refused")
                refusal = shown(app, "#export-problem")
                assert refusal.startswith("The export cannot be made there\n"), refusal
                assert f"{missing} is not a directory: give the USB key's mount point" in refusal
                assert app.screen is dialog and dialog.phase == "pick"  # still open, to try again

                await pilot.press(*["backspace"] * len("/gone"), "enter")  # the tech corrects it
                await until(pilot, lambda: dialog.phase in ("running", "done"), "the export starts")
                assert shown(app, "#export-problem") == ""
                await until(pilot, lambda: dialog.phase == "done", "the export is done", timeout=60)
                assert dialog.query_one("#export-bar", ProgressBar).percentage == 1.0
                done = shown(app, "#export-done")
                assert done.startswith(f"Done: {usb}/venuebox-"), done
                assert "Keep the key safe" in done and "venuebox export verify " in done
                await pilot.press("escape")
                assert not isinstance(app.screen, ExportDialog)
                return done.splitlines()[0].removeprefix("Done: ")

        path = Path(asyncio.run(scenario()))
        assert [p.name for p in usb.iterdir()] == [path.name]  # no partial folder left beside it
        assert (path / MANIFEST).is_file()
        report = verify_export(path)
        assert report.ok, report.problems
        assert report.manifest["ledger"]["rows"] == 1
        with box.admin() as admin:
            actions = [a["action"] for a in admin.get("/admin/v1/audit", params={"limit": 10}).json()]
        assert "export.done" in actions
    finally:
        box.stop()
        shutil.rmtree(usb, ignore_errors=True)
