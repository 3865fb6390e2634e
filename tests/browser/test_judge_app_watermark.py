"""The judge app and the box's safe watermark (docs/protocol.md, "The safe watermark"), in Debian's
Chromium against real daemons: a sheet the box stored stays kept in the tablet's IndexedDB until a
verified snapshot covers it; a box with a new epoch gets every kept sheet again (200 for those it
has); a box restored from its snapshot gets back the sheet it lost (201), stored once, with the
correction the judge made meanwhile after it."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Response, expect

from appliance.core.config import load_config
from appliance.core.storage import Store
from appliance.core.watermark import new_epoch
from tests.browser.conftest import HEARTBEAT_S, NEEDS_CHROMIUM, JudgeApp, free_port
from tests.conftest import RunningBox, make_box, new_code, venuebox, wait_for

pytestmark = [pytest.mark.timeout(120), NEEDS_CHROMIUM]

# The box reads its mark at most once a second; the app hears it with its next heartbeat.
MARK_S = 1 + HEARTBEAT_S + 3


@pytest.fixture
def box(tmp_path: Path) -> Iterator[RunningBox]:
    """A box on a port it keeps across restarts; no scheduled snapshot during a test (the one after
    pairing and `venuebox backup now` are the only ones)."""
    config = make_box(
        tmp_path / "box",
        heartbeat_interval_s=HEARTBEAT_S,
        device_rate_per_s=1000.0,
        device_burst=1000,
        backup_interval_s=3600.0,
    )
    running = RunningBox(config, port=free_port()).start()
    yield running
    running.stop()


def query(db_path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def ledger(box: RunningBox) -> dict[str, int]:
    """The box's ledger: sheet id -> seq (a sheet stored twice would fail here: sheet_id is unique)."""
    rows = query(box.config.db_path, "SELECT sheet_id, seq FROM sheets ORDER BY seq")
    assert len({sheet_id for sheet_id, _ in rows}) == len(rows)
    return dict(rows)


def epoch_of(db_path: Path) -> str:
    return query(db_path, "SELECT ledger_epoch FROM box WHERE id = 1")[0][0]


def paired(box: RunningBox, open_app: Callable[..., JudgeApp]) -> JudgeApp:
    """The app paired as J1, after the snapshot the box takes right after a pairing (so what is
    scored next is in no snapshot yet)."""
    app = open_app(box)
    app.pair(new_code(box.config, "J1"))
    verified = "SELECT count(*) FROM snapshots WHERE verify_ok = 1"
    wait_for("the snapshot after pairing", lambda: query(box.config.db_path, verified)[0][0] == 1)
    app.page.get_by_role("link", name="Score next: entry 101").click()
    return app


def kept_ids(app: JudgeApp) -> list[str]:
    return [s["sheet_id"] for s in app.kept_sheets() if s["kept"] is not None]


def wait_until_kept(app: JudgeApp, count: int, epoch: str, timeout: float = 15.0) -> list[dict[str, Any]]:
    """The app's sheets once exactly ``count`` are kept, all under ``epoch``, none queued."""

    def settled() -> list[dict[str, Any]] | None:
        sheets = app.kept_sheets()
        kept = [s for s in sheets if s["kept"] is not None]
        queued = [s for s in sheets if s["state"] == "queued"]
        ok = len(kept) == count and not queued and all(s["kept"]["epoch"] == epoch for s in kept)
        return sheets if ok else None

    return wait_for(f"{count} sheets kept under epoch {epoch}", settled, timeout)


def later_id(stored: dict[str, int]) -> str:
    """The sheet the box stored last."""
    return max(stored, key=stored.__getitem__)


def batch_results(responses: list[Response]) -> list[tuple[str, int]]:
    """(sheet_id, status) of every item the box answered in these batch calls, in order."""
    return [(item["sheet_id"], item["status"]) for r in responses for item in r.json()["results"]]


