"""The console's parts that need no daemon: wording, the command palette, help, table syncing, QR."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from rich.cells import cell_len
from rich.console import Console, Group
from rich.text import Text
from textual.app import App, ComposeResult
from textual.message import Message
from textual.notifications import Notification, Notify
from textual.widgets import Input, OptionList, ProgressBar, Static

from appliance.shared.status import ConsoleStatus, DatabaseView, RecoveryView
from tests.tui.recorded_box import RecordedBox, export_problem, fixture
from tui import format as fmt
from tui.screens.dialogs import ConfirmScreen, FreezeDialog
from tui.screens.export import ExportDialog
from tui.screens.help import HelpScreen, help_text
from tui.screens.overview import backup_lines, box_panel, recovery_line, uplink_lines
from tui.widgets.qr import qr_matrix, qr_text
from tui.widgets.table import Column, LinedTable


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (None, "never"),
        (0, "0 s ago"),
        (12.7, "12 s ago"),
        (89, "89 s ago"),
        (90, "1 min ago"),
        (5399, "89 min ago"),
        (5400, "1 h 30 min ago"),
        (-3, "0 s ago"),
    ],
)
def test_ages_read_naturally(seconds: float | None, words: str) -> None:
    assert fmt.ago(seconds) == words


def test_presence_is_never_colour_alone() -> None:
    glyphs = set()
    for word in ("online", "stale", "offline", "revoked"):
        text = fmt.presence(word)
        assert word in text.plain
        glyphs.add(text.plain[0])
    assert len(glyphs) == 4  # a different shape for each state, too
    assert fmt.presence("stale", 3).plain == "◐ 3 stale"


def test_clock_skew_reads_as_a_signed_figure_but_never_minus_zero() -> None:
    assert fmt.skew(-0.0078, 5.0).plain == "0.0 s"
    assert fmt.skew(94.2, 5.0).plain == "+94.2 s" and fmt.skew(-3.25, 5.0).plain == "-3.2 s"
    assert fmt.skew(None, 5.0).plain == "-"


def test_clock_shows_the_event_zone_or_says_utc() -> None:
    at = "2026-03-14T14:42:07Z"
    assert fmt.clock(at, fmt.zone("America/Toronto")) == "10:42:07"
    assert fmt.clock(at, None) == "14:42:07Z"
    assert fmt.zone("Not/AZone") is None


def test_qr_code_is_dark_on_light_with_a_quiet_zone() -> None:
    url = "http://venuebox-demo.local:8080/?pair=PKFM-XYDM"
    matrix = qr_matrix(url, border=2)
    size = len(matrix)
    assert all(len(row) == size for row in matrix)
    assert (size - 4 - 17) % 4 == 0  # a real QR version: 17 + 4 * version modules, plus the zone
    assert not any(matrix[0]) and not any(matrix[1]) and not any(row[0] for row in matrix)
    # The three finder patterns: 7x7 dark outlines at three corners.
    for top, left in ((2, 2), (2, size - 9), (size - 9, 2)):
        assert all(matrix[top][left + i] and matrix[top + 6][left + i] for i in range(7))
    text = qr_text(url, border=2)
    lines = text.plain.split("\n")
    assert len(lines) == (size + 1) // 2 and all(len(line) == size for line in lines)
    assert str(text.style) == "#000000 on #ffffff"  # dark on light, whatever the terminal theme


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield LinedTable([Column("name", "Name", max_width=6), Column("state", "State")])


def test_lined_table_keeps_the_cursor_on_its_row_and_draws_only_what_changed() -> None:
    async def scenario() -> None:
        app = TableApp()
        async with app.run_test(size=(40, 8)) as pilot:
            table = app.query_one(LinedTable)
            table.focus()
            table.show({"a": ("Ana", "online"), "b": ("Ben", "stale"), "c": ("Cy", "offline")})
            await pilot.press("down")
            assert table.selected_key() == "b"
            before = table._lines["a"]
            table.show({"a": ("Ana", "online"), "b": ("Ben", "offline"), "c": ("Cy", "offline")})
            assert table.cell_text("b", "state") == "offline" and table.selected_key() == "b"
            assert table._lines["a"] is before  # unchanged row: its drawn strip is reused
            # A new order (a re-sort): the cursor follows Ben.
            table.show({"c": ("Cy", "offline"), "b": ("Ben", "offline"), "a": ("Ana", "online")})
            assert table.row_keys() == ["c", "b", "a"] and table.cursor_row == 1
            table.show({"d": ("Dimitrios", "online"), "b": ("Ben", "offline")})  # c and a gone
            assert table.row_keys() == ["d", "b"] and table.selected_key() == "b"
            assert table.cell_text("d", "name") == "Dimit…"  # cut to its column, and says so
            table.show({"d": ("Dimitrios", "online")})  # the cursor's row went: it stays in range
            assert table.selected_key() == "d"
            await pilot.pause()
            lines = [table.render_line(y).text for y in range(3)]
            assert lines[0].startswith("Name    State") and lines[1].startswith("Dimit…  online")
            assert lines[2].strip() == ""

    asyncio.run(scenario())


def test_lined_table_never_sends_control_characters_to_the_terminal() -> None:
    """A device name is whatever a tablet said at pairing: an escape sequence in it must not
    reach the tech's terminal."""

    async def scenario() -> None:
        app = TableApp()
        async with app.run_test(size=(40, 8)) as pilot:
            table = app.query_one(LinedTable)
            table.show({"a": ("x\x1b[2J", "\x07bell\u202e")})
            await pilot.pause()
            line = table.render_line(1).text
            assert "\x1b" not in line and "\x07" not in line and "\u202e" not in line
            # Escaped as the CLI prints them (shared.tablet_text.printable): a tech sees what was sent.
            assert table.cell_text("a", "state") == "\\u0007bell\\u202e"

    asyncio.run(scenario())


