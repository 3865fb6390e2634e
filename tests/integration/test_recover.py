"""`venuebox recover` (docs/operations.md, "The SD card died / the database is damaged"): a new data
dir built from the newest snapshot that verifies, what the damaged database still holds and what the
cloud holds, each appended only where it continues the hash chains; what does not is listed, and
bad input is refused with one line, nothing written. Real files, the real CLI in its own process,
a real receiver."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from appliance.core.config import Config, load_config
from tests.conftest import RunningBox, box_id_of, make_box, venuebox, wait_for
from tests.damage import checkpoint, leaf_pages, store_sheets
from tests.integration.test_restore_identity import tree
from tests.integration.test_uplink import Cloud, active_alerts, uplink, uplinked_box

pytestmark = pytest.mark.timeout(180)


def ok(done: Any) -> Any:
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    return done


def rows(db: Path, table: str = "sheets") -> list[tuple[int, str, str]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        name = "sheet_id" if table == "sheets" else "action"
        return conn.execute(f"SELECT seq, {name}, hash FROM {table} ORDER BY seq").fetchall()
    finally:
        conn.close()


def snapshot_then_more(config: Config, before: int, after: int) -> None:
    """``before`` sheets, a snapshot, then ``after`` more (other judges: new originals and corrections)."""
    store_sheets(config, before, judges=("J2",))
    ok(venuebox(config, "backup", "now"))
    store_sheets(config, after, judges=("J3", "J4", "J5"))


def damage_after(config: Config, seq: int) -> list[int]:
    """Make the leaf page of the ledger that holds row ``seq`` (past the snapshot) unreadable;
    returns the seqs that page held (what no readable page holds any more)."""
    db = config.db_path
    checkpoint(db)
    pages = leaf_pages(db, "sheets")
    # Which rows live on which leaf: rowid order follows leaf order, so count cells per page.
    counts = _cells_per_leaf(db, pages)
    size = int.from_bytes(db.read_bytes()[16:18], "big")
    first = 1
    for number, cells in zip(pages, counts, strict=True):
        held = list(range(first, first + cells))
        first += cells
        if seq in held:
            with db.open("r+b") as f:  # the whole page unreadable, as a dead flash block is
                f.seek((number - 1) * size)
                f.write(b"\xff" * size)
            return held
    raise AssertionError(f"no leaf holds seq {seq}")


def _cells_per_leaf(db: Path, pages: list[int]) -> list[int]:
    data = db.read_bytes()
    size = int.from_bytes(data[16:18], "big")
    return [int.from_bytes(data[(p - 1) * size + 3 : (p - 1) * size + 5], "big") for p in pages]


def recover(*args: str) -> Any:
    return venuebox(None, "recover", *args, timeout=120)


def test_recover_takes_the_snapshot_then_every_row_the_damaged_database_still_holds(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box")
    snapshot_then_more(config, 40, 200)
    before = rows(config.db_path)
    audit_before = rows(config.db_path, "audit_log")
    lost_page = damage_after(config, 150)
    old = tree(config.data_dir)
    target = tmp_path / "venuebox-recovered"

    done = ok(recover("--from", str(config.data_dir), "--to", str(target), "--no-cloud"))

    out = done.stdout.splitlines()
    kept = [r for r in before if r[0] < lost_page[0]]  # the chain stops at the first lost row
    assert any(line_.startswith("snapshot  snapshot-") and ": 40 sheets" in line_ for line_ in out), out
    assert any(line_.startswith(f"salvage   {len(kept) - 40} sheets") for line_ in out), out
    assert "cloud     skipped: not asked (--no-cloud)" in out
    # Every row after the lost page is listed, never appended: nothing links it to the chain.
    after_gap = [r for r in before if r[0] > lost_page[-1]]
    listed = [line_ for line_ in out if line_.startswith("  salvage sheets seq ")]
    assert len(listed) == len(after_gap), out
    assert all(f"no source holds the row at seq {lost_page[0]}" in line_ for line_ in listed)
    assert rows(target / "venuebox.sqlite") == kept  # exactly the old rows, in the old places
    # The audit log is continued from the damaged file too, then says what the recovery did.
    recovered_audit = rows(target / "venuebox.sqlite", "audit_log")
    assert recovered_audit[: len(audit_before)] == audit_before
    assert [r[1] for r in recovered_audit[len(audit_before) :]] == ["backup.recover"]
    assert tree(config.data_dir) == old  # the old data dir is only read
    assert not list(tmp_path.glob(".venuebox-recovered*"))  # no staging left beside it

    recovered = load_config(target, environ={})
    verified = ok(venuebox(recovered, "verify")).stdout
    assert f"sheets: {len(kept)} rows, chain intact" in verified
    status = ok(venuebox(recovered, "status")).stdout.splitlines()
    line = next(line_ for line_ in status if line_.startswith("recovery "))
    assert f"40 sheets from the snapshot, {len(kept) - 40} salvaged, 0 from the cloud; 0 stored since" in line
    missing = next(line_ for line_ in status if line_.startswith("missing  "))
    assert f"{len(after_gap)} sheet(s) seen but not restorable" in missing
    assert f"{len(lost_page)} place(s) of the old ledger (it reached seq {before[-1][0]})" in missing
    as_json = json.loads(ok(venuebox(recovered, "status", "--json")).stdout)["recovery"]
    assert as_json["sheets"] == {"snapshot": 40, "salvage": len(kept) - 40, "cloud": 0}
    assert sorted(as_json["missing_sheet_ids"]) == sorted(r[1] for r in after_gap)
    # The salvaged sheets go to the cloud like any stored sheet.
    conn = sqlite3.connect(recovered.db_path)
    try:
        queued = {r[0] for r in conn.execute("SELECT sheet_seq FROM outbox WHERE kind = 'sheet'")}
    finally:
        conn.close()
    assert set(range(41, len(kept) + 1)) <= queued


def test_the_cloud_fills_the_gap_and_the_recovered_box_continues_where_the_cloud_is(tmp_path: Path) -> None:
    cloud = Cloud(tmp_path).start()
    try:
        box = uplinked_box(tmp_path, cloud)
        snapshot_then_more(box.config, 40, 200)
        box.start()
        wait_for("the uplink to send every sheet", lambda: len(cloud.stored("sheet")) == 240, timeout=60)
        box.stop()
        before = rows(box.config.db_path)
        lost_page = damage_after(box.config, 150)
        target = tmp_path / "venuebox-recovered"

        out = ok(recover("--from", str(box.config.data_dir), "--to", str(target))).stdout.splitlines()

        assert any(line_.startswith(f"salvage   {240 - 40 - len(lost_page)} sheets") for line_ in out), out
        assert any(line_.startswith(f"cloud     {len(lost_page)} sheets") for line_ in out), out
        assert not any(line_.startswith("not appended") for line_ in out), out
        assert rows(target / "venuebox.sqlite") == before
        recovered = RunningBox(
            load_config(target, environ={}), port=int(box.tablet_url.rsplit(":", 1)[1])
        ).start()
        try:
            status = ok(venuebox(recovered.config, "status")).stdout
            assert "missing  none known" in status
            # The salvaged sheets go again and are acked as held; the next sheet continues the chain.
            wait_for("the outbox to drain", lambda: _waiting(recovered.config) == 0, timeout=60)
        finally:
            recovered.stop()
        store_sheets(recovered.config, 1, judges=("J1",))
        recovered.start()
        try:
            wait_for("the next sheet at the cloud", lambda: len(cloud.stored("sheet")) == 241, timeout=60)
            assert not [name for name in active_alerts(recovered) if name.startswith("uplink-fork")]
            assert uplink(recovered)["state"] != "paused"
        finally:
            recovered.stop()
    finally:
        cloud.stop()


def _waiting(config: Config) -> int:
    conn = sqlite3.connect(config.db_path)
    try:
        return conn.execute("SELECT count(*) FROM outbox WHERE acked_at IS NULL").fetchone()[0]
    finally:
        conn.close()


def test_a_cloud_that_cannot_be_reached_is_reported_and_skipped(tmp_path: Path) -> None:
    cloud = Cloud(tmp_path).start()
    box = uplinked_box(tmp_path, cloud)
    cloud.stop()  # the uplink is set, the receiver is gone
    snapshot_then_more(box.config, 10, 20)
    target = tmp_path / "venuebox-recovered"
    out = ok(recover("--from", str(box.config.data_dir), "--to", str(target))).stdout.splitlines()
    assert any(line_.startswith("cloud     unreachable: ") for line_ in out), out
    assert len(rows(target / "venuebox.sqlite")) == 30  # the old database was whole: all of it
    status = ok(venuebox(target, "status")).stdout
    assert "         cloud unreachable: " in status


def refused(done: Any, *, says: str, target: Path, untouched: dict[Path, Any]) -> None:
    """One line on stderr that says what, a non-zero exit, nothing written."""
    assert done.returncode != 0, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("venuebox: error: "), done.stderr
    assert says in lines[0], lines[0]
    assert not target.exists() or (target.is_dir() and not any(target.iterdir()))
    assert not list(target.parent.glob(f".{target.name}.*")), "staging left behind"
    for root, was in untouched.items():
        assert tree(root) == was, f"{root} changed"


def test_bad_input_is_refused_with_one_line_and_nothing_written(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box")
    snapshot_then_more(config, 5, 5)
    other = make_box(tmp_path / "other")
    store_sheets(other, 3, judges=("J2",))
    ok(venuebox(other, "backup", "now"))
    box_id = box_id_of(config)
    untouched = {config.data_dir: tree(config.data_dir), other.data_dir: tree(other.data_dir)}
    target = tmp_path / "new"

    target.mkdir()
    refused(
        recover("--from", str(config.data_dir), "--to", str(target)),
        says="exists",
        target=target,
        untouched=untouched,
    )
    target.rmdir()
    refused(recover("--to", str(target)), says="give --snapshot", target=target, untouched=untouched)
    # The damaged database of one box with the snapshots (and key) of another.
    key = other.data_dir / "backup-identity.key"
    refused(
        recover(
            "--from",
            str(config.data_dir),
            "--snapshot",
            str(other.backup_path),
            "--identity",
            str(key),
            "--to",
            str(target),
        ),
        says=f"is of box {box_id}",
        target=target,
        untouched=untouched,
    )
    # A folder whose only snapshot does not verify (a truncated copy).
    broken = tmp_path / "broken"
    broken.mkdir()
    (snapshot,) = config.backup_path.glob("snapshot-*.sqlite.age")
    (broken / snapshot.name).write_bytes(snapshot.read_bytes()[:1000])
    shutil.copy(snapshot.with_name(snapshot.name.replace(".sqlite.age", ".keys.age")), broken)
    refused(
        recover("--from", str(config.data_dir), "--snapshot", str(broken), "--to", str(target)),
        says=f"no snapshot in {broken} verifies",
        target=target,
        untouched=untouched,
    )


def test_a_newer_snapshot_that_does_not_verify_is_passed_over_for_the_one_before(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box")
    snapshot_then_more(config, 5, 5)
    (first,) = config.backup_path.glob("snapshot-*.sqlite.age")
    ok(venuebox(config, "backup", "now"))
    newest = max(config.backup_path.glob("snapshot-*.sqlite.age"))
    assert newest != first
    newest.write_bytes(newest.read_bytes()[:-100])  # a snapshot cut short
    target = tmp_path / "venuebox-recovered"
    out = ok(recover("--from", str(config.data_dir), "--to", str(target))).stdout.splitlines()
    assert any(line_.startswith(f"passed over {newest.name}: ") for line_ in out), out
    assert any(line_.startswith(f"snapshot  {first.name}: 5 sheets") for line_ in out), out
    assert len(rows(target / "venuebox.sqlite")) == 10  # the rest salvaged from the whole database


def test_a_cloud_that_holds_another_history_for_this_box_is_refused(tmp_path: Path) -> None:
    """Two boxes ran with one box id (a copy of a data dir): the cloud holds the copy's sheets at
    this box's ledger places. Recovering from that cloud would fork: refused, nothing written."""
    cloud = Cloud(tmp_path).start()
    try:
        box = uplinked_box(tmp_path, cloud)
        twin = RunningBox(load_config(tmp_path / "twin", environ={}))
        shutil.copytree(box.config.data_dir, twin.config.data_dir)
        store_sheets(twin.config, 5, judges=("J2",))
        twin.start()
        wait_for("the twin's sheets at the cloud", lambda: len(cloud.stored("sheet")) == 5, timeout=60)
        twin.stop()
        snapshot_then_more(box.config, 3, 3)
        untouched = {box.config.data_dir: tree(box.config.data_dir)}
        target = tmp_path / "venuebox-recovered"
        refused(
            recover("--from", str(box.config.data_dir), "--to", str(target)),
            says="answers for another box",
            target=target,
            untouched=untouched,
        )
        out = ok(recover("--from", str(box.config.data_dir), "--to", str(target), "--no-cloud")).stdout
        assert "cloud     skipped: not asked (--no-cloud)" in out
    finally:
        cloud.stop()
