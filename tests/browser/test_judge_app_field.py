"""The judge app through a long day on a tablet, in Debian's Chromium against a real daemon: a
French tablet's decimal comma, scores typed and not submitted, a banner pushing the form down on a
1024-px screen, where the first sheet after the Wi-Fi drops is kept, entering numbers without the
keyboard going away, and a tablet that cannot reopen the app offline (no service worker)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import NEEDS_CHROMIUM, JudgeApp
from tests.browser.test_judge_app import ONE_HEARTBEAT_MS, box_sheets, wait_for_sheets
from tests.conftest import RunningBox, new_code

pytestmark = [pytest.mark.timeout(120), NEEDS_CHROMIUM]

NO_OFFLINE_RELOAD = "Offline reload is not available on this tablet"


def paired_app(
    box: RunningBox, open_app: Callable[..., JudgeApp], judge: str = "J1", **options: Any
) -> JudgeApp:
    app = open_app(box, **options)
    app.pair(new_code(box.config, judge))
    return app


def type_into(page: Page, label: str, text: str) -> None:
    """Type as a judge does, key by key (a number field drops a comma typed so; fill() would not)."""
    field = page.get_by_label(label, exact=True)
    field.click()
    field.press("Control+a")
    field.press("Delete")
    page.keyboard.type(text)


def in_viewport(page: Page, selector: str) -> bool:
    return page.evaluate(
        """(selector) => {
            const box = document.querySelector(selector).getBoundingClientRect();
            return box.height > 0 && box.top >= 0 && box.bottom <= window.innerHeight;
        }""",
        selector,
    )


def test_a_french_tablet_s_decimal_comma_gives_the_number_typed_or_a_refusal_in_words(
    judge_box: RunningBox, open_app: Callable[..., JudgeApp]
) -> None:
    app = paired_app(judge_box, open_app, locale="fr-FR", service_workers="block")
    page = app.page
    assert page.evaluate("navigator.language") == "fr-FR"
    app.open_entry("101")
    type_into(page, "Technique", "0,8")
    type_into(page, "Performance", "8.5")
    expect(page.get_by_label("Technique", exact=True)).to_have_value("0,8")
    # What could be read two ways is refused in words, never guessed.
    for typed, words in [
        ("1.234,5", "“1.234,5” has more than one decimal point or comma"),
        ("8,5,1", "“8,5,1” has more than one decimal point or comma"),
        ("8 5", "“8 5” is not a number"),
    ]:
        type_into(page, "Choreography", typed)
        page.keyboard.press("Enter")
        expect(page.locator("#score-choreography-error")).to_contain_text(f"Choreography: {words}")
        expect(page.get_by_label("Choreography", exact=True)).to_be_focused()
    # The running total reads the comma too: 0.8 + 8.5, not 8 + 8.5.
    type_into(page, "Choreography", "9,5")
    expect(page.locator("#sheet-total")).to_contain_text("Total 18.8 of 30.0")
    page.keyboard.press("Enter")
    expect(page.locator(".notice")).to_contain_text("Sheet for entry 101 saved")
    sheets = wait_for_sheets(judge_box, 1)
    assert sheets[0]["values"] == {"technique": 0.8, "performance": 8.5, "choreography": 9.5}

    # "8,5" on its own is 8.5 (a number field made it 85, out of range), "+" steps from it.
    app.open_entry("102")
    type_into(page, "Technique", "8,5")
    page.get_by_role("button", name="Raise Technique by 0.1").click()
    expect(page.get_by_label("Technique", exact=True)).to_have_value("8.6")
    type_into(page, "Performance", "8,5")
    type_into(page, "Choreography", "8,5")
    page.get_by_role("button", name="Submit sheet").click()
    sheets = wait_for_sheets(judge_box, 2)
    assert {s["entry_id"]: s["values"] for s in sheets}["102"] == {
        "technique": 8.6,
        "performance": 8.5,
        "choreography": 8.5,
    }
    app.assert_stayed_on_the_box()


def test_scores_typed_and_not_submitted_are_kept_as_a_draft_until_the_sheet_is_submitted(
    judge_box: RunningBox, open_app: Callable[..., JudgeApp]
) -> None:
    app = paired_app(judge_box, open_app)
    page = app.page
    draft_state = page.locator("#draft-state")
    technique = page.get_by_label("Technique", exact=True)
    performance = page.get_by_label("Performance", exact=True)
    app.open_entry("101")
    technique.fill("9.1")
    performance.fill("8,7")
    page.get_by_label("Comment (optional)").fill("Strong lines")
    expect(draft_state).to_have_text("Not submitted yet: kept on this tablet as a draft.")

    # "All entries": the list says a draft waits there, and the entry gives it back.
    page.get_by_role("link", name="All entries").click()
    expect(page.locator('a[data-key="101"] .badge')).to_have_text("Draft, not submitted")
    page.locator('a[data-key="101"]').click()
    app.expect_entry("101")
    expect(technique).to_have_value("9.1")
    expect(performance).to_have_value("8,7")
    expect(page.get_by_label("Comment (optional)")).to_have_value("Strong lines")
    expect(draft_state).to_contain_text("Your unsent scores for this entry are back")

    # → and back, and a reload (the tablet's browser killed in its sleep): still there.
    page.get_by_role("link", name="102 →").click()
    app.expect_entry("102")
    expect(technique).to_have_value("")
    page.get_by_role("link", name="← 101").click()
    app.expect_entry("101")
    expect(technique).to_have_value("9.1")
    page.reload()
    app.expect_entry("101")
    expect(performance).to_have_value("8,7")
    assert box_sheets(judge_box) == []  # a draft is never sent

    page.get_by_label("Choreography", exact=True).fill("9.0")
    page.get_by_role("button", name="Submit sheet").click()
    expect(page.locator(".notice")).to_contain_text("Sheet for entry 101 saved")
    assert wait_for_sheets(judge_box, 1)[0]["values"] == {
        "technique": 9.1,
        "performance": 8.7,
        "choreography": 9.0,
    }
    assert app.stored("draft:J1:101") is None  # submitted: the draft is gone
    app.open_entry("101")
    expect(page.locator(".card.current-sheet")).to_contain_text("on the box")
    expect(page.locator(".card.draft")).to_have_count(0)

    # A correction typed and left is kept too, and offered again from the entry.
    page.get_by_role("link", name="Correct this sheet").click()
    page.get_by_role("button", name="Raise Technique by 0.1").click()
    expect(draft_state).to_have_text("Not submitted yet: kept on this tablet as a draft.")
    page.get_by_role("link", name="All entries").click()
    page.locator('a[data-key="101"]').click()
    draft_card = page.locator(".card.draft")
    expect(draft_card).to_contain_text("Scores you typed and did not submit")
    draft_card.get_by_role("link", name="Continue with your draft").click()
    expect(technique).to_have_value("9.2")
    # Cancel is the judge's choice to drop it.
    page.get_by_role("link", name="Cancel").click()
    expect(page.get_by_role("link", name="Correct this sheet")).to_be_visible()
    expect(draft_card).to_have_count(0)
    assert app.stored("draft:J1:101") is None
    assert len(box_sheets(judge_box)) == 1
    app.assert_stayed_on_the_box()


def test_with_banners_showing_submit_and_the_link_state_stay_on_a_1024_px_screen(
    judge_box: RunningBox, open_app: Callable[..., JudgeApp]
) -> None:
    # A box whose certificate the tablet does not trust (no service worker), frozen: two banners.
    app = paired_app(judge_box, open_app, width=768, height=1024, service_workers="block")
    page = app.page
    with judge_box.admin() as admin:
        admin.post("/admin/v1/freeze", json={"reason": "protest on entry 103"}).raise_for_status()
    app.open_entry("101")
    expect(page.locator("#freeze-banner")).to_contain_text("protest on entry 103", timeout=ONE_HEARTBEAT_MS)
    expect(page.locator("#reload-banner")).to_contain_text(NO_OFFLINE_RELOAD)
    assert page.evaluate("window.scrollY") == 0
    assert in_viewport(page, "button.submit"), "Submit is below the screen"

    # Scrolled down to the comment: the header's link state is still on screen.
    page.get_by_label("Comment (optional)").fill("Clean")
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    assert page.evaluate("window.scrollY") > 0
    assert in_viewport(page, "#link-state")
    assert in_viewport(page, "button.submit")

    app.fill_scores("9.0", "9.1", "9.5")
    page.get_by_role("button", name="Submit sheet").click()
    app.expect_entry("102")
    # The next entry opens at its top: its navigation and heading, not scrolled part way down.
    assert page.evaluate("window.scrollY") == 0
    assert in_viewport(page, ".entry-nav")
    assert in_viewport(page, "button.submit")
    app.assert_stayed_on_the_box()


def test_the_first_sheet_after_the_wifi_drops_says_it_is_on_this_tablet_waiting_to_send(
    judge_box: RunningBox, open_app: Callable[..., JudgeApp]
) -> None:
    app = paired_app(judge_box, open_app, service_workers="block")
    page = app.page
    notice = page.locator(".notice")
    app.open_entry("101")
    app.score("101", "9.0", "9.0", "9.0")
    expect(notice).to_have_text("Sheet for entry 101 saved on the box.")

    # The box goes (the Wi-Fi drops) and the next sheet is submitted before anything noticed.
    judge_box.stop()
    app.score("102", "8.5", "8.5", "8.5")
    expect(notice).to_have_text(
        "Sheet for entry 102 saved on this tablet, waiting to send: the box cannot be reached."
    )
    assert [s["state"] for s in app.kept_sheets()] == ["stored", "queued"]

    # Back: the same line says where the sheet is now.
    judge_box.start()
    expect(notice).to_have_text("Sheet for entry 102 saved on the box.", timeout=ONE_HEARTBEAT_MS + 5000)
    assert sorted(s["entry_id"] for s in wait_for_sheets(judge_box, 2)) == ["101", "102"]
    app.assert_stayed_on_the_box()


def test_enter_moves_on_the_total_runs_the_keyboard_stays_up_and_the_list_counts_and_filters(
    judge_box: RunningBox, open_app: Callable[..., JudgeApp]
) -> None:
    app = paired_app(judge_box, open_app, service_workers="block")
    page = app.page
    technique = page.get_by_label("Technique", exact=True)
    performance = page.get_by_label("Performance", exact=True)
    choreography = page.get_by_label("Choreography", exact=True)
    total = page.locator("#sheet-total")
    # The list: how many of the judge's 40 entries (two sessions of 20) are scored.
    expect(page.locator("#progress")).to_have_text("0 of 40 scored")
    page.get_by_role("link", name="Score next: entry 101").click()
    app.expect_entry("101")
    expect(total).to_have_text("Total 0.0 of 30.0 · 0 of 3 scores")

    technique.click()
    page.keyboard.type("9.1")
    page.keyboard.press("Enter")  # a tablet keyboard's Go: the next score, not a submit
    expect(performance).to_be_focused()
    for error in ("#score-technique-error", "#score-performance-error", ".form-error"):
        expect(page.locator(error)).to_be_empty()  # moved on, not a submit that stopped there
    page.keyboard.type("8,9")
    expect(total).to_have_text("Total 18.0 of 30.0 · 2 of 3 scores")
    page.keyboard.press("Enter")
    expect(choreography).to_be_focused()
    page.keyboard.type("9.5")
    expect(total).to_have_text("Total 27.5 of 30.0")
    assert box_sheets(judge_box) == []
    page.keyboard.press("Enter")  # the last score: submits

    # The next entry opens with its first score focused: the keyboard stays up, typing goes on.
    app.expect_entry("102")
    expect(technique).to_be_focused()
    page.keyboard.type("8.0")
    page.keyboard.press("Enter")
    page.keyboard.type("8.1")
    page.keyboard.press("Enter")
    page.keyboard.type("8.5")
    page.keyboard.press("Enter")
    app.expect_entry("103")
    expect(technique).to_be_focused()
    sheets = {s["entry_id"]: s["values"] for s in wait_for_sheets(judge_box, 2)}
    assert sheets == {
        "101": {"technique": 9.1, "performance": 8.9, "choreography": 9.5},
        "102": {"technique": 8.0, "performance": 8.1, "choreography": 8.5},
    }

    page.get_by_role("link", name="All entries").click()
    expect(page.locator("#progress")).to_have_text("2 of 40 scored")
    expect(page.locator(".session-meta").first).to_contain_text("2 of 20 scored")
    expect(page.locator('a[data-key="101"]')).to_be_visible()
    only = page.get_by_role("button", name="Only the 38 still to score")
    expect(only).to_have_attribute("aria-pressed", "false")
    only.click()
    expect(only).to_have_attribute("aria-pressed", "true")
    expect(page.locator('a[data-key="101"]')).to_have_count(0)
    expect(page.locator('a[data-key="102"]')).to_have_count(0)
    expect(page.locator("a.entry-link")).to_have_count(38)
    only.click()
    expect(page.locator("a.entry-link")).to_have_count(40)
    app.assert_stayed_on_the_box()


@pytest.mark.parametrize(
    ("box_fixture", "service_workers"),
    [
        # The judge clicked through the certificate warning: the service worker cannot register.
        pytest.param("shipped_box", "allow", id="untrusted-certificate"),
        pytest.param("judge_box", "block", id="no-service-worker"),
    ],
)
def test_a_tablet_that_cannot_reopen_the_app_offline_is_told_before_a_reload_what_to_do(
    box_fixture: str,
    service_workers: str,
    request: pytest.FixtureRequest,
    open_app: Callable[..., JudgeApp],
) -> None:
    app = open_app(request.getfixturevalue(box_fixture), service_workers=service_workers)
    page = app.page
    banner = page.locator("#reload-banner")
    expect(banner).to_contain_text(NO_OFFLINE_RELOAD)
    expect(banner).to_contain_text("keep this tab open, and don't reload it while the Wi-Fi is down")
    expect(banner).to_contain_text("install the box's certificate on this tablet")
    expect(banner).to_contain_text("open the app again from the pairing link")
    # On the pairing screen already, before the judge relies on it, and still after pairing.
    expect(page.get_by_role("heading", level=1)).to_have_text("Pair this tablet")
    app.pair(new_code(app.box.config, "J1"))
    expect(banner).to_contain_text(NO_OFFLINE_RELOAD)
    app.assert_stayed_on_the_box()


def test_a_tablet_with_a_service_worker_is_not_told_to_keep_the_tab_open(
    judge_box: RunningBox, open_app: Callable[..., JudgeApp]
) -> None:
    app = open_app(judge_box)
    page = app.page
    # Registered and in control: a reload offline opens the kept app, nothing to warn about.
    page.wait_for_function("() => navigator.serviceWorker.controller !== null")
    expect(page.locator("#reload-banner")).to_be_empty()
    app.assert_stayed_on_the_box()
