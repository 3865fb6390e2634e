"""The console's Results screen (key 7) driven by Textual's pilot against a real daemon: groups,
ranks, awards, PROVISIONAL marks and who signed off, Enter explaining an entry, and `l` locking its
session through the admin API after asking why (issue 19, item 4)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual.widgets import Input, Static

from tests.conftest import RunningBox
from tests.integration.test_console import SIZE, console_for, plain, until
from tests.integration.test_results_cli import scored_box
from tui.screens.results import ExplainScreen, LockDialog, ResultsScreen
from tui.widgets.table import LinedTable


def table(app: object) -> LinedTable:
    return app.screen.query_one("#results", LinedTable)  # type: ignore[attr-defined]


def text_of(app: object, selector: str) -> str:
    return plain(app.screen.query_one(selector, Static).content)  # type: ignore[attr-defined]


def test_the_results_screen_shows_ranks_awards_marks_explains_and_locks_a_session(tmp_path: Path) -> None:
    box = RunningBox(scored_box(tmp_path)).start()
    try:
        asyncio.run(_drive(box))
        with box.admin() as admin:
            states = {s["session_id"]: s for s in admin.get("/admin/v1/results").json()["sessions"]}
            audit = admin.get("/admin/v1/audit", params={"action": "session.lock"}).json()
    finally:
        box.stop()
    assert states["SAT-AM"]["locked"] and states["SAT-AM"]["locked_reason"] == "awards for Saturday morning"
    assert not states["SAT-PM"]["locked"]
    assert [row["action"] for row in audit] == ["session.lock"]


async def _drive(box: RunningBox) -> None:
    app = console_for(box)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("7")
        await until(
            pilot, lambda: isinstance(app.screen, ResultsScreen) and table(app).row_count == 60, "results"
        )
        results = table(app)
        assert [results.cell_text("101", c) for c in ("group", "rank", "score", "award", "status")] == [
            "Solo · Senior",
            "1=",
            "27.10",
            "Platinum",
            "PROVISIONAL",
        ]
        assert results.cell_text("108", "rank") == "3" and results.cell_text("108", "award") == "Gold"
        # Scored by J1 alone of SAT-PM's three panel judges: provisional, unranked, "1/3" in the table.
        assert results.cell_text("132", "rank") == "" and results.cell_text("132", "status") == (
            "PROVISIONAL 1/3"
        )
        sessions = text_of(app, "#results-sessions")
        assert "SAT-AM Saturday morning  open · signed off 0/3 waiting: J1 J2 J3 · provisional" in sessions

        # Enter on 108: its result in words, the judges dropped marked.
        results.focus()
        results.cursor_row = results.row_keys().index("108")
        await pilot.pause()
        assert text_of(app, "#results-rule").startswith(
            "Solo · Senior: score: mean of judges' totals, 1 highest"
        )
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ExplainScreen), "the explanation")
        explained = text_of(app, "#explain-text")
        assert "J1 26, J2 27.1 (dropped), J3 25 (dropped)" in explained
        assert "J2 27.1 and J3 25 dropped; mean of 1 = 26.00" in explained
        assert "PROVISIONAL: final only once its session is locked" in explained
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, ResultsScreen), "back to the results")

        # l on 108 (SAT-AM): a reason is required, then the session is locked.
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, LockDialog), "the lock dialog")
        await pilot.press("enter")
        assert "Write the reason" in text_of(app, "#lock-problem")
        app.screen.query_one("#lock-reason", Input).value = "awards for Saturday morning"
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ResultsScreen), "the dialog closed")
        await until(
            pilot, lambda: "SAT-AM Saturday morning  LOCKED" in text_of(app, "#results-sessions"), "locked"
        )
        # Locked but nobody signed off: still provisional.
        assert table(app).cell_text("101", "status") == "PROVISIONAL"
