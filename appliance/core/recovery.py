"""New data dirs from a box's snapshots: `venuebox restore` (``restore``: a snapshot, then what the
cloud holds beyond it) and `venuebox recover` (``recover``: rebuilding a box whose storage died;
issue 15, docs/operations.md "The SD card died / the database is damaged").

A new data dir is built, in a staging folder beside the target and renamed into place only when
everything is in it, from these sources in order:

1. **snapshot**: the newest snapshot that verifies (decrypts, is sound, is this box's): the same
   box again, with its identity from the keys bundle (``backup.unpack``).
2. **salvage**: the rows still readable in the damaged database and its write-ahead log, read page
   by page as SQLite's own recovery does (``salvage``; the old data dir is only read).
3. **cloud**: the records the uplink receiver holds (``GET /v1/boxes/{box}/chains/{chain}``, with
   the box's uplink token), read by the ``CloudReader`` the caller passes in (the shell passes
   ``uplink.cloud_copy.read_cloud``: the core speaks no HTTP to the cloud).

Both hash chains (the score ledger and the audit log) are continued from the snapshot's heads, one
seq at a time, by the first source whose row links to the row before and whose hash recomputes
(``continue_chain``): nothing is appended that the chain does not vouch for, and what is not
appended is listed. The recovered box continues each chain exactly where the receiver has it, so
its next records never fork the cloud's copy. The box then gets a new ledger epoch, so tablets send
back every sheet they keep (appliance/core/watermark.py), and a ``recoveries`` row that `venuebox
status` reads: sheets per source, and what is still known to be missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sqlite3
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pyrage import x25519

from appliance.core import audit, outbox
from appliance.core.backup import SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX, BackupFailed, Restored, unpack
from appliance.core.chain import CHAINED_FIELDS, head, insert_rows
from appliance.core.config import Config, ConfigError, load_config
from appliance.core.storage import create_database
from appliance.core.watermark import new_epoch
from appliance.shared.canonical import canonical_json, chain_hash
from appliance.shared.errors import DomainError
from appliance.shared.secrets_files import fsync_dir
from appliance.shared.status import RecoverySheets, RecoverySource, RecoveryView
from appliance.shared.times import now_rfc3339
from appliance.storage.db import connect

# The two chains, by the name the receiver gives them, and their tables here.
CHAINS = {"sheets": "sheets", "audit": "audit_log"}
SOURCES = ("snapshot", "salvage", "cloud")
# How many rows not appended are kept in the recovery record (all are printed).
LISTED_KEPT = 500


class RecoveryRefused(DomainError):
    """`venuebox recover` cannot go on: bad input (no verifying snapshot, another box's data, a
    target that exists). Nothing was written."""


@dataclass(frozen=True)
class Candidate:
    """One chain row offered by a source, as the table stores it (chained fields, prev_hash, hash)."""

    source: str
    row: dict[str, Any]

    @property
    def seq(self) -> int:
        return int(self.row["seq"])


@dataclass(frozen=True)
class Listed:
    """A row a source offered that was not appended, and why."""

    source: str
    chain: str
    seq: int
    name: str  # a sheet's sheet_id, an audit record's action
    reason: str

    def line(self) -> str:
        what = f"sheet {self.name}" if self.chain == "sheets" else f"audit record {self.name!r}"
        return f"{self.source} {self.chain} seq {self.seq} ({what}): {self.reason}"

    def view(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "chain": self.chain,
            "seq": self.seq,
            "name": self.name,
            "reason": self.reason,
        }


@dataclass
class SourceState:
    """How a source went: ``state`` is one of used, unreadable, unreachable, refused, skipped, none."""

    state: str
    detail: str


@dataclass
class ChainResult:
    chain: str
    snapshot_rows: int
    appended: list[Candidate] = field(default_factory=list)
    listed: list[Listed] = field(default_factory=list)
    known_head: int = 0  # the highest seq any source showed for this chain

    def count(self, source: str) -> int:
        if source == "snapshot":
            return self.snapshot_rows
        return sum(1 for c in self.appended if c.source == source)

    @property
    def head_seq(self) -> int:
        return self.snapshot_rows + len(self.appended)


@dataclass
class Recovered:
    data_dir: Path
    snapshot: Path
    restored: Restored
    chains: dict[str, ChainResult]
    salvage: SourceState
    cloud: SourceState
    epoch: str
    passed_over: list[str]  # newer snapshots that did not verify, with why

    @property
    def listed(self) -> list[Listed]:
        return [item for result in self.chains.values() for item in result.listed]


# -- the chain walk -------------------------------------------------------------------------------


def recomputes(table: str, row: dict[str, Any]) -> bool:
    """Whether ``row``'s hash is the hash of its own content after its prev_hash."""
    try:
        fields = {name: row[name] for name in CHAINED_FIELDS[table]}
        return chain_hash(row["prev_hash"], fields) == row["hash"]
    except (KeyError, TypeError, ValueError):
        return False


