"""Score sheets on the tablet: making one (`make_sheet`) and the on-disk queue that holds every sheet
until the box has it for good (`SheetQueue`), so that no sheet is ever dropped silently."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from appliance.shared.canonical import canonical_json
from appliance.shared.times import now_rfc3339


def make_sheet(
    entry_id: str, values: dict[str, float], comment: str | None = None, supersedes: str | None = None
) -> dict[str, Any]:
    """A score sheet as the protocol wants it: a new uuid4 ``sheet_id``, ``submitted_at`` now in
    RFC 3339 with the tablet's UTC offset; ``comment`` and ``supersedes`` only when given."""
    sheet: dict[str, Any] = {
        "sheet_id": str(uuid.uuid4()),
        "entry_id": str(entry_id),
        "values": dict(values),
        "submitted_at": datetime.now().astimezone().isoformat(timespec="milliseconds"),
    }
    if comment is not None:
        sheet["comment"] = comment
    if supersedes is not None:
        sheet["supersedes"] = supersedes
    return sheet


SheetState = Literal["queued", "held", "discarded"]


@dataclass(frozen=True)
class QueuedSheet:
    """One sheet in the queue, as stored."""

    sheet_id: str
    entry_id: str
    sheet: dict[str, Any]
    state: SheetState
    judge_id: str | None
    event_id: str | None
    queued_at: str
    attempts: int
    last_status: int | None
    last_error: str | None
    problem: dict[str, Any] | None


