"""The console's parts that need no daemon: wording, the command palette, help, table syncing, QR."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from rich.cells import cell_len
from textual.app import App, ComposeResult

from tests.tui.recorded_box import RecordedBox
from tui import format as fmt
from tui.screens.dialogs import FreezeDialog
from tui.screens.help import HELP, HelpScreen
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
    assert fmt.skew(-0.0078).plain == "0.0 s"
    assert fmt.skew(94.2).plain == "+94.2 s" and fmt.skew(-3.25).plain == "-3.2 s"
    assert fmt.skew(None).plain == "-"


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
            table.show({"a": ("x\x1b[2J", "\x07bell")})
            await pilot.pause()
            line = table.render_line(1).text
            assert "\x1b" not in line and "\x07" not in line
            assert table.cell_text("a", "state") == "?bell"

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
            await pilot.press("ctrl+p")
            await pilot.press(*"freeze", "space", *"scoring")
            await pilot.pause(0.5)
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, FreezeDialog)
            await pilot.press("escape")
            await pilot.press("ctrl+p")
            await pilot.press(*"go", "space", *"to", "space", *"tablets")
            await pilot.pause(0.5)
            await pilot.press("enter")
            await pilot.pause()
            assert app.current_mode == "tablets"
            assert ("GET", "/admin/v1/devices") in box.calls

    asyncio.run(scenario())


def test_help_lists_every_screen_key_and_closes_with_escape() -> None:
    async def scenario() -> None:
        app = RecordedBox().app()
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            for words in ("Overview", "Tablets", "Scores", "Pairing", "Alerts", "Audit", "Freeze", "ctrl+p"):
                assert words in HELP
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


def test_missing_scores_panel_counts_in_words() -> None:
    from tests.tui.recorded_box import fixture
    from tui.screens.overview import missing_panel

    status = fixture("status")
    one = dict(
        status, session=dict(status["session"], missing_total=1, missing=status["session"]["missing"][:1])
    )
    text = "\n".join(line.plain for line in missing_panel(one).renderables)
    assert "1 entry needs attention" in text and "waiting Priya" in text
    many = "\n".join(line.plain for line in missing_panel(status).renderables)
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
            await pilot.pause()
            assert "expires in 10:00" in str(screen.query_one("#code-expiry").content)
            assert "PKFM-XYDM" in str(screen.query_one("#code-url").content)
            later["now"] = recorded_now() + timedelta(minutes=10, seconds=1)
            await pilot.pause(1.2)  # the countdown ticks every second
            assert "expired" in str(screen.query_one("#code-expiry").content)
            assert str(screen.query_one("#code-qr").content) == ""
            assert str(screen.query_one("#code-url").content) == ""

    asyncio.run(scenario())