def continue_chain(
    chain: str, tail: tuple[int, str], candidates: list[Candidate]
) -> tuple[list[Candidate], list[Listed]]:
    """Extend the chain that ends at ``tail`` = (seq, hash): at each next seq, the first candidate
    (in source order) that links to the row before and whose hash recomputes. Returns what to
    append, in order, and every other candidate beyond ``tail`` that is not the same row (same
    hash) as one appended, with why it was not."""
    table = CHAINS[chain]
    beyond = [c for c in candidates if c.seq > tail[0]]
    by_seq: dict[int, list[Candidate]] = {}
    for candidate in beyond:
        by_seq.setdefault(candidate.seq, []).append(candidate)
    taken: list[Candidate] = []
    seq, prev = tail
    while True:
        pick = next(
            (
                c
                for c in by_seq.get(seq + 1, [])
                if c.row.get("prev_hash") == prev and recomputes(table, c.row)
            ),
            None,
        )
        if pick is None:
            break
        taken.append(pick)
        seq, prev = seq + 1, pick.row["hash"]
    appended = {c.row["hash"] for c in taken}
    listed: list[Listed] = []
    seen: set[tuple[int, str]] = set()
    for candidate in sorted(beyond, key=lambda c: (c.seq, SOURCES.index(c.source))):
        whole = recomputes(table, candidate.row)
        if whole and candidate.row["hash"] in appended:
            continue  # the same row as one appended (from this source or another)
        key = (candidate.seq, canonical_json(candidate.row))
        if key in seen:
            continue
        seen.add(key)
        if not whole:
            reason = "its hash does not match its content (damaged or altered)"
        elif candidate.seq > seq + 1:
            reason = f"no source holds the row at seq {seq + 1} that would link it to the chain"
        else:
            reason = f"it does not link to the row at seq {candidate.seq - 1} as recovered (another history)"
        name = candidate.row.get("sheet_id") if chain == "sheets" else candidate.row.get("action")
        listed.append(Listed(candidate.source, chain, candidate.seq, str(name or "?"), reason))
    return taken, listed


def disagreement(chain: str, conn: sqlite3.Connection, candidates: list[Candidate]) -> Candidate | None:
    """The first candidate that is a whole row (its hash recomputes) at a seq the snapshot holds,
    with another hash there: a row of another box's history."""
    table = CHAINS[chain]
    for candidate in sorted(candidates, key=lambda c: c.seq):
        row = conn.execute(f"SELECT hash FROM {table} WHERE seq = ?", (candidate.seq,)).fetchone()
        if row is not None and row[0] != candidate.row.get("hash") and recomputes(table, candidate.row):
            return candidate
    return None


# -- salvage --------------------------------------------------------------------------------------
#
# SQLite's own recovery (the sqlite3 CLI's ``.recover``) needs the ``sqlite_dbpage`` table, which
# Debian's SQLite (the box's) is built without: ``.recover`` there fails with "SQL logic error" on
# any file, damaged or not. So the salvage reads the file the way ``.recover`` does, itself: every
# page of the database and of its write-ahead log that parses as a table b-tree leaf gives its rows
# (the file format: https://www.sqlite.org/fileformat2.html), whatever state the b-tree above them,
# the schema or the file header are in. Nothing here decides what is true: a row is appended only
# when the hash chain vouches for it, so a misread row is listed, never stored.