def test_lined_table_aligns_wide_characters_by_cell() -> None:
    async def scenario() -> None:
        app = TableApp()
        async with app.run_test(size=(40, 8)) as pilot:
            table = app.query_one(LinedTable)
            table.show({"a": ("Zoë", "x"), "b": ("火🔥", "y")})
            await pilot.pause()
            first, second = (table.render_line(y).text for y in (1, 2))
            # "火🔥" is four cells wide, "Zoë" three: both states start in the same cell.
            assert cell_len(first[: first.index("x")]) == cell_len(second[: second.index("y")])

    asyncio.run(scenario())


def test_command_palette_reaches_freeze_and_the_screens() -> None:
    async def scenario() -> None:
        box = RecordedBox()
        app = box.app()
        async with app.run_test(size=(100, 30)) as pilot:
            await run_command(pilot, app, "freeze scoring")
            await until(pilot, lambda: isinstance(app.screen, FreezeDialog), "the freeze dialog")
            await pilot.press("escape")
            await run_command(pilot, app, "go to tablets")
            await until(pilot, lambda: ("GET", "/admin/v1/devices") in box.calls, "the tablets asked for")
            assert app.current_mode == "tablets"

    asyncio.run(scenario())


def test_help_lists_every_screen_key_and_closes_with_escape() -> None:
    async def scenario() -> None:
        app = RecordedBox().app()
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            for words in (
                "Overview",
                "Tablets",
                "Scores",
                "Pairing",
                "Alerts",
                "Audit",
                "Results",
                "Schedule",
                "`p` publishes",
                "Freeze",
                "`u`",
                "Sync uplink",
                "`e`",
                "Export to USB",
                "ctrl+p",
            ):
                assert words in help_text(30)
            await pilot.press("escape")
            assert not isinstance(app.screen, HelpScreen)

    asyncio.run(scenario())


def test_console_rejects_an_unknown_theme_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "--data-dir", str(tmp_path), "console", "--theme", "neon"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and "no theme 'neon'" in result.stderr


def _lines_of(panel: Group | Text) -> str:
    assert isinstance(panel, Group)
    lines = []
    for line in panel.renderables:
        assert isinstance(line, Text)
        lines.append(line.plain)
    return "\n".join(lines)


def test_missing_scores_panel_counts_in_words() -> None:
    from tests.tui.recorded_box import fixture
    from tui.screens.overview import missing_panel

    status = fixture("status")
    one = dict(
        status, session=dict(status["session"], missing_total=1, missing=status["session"]["missing"][:1])
    )
    text = _lines_of(missing_panel(as_status(one)))
    assert "1 entry needs attention" in text and "waiting Priya" in text
    many = _lines_of(missing_panel(as_status(status)))
    assert "17 entries need attention" in many and "… 11 more: see 3 Scores" in many


def test_a_last_timer_tick_while_the_console_closes_is_harmless() -> None:
    """The screen timer can fire once more while the console quits, with no screen left."""

    async def scenario() -> None:
        app = RecordedBox().app("tablets")
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
        assert not app.screen_stack
        await app.poll_screen()  # no ScreenStackError

    asyncio.run(scenario())


