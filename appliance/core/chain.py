"""Hash chains over the append-only tables (the score ledger and the audit log).

Each row stores ``prev_hash`` (the hash of the row before it, or GENESIS) and ``hash`` =
sha256(prev_hash + canonical JSON of the row's own fields). Changing, removing or reordering any
row breaks the chain at that row, and ``verify_chain`` names the first row that does not hold.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from appliance.shared.admin_wire import ChainCheck, VerifyReport
from appliance.shared.canonical import GENESIS, chain_hash

# The fields each chained table hashes, in addition to the chain links themselves.
CHAINED_FIELDS: dict[str, tuple[str, ...]] = {
    "sheets": (
        "seq",
        "sheet_id",
        "event_id",
        "entry_id",
        "judge_id",
        "device_id",
        "score_values",
        "comment",
        "submitted_at",
        "received_at",
        "supersedes",
        "content_hash",
    ),
    "audit_log": ("seq", "at", "actor", "action", "detail", "request_id"),
}


def head(conn: sqlite3.Connection, table: str) -> tuple[int, str]:
    """(seq, hash) of the last row, or (0, GENESIS) for an empty table."""
    row = conn.execute(f"SELECT seq, hash FROM {table} ORDER BY seq DESC LIMIT 1").fetchone()
    return (row[0], row[1]) if row else (0, GENESIS)


def link(table: str, tail: tuple[int, str], row: dict[str, Any]) -> dict[str, Any]:
    """``row`` (without seq) made the next link after ``tail`` = (seq, hash): seq and hashes set."""
    last_seq, prev_hash = tail
    row = {**row, "seq": last_seq + 1, "prev_hash": prev_hash}
    row["hash"] = chain_hash(prev_hash, {field: row.get(field) for field in CHAINED_FIELDS[table]})
    return row


def insert_rows(conn: sqlite3.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    """Insert linked rows (all with the same columns, in chain order)."""
    columns = list(rows[0])
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    conn.executemany(sql, [tuple(row[c] for c in columns) for row in rows])


def append(conn: sqlite3.Connection, table: str, row: dict[str, Any]) -> dict[str, Any]:
    """Insert ``row`` (without seq) at the end of the chain; returns it with seq and hashes.

    Must run inside the writer's transaction, so nobody else can append between reading the head
    and inserting."""
    linked = link(table, head(conn, table), row)
    insert_rows(conn, table, [linked])
    return linked


def chain_problems(report: VerifyReport) -> list[str]:
    """One line per broken chain of ``report``, naming its first bad row."""
    return [
        f"{r.table} chain broken at row {r.first_bad_seq}: {r.problem}" for r in report.chains if not r.ok
    ]


def verify_chains(conn: sqlite3.Connection) -> VerifyReport:
    """Walk both chains (the ledger, then the audit log) and report each one's first bad row: what
    `venuebox verify` and ``GET /admin/v1/verify`` show."""
    chains = [verify_chain(conn, table) for table in CHAINED_FIELDS]
    return VerifyReport(ok=all(check.ok for check in chains), chains=chains)


def _check(
    table: str, rows: int, head_hash: str, first_bad_seq: int | None = None, problem: str | None = None
) -> ChainCheck:
    """A chain's report: intact (no ``problem``), or its first bad row and what is wrong with it."""
    return ChainCheck(
        table=table,
        rows=rows,
        ok=problem is None,
        first_bad_seq=first_bad_seq,
        problem=problem,
        head_hash=head_hash,
    )


def verify_chain(conn: sqlite3.Connection, table: str) -> ChainCheck:
    """Walk the whole chain in order and report the first row that does not hold."""
    fields = CHAINED_FIELDS[table]
    cursor = conn.execute(f"SELECT {', '.join(fields)}, prev_hash, hash FROM {table} ORDER BY seq")
    expected_prev = GENESIS
    expected_seq = 1
    count = 0
    for values in cursor:
        row = dict(zip((*fields, "prev_hash", "hash"), values, strict=True))
        seq = row["seq"]
        if seq != expected_seq:
            return _check(
                table,
                count,
                expected_prev,
                expected_seq,
                f"row {expected_seq} is missing (next row is {seq})",
            )
        if row["prev_hash"] != expected_prev:
            return _check(
                table,
                count,
                expected_prev,
                seq,
                f"row {seq} does not link to row {seq - 1} (rows removed or reordered)",
            )
        recomputed = chain_hash(row["prev_hash"], {field: row[field] for field in fields})
        if recomputed != row["hash"]:
            return _check(table, count, expected_prev, seq, f"row {seq} was altered after it was written")
        expected_prev = row["hash"]
        expected_seq += 1
        count += 1
    return _check(table, count, expected_prev)
