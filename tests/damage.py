"""Damage a box's database the way a failing disk does: bytes overwritten in a leaf page of a table.

Used by tests/unit/test_database_damage.py and tests/integration/test_damaged_database.py. The page
is found in the file itself (``dbstat`` when the SQLite build has it, else by walking the table's
b-tree from its root page), and 512 bytes (one disk sector) of 0xff are written over the middle of
the page's cells: a record's header and its length fields are in there, so SQLite notices (a
quick_check fails; a read of the page fails with "database disk image is malformed" or runs out of
memory on a huge length). Bytes that land only inside a text value are damage SQLite cannot see;
the hash chains (`venuebox verify`) catch that, and it is not what these helpers make.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

from appliance.core.config import Config
from appliance.core.ledger import SheetReceipt, SheetSubmission, submit_sheets
from appliance.core.storage import Store
from appliance.shared.times import now_rfc3339
from appliance.storage.db import database_problems
from tests.conftest import paired_device

SECTOR = 512
LEAF_TABLE_PAGE = 0x0D
INTERIOR_TABLE_PAGE = 0x05


def store_sheets(config: Config, count: int, judges: tuple[str, ...] = ("J2", "J3", "J4", "J5")) -> int:
    """``count`` sheets through the real ledger path (hash-chained, in the outbox), as correction
    chains over every (entry, judge) pair of ``judges``; J1 is left without sheets, so a J1 tablet's
    first sheet for an entry is a new original (201 on a sound box). Closes the store (the WAL is
    checkpointed into the file). Returns the last sheet's seq."""
    with Store(config.db_path) as store:
        devices = {judge: paired_device(store, judge) for judge in judges}

        def survey(conn: sqlite3.Connection) -> tuple[dict[str, float], list[tuple[str, str]]]:
            values = {row["key"]: row["min"] for row in conn.execute("SELECT key, min FROM criteria")}
            pairs = conn.execute(
                "SELECT p.judge_id, e.entry_id FROM panels p JOIN entries e ON e.session_id = p.session_id"
                " AND e.event_id = p.event_id ORDER BY p.judge_id, e.session_id, e.running_order"
            ).fetchall()
            return values, [(judge, entry) for judge, entry in pairs if judge in devices]

        values, pairs = store.query(survey)
        heads: dict[tuple[str, str], str] = {}
        items = []
        for n in range(count):
            judge, entry = pair = pairs[n % len(pairs)]
            sheet_id = str(uuid.uuid4())
            items.append(
                (
                    devices[judge],
                    SheetSubmission(sheet_id, entry, values, now_rfc3339(), None, heads.get(pair)),
                )
            )
            heads[pair] = sheet_id
        outcomes = store.write_sync(lambda conn: submit_sheets(conn, items), timeout=120)
        assert all(isinstance(o, SheetReceipt) and o.status == 201 for o in outcomes), outcomes[:3]
        last = outcomes[-1]
        assert isinstance(last, SheetReceipt)
        return last.sheet.seq


def leaf_pages(db: Path, table: str) -> list[int]:
    """The page numbers of ``table``'s b-tree leaves, in key order (the last holds the newest rows)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        try:
            rows = conn.execute(
                "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY path", (table,)
            ).fetchall()
            return [row[0] for row in rows]
        except sqlite3.OperationalError:  # no dbstat in this SQLite build
            (root,) = conn.execute(
                "SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    return _walk(db.read_bytes(), page_size, root)


def _walk(data: bytes, page_size: int, page: int) -> list[int]:
    start = (page - 1) * page_size
    header = start + (100 if page == 1 else 0)
    kind = data[header]
    if kind == LEAF_TABLE_PAGE:
        return [page]
    assert kind == INTERIOR_TABLE_PAGE, f"page {page} is not a table b-tree page"
    cells = int.from_bytes(data[header + 3 : header + 5], "big")
    children = []
    for i in range(cells):
        offset = int.from_bytes(data[header + 12 + 2 * i : header + 14 + 2 * i], "big")
        children.append(int.from_bytes(data[start + offset : start + offset + 4], "big"))
    children.append(int.from_bytes(data[header + 8 : header + 12], "big"))  # the right-most child
    return [leaf for child in children for leaf in _walk(data, page_size, child)]


def checkpoint(db: Path) -> None:
    """Move every committed page from the WAL into the database file and empty the WAL, so what is
    written into the file is what SQLite reads (a running daemon's connections may hold reads)."""
    conn = sqlite3.connect(db, timeout=10, isolation_level=None)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0, "the checkpoint could not finish (a reader held on)"
    finally:
        conn.close()


def damage_page(db: Path, page: int, where: str = "middle") -> None:
    """One sector of 0xff over the ``middle`` of ``page``'s cells (the cell content area, which on a
    full page is most of it), or over its ``newest`` cells: SQLite fills a page's content area from
    the end down, so the start of the area holds the rows appended last (the ledger's head)."""
    with db.open("r+b") as f:
        f.seek(0)
        page_size = int.from_bytes(f.read(100)[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        start = (page - 1) * page_size
        f.seek(start + (100 if page == 1 else 0))
        header = f.read(8)
        content = int.from_bytes(header[5:7], "big") or 65536
        middle = (content + page_size) // 2
        first = content if where == "newest" else max(content, middle - SECTOR // 2)
        f.seek(start + first)
        f.write(b"\xff" * min(SECTOR, page_size - first))
        f.flush()


def make_every_connection_reread(db: Path) -> None:
    """Commit a change to page 1 from another connection (the schema version, rewritten as it is,
    as every `venuebox` command does when it opens the store). A running daemon's connections then
    find the WAL changed and drop their page caches, so none of them goes on using a clean copy of
    a page that is damaged on disk, as a box's would once the page left its cache."""
    conn = sqlite3.connect(db, timeout=10, isolation_level=None)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute(f"PRAGMA user_version = {int(version)}")
    finally:
        conn.close()


def damage_table(db: Path, table: str, which: str = "middle") -> int:
    """Damage one leaf page of ``table``: the middle of the ``middle`` leaf, or the newest rows of the
    ``last`` leaf (the chain head, which storing the next row reads); with a daemon running on the
    file or not. Returns the page number; asserts that SQLite sees the damage."""
    checkpoint(db)
    pages = leaf_pages(db, table)
    assert pages, f"{table} has no leaf page"
    if which == "middle":
        assert len(pages) >= 3, f"{table} needs several leaf pages, has {len(pages)}"
    page = pages[len(pages) // 2] if which == "middle" else pages[-1]
    damage_page(db, page, "middle" if which == "middle" else "newest")
    assert database_problems(db), "quick_check does not see the damage: the test would prove nothing"
    make_every_connection_reread(db)
    return page