def test_an_expired_pairing_code_is_taken_off_the_screen() -> None:
    from datetime import timedelta

    from tests.tui.recorded_box import recorded_now
    from tui.screens.pairing import PairingScreen

    later = {"now": recorded_now()}

    async def scenario() -> None:
        app = RecordedBox().app("pairing")
        app.now = lambda: later["now"]
        async with app.run_test(size=(100, 40)) as pilot:
            screen = app.screen
            assert isinstance(screen, PairingScreen)
            await screen.refresh_now()
            screen.query_one("#judges").focus()
            await pilot.press("enter")
            await until(
                pilot, lambda: "expires in" in str(screen.query_one("#code-expiry", Static).content), "a code"
            )
            assert "expires in 10:00" in str(screen.query_one("#code-expiry", Static).content)
            assert "PKFM-XYDM" in str(screen.query_one("#code-url", Static).content)
            later["now"] = recorded_now() + timedelta(minutes=10, seconds=1)
            # The countdown ticks every second.
            await until(
                pilot, lambda: "expired" in str(screen.query_one("#code-expiry", Static).content), "expired"
            )
            assert str(screen.query_one("#code-qr", Static).content) == ""
            assert str(screen.query_one("#code-url", Static).content) == ""
            assert str(screen.query_one("#code-cert", Static).content) == ""

    asyncio.run(scenario())


def test_the_pairing_screen_shows_the_certificate_as_words_a_judge_compares() -> None:
    """Next to a code: the first groups of the certificate's fingerprint, as `pair new` prints them;
    the QR code carries the whole fingerprint (``#fp=``)."""
    from tui.screens.pairing import PairingScreen

    recorded = fixture("pairing_code")

    async def scenario() -> None:
        app = RecordedBox().app("pairing")
        async with app.run_test(size=(100, 40)) as pilot:
            screen = app.screen
            assert isinstance(screen, PairingScreen)
            await screen.refresh_now()
            screen.query_one("#judges").focus()
            await pilot.press("enter")
            await until(
                pilot, lambda: "certificate" in str(screen.query_one("#code-cert", Static).content), "a code"
            )
            assert str(screen.query_one("#code-cert", Static).content) == "certificate 5D0C 2E8F A1B7 436E"
            assert f"#fp={recorded['tls_fingerprint']}" in str(screen.query_one("#code-url", Static).content)
            screen.code_used()  # redeemed: the words go with the QR code
            assert str(screen.query_one("#code-cert", Static).content) == ""

    asyncio.run(scenario())


# The uplink as the overview shows it. The recorded status (fixtures/status.json) has the uplink backing
# off: server_time 01:55:56, last success 01:53:10, 138 records waiting for 2.5 min, next try in 12 s.
QUIET = {"last_error": None, "last_error_at": None, "next_attempt_at": None, "next_attempt_in_s": None}
NOTHING_WAITING = {"backlog": 0, "oldest_created_at": None, "oldest_age_s": None}
DNS_ERROR = (
    "cannot resolve the receiver's host name (scores.example.org): DNS failed; is the venue internet up?"
)
REFUSED = "connection refused by 10.0.0.5:8443: the receiver is down or the URL's port is wrong"
CREDENTIALS = "the receiver refused the uplink credentials (401). Check the token file"


def as_status(status: dict[str, Any]) -> ConsoleStatus:
    """The status as the console's client decodes it from the admin API's JSON."""
    return msgspec.convert(status, ConsoleStatus)


def uplink_status(**uplink: Any) -> ConsoleStatus:
    status = fixture("status")
    status["uplink"] = {**status["uplink"], **uplink}
    return as_status(status)