def test_kept_sheets_are_let_go_once_a_verified_snapshot_holds_them(
    box: RunningBox, open_app: Callable[..., JudgeApp]
) -> None:
    app = paired(box, open_app)
    page = app.page
    epoch = epoch_of(box.config.db_path)
    for entry_id in ("101", "102", "103"):
        app.score(entry_id, "9.0", "8.5", "9.5")
    sheets = wait_until_kept(app, 3, epoch)
    seqs = ledger(box)
    # Kept with the seq the box gave each, not waiting: nothing to send, no banner, scored.
    assert [s["kept"]["seq"] for s in sheets] == [seqs[s["sheet_id"]] for s in sheets] == [1, 2, 3]
    assert all(s["state"] == "stored" for s in sheets)
    expect(page.locator("#queue-banner")).to_be_empty()
    page.goto(f"{app.origin}/#/sessions")
    for entry_id in ("101", "102", "103"):
        expect(page.locator(f'a[data-key="{entry_id}"] .badge')).to_have_text("Scored")
    expect(page.locator('a[data-key="104"] .badge')).to_have_text("Not scored")
    # The box hears the same: a heartbeat after they were kept reports no sheet waiting.
    beats = "SELECT rowid, queue_depth FROM heartbeats WHERE rowid > ? ORDER BY rowid"
    last = query(box.config.db_path, "SELECT max(rowid) FROM heartbeats")[0][0]
    beat = wait_for("a heartbeat", lambda: query(box.config.db_path, beats, last), MARK_S)
    assert beat[0][1] == 0

    taken = venuebox(box.config, "backup", "now")  # takes a snapshot and verifies it
    assert taken.returncode == 0, taken.stderr
    page.get_by_role("link", name="Score next: entry 104").click()
    app.score("104", "7.5", "8.0", "8.5")  # after the snapshot: the box could still lose it
    app.expect_on_the_box("104")
    later = ledger(box)
    assert len(later) == 4
    # Within a heartbeat of the mark moving on, the three the snapshot holds are let go; the
    # tablet still has them (its history of the judge's sheets), no longer kept, never resent.
    wait_for("the snapshot's sheets let go", lambda: kept_ids(app) == [later_id(later)], MARK_S + 5)
    sheets = app.kept_sheets()
    assert [(s["entry_id"], s["state"]) for s in sheets] == [
        ("101", "stored"),
        ("102", "stored"),
        ("103", "stored"),
        ("104", "stored"),
    ]
    assert sheets[3]["kept"] == {"seq": 4, "epoch": epoch}
    assert app.stored("ledger") == {"epoch": epoch, "safe_seq": 3}
    assert ledger(box) == later
    app.assert_stayed_on_the_box()


def test_a_new_epoch_sends_every_kept_sheet_again_and_the_box_keeps_each_once(
    box: RunningBox, open_app: Callable[..., JudgeApp]
) -> None:
    app = paired(box, open_app)
    old_epoch = epoch_of(box.config.db_path)
    for entry_id in ("101", "102", "103"):
        app.score(entry_id, "9.0", "8.5", "9.5")
    made = [s["sheet_id"] for s in wait_until_kept(app, 3, old_epoch)]
    stored = ledger(box)
    assert list(stored) == made

    # The box is rebuilt (here only its epoch changes, as for a box rebuilt from its backups), at the
    # same address.
    responses: list[Response] = []
    app.page.on("response", lambda r: responses.append(r) if r.url.endswith("/api/v1/sheets/batch") else None)
    box.stop()
    with Store(box.config.db_path) as store:
        epoch = store.write_sync(new_epoch)
    assert epoch != old_epoch
    box.start()

    sheets = wait_until_kept(app, 3, epoch)
    # Sent again in their first order, each a replay (200): the box has each sheet once, as before.
    assert batch_results(responses) == [(sheet_id, 200) for sheet_id in made]
    assert [s["sheet_id"] for s in sheets] == made
    assert [s["kept"]["seq"] for s in sheets] == [stored[sheet_id] for sheet_id in made]
    assert ledger(box) == stored
    wait_for("the new epoch kept", lambda: (app.stored("ledger") or {}).get("epoch") == epoch)
    expect(app.page.locator("#queue-banner")).to_be_empty()
    app.assert_stayed_on_the_box()


def test_a_box_restored_from_its_snapshot_gets_back_the_sheet_it_lost_and_the_correction_after_it(
    box: RunningBox, open_app: Callable[..., JudgeApp], tmp_path: Path
) -> None:
    app = paired(box, open_app)
    page = app.page
    epoch = epoch_of(box.config.db_path)
    app.score("101", "9.0", "8.5", "9.5")
    app.score("102", "8.0", "8.5", "9.0")
    app.expect_on_the_box("102")  # before the snapshot is taken
    taken = venuebox(box.config, "backup", "now")
    assert taken.returncode == 0, taken.stderr
    snapshot = re.search(r"^snapshot (\S+) \(", taken.stdout, re.MULTILINE)
    assert snapshot is not None, taken.stdout
    app.score("103", "7.0", "7.5", "8.0")  # in no snapshot: the box's storage dies with it
    wait_until_kept(app, 1, epoch, timeout=MARK_S + 5)
    lost = kept_ids(app)[0]
    assert ledger(box)[lost] == 3

    # The box is gone. Meanwhile the judge corrects entry 103: the correction waits, alone (the
    # kept sheet 103 is not waiting: it was stored).
    box.stop()
    expect(page.locator("#link-state")).to_have_text("Offline", timeout=MARK_S * 1000)
    app.open_entry("103")
    page.get_by_role("link", name="Correct this sheet").click()
    page.get_by_label("Technique", exact=True).fill("7.5")
    page.get_by_role("button", name="Submit correction").click()
    expect(page.locator(".notice")).to_contain_text("Correction for entry 103 saved on this tablet")
    expect(page.locator("#queue-banner")).to_have_text("offline — 1 sheet waiting")
    correction = next(s for s in app.kept_sheets() if s["state"] == "queued")
    assert correction["supersedes"] == lost

    # The tech restores the last snapshot into a new data dir and runs it at the same address.
    restored_dir = tmp_path / "restored"
    done = venuebox(box.config, "restore", snapshot.group(1), "--to", str(restored_dir))
    assert done.returncode == 0, done.stderr
    restored = RunningBox(load_config(restored_dir, environ={}), port=box.port)
    new = epoch_of(restored.config.db_path)
    if new == epoch:
        # `restore` does not give the restored box a new epoch (yet): do what it should.
        with Store(restored.config.db_path) as store:
            new = store.write_sync(new_epoch)
    assert len(ledger(restored)) == 2  # the snapshot's
    responses: list[Response] = []
    page.on("response", lambda r: responses.append(r) if r.url.endswith("/api/v1/sheets/batch") else None)
    restored.start()
    try:
        sheets = wait_until_kept(app, 2, new, timeout=20)
        # The lost sheet is stored again (201), then the correction after it; 101 and 102 (in the
        # snapshot, let go by the tablet) are not sent again. The correction may reach the box
        # first (the app sends what waits as soon as the box answers, maybe before it hears the
        # new epoch): then the box does not know what it corrects (409), and it waits for it.
        results = batch_results(responses)
        fixed = correction["sheet_id"]
        assert results in ([(lost, 201), (fixed, 201)], [(fixed, 409), (lost, 201), (fixed, 201)])
        assert [s["sheet_id"] for s in sheets if s["kept"]] == [lost, fixed]
        stored = ledger(restored)
        assert len(stored) == 4 and stored[lost] == 3 and stored[fixed] == 4
        head = query(restored.config.db_path, "SELECT supersedes FROM sheets WHERE sheet_id = ?", fixed)
        assert head == [(lost,)]
        assert [s["state"] for s in sheets] == ["stored"] * 4  # nothing set aside
        expect(page.locator("#queue-banner")).to_be_empty()
        expect(page.locator("#attention-banner")).to_be_empty()
        app.assert_stayed_on_the_box()
    finally:
        restored.stop()


