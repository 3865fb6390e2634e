"""The console's Schedule screen (key 8) driven by Textual's pilot against a real daemon (issue 20):
the version tablets have, the draft of day-of changes with what validate finds in it, `p` refused
while validate finds an error and then publishing after asking why, the new version listed with
what it changed, and `d` discarding a draft after a confirmation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from textual.widgets import Input, Static

from tests.conftest import RunningBox, make_box
from tests.integration.test_console import SIZE, console_for, plain, until
from tests.integration.test_schedule import AM, score
from tests.schedule_package import dancer, schedule_package
from tui.screens.dialogs import ConfirmScreen
from tui.screens.schedule import PublishDialog, ScheduleScreen
from tui.widgets.table import LinedTable

WALK_ON = {
    "kind": "walk-on",
    "entry_id": "501",
    "session_id": AM,
    "position": 3,
    "title": "Late Bloom",
    "category": "Solo",
    "division": "Senior",
    "scheduled_at": "2026-03-14T08:14:00-04:00",
    "participants": dancer("105"),  # 105's dancer, 2 minutes after 105: a turnaround warning
    "reason": "late registration",
}


def versions(app: Any) -> LinedTable:
    return app.screen.query_one("#schedule-versions", LinedTable)


def text_of(app: Any, selector: str) -> str:
    return plain(app.screen.query_one(selector, Static).content)


def draft(admin: httpx.Client, change: dict[str, Any]) -> None:
    answer = admin.post("/admin/v1/schedule/draft", json=change)
    assert answer.status_code == 200, answer.text


def test_the_schedule_screen_shows_versions_and_the_draft_publishes_and_discards(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box", schedule_package(tmp_path / "package"))
    box = RunningBox(config).start()
    try:
        score(box.pair("J1", "J1 tablet"), "101")
        asyncio.run(_drive(box))
        with box.admin() as admin:
            listed = admin.get("/admin/v1/schedule/versions").raise_for_status().json()
            left = admin.get("/admin/v1/schedule/draft").raise_for_status().json()
            published = admin.get("/admin/v1/audit", params={"action": "schedule.publish"}).json()
            event = admin.get("/admin/v1/results", params={"session": AM}).raise_for_status().json()
    finally:
        box.stop()
    assert [v["version"] for v in listed] == [1, 2]
    assert listed[1]["reason"] == "morning changes" and listed[1]["actor"] == "admin-api"
    assert [c["kind"] for c in listed[1]["changes"]] == ["scratch", "walk_on"]
    assert left["changes"] == [] and left["version"] == 2
    assert len(published) == 1
    shown = {row["entry_id"] for group in event["groups"] for row in group["rows"]}
    assert "101" not in shown and "501" in shown and "102" in shown  # 102's scratch was discarded


async def _drive(box: RunningBox) -> None:
    app = console_for(box)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("8")
        await until(
            pilot, lambda: isinstance(app.screen, ScheduleScreen) and versions(app).row_count == 1, "schedule"
        )
        assert text_of(app, "#nav").rstrip().endswith("8 Schedule")
        assert text_of(app, "#schedule-head").startswith(
            "Schedule version 1 (what tablets have) · as imported"
        )
        assert versions(app).cell_text("1", "changed") == "nothing (the import)"
        assert text_of(app, "#schedule-draft").startswith("No draft: the schedule is version 1.")

        # Nothing to publish or discard yet: said, no dialog.
        await pilot.press("p")
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, ScheduleScreen)

        # The draft typed elsewhere (the admin API here, the shell's CLI alike) shows with its problems.
        with box.admin() as admin:
            draft(admin, {"kind": "scratch", "entry_id": "101", "reason": "injury"})
            draft(admin, WALK_ON)
        await until(pilot, lambda: "2 change(s) on version 1" in text_of(app, "#schedule-draft"), "the draft")
        await until(
            pilot, lambda: "warning(s): it can be published" in text_of(app, "#schedule-draft"), "checked"
        )
        shown = text_of(app, "#schedule-draft")
        assert "1. scratch 101  injury (admin-api)" in shown
        assert "2. walk-on 501 'Late Bloom' into SAT-AM #3 at Sat 08:14:00" in shown
        assert "warning entries '105' and '501' share participant P. D. 2 min apart" in shown
        assert "Dancer" not in shown  # names are initials
        assert "warning entry '101' is scratched and has sheets from J1" in shown

        # SAT-AM locked since the changes were typed: p asks validate again, which refuses the publish.
        with box.admin() as admin:
            admin.post(f"/admin/v1/sessions/{AM}/lock", json={"reason": "protest"}).raise_for_status()
        await pilot.press("p")
        await until(pilot, lambda: "ERROR" in text_of(app, "#schedule-draft"), "the error")
        assert "it cannot be published until the errors are fixed" in text_of(app, "#schedule-draft")
        assert isinstance(app.screen, ScheduleScreen)  # no dialog
        with box.admin() as admin:
            admin.post(f"/admin/v1/sessions/{AM}/unlock", json={"reason": "settled"}).raise_for_status()

        # p again: the dialog shows what is published and asks why.
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, PublishDialog), "the publish dialog")
        detail = text_of(app, "#publish-detail")
        assert detail.startswith("2 change(s) become version 2")
        assert "scratch 101" in detail and "share participant P. D." in detail
        await pilot.press("enter")
        assert "Write the reason" in text_of(app, "#publish-problem")
        app.screen.query_one("#publish-reason", Input).value = "morning changes"
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ScheduleScreen), "the dialog closed")
        await until(pilot, lambda: versions(app).row_count == 2, "version 2 listed")
        assert text_of(app, "#schedule-head").startswith(
            "Schedule version 2 (what tablets have) · published "
        )
        assert text_of(app, "#schedule-head").endswith("by admin-api: morning changes")
        table = versions(app)
        assert table.row_keys() == ["2", "1"]  # newest first
        assert table.cell_text("2", "changed").startswith("scratched 101 · added 501 · moved 103 104")
        assert table.cell_text("2", "reason") == "morning changes"
        table.focus()
        table.cursor_row = 0
        await pilot.pause()
        diff = text_of(app, "#schedule-diff")
        assert "entry 101: scratched no → yes" in diff and "entry 501: added – → SAT-AM #3" in diff
        assert text_of(app, "#schedule-draft").startswith("No draft: the schedule is version 2.")

        # d discards a draft after asking; n keeps it.
        with box.admin() as admin:
            draft(admin, {"kind": "scratch", "entry_id": "102", "reason": "no show"})
        await until(pilot, lambda: "1 change(s) on version 2" in text_of(app, "#schedule-draft"), "new draft")
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the discard question")
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, ScheduleScreen), "kept")
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "asked again")
        await pilot.press("y")
        await until(pilot, lambda: text_of(app, "#schedule-draft").startswith("No draft"), "discarded")