@pytest.mark.parametrize(
    ("uplink", "lines"),
    [
        pytest.param(
            {"state": "not configured", "configured": False, "target": None, **QUIET},
            ["not configured"],
            id="not-configured",
        ),
        pytest.param(
            {"state": "idle", "last_success_at": "2026-11-22T01:55:44.1Z", **NOTHING_WAITING, **QUIET},
            ["idle · sent 12 s ago", "backlog 0"],
            id="idle",
        ),
        pytest.param(
            {"state": "idle", "last_success_at": None, **NOTHING_WAITING, **QUIET},
            ["idle · nothing sent yet", "backlog 0"],
            id="idle-never-sent",
        ),
        pytest.param(
            # A past error no longer matters once it sends again.
            {
                "state": "sending",
                "backlog": 1204,
                "oldest_age_s": 3.2,
                "next_attempt_at": None,
                "next_attempt_in_s": None,
                "last_success_at": "2026-11-22T01:55:55.5Z",
            },
            ["sending · sent 1 s ago", "backlog 1,204 · oldest 3 s"],
            id="sending",
        ),
        pytest.param(
            {},
            ["backing off · sent 2 min ago", "backlog 138 · oldest 2 min", "next try in 12 s", DNS_ERROR],
            id="backing-off",
        ),
        pytest.param(
            {
                "state": "circuit open",
                "breaker": "open",
                "last_error": REFUSED,
                "next_attempt_in_s": 181.0,
                "backlog": 12040,
                "oldest_age_s": 3725.0,
            },
            ["circuit open · sent 2 min ago", "backlog 12,040 · oldest 62 min", "next try in 3 min", REFUSED],
            id="circuit-open",
        ),
        pytest.param(
            {"state": "backing off", "next_attempt_in_s": 0.0},
            ["backing off · sent 2 min ago", "backlog 138 · oldest 2 min", "next try now", DNS_ERROR],
            id="next-try-due",
        ),
        pytest.param(
            {
                "state": "paused",
                "paused_reason": CREDENTIALS,
                "last_error": CREDENTIALS,
                "next_attempt_at": None,
                "next_attempt_in_s": None,
            },
            ["paused · sent 2 min ago", "backlog 138 · oldest 2 min", CREDENTIALS],
            id="paused",
        ),
        pytest.param(
            {
                "state": "idle",
                "quarantined": 3,
                "last_success_at": "2026-11-22T01:55:44.1Z",
                **NOTHING_WAITING,
                **QUIET,
            },
            ["idle · sent 12 s ago", "backlog 0", "3 quarantined"],
            id="idle-quarantined",
        ),
        pytest.param(
            {"quarantined": 2},
            [
                "backing off · sent 2 min ago",
                "backlog 138 · oldest 2 min",
                "next try in 12 s · 2 quarantined",
                DNS_ERROR,
            ],
            id="backing-off-quarantined",
        ),
    ],
)
def test_uplink_lines_say_the_state_in_words(uplink: dict[str, Any], lines: list[str]) -> None:
    assert [line.plain for line in uplink_lines(uplink_status(**uplink))] == lines


def test_uplink_state_is_red_when_it_stopped_and_yellow_while_it_backs_off() -> None:
    def state_style(state: str) -> str:
        first = uplink_lines(uplink_status(state=state))[0]
        return str(first.get_style_at_offset(Console(), 0))

    assert "red" in state_style("paused") and "red" in state_style("circuit open")
    assert "yellow" in state_style("backing off")
    assert state_style("idle") == state_style("sending") == "none"
    assert str(uplink_lines(uplink_status(state="not configured"))[0].style) == "dim"


def test_the_box_panel_cuts_the_uplink_error_with_an_ellipsis_and_keeps_the_rest() -> None:
    """At 80x24 the box panel's text is 44 cells wide: the error is cut, nothing else is."""
    console = Console(width=44, color_system=None, record=True, file=io.StringIO())
    console.print(box_panel(uplink_status()))
    rows = console.export_text().splitlines()
    start = next(i for i, row in enumerate(rows) if row.startswith("Uplink"))
    uplink = [row.rstrip() for row in rows[start : start + 4]]
    assert uplink[:3] == [
        "Uplink  backing off · sent 2 min ago",
        "        backlog 138 · oldest 2 min",
        "        next try in 12 s",
    ]
    assert uplink[3].startswith("        cannot resolve the receiver's host") and uplink[3].endswith("…")
    assert rows[start + 4].startswith("Backup")


def test_the_box_panel_says_first_and_in_red_when_the_database_is_damaged() -> None:
    console = Console(width=44, color_system=None, record=True, file=io.StringIO())
    console.print(box_panel(uplink_status()))
    assert "DAMAGED" not in console.export_text()
    database = DatabaseView(
        state="damaged", path="/var/lib/venuebox/venuebox.sqlite", problems=[], detail=None
    )
    damaged = msgspec.structs.replace(uplink_status(), database=database)
    table = box_panel(damaged)
    console.print(table)
    assert console.export_text().splitlines()[0].startswith("Database DAMAGED: scoring refused.")
    cell = table.columns[1]._cells[0]
    assert isinstance(cell, Text)
    assert "red" in str(cell.style)


