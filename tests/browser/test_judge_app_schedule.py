"""Day-of changes reach the judge app without a reload, in Debian's Chromium against a real daemon:
the tech scratches an entry the judge scored and walks one on (`venuebox schedule ...`), publishes,
and within a heartbeat the open page reads the event again, says "Schedule updated: 1 scratched,
1 walked on", greys the scratched entry (its sheet kept, read-only, no Submit) and lists the walk-on,
which the judge scores; a rollback brings the scratched entry back and takes the walk-on off the
list, said the same way."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import NEEDS_CHROMIUM, JudgeApp
from tests.browser.test_judge_app import ONE_HEARTBEAT_MS, wait_for_sheets
from tests.conftest import RunningBox, new_code, venuebox

pytestmark = [pytest.mark.timeout(150), NEEDS_CHROMIUM]

# The heartbeat that carries the new version, then the event download it starts.
NEW_VERSION_MS = ONE_HEARTBEAT_MS + 1500


def schedule(box: RunningBox, *args: str) -> str:
    """`venuebox schedule ...` as the tech types it; its output."""
    done = venuebox(box.config, "schedule", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def event_downloads(app: JudgeApp) -> int:
    return sum(1 for url in app.requests if url.split("?")[0].endswith("/api/v1/event"))


def test_a_published_schedule_reaches_the_open_app_with_a_banner_and_the_scratched_entry_greyed(
    judge_box: RunningBox, open_app: Callable[..., JudgeApp]
) -> None:
    app = open_app(judge_box)
    page = app.page
    app.pair(new_code(judge_box.config, "J1"))  # Saturday morning and afternoon
    page.get_by_role("link", name="Score next: entry 101").click()
    app.score("101", "9.0", "9.1", "9.5")
    assert len(wait_for_sheets(judge_box, 1)) == 1
    page.get_by_role("link", name="All entries").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your entries")
    morning = page.locator("section.session", has=page.get_by_role("heading", name="Saturday morning"))
    expect(morning.locator(".session-meta")).to_contain_text("1 of 20 scored")
    expect(page.locator("#schedule-banner")).to_be_empty()
    # A mark on the page: a reload would lose it.
    page.evaluate("() => { window.notReloaded = true; }")
    downloads = event_downloads(app)

    # The tech: 101 scratched (it has J1's sheet: said, allowed), 501 walked on at position 2.
    schedule(judge_box, "scratch", "101", "--reason", "injury")
    schedule(
        judge_box,
        "walk-on",
        "501",
        "--title",
        "Late Bloom",
        "--session",
        "SAT-AM",
        "--position",
        "2",
        "--category",
        "Solo",
        "--division",
        "Senior",
        "--reason",
        "late registration",
    )
    published = schedule(judge_box, "publish", "--reason", "morning changes")
    published_at = time.monotonic()
    assert "published version 2" in published

    banner = page.locator("#schedule-banner")
    expect(banner).to_contain_text("Schedule updated: 1 scratched, 1 walked on.", timeout=NEW_VERSION_MS)
    assert time.monotonic() - published_at <= NEW_VERSION_MS / 1000
    # The entries after the walk-on were renumbered, not moved: only what the tech did is counted.
    expect(banner.locator("strong")).to_have_text("Schedule updated: 1 scratched, 1 walked on.")
    expect(banner.locator(".schedule-details")).to_have_text("Scratched: 101 · Walked on: 501.")
    assert page.evaluate("() => window.notReloaded === true")
    assert event_downloads(app) > downloads

    # 101 stays listed, greyed and marked; 501 is second in the running order, to score next.
    scratched = page.locator(".entry-link", has_text="101 · ")
    expect(scratched).to_have_class("entry-link status-scratched is-scratched")
    expect(scratched.locator(".badge")).to_have_text("Scratched")
    walk_on = page.locator(".entry-link", has_text="501 · Late Bloom")
    expect(walk_on.locator(".entry-order")).to_have_text("2")
    expect(walk_on.locator(".badge")).to_have_text("Not scored")
    expect(morning.locator(".session-meta")).to_contain_text("0 of 20 scored")
    expect(page.get_by_role("link", name="Score next: entry 501 · Late Bloom")).to_be_visible()
    # "Only the entries still to score" leaves the scratched entry out.
    page.get_by_role("button", name="Only the").click()
    expect(scratched).to_have_count(0)
    page.get_by_role("button", name="Only the").click()

    # Scratched: the judge's sheet is shown, read-only; no form, no correction, not even by address.
    scratched.click()
    app.expect_entry("101")
    expect(page.get_by_role("note")).to_contain_text("Scratched: the venue tech took this entry off")
    expect(page.locator(".current-sheet")).to_contain_text("on the box")
    expect(page.get_by_role("button", name="Submit sheet")).to_have_count(0)
    expect(page.get_by_role("link", name="Correct this sheet")).to_have_count(0)
    page.goto(f"{app.origin}/#/entry/101/correct")
    app.expect_entry("101")
    expect(page.locator("form.score-form")).to_have_count(0)

    # The banner stays until the judge says OK; the walk-on is scored like any entry.
    banner.get_by_role("button", name="OK").click()
    expect(banner).to_be_empty()
    page.get_by_role("link", name="All entries").click()
    page.get_by_role("link", name="Score next: entry 501 · Late Bloom").click()
    app.score("501", "8.0", "8.5", "8.5")
    app.expect_on_the_box("501")
    assert {s["entry_id"] for s in wait_for_sheets(judge_box, 2)} == {"101", "501"}

    # A rollback to the imported schedule: 101 is back, 501 leaves the list (its sheet kept on the box).
    schedule(judge_box, "rollback", "1", "--reason", "back to the printed order")
    expect(banner.locator("strong")).to_have_text(
        "Schedule updated: 1 restored, 1 no longer on your list.", timeout=NEW_VERSION_MS
    )
    expect(banner.locator(".schedule-details")).to_have_text("Restored: 101 · No longer on your list: 501.")
    page.get_by_role("link", name="All entries").click()
    expect(page.locator(".entry-link", has_text="101 · ")).to_have_class("entry-link status-scored")
    expect(page.locator(".entry-link", has_text="501 · ")).to_have_count(0)
    expect(morning.locator(".session-meta")).to_contain_text("1 of 20 scored")
    assert page.evaluate("() => window.notReloaded === true")
    app.assert_stayed_on_the_box()
