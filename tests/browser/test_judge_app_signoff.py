"""A judge signs a session off from the judge app, in Debian's Chromium against a real daemon:
"Finish scoring Saturday morning" lists what the judge has not scored first, then asks; offline,
nothing is signed off and the page says so; once signed off, the session shows finished and its
entries open read-only, after a reload too; the tech reopens it and the judge corrects again. A
correction the box refuses 423 (signed off elsewhere, or a session the tech locked) is shown in
those words and its scores are kept, to send once the session is open again."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import NEEDS_CHROMIUM, JudgeApp
from tests.browser.test_judge_app import box_sheets, wait_for_sheets
from tests.conftest import RunningBox, new_code

pytestmark = [pytest.mark.timeout(150), NEEDS_CHROMIUM]

VENUE_TZ = ZoneInfo("America/Toronto")  # the sample event's timezone: the app shows its times in it


def event_of(app: JudgeApp) -> dict[str, Any]:
    """What the box says to this tablet now (GET /api/v1/event with the app's own token)."""
    with httpx.Client(base_url=app.box.tablet_url, verify=app.box.verify, timeout=10.0) as client:
        answer = client.get("/api/v1/event", headers={"Authorization": f"Bearer {app.token()}"})
    return answer.raise_for_status().json()


def session_of(event: dict[str, Any], session_id: str) -> dict[str, Any]:
    return next(s for s in event["sessions"] if s["id"] == session_id)


def clock(iso: str) -> str:
    """HH:MM at the venue, as the app writes a sign-off time."""
    return datetime.fromisoformat(iso).astimezone(VENUE_TZ).strftime("%H:%M")


def admin_post(box: RunningBox, path: str, body: dict[str, Any]) -> dict[str, Any]:
    with box.admin() as admin:
        return admin.post(path, json=body).raise_for_status().json()


def current_sheet(box: RunningBox, judge_id: str, entry_id: str) -> dict[str, Any]:
    mine = [s for s in box_sheets(box) if s["judge_id"] == judge_id and s["entry_id"] == entry_id]
    return max(mine, key=lambda s: s["seq"])


def test_a_judge_finishes_a_session_sees_it_read_only_and_corrects_again_after_a_reopen(
    judge_box: RunningBox, open_app: Callable[..., JudgeApp]
) -> None:
    app = open_app(judge_box)
    page = app.page
    app.pair(new_code(judge_box.config, "J1"))  # Saturday morning and afternoon
    page.get_by_role("link", name="Score next: entry 101").click()
    app.score("101", "9.0", "9.1", "9.5")
    app.score("102", "8.5", "8.6", "8.5")
    app.score("103", "7.5", "7.6", "7.0")
    assert len(wait_for_sheets(judge_box, 3)) == 3
    # Entry 104 is typed into and left: a draft, not a sheet.
    app.expect_entry("104")
    page.get_by_label("Technique", exact=True).fill("8.8")
    expect(page.locator("#draft-state")).to_contain_text("kept on this tablet as a draft")
    page.get_by_role("link", name="All entries").click()
    expect(page.locator(".entry-link.status-draft")).to_contain_text("104")

    # "Finish scoring" shows what is left first: 17 entries, 104 with its draft; then the question.
    morning = page.locator("section.session", has=page.get_by_role("heading", name="Saturday morning"))
    morning.get_by_role("link", name="Finish scoring Saturday morning").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Finish scoring Saturday morning")
    left = page.locator(".view-finish .card").first
    expect(left.get_by_role("heading")).to_have_text("Not scored by you: 17 of 20 entries")
    expect(left.locator("li")).to_have_count(17)
    title_104 = entry_title(app, "104")
    draft_line = f"104 · {title_104} — not scored (a draft is typed)"
    expect(left.locator("li").first).to_have_text(draft_line)
    expect(left).not_to_contain_text("101 ·")
    confirm = page.get_by_role("button", name="Yes, I have finished scoring Saturday morning")
    expect(page.locator(".view-finish .card").last).to_contain_text("You have not scored 17 entries")
    # What is left comes before the question, on the page and in reading order.
    expect(page.locator(".view-finish .card > h2")).to_have_text(
        ["Not scored by you: 17 of 20 entries", "Sign off this session?"]
    )

    # Offline: the sign-off needs the box; nothing is pretended.
    judge_box.stop()
    confirm.click()
    expect(page.get_by_role("alert").filter(has_text="nothing was signed off")).to_have_text(
        "The box cannot be reached: nothing was signed off. Signing off needs the box; try again once "
        "this tablet is connected."
    )
    expect(page.get_by_role("heading", level=1)).to_have_text("Finish scoring Saturday morning")
    # Still offline, the judge finishes entry 104 from its draft: the sheet waits on the tablet, and
    # no sign-off may overtake it (the box would then refuse it).
    left.get_by_role("link", name="104 ·").click()
    expect(page.get_by_label("Technique", exact=True)).to_have_value("8.8")
    app.score("104", "8.8", "8.9", "9.0")
    page.goto(app.origin + "/#/finish/SAT-AM")
    waiting = page.locator(
        ".view-finish .card", has=page.get_by_role("heading", name="1 sheet still on this tablet")
    )
    expect(waiting.locator("li")).to_have_text(f"104 · {title_104} — waiting to send")
    expect(left.get_by_role("heading")).to_have_text("Not scored by you: 16 of 20 entries")
    expect(confirm).to_be_disabled()
    judge_box.start()
    expect(waiting).to_have_count(0)
    expect(confirm).to_be_enabled()
    assert current_sheet(judge_box, "J1", "104")["values"]["choreography"] == 9.0
    assert session_of(event_of(app), "SAT-AM")["signed_off_at"] is None

    confirm.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your entries")
    signed_at = session_of(event_of(app), "SAT-AM")["signed_off_at"]
    assert signed_at is not None
    expect(page.locator(".notice")).to_have_text(f"You signed off Saturday morning at {clock(signed_at)}.")
    expect(morning.locator(".session-final")).to_have_text(f"Finished — signed off at {clock(signed_at)}")
    expect(morning.get_by_role("link", name="Finish scoring Saturday morning")).to_have_count(0)
    afternoon = page.locator("section.session", has=page.get_by_role("heading", name="Saturday afternoon"))
    expect(afternoon.get_by_role("link", name="Finish scoring Saturday afternoon")).to_be_visible()
    # Scoring goes on where the judge still may: the afternoon.
    expect(page.get_by_role("link", name="Score next: entry 121")).to_be_visible()

    # Its entries open read-only, scored or not, whatever the address asks for; after a reload too.
    read_only = "You signed off this session; ask the tech to reopen it to change a score."
    for path in ("/#/entry/101", "/#/entry/101/correct", "/#/entry/104"):
        page.goto(app.origin + path)
        expect(page.locator(".read-only")).to_have_text(read_only)
        expect(page.get_by_role("button", name="Submit sheet")).to_have_count(0)
        expect(page.get_by_role("button", name="Submit correction")).to_have_count(0)
        expect(page.get_by_role("link", name="Correct this sheet")).to_have_count(0)
        expect(page.get_by_label("Technique", exact=True)).to_have_count(0)
    expect(page.get_by_role("link", name="Continue with your draft")).to_have_count(0)
    page.reload()
    expect(page.locator(".read-only")).to_have_text(read_only)
    page.goto(app.origin + "/#/sessions")
    expect(morning.locator(".session-final")).to_have_text(f"Finished — signed off at {clock(signed_at)}")

    # The tech reopens it (admin API): after the next event download the judge corrects again.
    reopened = admin_post(
        judge_box, "/admin/v1/sessions/SAT-AM/reopen", {"judge_id": "J1", "reason": "J1 asked to fix 101"}
    )
    assert reopened["signed_off"] == []
    page.reload()
    expect(morning.get_by_role("link", name="Finish scoring Saturday morning")).to_be_visible()
    expect(morning.locator(".session-final")).to_have_count(0)
    app.open_entry("101")
    expect(page.locator(".read-only")).to_have_count(0)
    page.get_by_role("link", name="Correct this sheet").click()
    page.get_by_label("Technique", exact=True).fill("9.5")
    page.get_by_role("button", name="Submit correction").click()
    expect(page.locator(".notice")).to_have_text("Correction for entry 101 saved on the box.")
    assert current_sheet(judge_box, "J1", "101")["values"]["technique"] == 9.5
    app.assert_stayed_on_the_box()


def entry_title(app: JudgeApp, entry_id: str) -> str:
    for session in event_of(app)["sessions"]:
        for entry in session["entries"]:
            if entry["entry_id"] == entry_id:
                return str(entry["title"])
    raise AssertionError(f"entry {entry_id} is not on the judge's panel")


def test_a_correction_refused_423_is_shown_in_words_and_kept_until_the_session_opens_again(
    judge_box: RunningBox, open_app: Callable[..., JudgeApp]
) -> None:
    app = open_app(judge_box)
    page = app.page
    app.pair(new_code(judge_box.config, "J2"))  # Saturday morning and Sunday morning
    page.get_by_role("link", name="Score next: entry 101").click()
    app.score("101", "9.0", "9.0", "9.0")
    app.score("102", "8.0", "8.0", "8.0")
    first = wait_for_sheets(judge_box, 2)
    stored_101 = current_sheet(judge_box, "J2", "101")

    # The judge signs Saturday morning off through the API (another tablet of theirs): this page
    # does not know yet, and a correction typed here goes to the box.
    other = judge_box.pair("J2", device_name="second tablet")
    with other.client() as client:
        signed = client.post("/api/v1/sessions/SAT-AM/final", json={})
    assert signed.status_code == 200, signed.text
    app.open_entry("101")
    page.get_by_role("link", name="Correct this sheet").click()
    page.get_by_label("Technique", exact=True).fill("6.5")
    page.get_by_role("button", name="Submit correction").click()
    expect(page.locator(".notice")).to_have_text(
        "Correction for entry 101 was refused: you signed off this session. Your scores are kept here."
    )
    attention = page.locator(".card.attention")
    expect(attention).to_contain_text(
        "The box refused this sheet: you signed off this session, so your sheets for it are read-only."
    )
    expect(attention).to_contain_text("The box said: You signed off this session")
    expect(attention.locator(".values")).to_contain_text("Technique6.5")
    # Not taken for a freeze: no pause banner, nothing waiting, nothing sent again.
    expect(page.locator("#freeze-banner")).to_be_empty()
    expect(page.locator("#queue-banner")).to_be_empty()
    expect(page.locator("#attention-banner")).to_contain_text("1 sheet needs your attention")
    # The refusal made the app read the event again: the session shows signed off, read-only.
    expect(page.locator(".read-only")).to_have_text(
        "You signed off this session; ask the tech to reopen it to change a score."
    )
    expect(attention.get_by_role("link", name="Edit and send again")).to_have_count(0)
    refused = [s for s in app.kept_sheets() if s["state"] == "aside"]
    assert [(s["entry_id"], s["supersedes"]) for s in refused] == [("101", stored_101["sheet_id"])]
    assert box_sheets(judge_box) == first

    # The tech reopens the session; the judge sends the kept scores (they come back in the form).
    admin_post(judge_box, "/admin/v1/sessions/SAT-AM/reopen", {"judge_id": "J2", "reason": "typo on 101"})
    page.reload()
    page.get_by_role("link", name="Edit and send again").click()
    expect(page.get_by_label("Technique", exact=True)).to_have_value("6.5")
    page.get_by_role("button", name="Send again").click()
    expect(page.locator(".notice")).to_have_text("Correction for entry 101 saved on the box.")
    corrected = current_sheet(judge_box, "J2", "101")
    assert corrected["values"]["technique"] == 6.5 and corrected["supersedes"] == stored_101["sheet_id"]

    # The tech locks the session: a sheet for it is refused in those words, kept, and sent after
    # the unlock.
    admin_post(judge_box, "/admin/v1/sessions/SAT-AM/lock", {"reason": "awards at noon"})
    app.open_entry("102")
    page.get_by_role("link", name="Correct this sheet").click()
    page.get_by_label("Performance", exact=True).fill("8.4")
    page.get_by_role("button", name="Submit correction").click()
    expect(page.locator(".notice")).to_have_text(
        "Correction for entry 102 was refused: the venue tech locked this session. Your scores are kept here."
    )
    expect(page.locator(".card.attention")).to_contain_text(
        "The box refused this sheet: the venue tech locked this session."
    )
    expect(page.locator(".read-only")).to_have_text(
        "The venue tech locked this session; ask the tech to unlock it to change a score."
    )
    page.goto(app.origin + "/#/sessions")
    morning = page.locator("section.session", has=page.get_by_role("heading", name="Saturday morning"))
    expect(morning.locator(".session-locked")).to_have_text("Locked by the venue tech")
    assert current_sheet(judge_box, "J2", "102")["values"]["performance"] == 8.0

    admin_post(judge_box, "/admin/v1/sessions/SAT-AM/unlock", {"reason": "protest heard"})
    page.reload()
    expect(morning.locator(".session-locked")).to_have_count(0)
    app.open_entry("102")
    page.get_by_role("link", name="Edit and send again").click()
    expect(page.get_by_label("Performance", exact=True)).to_have_value("8.4")
    page.get_by_role("button", name="Send again").click()
    expect(page.locator(".notice")).to_have_text("Correction for entry 102 saved on the box.")
    assert current_sheet(judge_box, "J2", "102")["values"]["performance"] == 8.4
    app.assert_stayed_on_the_box()
