"""The parts of `venuebox recover` (appliance/core/recovery.py) that decide what is appended: the chain
walk over several sources, and the salvage that reads a damaged file's pages itself."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from appliance.core.chain import head, link
from appliance.core.recovery import Candidate, continue_chain, salvage, table_columns
from appliance.storage.db import connect
from tests.conftest import make_box
from tests.damage import store_sheets


def sheet(n: int, **changes: Any) -> dict[str, Any]:
    return {
        "sheet_id": f"s{n}",
        "event_id": "e",
        "entry_id": f"entry{n}",
        "judge_id": "J1",
        "device_id": "d",
        "score_values": '{"a":9.5}',
        "comment": None,
        "submitted_at": "2026-12-07T10:00:00Z",
        "received_at": "2026-12-07T10:00:01Z",
        "supersedes": None,
        "content_hash": "c" * 64,
        **changes,
    }


def chain_of(count: int, tail: tuple[int, str] = (0, "0" * 64)) -> list[dict[str, Any]]:
    rows = []
    for n in range(count):
        row = link("sheets", tail, sheet(tail[0] + n + 1))
        rows.append(row)
        tail = (row["seq"], row["hash"])
    return rows


def test_each_place_takes_the_first_source_whose_row_links_and_whose_hash_recomputes() -> None:
    snapshot, rest = chain_of(2), None
    rest = chain_of(4, (2, snapshot[-1]["hash"]))  # seqs 3..6
    altered = {**rest[0], "score_values": '{"a":10.0}'}  # seq 3 damaged in the old file
    offered = [
        Candidate("salvage", altered),
        *(Candidate("salvage", row) for row in rest[1:3]),  # 4, 5
        *(Candidate("cloud", row) for row in rest),  # 3..6
    ]
    taken, listed = continue_chain("sheets", (2, snapshot[-1]["hash"]), offered)
    assert [(c.seq, c.source) for c in taken] == [(3, "cloud"), (4, "salvage"), (5, "salvage"), (6, "cloud")]
    assert [(item.source, item.seq, item.reason) for item in listed] == [
        ("salvage", 3, "its hash does not match its content (damaged or altered)")
    ]


def test_rows_after_a_gap_or_of_another_history_are_listed_never_taken() -> None:
    ours = chain_of(5)
    theirs = chain_of(3, (1, "f" * 64))  # seqs 2..4 after another row 1
    offered = [Candidate("salvage", ours[1]), Candidate("salvage", ours[3]), Candidate("cloud", theirs[1])]
    taken, listed = continue_chain("sheets", (1, ours[0]["hash"]), offered)
    assert [c.seq for c in taken] == [2]
    assert [(item.seq, item.reason) for item in listed] == [
        (3, "it does not link to the row at seq 2 as recovered (another history)"),
        (4, "no source holds the row at seq 3 that would link it to the chain"),
    ]


def _columns(db: Path) -> tuple[dict[str, list[str]], int]:
    with contextlib.closing(connect(db, readonly=True)) as conn:
        return table_columns(conn), conn.execute("PRAGMA page_size").fetchone()[0]


def test_salvage_reads_rows_still_in_the_write_ahead_log_and_without_the_first_page(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box")
    store_sheets(config, 30)
    columns, page_size = _columns(config.db_path)
    # Ten more rows committed to the WAL only: the copy is taken before any checkpoint.
    conn = sqlite3.connect(config.db_path, isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    tail = head(conn, "sheets")
    extra = chain_of(10, tail)
    conn.execute("BEGIN")
    for row in extra:
        conn.execute(
            f"INSERT INTO sheets ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values())
        )
    conn.execute("COMMIT")
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("venuebox.sqlite", "venuebox.sqlite-wal"):
        shutil.copy(config.data_dir / name, copy / name)
    expected = [tuple(r) for r in conn.execute("SELECT seq, hash FROM sheets ORDER BY seq")]
    conn.close()
    with (copy / "venuebox.sqlite").open("r+b") as f:  # the header and the schema gone
        f.write(b"\0" * page_size)

    found = salvage(copy / "venuebox.sqlite", columns, page_size, lambda _: None)

    got = {(c.seq, c.row["hash"]) for c in found.rows["sheets"]}
    assert set(expected) <= got
    assert len(expected) == 40 and (extra[-1]["seq"], extra[-1]["hash"]) in got
    assert found.state.state == "used"
    taken, listed = continue_chain("sheets", (0, "0" * 64), found.rows["sheets"])
    assert [(c.seq, c.row["hash"]) for c in taken] == expected and listed == []


def test_salvage_of_a_file_that_cannot_be_read_says_so(tmp_path: Path) -> None:
    found = salvage(tmp_path / "gone.sqlite", {"sheets": []}, 4096, lambda _: None)
    assert found.state.state == "unreadable" and "cannot be read" in found.state.detail