def test_the_box_panel_shows_a_recovery_in_yellow_while_sheets_are_still_missing() -> None:
    console = Console(width=60, color_system=None, record=True, file=io.StringIO())
    console.print(box_panel(uplink_status()))
    assert "Recovery" not in console.export_text()
    recovered = recovery(
        since=3, missing_sheet_ids=["6f0e4b2a-0000-4000-8000-000000000001"], missing_unnamed=1
    )
    table = box_panel(msgspec.structs.replace(uplink_status(), recovery=recovered))
    console.print(table)
    row = next(r for r in console.export_text().splitlines() if r.startswith("Recovery"))
    assert "recovered · 2 sheet(s) still missing" in row
    assert "yellow" in str(recovery_line(recovered).style)
    done = recovery_line(recovery(since=5, missing_sheet_ids=[], missing_unnamed=0))
    assert done.plain == "recovered · 5 sheets back since · none missing" and str(done.style) == "dim"


def recovery(since: int, missing_sheet_ids: list[str], missing_unnamed: int) -> RecoveryView:
    """A recovery from a snapshot, with ``since``, ``missing_sheet_ids`` and ``missing_unnamed``."""
    source = {"state": "used", "detail": ""}
    return msgspec.convert(
        {
            "at": "2026-11-22T01:00:00.000000Z",
            "snapshot": "snapshot-20261122T004756641Z.sqlite.age",
            "sheets": {"snapshot": 120, "salvage": 0, "cloud": 0},
            "since": since,
            "salvage": source,
            "cloud": source,
            "known_head": 120 + len(missing_sheet_ids) + missing_unnamed,
            "recovered_head": 120,
            "missing_sheet_ids": missing_sheet_ids,
            "missing_unnamed": missing_unnamed,
        },
        RecoveryView,
    )


def notifications(messages: list[Message]) -> list[Notification]:
    return [m.notification for m in messages if isinstance(m, Notify)]


def test_u_asks_the_box_to_sync_the_uplink_and_says_so() -> None:
    async def scenario() -> None:
        box = RecordedBox()
        app = box.app("scores")  # any screen
        messages: list[Message] = []
        async with app.run_test(size=(80, 24), message_hook=messages.append) as pilot:
            await pilot.press("u")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert ("POST", "/admin/v1/uplink/sync") in box.calls
            [note] = notifications(messages)
            assert note.message.startswith("Uplink sync requested") and note.severity == "information"

    asyncio.run(scenario())


def test_u_on_a_box_without_an_uplink_says_how_to_configure_it() -> None:
    async def scenario() -> None:
        box = RecordedBox()
        box.status["uplink"] = {**box.status["uplink"], "state": "not configured", "configured": False}
        app = box.app("overview")
        messages: list[Message] = []
        async with app.run_test(size=(80, 24), message_hook=messages.append) as pilot:
            await pilot.press("u")
            await app.workers.wait_for_complete()
            await pilot.pause()
            [note] = notifications(messages)
            assert note.title == "The uplink is not configured" and note.severity == "warning"
            assert "venuebox uplink configure" in note.message

    asyncio.run(scenario())


def test_command_palette_reaches_uplink_sync() -> None:
    async def scenario() -> None:
        box = RecordedBox()
        app = box.app()
        async with app.run_test(size=(100, 30)) as pilot:
            await run_command(pilot, app, "sync uplink")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert ("POST", "/admin/v1/uplink/sync") in box.calls

    asyncio.run(scenario())


# The backups as the overview shows them. The recorded status has a verified snapshot 8 min old, 6 kept.
def backup_status(last: dict[str, Any] | None = None, **backup: Any) -> dict[str, Any]:
    status = fixture("status")
    recorded = status["backup"]
    status["backup"] = {**recorded, **backup}
    if last is not None:
        status["backup"]["last"] = {**recorded["last"], **last} if last else None
    return status


NOT_CONFIGURED: dict[str, Any] = {"configured": False, "recipients": 0, "passphrase": False}
CORRUPT = "ledger head differs from the one recorded"


