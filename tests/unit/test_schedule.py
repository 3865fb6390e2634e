"""Day-of schedule changes on a real SQLite file, called as the writer calls them: changes refused
when typed leave the draft as it was, validate reports every problem at once, publish is all or
nothing as the next version with an audit record, rollback copies an earlier version, and sheets
are never touched."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.core import schedule, sessions
from appliance.core.box import freeze, unfreeze
from appliance.core.config import Config
from appliance.core.ledger import SheetReceipt, SheetSubmission, submit_sheets
from appliance.core.progress import session_progress
from appliance.core.results import compute, load
from appliance.core.storage import Store
from appliance.shared.errors import Frozen, InvalidInput, NotFound, ScheduleConflict, SessionLocked
from appliance.shared.schedule_wire import ScheduleChange
from tests.conftest import make_box, paired_device
from tests.schedule_package import EMPTY_SESSION, dancer, schedule_package

AM, PM = "SAT-AM", "SAT-PM"


@pytest.fixture
def box(tmp_path: Path) -> Config:
    return make_box(tmp_path / "box", schedule_package(tmp_path / "package"))


@pytest.fixture
def store(box: Config) -> Iterator[Store]:
    with Store(box.db_path) as store:
        yield store


def typed(store: Store, box: Config, kind: str, participants: str | None = None, **fields: Any) -> Any:
    change = schedule.stamp(kind, "test", f"{kind} for a test", **fields)
    return store.write_sync(lambda c: schedule.add_change(c, change, participants, box.data_key_path))


def draft_size(store: Store) -> int:
    return len(store.query(schedule.draft).changes)


def slot(store: Store, entry_id: str) -> tuple[Any, ...]:
    return tuple(
        store.query(
            lambda c: c.execute(
                "SELECT session_id, running_order, scheduled_at, scratched FROM entries WHERE entry_id = ?",
                (entry_id,),
            ).fetchone()
        )
    )


def orders(store: Store, session_id: str) -> list[tuple[str, int]]:
    sql = "SELECT entry_id, running_order FROM entries WHERE session_id = ? ORDER BY running_order"
    return [tuple(r) for r in store.query(lambda c: c.execute(sql, (session_id,)).fetchall())]


def sheets_dump(store: Store) -> list[tuple[Any, ...]]:
    return [
        tuple(r) for r in store.query(lambda c: c.execute("SELECT * FROM sheets ORDER BY seq").fetchall())
    ]


def score(store: Store, judge_id: str, entry_id: str) -> None:
    device = paired_device(store, judge_id)
    sheet = SheetSubmission(
        str(uuid.uuid4()),
        entry_id,
        {"technique": 9.4, "performance": 9.1, "choreography": 8.5},
        "2026-03-14T10:42:07-04:00",
        None,
        None,
    )
    outcome = store.write_sync(lambda c: submit_sheets(c, [(device, sheet)]))[0]
    assert isinstance(outcome, SheetReceipt)


def publish(store: Store, box: Config, reason: str = "day-of changes") -> Any:
    return store.write_sync(lambda c: schedule.publish(c, "test", reason, box.data_key_path))


def test_the_import_is_version_1(store: Store) -> None:
    assert store.query(schedule.current_version) == 1
    listed = store.query(schedule.versions)
    assert [(v.version, v.reason, v.actor) for v in listed] == [(1, "event import", "test")]


def test_a_change_naming_an_unknown_entry_or_session_is_refused_and_the_draft_stays(
    store: Store, box: Config
) -> None:
    typed(store, box, "scratch", entry_id="101")
    with pytest.raises(NotFound, match="'999'"):
        typed(store, box, "scratch", entry_id="999")
    with pytest.raises(NotFound, match="'NOPE'"):
        typed(store, box, "move", entry_id="102", session_id="NOPE")
    with pytest.raises(ScheduleConflict, match=f"{EMPTY_SESSION}.*no judge"):
        typed(store, box, "move", entry_id="102", session_id=EMPTY_SESSION)
    with pytest.raises(ScheduleConflict, match="already scratched"):
        typed(store, box, "scratch", entry_id="101")
    with pytest.raises(ScheduleConflict, match="already exists"):
        typed(store, box, "walk_on", entry_id="101", session_id=AM, title="Again")
    with pytest.raises(InvalidInput, match="RFC 3339"):
        typed(store, box, "retime", entry_id="101", scheduled_at="ten past eight")
    assert draft_size(store) == 1
    assert slot(store, "101")[3] == 0  # nothing applied until a publish


def test_a_move_to_a_session_without_the_judges_who_scored_the_entry_is_refused(
    store: Store, box: Config
) -> None:
    score(store, "J1", "101")  # J1 sits on SAT-AM and SAT-PM, not SUN-AM
    with pytest.raises(ScheduleConflict, match="J1 scored it"):
        typed(store, box, "move", entry_id="101", session_id="SUN-AM")
    typed(store, box, "move", entry_id="101", session_id=PM, position=2)
    assert draft_size(store) == 1


def test_position_places_the_entry_and_renumbers_the_following_ones(store: Store, box: Config) -> None:
    before = orders(store, PM)
    was = slot(store, "101")
    typed(store, box, "move", entry_id="101", session_id=PM, position=3)
    typed(
        store, box, "walk_on", entry_id="501", session_id=PM, position=1, title="Late Bloom", category="Solo"
    )
    typed(store, box, "move", entry_id="140", session_id=PM, position=1)
    published = publish(store, box)
    assert published.version == 2
    after = orders(store, PM)
    assert [e for e, _ in after][:5] == ["140", "501", "121", "122", "101"]
    assert [o for _, o in after] == sorted({o for _, o in after})  # strictly increasing, no duplicates
    assert len(after) == len(before) + 2
    # A move keeps scheduled_at unless retimed; the AM session closes its gap with nothing renumbered.
    assert slot(store, "101")[2] == was[2]
    assert orders(store, AM)[0] == ("102", 2)


def test_validate_reports_every_problem_at_once(store: Store, box: Config) -> None:
    score(store, "J1", "103")
    typed(store, box, "scratch", entry_id="103")
    # A walk-on sharing 105's dancer 3 minutes after it (min_turnaround_min is 10).
    typed(
        store,
        box,
        "walk_on",
        dancer("105"),
        entry_id="501",
        session_id=AM,
        title="Encore",
        scheduled_at="2026-03-14T08:15:00-04:00",
    )
    # A duplicate running order planted behind the draft's back.
    store.write_sync(lambda c: c.execute("UPDATE entries SET running_order = 1 WHERE entry_id = '102'"))
    found = store.query(lambda c: schedule.validate(c, box.data_key_path))
    codes = sorted((p.code, p.severity) for p in found.problems)
    assert codes == [
        ("duplicate-order", "error"),
        ("scratched-with-sheets", "warning"),
        ("turnaround", "warning"),
    ]
    assert not found.ok and found.changes == 2
    turnaround = next(p for p in found.problems if p.code == "turnaround")
    assert turnaround.entry_ids == ["105", "501"] and "P. D." in turnaround.message
    assert "Dancer" not in turnaround.message  # participants are masked
    with pytest.raises(ScheduleConflict, match="share running order 1"):
        publish(store, box)
    assert store.query(schedule.current_version) == 1 and draft_size(store) == 2


def test_a_locked_session_refuses_changes_to_it_named(store: Store, box: Config) -> None:
    typed(store, box, "scratch", entry_id="121")
    store.write_sync(lambda c: sessions.lock(c, PM, "awards"))
    with pytest.raises(SessionLocked, match=f"entry '122'.*{PM}"):
        typed(store, box, "scratch", entry_id="122")
    with pytest.raises(SessionLocked, match=f"session '{PM}'"):
        typed(store, box, "retime", session_id=PM, scheduled_at="2026-03-14T13:20:00-04:00")
    with pytest.raises(SessionLocked):
        typed(store, box, "move", entry_id="101", session_id=PM)
    # The change typed before the lock no longer applies: validate says so and publish refuses.
    found = store.query(lambda c: schedule.validate(c, box.data_key_path))
    assert [p.code for p in found.problems] == ["refused-change"] and "'121'" in found.problems[0].message
    with pytest.raises(ScheduleConflict, match="locked"):
        publish(store, box)
    assert slot(store, "121")[3] == 0


def test_a_frozen_box_refuses_a_publish_and_nothing_changes(store: Store, box: Config) -> None:
    typed(store, box, "scratch", entry_id="101")
    store.write_sync(lambda c: freeze(c, "fire alarm", "test"))
    with pytest.raises(Frozen):
        publish(store, box)
    with pytest.raises(Frozen):
        store.write_sync(lambda c: schedule.rollback(c, 1, "test", "undo"))
    assert (
        slot(store, "101")[3] == 0 and store.query(schedule.current_version) == 1 and draft_size(store) == 1
    )
    store.write_sync(lambda c: unfreeze(c, "test"))
    assert publish(store, box).version == 2


def test_publish_is_an_audit_record_with_its_diff_and_rollback_copies_a_version(
    store: Store, box: Config
) -> None:
    score(store, "J1", "101")
    score(store, "J2", "102")
    sheets = sheets_dump(store)
    original = {e: slot(store, e) for e in ("101", "102", "121")}
    typed(store, box, "scratch", entry_id="101")
    typed(store, box, "retime", entry_id="121", scheduled_at="2026-03-14T13:30:00-04:00")
    typed(store, box, "walk_on", "Zed Walker", entry_id="501", session_id=AM, position=2, title="Walk On")
    typed(store, box, "retime", session_id=PM, scheduled_at="2026-03-14T13:20:00-04:00")
    published = publish(store, box, "morning changes")
    assert published.version == 2
    fields = sorted((d.field, d.entry_id or d.session_id) for d in published.diff)
    assert ("added", "501") in fields and ("scratched", "101") in fields and ("starts_at", PM) in fields
    assert ("place", "102") in fields  # renumbered behind the walk-on
    row = store.query(
        lambda c: c.execute(
            "SELECT actor, detail FROM audit_log WHERE action = 'schedule.publish'"
        ).fetchone()
    )
    detail = json.loads(row[1])
    assert row[0] == "test" and detail["version"] == 2 and detail["reason"] == "morning changes"
    assert "Zed" not in row[1] and detail["changes"][2]["participants"] == 1
    queued = store.query(
        lambda c: c.execute(
            "SELECT count(*) FROM outbox WHERE kind = 'audit' AND payload LIKE '%schedule.publish%'"
        ).fetchone()[0]
    )
    assert queued == 1

    rolled = store.write_sync(lambda c: schedule.rollback(c, 1, "test", "back to the printed order"))
    assert rolled.version == 3
    assert {e: slot(store, e) for e in original} == original
    assert slot(store, "501")[:2] == (None, None)  # the walk-on waits in the unscheduled pool
    listed = store.query(schedule.versions)
    assert [(v.version, v.reason) for v in listed] == [
        (1, "event import"),
        (2, "morning changes"),
        (3, "back to the printed order"),
    ]
    assert listed[2].changes[0].kind == "rollback" and listed[2].changes[0].version == 1
    assert sheets_dump(store) == sheets  # sheets untouched by any of it


def test_results_and_missing_leave_scratched_entries_out_and_take_the_walk_on(
    store: Store, box: Config
) -> None:
    score(store, "J1", "101")
    score(store, "J1", "105")

    def missing_now() -> set[str]:
        return {m.entry_id for m in store.query(lambda c: session_progress(c, AM, "first", 1000)).missing}

    assert "101" in missing_now()  # partial: J2 and J3 have not scored it
    typed(store, box, "scratch", entry_id="101")
    typed(
        store,
        box,
        "walk_on",
        entry_id="501",
        session_id=AM,
        position=1,
        title="Walk On",
        category="Solo",
        division="Senior",
    )
    publish(store, box)
    entries = {e.entry_id for e in store.query(load).entries}
    assert "101" not in entries and "501" in entries
    assert "501" in {r.entry.entry_id for r in compute(store.query(load)).entries}
    # The walk-on runs first and nobody scored it while 105 is scored: skipped, so missing.
    assert "101" not in missing_now() and "501" in missing_now()
    progress = store.query(lambda c: session_progress(c, AM, "first", 1000))
    assert progress.entries == 20  # 20 entries, one scratched, one walked on


def test_discard_drops_the_draft(store: Store, box: Config) -> None:
    typed(store, box, "scratch", entry_id="101")
    assert store.write_sync(lambda c: schedule.discard(c, "test")) == 1
    assert draft_size(store) == 0
    with pytest.raises(ScheduleConflict, match="empty"):
        publish(store, box)


def test_a_restore_brings_a_scratched_entry_back(store: Store, box: Config) -> None:
    typed(store, box, "scratch", entry_id="101")
    publish(store, box)
    with pytest.raises(ScheduleConflict, match="not scratched"):
        typed(store, box, "restore", entry_id="102")
    typed(store, box, "restore", entry_id="101")
    publish(store, box)
    assert slot(store, "101")[3] == 0 and store.query(schedule.current_version) == 3


def test_a_change_is_a_struct_the_wire_can_carry() -> None:
    change = schedule.stamp("move", "cli", "costume change", entry_id="101", session_id=PM, position=1)
    assert isinstance(change, ScheduleChange) and change.at


def test_the_runbook_names_every_schedule_command() -> None:
    from appliance.shell.cli.schedule import schedule as group

    text = (Path(__file__).parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")
    section = text.split("### Day-of changes", 1)[1].split("\n## ", 1)[0]
    for name in group.commands:
        assert f"venuebox schedule {name}" in section, name
    for words in ("draft", "validate", "publish", "rollback", "min_turnaround_min", "unscheduled pool"):
        assert words in section


def test_a_drafted_walk_on_s_participants_survive_a_key_rotation(store: Store, box: Config) -> None:
    from appliance.core import data_key, personal_fields

    typed(store, box, "walk_on", "Ana Roy; Léa Côté", entry_id="501", session_id=AM, title="Walk On")
    data_key.rotate(box, store)
    publish(store, box)

    def names(conn: Any, key: bytes) -> Any:
        return personal_fields.value(conn, key, "501", "participants")

    assert store.query(data_key.with_key(box.data_key_path, names)) == ["Ana Roy", "Léa Côté"]