LEAF_TABLE_PAGE = 0x0D
WAL_HEADER = 32
WAL_FRAME_HEADER = 24


@dataclass
class Salvage:
    state: SourceState
    box_id: str | None = None
    rows: dict[str, list[Candidate]] = field(default_factory=lambda: {chain: [] for chain in CHAINS})


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """SQLite's variable-length integer at ``at``: (value, position after it)."""
    value = 0
    for i in range(8):
        byte = data[at + i]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, at + i + 1
    return (value << 8) | data[at + 8], at + 9


def _record(payload: bytes) -> list[Any]:
    """The values of one record (SQLite's record format); IndexError/ValueError when it is not one."""
    header_size, at = _varint(payload, 0)
    if not 0 < header_size <= len(payload):
        raise ValueError("bad record header")
    types = []
    while at < header_size:
        serial, at = _varint(payload, at)
        types.append(serial)
    values: list[Any] = []
    body = header_size
    for serial in types:
        if serial == 0:
            values.append(None)
        elif 1 <= serial <= 6:
            size = (1, 2, 3, 4, 6, 8)[serial - 1]
            values.append(int.from_bytes(payload[body : body + size], "big", signed=True))
            body += size
        elif serial == 7:
            values.append(struct.unpack(">d", payload[body : body + 8])[0])
            body += 8
        elif serial in (8, 9):
            values.append(serial - 8)
        elif serial >= 12:
            size = (serial - 12) // 2
            chunk = payload[body : body + size]
            values.append(chunk.decode("utf-8") if serial % 2 else bytes(chunk))
            body += size
        else:
            raise ValueError("reserved serial type")
        if body > len(payload):
            raise ValueError("record runs past its payload")
    return values


