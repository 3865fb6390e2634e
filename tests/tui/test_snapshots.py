"""Snapshot tests (pytest-textual-snapshot) of the console's main screens at 80x24 and 120x40.

The console runs against the recorded admin API (tests/tui/recorded_box.py), so every run draws the
same screen; a change in layout or wording shows as an SVG diff. After an intended change:
`python3 dev.py test tests/tui --snapshot-update`, then look at the new SVGs before committing.
"""

from __future__ import annotations

from typing import Any

import pytest
from textual.pilot import Pilot

from tests.tui.recorded_box import RecordedBox

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


async def settle(pilot: Pilot[Any]) -> None:
    """Let the screen fetch its figures (as the App's timer would) and lay out."""
    screen = pilot.app.screen
    await screen.refresh_now()  # type: ignore[attr-defined]
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES)
def test_overview(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(RecordedBox().app("overview"), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", SIZES)
def test_overview_frozen(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(RecordedBox().frozen().app("overview"), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", SIZES)
def test_tablets(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(RecordedBox().app("tablets"), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", SIZES)
def test_scores(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(RecordedBox().app("scores"), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", SIZES)
def test_pairing_with_a_code(snap_compare: Any, size: tuple[int, int]) -> None:
    async def code_for_j4(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        pilot.app.screen.query_one("#judges").focus()
        await pilot.press("down", "down", "down", "enter")
        await pilot.pause()

    assert snap_compare(RecordedBox().app("pairing"), terminal_size=size, run_before=code_for_j4)


@pytest.mark.parametrize("size", SIZES)
def test_results(snap_compare: Any, size: tuple[int, int]) -> None:
    """Every group's ranks, scores and awards, FINAL (Saturday morning: locked, all signed off) and
    PROVISIONAL rows, and each session's lock and sign-offs (tests/tui/fixtures/results.json)."""
    assert snap_compare(RecordedBox().app("results"), terminal_size=size, run_before=settle)


def test_freeze_dialog(snap_compare: Any) -> None:
    assert snap_compare(RecordedBox().app("overview"), terminal_size=(80, 24), press=["f"])


def test_help(snap_compare: Any) -> None:
    assert snap_compare(RecordedBox().app("overview"), terminal_size=(80, 24), press=["question_mark"])


def test_overview_on_a_light_terminal(snap_compare: Any) -> None:
    app = RecordedBox().frozen().app("overview")
    app.theme = "textual-light"
    assert snap_compare(app, terminal_size=(80, 24), run_before=settle)


def test_export_to_usb_in_progress(snap_compare: Any) -> None:
    async def export_to_the_first_key(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await pilot.press("e")
        await pilot.app.workers.wait_for_complete()  # the keys are listed
        await pilot.pause()
        await pilot.press("enter")
        await pilot.app.workers.wait_for_complete()  # started: the recorded export, at 35%
        await pilot.pause()

    assert snap_compare(
        RecordedBox().app("overview"), terminal_size=(80, 24), run_before=export_to_the_first_key
    )