class SheetQueue:
    """The tablet's outbox: a SQLite file (``sheets.sqlite3``) in a directory the caller gives.

    Rows are written with ``synchronous=FULL`` before anything is sent, so a sheet survives a crash
    or a restart. A sheet is ``queued`` (to send), ``held`` (the box refused it for good; kept with
    the problem for the judge to see) or ``discarded`` (the judge chose to drop a held sheet; the row
    stays as a record). Sheets the box stored move to the ``kept`` table until its safe watermark
    passes them (``keep``, ``settle``); ``meta`` holds the ledger epoch of the box's last mark."""

    FILENAME = "sheets.sqlite3"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / self.FILENAME
        self._conn = sqlite3.connect(self.path, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.execute(
            """
            CREATE TABLE IF NOT EXISTS sheets (
                position INTEGER PRIMARY KEY AUTOINCREMENT,
                sheet_id TEXT NOT NULL UNIQUE,
                entry_id TEXT NOT NULL,
                body TEXT NOT NULL,
                state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'held', 'discarded')),
                judge_id TEXT,
                event_id TEXT,
                queued_at TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                last_status INTEGER,
                last_error TEXT,
                problem TEXT,
                settled_at TEXT
            )
            """
        )
        # Sheets the box stored but could still lose (seq above its safe watermark): kept with the
        # seq and ledger epoch of the answer until safe, and queued again if the epoch changes.
        self._conn.execute(
            """
            CREATE TABLE IF NOT EXISTS kept (
                position INTEGER PRIMARY KEY,
                sheet_id TEXT NOT NULL UNIQUE,
                entry_id TEXT NOT NULL,
                body TEXT NOT NULL,
                judge_id TEXT,
                event_id TEXT,
                queued_at TEXT NOT NULL,
                seq INTEGER,
                epoch TEXT,
                kept_at TEXT NOT NULL
            )
            """
        )
        self._conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SheetQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, sheet: dict[str, Any], judge_id: str | None = None, event_id: str | None = None) -> bool:
        """Store ``sheet`` durably as queued. Returns False when the same sheet is already there;
        a different sheet under a known ``sheet_id`` is a ValueError (it would be refused anyway)."""
        body = canonical_json(sheet)
        row = self._conn.execute(
            "SELECT body FROM sheets WHERE sheet_id = ?", (sheet["sheet_id"],)
        ).fetchone()
        if row is not None:
            if row["body"] != body:
                raise ValueError(f"sheet {sheet['sheet_id']} is already queued with other content")
            return False
        self._conn.execute(
            "INSERT INTO sheets (sheet_id, entry_id, body, judge_id, event_id, queued_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (sheet["sheet_id"], str(sheet["entry_id"]), body, judge_id, event_id, now_rfc3339()),
        )
        return True

    def pending(
        self, limit: int | None = None, *, judge_id: str | None = None, event_id: str | None = None
    ) -> list[QueuedSheet]:
        """Queued sheets in the order they were queued; with ``judge_id``/``event_id``, only those
        queued under that pairing (a sheet must never be sent as another judge)."""
        sql = "SELECT * FROM sheets WHERE state = 'queued'"
        args: list[str | int] = []
        if judge_id is not None:
            sql += " AND (judge_id IS NULL OR judge_id = ?)"
            args.append(judge_id)
        if event_id is not None:
            sql += " AND (event_id IS NULL OR event_id = ?)"
            args.append(event_id)
        sql += " ORDER BY position"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [_queued(row) for row in self._conn.execute(sql, args)]

    def held(self) -> list[QueuedSheet]:
        """Sheets the box refused for good, with the problem it gave, oldest first."""
        return [
            _queued(r)
            for r in self._conn.execute("SELECT * FROM sheets WHERE state = 'held' ORDER BY position")
        ]

    def get(self, sheet_id: str) -> QueuedSheet | None:
        row = self._conn.execute("SELECT * FROM sheets WHERE sheet_id = ?", (sheet_id,)).fetchone()
        return _queued(row) if row else None

    def depth(self) -> int:
        """How many sheets are waiting to be sent."""
        return self._conn.execute("SELECT count(*) FROM sheets WHERE state = 'queued'").fetchone()[0]

    def __len__(self) -> int:
        return self.depth()

    def keep(self, sheet_id: str, seq: int | None, epoch: str | None) -> None:
        """The box stored it (200/201) as ledger ``seq`` of ``epoch``: no longer to send, kept until
        the box's safe watermark passes it (``settle``)."""
        with self._transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO kept (position, sheet_id, entry_id, body, judge_id, event_id,"
                " queued_at, seq, epoch, kept_at) SELECT position, sheet_id, entry_id, body, judge_id,"
                " event_id, queued_at, ?, ?, ? FROM sheets WHERE sheet_id = ? AND state = 'queued'",
                (seq, epoch, now_rfc3339(), sheet_id),
            )
            self._conn.execute("DELETE FROM sheets WHERE sheet_id = ? AND state = 'queued'", (sheet_id,))

    def settle(self, epoch: str | None, safe_seq: int) -> int:
        """Apply a box's ledger mark: forget kept sheets at or below ``safe_seq`` of ``epoch``; on a
        new epoch, queue every sheet kept from another one again, in their first order, ahead of
        newer sheets (a correction must follow what it corrects). ``epoch`` None (a box that does
        not say) forgets what it kept without a mark, as before marks existed. Returns how many were
        queued again."""
        with self._transaction():
            if epoch is None:
                self._conn.execute("DELETE FROM kept WHERE epoch IS NULL")
                return 0
            known = self.epoch()
            again = 0
            if known is not None and known != epoch:
                again = self._conn.execute(
                    "INSERT INTO sheets (position, sheet_id, entry_id, body, judge_id, event_id, queued_at)"
                    " SELECT position, sheet_id, entry_id, body, judge_id, event_id, queued_at FROM kept"
                    " WHERE epoch IS NOT ?",
                    (epoch,),
                ).rowcount
                self._conn.execute("DELETE FROM kept WHERE epoch IS NOT ?", (epoch,))
            if known != epoch:
                self._conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('ledger_epoch', ?)", (epoch,)
                )
            self._conn.execute("DELETE FROM kept WHERE epoch = ? AND seq <= ?", (epoch, safe_seq))
            return again

    def epoch(self) -> str | None:
        """The ledger epoch of the box's last answer that carried one."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'ledger_epoch'").fetchone()
        return row[0] if row else None

    def kept(self) -> list[tuple[str, int | None]]:
        """(sheet_id, seq) of the stored sheets kept until safe, in ledger order."""
        return [(r[0], r[1]) for r in self._conn.execute("SELECT sheet_id, seq FROM kept ORDER BY position")]

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def hold(self, sheet_id: str, status: int, problem: dict[str, Any]) -> None:
        """Move a sheet aside with the box's problem; it is never picked for sending again."""
        self._conn.execute(
            "UPDATE sheets SET state = 'held', attempts = attempts + 1, last_status = ?, problem = ?,"
            " settled_at = ? WHERE sheet_id = ?",
            (status, json.dumps(problem), now_rfc3339(), sheet_id),
        )

    def note_attempt(self, sheet_id: str, status: int | None, error: str | None = None) -> None:
        """An attempt that left the sheet queued (network error, 423, 401, 429, 5xx)."""
        self._conn.execute(
            "UPDATE sheets SET attempts = attempts + 1, last_status = ?, last_error = ? WHERE sheet_id = ?",
            (status, error, sheet_id),
        )

    def discard(self, sheet_id: str) -> None:
        """The judge chose to drop a held sheet. The row stays, marked, as a record."""
        self._conn.execute(
            "UPDATE sheets SET state = 'discarded', settled_at = ? WHERE sheet_id = ? AND state = 'held'",
            (now_rfc3339(), sheet_id),
        )


def _queued(row: sqlite3.Row) -> QueuedSheet:
    return QueuedSheet(
        sheet_id=row["sheet_id"],
        entry_id=row["entry_id"],
        sheet=json.loads(row["body"]),
        state=row["state"],
        judge_id=row["judge_id"],
        event_id=row["event_id"],
        queued_at=row["queued_at"],
        attempts=row["attempts"],
        last_status=row["last_status"],
        last_error=row["last_error"],
        problem=json.loads(row["problem"]) if row["problem"] else None,
    )