def _leaf_rows(
    page: bytes, offset: int, usable: int, pages: Callable[[int], bytes | None]
) -> list[tuple[int, list[Any]]]:
    """(rowid, values) of each cell of a table leaf page that decodes; cells that do not are skipped."""
    if page[offset] != LEAF_TABLE_PAGE:
        return []
    cells = int.from_bytes(page[offset + 3 : offset + 5], "big")
    rows = []
    for i in range(min(cells, len(page) // 4)):
        try:
            at = int.from_bytes(page[offset + 8 + 2 * i : offset + 10 + 2 * i], "big")
            size, at = _varint(page, at)
            rowid, at = _varint(page, at)
            local = _local_size(size, usable)
            payload = bytearray(page[at : at + local])
            if local < size:  # the rest is on overflow pages
                following = int.from_bytes(page[at + local : at + local + 4], "big")
                while len(payload) < size and following:
                    over = pages(following)
                    if over is None:
                        raise ValueError("overflow page missing")
                    following = int.from_bytes(over[:4], "big")
                    payload += over[4:usable]
                del payload[size:]
            if len(payload) != size:
                raise ValueError("short payload")
            rows.append((rowid, _record(bytes(payload))))
        except (IndexError, ValueError, UnicodeDecodeError):
            continue
    return rows


def _local_size(size: int, usable: int) -> int:
    """How much of a table leaf cell's payload is on the page itself (the rest overflows)."""
    most = usable - 35
    if size <= most:
        return size
    least = ((usable - 12) * 32 // 255) - 23
    local = least + (size - least) % (usable - 4)
    return local if local <= most else least


def read_pages(data: bytes, wal: bytes, page_size: int) -> tuple[dict[int, bytes], list[bytes]]:
    """The database's pages by number (the newest copy in the WAL wins), and every page image
    (file and WAL frames, older copies too: each may hold rows the others lost)."""
    by_number = {n + 1: data[n * page_size : (n + 1) * page_size] for n in range(len(data) // page_size)}
    images = list(by_number.values())
    frame = WAL_FRAME_HEADER + page_size
    if len(wal) > WAL_HEADER and int.from_bytes(wal[8:12], "big") == page_size:
        for at in range(WAL_HEADER, len(wal) - frame + 1, frame):
            number = int.from_bytes(wal[at : at + 4], "big")
            image = wal[at + WAL_FRAME_HEADER : at + frame]
            images.append(image)
            if number:
                by_number[number] = image
    return by_number, images


def salvage(
    old_db: Path, columns: dict[str, list[str]], page_size: int, say: Callable[[str], None]
) -> Salvage:
    """The rows still readable in the damaged ``old_db`` (and its write-ahead log): every page
    image that parses as a table b-tree leaf, its cells read as rows of the tables in ``columns``
    (table -> column names, in order) that have their shape. The file is only read."""
    try:
        data = old_db.read_bytes()
    except OSError as exc:
        return Salvage(SourceState("unreadable", f"{old_db} cannot be read ({exc.strerror or exc})"))
    try:
        wal = old_db.with_name(old_db.name + "-wal").read_bytes()
    except FileNotFoundError:
        wal = b""
    except OSError as exc:
        say(f"its write-ahead log cannot be read ({exc.strerror or exc}): the database file alone")
        wal = b""
    if data[:16] == b"SQLite format 3\x00":
        size = int.from_bytes(data[16:18], "big")
        page_size = 65536 if size == 1 else size if size >= 512 else page_size
        reserved = data[20]
    else:
        reserved = 0
    say(f"salvaging {old_db}: reading its pages")
    by_number, images = read_pages(data, wal, page_size)
    found = Salvage(SourceState("used", f"{old_db} (its pages read one by one)"))
    boxes: list[str] = []
    for image in images:
        offset = 100 if image is by_number.get(1) or image[:16] == b"SQLite format 3\x00" else 0
        for rowid, values in _leaf_rows(image, offset, page_size - reserved, by_number.get):
            for table, names in columns.items():
                if len(values) != len(names):
                    continue
                row = dict(zip(names, values, strict=True))
                if table == "box":
                    if rowid == 1 and isinstance(row.get("box_id"), str) and row["box_id"].startswith("vb-"):
                        boxes.append(row["box_id"])
                    continue
                if row.get("seq") is None:  # an INTEGER PRIMARY KEY is the rowid
                    row["seq"] = rowid
                if _is_hash(row.get("hash")) and _is_hash(row.get("prev_hash")):
                    chain = next(name for name, t in CHAINS.items() if t == table)
                    found.rows[chain].append(Candidate("salvage", row))
    if boxes:
        found.box_id = max(set(boxes), key=boxes.count)
    return found


def _is_hash(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(ch in "0123456789abcdef" for ch in value)


def table_columns(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """The column names, in order, of the tables the salvage reads (from the snapshot: the box's schema)."""
    return {
        table: [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        for table in ("box", *CHAINS.values())
    }


# -- cloud ----------------------------------------------------------------------------------------


@dataclass
class Cloud:
    """What the cloud source gave (a ``CloudReader``'s answer): how it went, the rows it holds of each
    chain that check out (their seq and hash as the receiver listed them), and its head of each."""

    state: SourceState
    rows: dict[str, list[Candidate]] = field(default_factory=lambda: {chain: [] for chain in CHAINS})
    heads: dict[str, tuple[int, str] | None] = field(default_factory=dict)


def cloud_row(chain: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A record the receiver holds, as this box's table stores it (KeyError/TypeError if it is not one)."""
    if chain == "sheets":
        return {
            "seq": payload["seq"],
            "sheet_id": payload["sheet_id"],
            "event_id": payload["event_id"],
            "entry_id": payload["entry_id"],
            "judge_id": payload["judge_id"],
            "device_id": payload["device_id"],
            "score_values": canonical_json(payload["values"]),
            "comment": payload["comment"],
            "submitted_at": payload["submitted_at"],
            "received_at": payload["received_at"],
            "supersedes": payload["supersedes"],
            "content_hash": payload["content_hash"],
            "prev_hash": payload["prev_hash"],
            "hash": payload["hash"],
        }
    return {
        "seq": payload["seq"],
        "at": payload["at"],
        "actor": payload["actor"],
        "action": payload["action"],
        "detail": canonical_json(payload["detail"]),
        "request_id": payload["request_id"],
        "prev_hash": payload["prev_hash"],
        "hash": payload["hash"],
    }


class CloudReader(Protocol):
    """Reads what the uplink receiver holds of box ``box_id``'s two chains from seq ``after[chain]``
    on (inclusive: the row at ``after`` is there to check the receiver agrees with the snapshot),
    for the box whose settings are ``config``, telling ``say`` what it does. Unreachable or
    refusing, the cloud is reported in the answer's state, never raised."""

    def __call__(
        self, config: Config, box_id: str, after: dict[str, int], say: Callable[[str], None]
    ) -> Cloud:
        """The receiver's rows of both chains, and its heads; see the class."""
        ...


# -- restore: a snapshot, then the cloud ----------------------------------------------------------


@dataclass
class CloudContinued:
    """What `venuebox restore` took from the cloud after the snapshot: per chain, rows appended."""

    state: SourceState
    appended: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHAINS, 0))


@dataclass(frozen=True)
class Restoration:
    """What `venuebox restore` did: the snapshot unpacked (the box, its keys and identity), and what
    the cloud added after it (None: the cloud was not asked)."""

    restored: Restored
    cloud: CloudContinued | None


def restore(
    snapshot: Path,
    target: Path,
    identities: list[x25519.Identity],
    progress: Callable[[str], None] | None = None,
    *,
    box_id: str | None = None,
    read_cloud: CloudReader | None = None,
) -> Restoration:
    """Decrypt ``snapshot`` into the new data dir ``target`` (which must not exist or be empty),
    check it (integrity and both chains), and make it the same box again from the keys bundle beside
    the snapshot (keys, TLS certificate, admin and uplink tokens, settings: appliance/core/keys_bundle.py);
    without one (or from an old bundle without them), a new admin token. With ``read_cloud``, both
    chains then go on with what the cloud holds beyond the snapshot (``continue_from_cloud``).
    ``box_id``: the box the caller means (its ``--data-dir``), whose snapshot this must be. Refused
    (a snapshot of another box, a bundle of another box or written with another database, a cloud
    holding another history) or failed, ``target`` is left as it was."""
    if target.exists() and any(target.iterdir()):
        raise BackupFailed(
            f"{target} is not empty: restore only into a new data dir (never over a box's data), "
            "then point the service at it"
        )
    made = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    mode = target.stat().st_mode & 0o7777
    try:
        done = unpack(snapshot, target, identities, progress, box_id=box_id)
        cloud = None
        if read_cloud is not None:
            # Both chains go on from where the cloud has them, never beside it (a fork).
            cloud = continue_from_cloud(target, done.box_id, progress or (lambda _: None), read_cloud)
        with contextlib.closing(connect(target / "venuebox.sqlite")) as conn:
            conn.execute("BEGIN IMMEDIATE")
            # A new ledger epoch: the restored ledger may lack sheets stored after this snapshot,
            # and tablets send again every sheet they keep when they see it (appliance/core/watermark.py).
            epoch = new_epoch(conn)
            audit.record(
                conn,
                "cli",
                "backup.restore",
                {
                    "snapshot": snapshot.name,
                    "keys": done.keys_restored,
                    "identity": done.identity_file,
                    "tls_fingerprint": done.identity.tls_fingerprint if done.identity is not None else None,
                    "ledger_epoch": epoch,
                    "from_cloud": cloud.appended if cloud is not None else None,
                },
            )
            conn.execute("COMMIT")
    except BaseException:
        if made:
            shutil.rmtree(target, ignore_errors=True)
        else:  # a folder that was there, empty (a mount point, say): left empty, as it was
            for child in list(target.iterdir()):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
            os.chmod(target, mode)
        raise
    return Restoration(done, cloud)


def continue_from_cloud(
    data_dir: Path, box_id: str, say: Callable[[str], None], read_cloud: CloudReader
) -> CloudContinued:
    """Continue both chains of the box just restored into ``data_dir`` with what the cloud holds
    beyond its snapshot, so the restored box never writes a record at a place the cloud holds
    (a fork, which would pause its uplink). RecoveryRefused when the cloud holds another history."""
    database = data_dir / "venuebox.sqlite"
    create_database(database)
    with contextlib.closing(connect(database, readonly=True)) as conn:
        tails = {chain: head(conn, table) for chain, table in CHAINS.items()}
    cloud = read_cloud(load_config(data_dir, environ={}), box_id, {c: t[0] for c, t in tails.items()}, say)
    done = CloudContinued(cloud.state)
    if cloud.state.state != "used":
        return done
    with contextlib.closing(connect(database)) as conn:
        _check_cloud(conn, cloud, box_id)
        conn.execute("BEGIN IMMEDIATE")
        for chain, table in CHAINS.items():
            appended, _ = continue_chain(chain, tails[chain], cloud.rows[chain])
            if appended:
                say(f"appending {len(appended)} {chain} rows the cloud holds")
                insert_rows(conn, table, [c.row for c in appended])
            done.appended[chain] = len(appended)
        conn.execute("COMMIT")
    return done


# -- recover --------------------------------------------------------------------------------------


def snapshot_candidates(path: Path) -> list[Path]:
    """``path`` itself when it is a snapshot file, else the snapshots in the folder, newest first."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise RecoveryRefused(f"no snapshot or folder of snapshots at {path}")
    found = sorted(
        (
            p
            for p in path.iterdir()
            if p.name.startswith(SNAPSHOT_PREFIX) and p.name.endswith(SNAPSHOT_SUFFIX)
        ),
        key=lambda p: p.name,
        reverse=True,
    )
    if not found:
        raise RecoveryRefused(f"no snapshot in {path} (files named {SNAPSHOT_PREFIX}<time>{SNAPSHOT_SUFFIX})")
    return found


def old_box(from_dir: Path) -> tuple[Any | None, Path]:
    """The old data dir's settings (None when its venuebox.toml cannot be read) and its database."""
    if not from_dir.is_dir():
        raise RecoveryRefused(f"no folder at {from_dir} (--from: the old box's data dir, as mounted)")
    try:
        config = load_config(from_dir, environ={})
    except (ConfigError, OSError):
        return None, from_dir / "venuebox.sqlite"
    return config, config.db_path


def recover(
    target: Path,
    *,
    from_dir: Path | None,
    snapshot: Path | None,
    identities: Callable[[Path], list[x25519.Identity]],
    read_cloud: CloudReader | None = None,
    progress: Callable[[str], None] | None = None,
) -> Recovered:
    """Build the new data dir ``target`` (which must not exist) from the newest snapshot that
    verifies, the damaged database's salvage, and the cloud (read with ``read_cloud``; None: not
    asked); see the module's docstring. On any refusal or failure nothing is left behind.
    ``identities(snapshot)`` gives the keys that open a snapshot."""
    say = progress or (lambda _: None)
    if target.exists() or target.is_symlink():
        raise RecoveryRefused(
            f"{target} exists: recover only into a new data dir (a path that does not exist yet), "
            "never over a box's data"
        )
    if from_dir is not None and from_dir.resolve() == target.resolve():
        raise RecoveryRefused("--to must be a new folder, not the old data dir")
    old_config, old_db = old_box(from_dir) if from_dir is not None else (None, None)
    if snapshot is None:
        if from_dir is None:
            raise RecoveryRefused(
                "give --snapshot (a snapshot, or the backup folder) or --from (the old data dir)"
            )
        snapshot = old_config.backup_path if old_config is not None else from_dir / "backups"
    candidates = snapshot_candidates(snapshot)
    if not target.parent.is_dir():
        raise RecoveryRefused(
            f"{target.parent} does not exist: mount the new card (or make the folder) first"
        )
    staging = target.with_name(f".{target.name}.recovering-{secrets.token_hex(4)}")
    try:
        restored, chosen, passed_over = _newest_that_verifies(snapshot, candidates, staging, identities, say)
        box_id = restored.box_id
        database = staging / "venuebox.sqlite"
        create_database(database)  # the snapshot's schema brought up to this version
        with contextlib.closing(connect(database, readonly=True)) as conn:
            columns = table_columns(conn)
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        salvaged = (
            salvage(old_db, columns, page_size, say)
            if old_db is not None
            else Salvage(SourceState("skipped", "no old data dir given (--from)"))
        )
        if salvaged.box_id is not None and salvaged.box_id != box_id:
            raise RecoveryRefused(
                f"the database in {from_dir} is of box {salvaged.box_id}, but {chosen.name} is a snapshot "
                f"of box {box_id}: give this box's snapshots (--snapshot), or the right card (--from)"
            )
        with contextlib.closing(connect(database)) as conn:
            for chain in CHAINS:
                other = disagreement(chain, conn, salvaged.rows[chain])
                if other is not None:
                    raise RecoveryRefused(
                        f"the database in {from_dir} is not this box's history: its {chain} row {other.seq} "
                        f"differs from the one in {chosen.name} (is it another box's card?)"
                    )
            tails = {chain: head(conn, table) for chain, table in CHAINS.items()}
        config = load_config(staging, environ={})
        if read_cloud is None:
            cloud = Cloud(SourceState("skipped", "not asked (--no-cloud)"))
        else:
            cloud = read_cloud(config, box_id, {chain: tails[chain][0] for chain in CHAINS}, say)
        with contextlib.closing(connect(database)) as conn:
            if cloud.state.state == "used":
                _check_cloud(conn, cloud, box_id)
            results = {}
            conn.execute("BEGIN IMMEDIATE")
            for chain, table in CHAINS.items():
                offered = salvaged.rows[chain] + (cloud.rows[chain] if cloud.state.state == "used" else [])
                appended, listed = continue_chain(chain, tails[chain], offered)
                result = ChainResult(chain, tails[chain][0], appended, listed)
                cloud_head = cloud.heads.get(chain)
                # How far the old chain reached, by whole rows only: a damaged row's seq may be garbage.
                whole = (c.seq for c in offered if recomputes(table, c.row))
                result.known_head = max([tails[chain][0], *whole, cloud_head[0] if cloud_head else 0])
                results[chain] = result
                if appended:
                    say(f"appending {len(appended)} {chain} rows")
                    insert_rows(conn, table, [c.row for c in appended])
                    _queue_for_cloud(conn, chain, appended, cloud)
            epoch = new_epoch(conn)
            recovered = Recovered(
                target, chosen, restored, results, salvaged.state, cloud.state, epoch, passed_over
            )
            detail = recovery_detail(recovered)
            audit.record(conn, "cli", "backup.recover", {k: v for k, v in detail.items() if k != "listed"})
            conn.execute(
                "INSERT INTO recoveries (at, detail) VALUES (?, ?)", (now_rfc3339(), canonical_json(detail))
            )
            conn.execute("COMMIT")
        fsync_dir(staging)
        # Not atomic_write's job: a whole staged data dir put in place by one directory rename.
        os.rename(staging, target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return recovered


def _newest_that_verifies(
    given: Path,
    candidates: list[Path],
    staging: Path,
    identities: Callable[[Path], list[x25519.Identity]],
    say: Callable[[str], None],
) -> tuple[Restored, Path, list[str]]:
    passed_over: list[str] = []
    for snapshot in candidates:
        staging.mkdir(mode=0o700)
        try:
            return unpack(snapshot, staging, identities(snapshot), say), snapshot, passed_over
        except DomainError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            passed_over.append(f"{snapshot.name}: {exc.detail}")
            say(f"{snapshot.name} does not verify: {exc.detail}")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    reasons = "; ".join(passed_over[:3])
    if given.is_file():
        raise RecoveryRefused(f"{given} does not verify ({reasons}): nothing was recovered")
    raise RecoveryRefused(f"no snapshot in {given} verifies ({reasons}): nothing was recovered")


def _check_cloud(conn: sqlite3.Connection, cloud: Cloud, box_id: str) -> None:
    """The receiver must hold this box's history: a whole row of its at a seq the snapshot holds,
    or its head there, with another hash means it answers for another box."""
    for chain, table in CHAINS.items():
        other = disagreement(chain, conn, cloud.rows[chain])
        held = cloud.heads.get(chain)
        if other is None and held is not None:
            row = conn.execute(f"SELECT hash FROM {table} WHERE seq = ?", (held[0],)).fetchone()
            if row is not None and row[0] != held[1]:
                other = Candidate("cloud", {"seq": held[0]})
        if other is not None:
            raise RecoveryRefused(
                f"the cloud ({cloud.state.detail}) answers for another box: its {chain} row {other.seq} "
                f"is not box {box_id}'s; check the uplink URL, or recover with --no-cloud"
            )


def _queue_for_cloud(conn: sqlite3.Connection, chain: str, appended: list[Candidate], cloud: Cloud) -> None:
    """Queue salvaged rows for the uplink, as when they were first stored; what the cloud already
    holds is not queued again."""
    held = {(c.seq, c.row["hash"]) for c in cloud.rows[chain]}
    to_send = [c.row for c in appended if c.source != "cloud" and (c.seq, c.row["hash"]) not in held]
    if chain == "sheets":
        outbox.enqueue_sheets(conn, [row["seq"] for row in to_send])
    else:
        for row in to_send:
            outbox.enqueue(conn, "audit", {**row, "detail": json.loads(row["detail"])})


def recovery_detail(done: Recovered) -> dict[str, Any]:
    """What the recovery record holds (no secrets, no personal data: ids and counts)."""
    sheets = done.chains["sheets"]
    return {
        "snapshot": done.snapshot.name,
        "passed_over": done.passed_over,
        "sheets": {source: sheets.count(source) for source in SOURCES},
        "audit": {source: done.chains["audit"].count(source) for source in SOURCES},
        "recovered_head": sheets.head_seq,
        "known_head": sheets.known_head,
        "salvage": {"state": done.salvage.state, "detail": done.salvage.detail},
        "cloud": {"state": done.cloud.state, "detail": done.cloud.detail},
        "ledger_epoch": done.epoch,
        "not_appended": len(done.listed),
        "listed": [item.view() for item in done.listed[:LISTED_KEPT]],
    }


def recovery_view(conn: sqlite3.Connection) -> RecoveryView | None:
    """The newest recovery that built this data dir, for `venuebox status`: sheets per source,
    sheets stored since (tablets sending back what they kept, and new scores), and what is still
    known to be missing: sheets a source named that are not in the ledger (no tablet sent them back
    yet), and places of the old ledger beyond what was recovered that no source could name."""
    row = conn.execute("SELECT at, detail FROM recoveries ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return None
    detail = json.loads(row[1])
    ledger_head = head(conn, "sheets")[0]
    # A row listed at a place the recovery filled is no loss: that place holds a row that verifies.
    beyond_listed = [
        item
        for item in detail["listed"]
        if item["chain"] == "sheets" and item["seq"] > detail["recovered_head"]
    ]
    named = {item["name"] for item in beyond_listed}
    back: set[str] = set()
    for chunk in [sorted(named)[i : i + 500] for i in range(0, len(named), 500)]:
        marks = ",".join("?" * len(chunk))
        back.update(
            r[0] for r in conn.execute(f"SELECT sheet_id FROM sheets WHERE sheet_id IN ({marks})", chunk)
        )
    missing = sorted(named - back)
    beyond = max(0, detail["known_head"] - detail["recovered_head"])
    unnamed = max(0, beyond - len({item["seq"] for item in beyond_listed}))
    return RecoveryView(
        at=row[0],
        snapshot=detail["snapshot"],
        sheets=RecoverySheets(**detail["sheets"]),
        since=max(0, ledger_head - detail["recovered_head"]),
        salvage=RecoverySource(**detail["salvage"]),
        cloud=RecoverySource(**detail["cloud"]),
        known_head=detail["known_head"],
        recovered_head=detail["recovered_head"],
        missing_sheet_ids=missing,
        missing_unnamed=unnamed,
    )