@pytest.mark.parametrize(
    ("status", "lines"),
    [
        pytest.param(backup_status(), ["8 min ago · ✓ verified", "6 kept · 1.4 MB"], id="verified"),
        pytest.param(
            backup_status({}, kept=0, kept_bytes=0, last_verified_ok_at=None), ["none yet"], id="none-yet"
        ),
        pytest.param(
            backup_status({"age_s": 12.4, "verified": None}),
            ["12 s ago · not verified yet", "6 kept · 1.4 MB"],
            id="not-verified-yet",
        ),
        pytest.param(
            backup_status({"age_s": 5400.0, "verified": False, "verify_problem": CORRUPT}),
            ["1 h 30 min ago · ✗ DOES NOT VERIFY", "6 kept · 1.4 MB", CORRUPT],
            id="does-not-verify",
        ),
        pytest.param(
            backup_status(**NOT_CONFIGURED),
            ["8 min ago · ✓ verified", "6 kept · 1.4 MB", "only this box can open them"],
            id="not-configured",
        ),
        pytest.param(
            backup_status({}, kept=0, kept_bytes=0, **NOT_CONFIGURED),
            ["none yet", "only this box can open them"],
            id="not-configured-none-yet",
        ),
    ],
)
def test_backup_lines_say_the_last_snapshot_in_words(status: dict[str, Any], lines: list[str]) -> None:
    assert [line.plain for line in backup_lines(as_status(status))] == lines


def styles(text: Text) -> str:
    return " ".join(str(span.style) for span in text.spans) + f" {text.style}"


def test_a_snapshot_that_does_not_verify_is_red_and_an_open_only_here_hint_yellow() -> None:
    broken = backup_lines(as_status(backup_status({"verified": False, "verify_problem": CORRUPT})))
    assert "bold red" in styles(broken[0]) and "red" in styles(broken[2])
    assert "green" in styles(backup_lines(as_status(backup_status()))[0])
    assert "red" not in styles(backup_lines(as_status(backup_status({"verified": None})))[0])
    assert "yellow" in styles(backup_lines(as_status(backup_status(**NOT_CONFIGURED)))[-1])


def test_a_last_snapshot_older_than_two_intervals_is_yellow() -> None:
    assert "yellow" not in styles(backup_lines(as_status(backup_status({"age_s": 1700.0})))[0])
    late = backup_lines(as_status(backup_status({"age_s": 1900.0})))[0]
    assert late.plain.startswith("31 min ago") and "yellow" in styles(late)


def test_the_backup_rows_fit_the_box_panel_at_80_columns() -> None:
    """At 80x24 the box panel's text is 44 cells wide: no backup line wraps, a long problem is cut."""
    status = backup_status(
        {"age_s": 86000.0, "verified": False, "verify_problem": CORRUPT * 3}, kept=32, **NOT_CONFIGURED
    )
    console = Console(width=44, color_system=None, record=True, file=io.StringIO())
    console.print(box_panel(as_status(status)))
    rows = [row.rstrip() for row in console.export_text().splitlines()]
    start = next(i for i, row in enumerate(rows) if row.startswith("Backup"))
    assert rows[start : start + 4] == [
        "Backup  23 h 53 min ago · ✗ DOES NOT VERIFY",
        "        32 kept · 1.4 MB",
        "        " + CORRUPT[:35] + "…",
        "        only this box can open them",
    ]
    assert rows[start + 4].startswith("Disk")


def box_lines(app: Any) -> str:
    """The overview's box panel as drawn at the console's size."""
    panel = app.screen.query_one("#ov-box")
    return "\n".join(panel.render_line(y).text for y in range(panel.size.height))


def test_the_overview_repaints_the_backup_only_when_its_words_change() -> None:
    async def scenario() -> None:
        box = RecordedBox()
        app = box.app("overview")
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            assert "Backup  8 min ago · ✓ verified" in box_lines(app)
            drawn = app.screen._drawn  # type: ignore[attr-defined]
            box.status = backup_status({"age_s": 500.0})  # still "8 min ago"
            await app.poll_status()
            await pilot.pause()
            assert app.screen._drawn is drawn  # type: ignore[attr-defined]
            box.status = backup_status({"age_s": 540.0, "verified": False, "verify_problem": CORRUPT})
            await app.poll_status()
            await pilot.pause()
            assert app.screen._drawn is not drawn  # type: ignore[attr-defined]
            assert "Backup  9 min ago · ✗ DOES NOT VERIFY" in box_lines(app)

    asyncio.run(scenario())


# The USB export window, against the recorded box: two keys, an export that stays at 35% until moved on.
def said(app: Any, selector: str) -> str:
    content = app.screen.query_one(selector).content
    return content.plain if isinstance(content, Text) else str(content)


