"""Scoring progress on a real box database with the sample event: which session is current, which
entries are complete, partial or skipped, the grid, the feed and the totals."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from appliance.core import progress
from appliance.core.devices import Device
from appliance.core.ledger import SheetSubmission, submit_sheet
from appliance.core.storage import Store
from tests.conftest import make_box, paired_device

# The sample event: SAT-AM (entries 101-120, judges J1 J2 J3) starts 2026-03-14 12:00 UTC, SAT-PM
# (121-140, J1 J3 J4) at 17:00 UTC, SUN-AM (141-160, J2 J3 J4 J5) on 2026-03-15 at 13:00 UTC.
# J3 is listed with "*" (every session).
VALUES = {"technique": 9.4, "performance": 9.1, "choreography": 8.5}


@pytest.fixture
def store(sample_store: Store) -> Store:
    return sample_store


tablet = paired_device


def score(store: Store, device: Device, entry_id: str, supersedes: str | None = None) -> str:
    sheet = SheetSubmission(
        str(uuid.uuid4()), entry_id, VALUES, "2026-03-14T10:42:07-04:00", supersedes=supersedes
    )
    store.write_sync(lambda c: submit_sheet(c, device, sheet))
    return sheet.sheet_id


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_a_judge_listed_for_all_sessions_sits_on_every_panel(store: Store) -> None:
    overview = store.query(progress.sessions_overview)

    assert [s.id for s in overview] == ["SAT-AM", "SAT-PM", "SUN-AM"]
    assert [[j.id for j in s.judges] for s in overview] == [
        ["J1", "J2", "J3"],
        ["J1", "J3", "J4"],
        ["J2", "J3", "J4", "J5"],
    ]
    assert [s.entries for s in overview] == [20, 20, 20]
    assert all(s.not_started == 20 and s.complete == s.partial == 0 for s in overview)


def test_without_sheets_the_schedule_picks_the_last_session_that_has_started(store: Store) -> None:
    def chosen(now: str) -> tuple[str, str] | None:
        return store.query(lambda c: progress.current_session(c, at(now)))

    assert chosen("2026-03-01T00:00:00+00:00") == ("SAT-AM", "first")
    assert chosen("2026-03-14T12:00:00+00:00") == ("SAT-AM", "schedule")
    assert chosen("2026-03-14T18:30:00+00:00") == ("SAT-PM", "schedule")
    assert chosen("2026-12-01T00:00:00+00:00") == ("SUN-AM", "schedule")


def test_the_session_of_the_newest_sheet_is_current_whatever_the_clock(store: Store) -> None:
    j1, j2 = tablet(store, "J1"), tablet(store, "J2")
    early = at("2026-03-01T00:00:00+00:00")

    score(store, j2, "145")
    assert store.query(lambda c: progress.current_session(c, early)) == ("SUN-AM", "latest-sheet")
    score(store, j1, "103")
    assert store.query(lambda c: progress.current_session(c, early)) == ("SAT-AM", "latest-sheet")
    current = store.query(lambda c: progress.current_session_progress(c, early))
    assert current is not None
    assert (current.id, current.chosen_by, current.name) == (
        "SAT-AM",
        "latest-sheet",
        "Saturday morning",
    )


def test_partial_and_skipped_entries_are_missing_in_running_order(store: Store) -> None:
    j1, j2, j3 = tablet(store, "J1"), tablet(store, "J2"), tablet(store, "J3")
    for device in (j1, j2, j3):
        score(store, device, "101")  # complete
    score(store, j1, "102")  # partial: J2 and J3 missing
    score(store, j2, "105")  # partial; 103 and 104 were skipped

    sat_am = store.query(lambda c: progress.session_progress(c, "SAT-AM", "latest-sheet"))

    assert (sat_am.entries, sat_am.complete, sat_am.partial, sat_am.not_started) == (20, 1, 2, 17)
    assert sat_am.missing_total == 4
    assert [(m.entry_id, m.kind, [j.id for j in m.missing_judges]) for m in sat_am.missing] == [
        ("102", "partial", ["J2", "J3"]),
        ("103", "skipped", ["J1", "J2", "J3"]),
        ("104", "skipped", ["J1", "J2", "J3"]),
        ("105", "partial", ["J1", "J3"]),
    ]
    assert msgspec.to_builtins(sat_am.missing[1]) == {
        "entry_id": "103",
        "order": 3,
        "title": "Niña Bonita",
        "kind": "skipped",
        "missing_judges": [
            {"id": "J1", "name": "Marisol Vega"},
            {"id": "J2", "name": "Daniel O'Connor"},
            {"id": "J3", "name": "Priya Raman"},
        ],
    }
    # Entries after the last one scored are simply not started yet, never missing.
    assert "106" not in {m.entry_id for m in sat_am.missing}


def test_the_missing_list_is_capped_but_missing_total_counts_them_all(store: Store) -> None:
    score(store, tablet(store, "J3"), "120")  # the last entry of SAT-AM: 101-119 were skipped

    sat_am = store.query(lambda c: progress.session_progress(c, "SAT-AM", "latest-sheet", missing_limit=5))

    assert sat_am.missing_total == 20  # 19 skipped and 120 itself, partial
    assert [m.entry_id for m in sat_am.missing] == ["101", "102", "103", "104", "105"]


def test_a_corrected_sheet_is_one_judge_scored_and_a_corrected_cell(store: Store) -> None:
    j1, j2, j3 = tablet(store, "J1"), tablet(store, "J2"), tablet(store, "J3")
    first = score(store, j1, "101")
    score(store, j1, "101", supersedes=first)
    score(store, j2, "101")

    sat_am = store.query(lambda c: progress.session_progress(c, "SAT-AM", "latest-sheet"))
    grid = store.query(lambda c: progress.session_grid(c, "SAT-AM"))

    assert sat_am.partial == 1 and [j.id for j in sat_am.missing[0].missing_judges] == ["J3"]
    assert grid.entries[0].cells == ["corrected", "scored", "missing"]
    score(store, j3, "101")
    assert store.query(lambda c: progress.session_progress(c, "SAT-AM", "latest-sheet")).complete == 1


def test_without_an_event_there_is_no_current_session(tmp_path: Path) -> None:
    config = make_box(tmp_path / "empty", package=None)
    with Store(config.db_path) as store:
        assert (
            store.query(lambda c: progress.current_session_progress(c, at("2026-03-14T12:00:00+00:00")))
            is None
        )
        assert store.query(progress.sessions_overview) == []
        assert msgspec.to_builtins(store.query(progress.sheet_feed)) == {"sheets": [], "last_seq": 0}


def test_the_feed_limit_is_clamped_to_one_to_five_hundred(store: Store) -> None:
    j1 = tablet(store, "J1")
    for entry_id in ("101", "102", "103"):
        score(store, j1, entry_id)

    assert [s.entry_id for s in store.query(lambda c: progress.sheet_feed(c, limit=0)).sheets] == ["103"]
    assert len(store.query(lambda c: progress.sheet_feed(c, after=0, limit=10_000)).sheets) == 3


def test_sheet_totals_add_in_decimal() -> None:
    assert progress.sheet_total({"a": 9.4, "b": 9.1, "c": 8.5}) == 27.0
    assert progress.sheet_total({"a": 0.1, "b": 0.2}) == 0.3
    assert progress.sheet_total({}) == 0.0