def test_the_queue_an_older_app_left_on_the_tablet_is_sent_and_kept(
    box: RunningBox, open_app: Callable[..., JudgeApp]
) -> None:
    """A tablet's database as the previous version of the app left it (version 1, sheets without
    `kept`) opens in this one with nothing lost: the queued sheet is sent, then kept; the stored
    one is done, as it was, and never sent again."""
    tablet = box.pair("J1")
    verified = "SELECT count(*) FROM snapshots WHERE verify_ok = 1"
    wait_for("the snapshot after pairing", lambda: query(box.config.db_path, verified)[0][0] == 1)
    pairing = {**tablet.pairing, "device_name": "older app", "paired_at": "2026-03-14T14:00:00.000Z"}

    def old_record(sheet_id: str, entry_id: str, seq: int, state: str) -> dict[str, Any]:
        body = {
            "sheet_id": sheet_id,
            "entry_id": entry_id,
            "values": {"technique": 9.0, "performance": 9.0, "choreography": 9.0},
            "submitted_at": "2026-03-14T10:42:07.000-04:00",
        }
        return {
            "sheet_id": sheet_id,
            "seq": seq,
            "judge_id": "J1",
            "event_id": pairing["event"]["id"],
            "entry_id": entry_id,
            "body": body,
            "state": state,
            "kept_at": "2026-03-14T14:42:07.000Z",
            "problem": None,
            "receipt": {"sheet_id": sheet_id, "seq": 7} if state == "stored" else None,
        }

    done = old_record("0b7f5f43-5d1c-4c83-9a57-5a4c9a0f6e01", "102", 1, "stored")
    waiting = old_record("0b7f5f43-5d1c-4c83-9a57-5a4c9a0f6e02", "101", 2, "queued")
    # The older app's database, written from a page of the box's origin that is not the app.
    app = open_app(box, service_workers="block")
    app.page.goto(f"{app.origin}/icon.svg")
    app.page.evaluate(
        """([pairing, records]) => new Promise((resolve, reject) => {
            const gone = indexedDB.deleteDatabase("venuebox-judge");
            gone.onerror = () => reject(gone.error);
            gone.onsuccess = () => {
                const opened = indexedDB.open("venuebox-judge", 1);
                opened.onupgradeneeded = () => {
                    opened.result.createObjectStore("kv");
                    opened.result.createObjectStore("sheets", { keyPath: "sheet_id" });
                };
                opened.onerror = () => reject(opened.error);
                opened.onsuccess = () => {
                    const db = opened.result;
                    const tx = db.transaction(["kv", "sheets"], "readwrite");
                    tx.objectStore("kv").put(pairing, "pairing");
                    for (const record of records) tx.objectStore("sheets").put(record);
                    tx.oncomplete = () => { db.close(); resolve(); };
                    tx.onerror = () => reject(tx.error);
                };
            };
        })""",
        [pairing, [done, waiting]],
    )
    app.open()
    expect(app.page.get_by_role("heading", level=1)).to_have_text("Your entries")
    epoch = epoch_of(box.config.db_path)
    sheets = wait_until_kept(app, 1, epoch)
    assert ledger(box) == {waiting["sheet_id"]: 1}
    assert [(s["sheet_id"], s["state"], s["kept"]) for s in sheets] == [
        (done["sheet_id"], "stored", None),
        (waiting["sheet_id"], "stored", {"seq": 1, "epoch": epoch}),
    ]
    app.assert_stayed_on_the_box()