async def run_command(pilot: Any, app: Any, words: str) -> None:
    """Ctrl+P, type ``words``, Enter once the palette offers them first. The palette searches in a
    worker, so a fixed pause before Enter can be too short on a loaded machine."""
    await pilot.press("ctrl+p")
    await pilot.press(*("space" if c == " " else c for c in words))
    results = app.screen.query_one("#--results").query_one(OptionList)  # the CommandList

    def offered() -> bool:
        option = results.highlighted_option
        return option is not None and words.lower() in str(option.prompt).lower()

    await until(pilot, offered, f"the palette to offer {words!r}")
    await pilot.press("enter")


async def until(pilot: Any, check: Any, what: str, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


DONE_PATH = "/media/venue/KINGSTON/venuebox-glow-2026-toronto-20261122T015555Z"


def test_e_opens_the_export_window_anywhere_and_enter_exports_to_the_chosen_key() -> None:
    async def scenario() -> None:
        box = RecordedBox()
        app = box.app("scores")  # any screen
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("e")
            assert isinstance(app.screen, ExportDialog)
            keys = app.screen.query_one("#export-targets", OptionList)
            await until(pilot, lambda: keys.option_count == 2, "both USB keys listed")
            assert "Choose a USB key" in said(app, "#export-keys")
            assert "231 MB free" in str(keys.get_option_at_index(1).prompt)
            await pilot.press("down", "enter")
            await until(pilot, lambda: app.screen.query_one("#export-follow").display, "the progress")
            assert box.export_asked == [{"to": "/media/venue/KINGSTON"}]
            assert app.screen.query_one("#export-bar", ProgressBar).percentage == pytest.approx(0.35)
            assert said(app, "#export-step") == "writing ledger.csv…"
            assert said(app, "#export-target") == "Exporting to /media/venue/KINGSTON"

            box.export_job = box.export_job | {"state": "done", "fraction": 1.0, "path": DONE_PATH}
            await until(pilot, lambda: said(app, "#export-done").startswith("Done: "), "done")
            done = said(app, "#export-done")
            assert f"Done: {DONE_PATH}" in done and "Keep the key safe" in done
            assert f"venuebox export verify {DONE_PATH}" in done
            assert app.screen.query_one("#export-bar", ProgressBar).percentage == 1.0
            await pilot.press("escape")
            assert not isinstance(app.screen, ExportDialog)
            assert app.current_mode == "scores"

    asyncio.run(scenario())


def test_a_refused_export_says_why_and_the_window_stays_open() -> None:
    async def scenario() -> None:
        box = RecordedBox()
        box.usb_keys = []
        box.export_refusal = export_problem(
            422, "/mnt/nothing is not a directory: give the USB key's mount point (or a folder on it)"
        )
        app = box.app()
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("e")
            await until(pilot, lambda: "No USB key found" in said(app, "#export-keys"), "no key")
            assert app.screen.focused is app.screen.query_one("#export-to")  # straight to typing a folder
            await pilot.press("enter")
            assert "Choose a USB key, or type the folder" in said(app, "#export-problem")
            await pilot.press(*"/mnt/nothing", "enter")
            await until(pilot, lambda: "not a directory" in said(app, "#export-problem"), "the refusal")
            assert box.export_asked == [{"to": "/mnt/nothing"}]
            assert said(app, "#export-problem").startswith("The export cannot be made there\n")
            assert isinstance(app.screen, ExportDialog) and app.screen.phase == "pick"

            box.export_refusal = export_problem(409, "an export to /media/venue/SCORES is running (40%)")
            await pilot.press("enter")
            await until(pilot, lambda: "already running" in said(app, "#export-problem"), "busy")
            assert isinstance(app.screen, ExportDialog)

    asyncio.run(scenario())


def test_an_export_that_fails_says_why_and_offers_the_keys_again() -> None:
    async def scenario() -> None:
        box = RecordedBox()
        app = box.app()
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("e")
            keys = app.screen.query_one("#export-targets", OptionList)
            await until(pilot, lambda: keys.option_count == 2, "keys")
            await pilot.press("enter")
            await until(pilot, lambda: app.screen.query_one("#export-follow").display, "the progress")
            box.export_job = box.export_job | {"state": "failed", "error": "the USB key is full"}
            await until(
                pilot, lambda: "Export failed: the USB key is full" in said(app, "#export-problem"), ""
            )
            # The screen's focus moves at once; the widget's has_focus follows when its Focus event is
            # handled, which a loaded machine may not have done yet.
            assert app.screen.query_one("#export-pick").display and app.screen.focused is keys

    asyncio.run(scenario())


def test_e_during_an_export_shows_its_progress_and_the_console_says_when_it_ends() -> None:
    async def scenario() -> None:
        box = RecordedBox()
        box.export_job = fixture("export")["job"]  # started elsewhere, or before the window closed
        app = box.app()
        messages: list[Message] = []
        async with app.run_test(size=(80, 24), message_hook=messages.append) as pilot:
            await pilot.press("e")
            await until(pilot, lambda: app.screen.query_one("#export-follow").display, "the progress")
            assert said(app, "#export-step") == "writing ledger.csv…" and box.export_asked == []
            await pilot.press("escape")  # the export carries on in the box
            assert not isinstance(app.screen, ExportDialog)
            box.export_job = box.export_job | {"state": "done", "fraction": 1.0, "path": DONE_PATH}
            await until(pilot, lambda: bool(notifications(messages)), "the end is told")
            [note] = notifications(messages)
            assert note.title == "USB export done" and DONE_PATH in note.message

    asyncio.run(scenario())


def test_command_palette_reaches_export_to_usb() -> None:
    async def scenario() -> None:
        app = RecordedBox().app()
        async with app.run_test(size=(100, 30)) as pilot:
            await run_command(pilot, app, "export to usb")
            await until(pilot, lambda: isinstance(app.screen, ExportDialog), "the export window")

    asyncio.run(scenario())


def test_e_without_the_daemon_says_how_to_export_from_the_shell() -> None:
    async def scenario() -> None:
        app = RecordedBox().app()
        messages: list[Message] = []
        async with app.run_test(size=(80, 24), message_hook=messages.append) as pilot:
            app._set_link(False, "connection refused (is the daemon running?)")
            await pilot.press("e")
            assert not isinstance(app.screen, ExportDialog)
            [note] = notifications(messages)
            assert note.title == "Cannot export from here" and "venuebox export --to PATH" in note.message

    asyncio.run(scenario())


def test_the_freeze_dialog_keeps_a_reason_typed_before_the_category_was_chosen() -> None:
    """Tab to the reason, type, Enter: the dialog asks for the kind. Choosing it brings the tech back
    to the reason with the words still there (going on typing adds to them, never replaces them),
    and the request to choose a kind goes once one is chosen."""

    async def scenario() -> None:
        app = RecordedBox().app()
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("f")
            await until(pilot, lambda: isinstance(app.screen, FreezeDialog), "the freeze dialog")
            dialog = app.screen
            problem = dialog.query_one("#freeze-problem", Static)
            reason = dialog.query_one("#freeze-reason", Input)
            await pilot.press("tab")  # from the kinds to the reason, with no kind chosen
            assert reason.has_focus
            await pilot.press("enter")  # empty, no kind: refused, back to the kinds
            assert "Choose what kind" in str(problem.content)
            await pilot.press("tab")
            await pilot.press(*"Power")
            await pilot.press("space", *"cut", "enter")
            assert app.screen is dialog and "Choose what kind" in str(problem.content)
            await pilot.press("enter")  # the highlighted kind, dispute: the focus goes to the reason
            await until(pilot, lambda: reason.has_focus, "back on the reason")
            assert "Choose what kind" not in str(problem.content)
            assert reason.value == "Power cut"
            await pilot.press("space", *"in", "space", *"hall", "space", "B")
            assert reason.value == "Power cut in hall B"
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
            detail = str(app.screen.query_one("#confirm-detail", Static).content)
            assert "Reason (dispute): Power cut in hall B" in detail

    asyncio.run(scenario())


def test_the_freeze_dialog_asks_for_the_reason_and_keeps_the_kind_chosen() -> None:
    """A kind chosen, Enter on an empty reason: the dialog asks for the reason in words (the request
    for a kind is not shown), and what is typed next is the reason."""

    async def scenario() -> None:
        app = RecordedBox().app()
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("f")
            await until(pilot, lambda: isinstance(app.screen, FreezeDialog), "the freeze dialog")
            dialog = app.screen
            problem = dialog.query_one("#freeze-problem", Static)
            reason = dialog.query_one("#freeze-reason", Input)
            await pilot.press("down", "enter")  # anomaly
            await until(pilot, lambda: reason.has_focus, "on the reason")
            await pilot.press("enter")
            assert app.screen is dialog
            assert "Write the reason" in str(problem.content) and "Choose" not in str(problem.content)
            await pilot.press(*"Scores", "space", *"look", "space", *"wrong", "enter")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
            detail = str(app.screen.query_one("#confirm-detail", Static).content)
            assert "Reason (anomaly): Scores look wrong" in detail

    asyncio.run(scenario())
