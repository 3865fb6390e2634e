"""The USB export: everything a tired person needs to finish a competition by hand, and everything an
organiser needs to restore it, on a USB key, written so that a directory that looks complete is
complete.

``export_to`` writes ``venuebox-<event>-<UTC time>/``:

* ``scores.csv``, ``ledger.csv``, ``results.csv`` (plain, UTF-8 with BOM, for a spreadsheet, in the
  chosen CSV dialect: commas and decimal points, or semicolons and decimal commas; no personal data
  beyond judge names and routine titles; results.csv as the results engine computes it under the
  event's scoring rules), ``results.pdf`` (the printed results, appliance/core/print_results.py; left
  out, saying why in README.txt and the manifest's ``absent``, when the box lacks the fonts it
  needs), ``audit.jsonl``, ``event/`` (the event package,
  participants left out, always in the package's own format so it re-imports);
* ``personal.csv.age``: each entry with its participants' names (for awards), a CSV in the same
  dialect, age-encrypted to the box and the organisers, written only when someone besides the box
  can open it (an organiser key or the backup passphrase is set): names are never in a plain file;
* ``database.sqlite.age`` (the full database, personal data included, age-encrypted to the box and
  the organisers), ``keys.age`` (the box's keys, same recipients) and, with a backup passphrase,
  ``backup-identity.age``;
* ``MANIFEST.json``: every file with its size and SHA-256, the box, the event, the ledger head, the
  time, signed with the box's Ed25519 key (the public key inside); ``README.txt``.

Every file comes from one consistent copy of the database (SQLite's online backup), so the CSVs and
the encrypted database say the same thing even while tablets keep scoring. The files go into a
hidden ``.<name>.partial`` directory, each fsynced, then the directory is renamed into place,
fsynced, read back and verified against the manifest before the export is reported done. Exports
only read the box: they work while frozen, and a failing key leaves the box untouched.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import tempfile
import textwrap
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import pyrage
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from appliance.core import audit, keys, keys_bundle, personal_fields, results_out, tabulation
from appliance.core.backup import copy_database, database_facts, sealing_key
from appliance.core.config import Config
from appliance.shared import csv_dialects
from appliance.shared.admin_wire import ExportJobView, ExportState, UsbKey
from appliance.shared.canonical import canonical_json
from appliance.shared.errors import DatabaseDamaged, DomainError, FontsMissing
from appliance.shared.secrets_files import fsync_dir
from appliance.shared.times import to_rfc3339, utcnow
from appliance.storage.db import database_problems

MANIFEST = "MANIFEST.json"
RESULTS_PDF = "results.pdf"
FORMAT = "venuebox-export/1"
MB = 1024 * 1024
CHUNK = 1024 * 1024
Progress = Callable[[float, str], None]
# File opener for the target: the seam where a test puts a failing USB key.
Opener = Callable[[Path], BinaryIO]


class ExportRefused(DomainError):
    """The export was not started (no key found, not enough space); nothing was written."""


class ExportFailed(DomainError):
    """Writing or checking the export failed; no directory that looks complete was left."""


# -- finding the USB key --------------------------------------------------------------------------


@dataclass(frozen=True)
class UsbTarget:
    mountpoint: Path
    device: str
    filesystem: str
    removable: bool
    free_bytes: int

    def view(self) -> UsbKey:
        """The key as the admin API and the console show it (free space in MB)."""
        return UsbKey(
            path=str(self.mountpoint),
            device=self.device,
            filesystem=self.filesystem,
            removable=self.removable,
            free_mb=round(self.free_bytes / MB, 1),
        )


_MEDIA_ROOTS = ("/media/", "/run/media/")
_PSEUDO = {"proc", "sysfs", "tmpfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "overlay", "squashfs"}


def _unescape(text: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as octal (\040 ...).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _is_removable(device: str, sys_class_block: Path) -> bool:
    """Whether the disk holding ``device`` (a partition or a whole disk) says it is removable."""
    name = Path(os.path.realpath(device)).name
    node = sys_class_block / name
    if not node.exists():
        return False
    disk = node.resolve()
    if (disk / "partition").exists():
        disk = disk.parent
    try:
        return (disk / "removable").read_text().strip() == "1"
    except OSError:
        return False


def find_usb_targets(
    mounts: Path = Path("/proc/mounts"), sys_class_block: Path = Path("/sys/class/block")
) -> list[UsbTarget]:
    """Mounted file systems that look like a USB key: a removable disk (its ``removable`` flag in
    sysfs) or a mount under /media or /run/media (where desktop automounters put keys)."""
    found: list[UsbTarget] = []
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        device, mountpoint, filesystem = _unescape(parts[0]), _unescape(parts[1]), parts[2]
        if filesystem in _PSEUDO or not device.startswith("/dev/"):
            continue
        removable = _is_removable(device, sys_class_block)
        if not (removable or mountpoint.startswith(_MEDIA_ROOTS)):
            continue
        try:
            usage = shutil.disk_usage(mountpoint)
        except OSError:
            continue
        found.append(UsbTarget(Path(mountpoint), device, filesystem, removable, usage.free))
    return found


def choose_target(to: Path | None, targets: list[UsbTarget]) -> Path:
    """The directory to export into: ``--to``, else the one USB key found."""
    if to is not None:
        try:
            is_dir = to.is_dir()
        except (OSError, ValueError) as exc:  # a name too long, a NUL byte: not a folder either
            raise ExportRefused(f"cannot use that folder ({exc}): give the USB key's mount point") from None
        if not is_dir:
            raise ExportRefused(
                f"{to} is not a directory: give the USB key's mount point (or a folder on it)"
            )
        return to
    if not targets:
        raise ExportRefused("no USB key found: plug one in (and mount it), or choose a folder (--to PATH)")
    if len(targets) > 1:
        where = ", ".join(str(t.mountpoint) for t in targets)
        raise ExportRefused(f"{len(targets)} USB keys found ({where}): choose one (--to PATH)")
    return targets[0].mountpoint


# -- writing --------------------------------------------------------------------------------------


def check_api_target(target: Path, roots: list[str]) -> Path:
    """A folder the admin API was asked to export into must be under one of ``roots`` (where keys
    are mounted), so the API can never be used to write elsewhere on the box."""
    resolved = target.resolve()
    if any(resolved.is_relative_to(Path(root).resolve()) for root in roots):
        return resolved
    where = ", ".join(roots) or "nowhere (export_roots is empty)"
    raise ExportRefused(
        f"the console exports to USB keys only (folders under {where}; setting export_roots): "
        f"for another folder, run `sudo venuebox export --to {target}` in a shell"
    )


def _open_new(path: Path) -> BinaryIO:
    return open(path, "xb")


class _Hashing:
    """A binary stream that counts and hashes what goes through it."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.sha = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.stream.write(data)
        self.sha.update(data)
        self.bytes += len(data)
        return len(data)


@dataclass
class _Writer:
    root: Path
    opener: Opener
    files: list[dict[str, Any]] = field(default_factory=list)

    def write(self, relative: str, fill: Callable[[Any], Any]) -> None:
        """Create ``relative`` under the root, let ``fill`` write it, fsync it, record it."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        stream = self.opener(path)
        try:
            hashing = _Hashing(stream)
            fill(hashing)
            stream.flush()
            os.fsync(stream.fileno())
        finally:
            stream.close()
        self.files.append({"path": relative, "bytes": hashing.bytes, "sha256": hashing.sha.hexdigest()})

    def copy(self, relative: str, source: Path) -> None:
        def fill(out: _Hashing) -> None:
            with source.open("rb") as f:
                while chunk := f.read(CHUNK):
                    out.write(chunk)

        self.write(relative, fill)


def _csv(table: tuple[list[str], Iterable[Any]], dialect: csv_dialects.CsvDialect) -> Callable[[Any], Any]:
    header, rows = table
    return lambda out: tabulation.write_csv(out, header, rows, dialect=dialect)


def _lines(chunks: Iterator[bytes]) -> Callable[[Any], Any]:
    def fill(out: Any) -> None:
        for chunk in chunks:
            out.write(chunk)

    return fill


def export_name(event_id: str | None, at: datetime) -> str:
    event = re.sub(r"[^A-Za-z0-9._-]+", "-", event_id or "no-event").strip("-") or "event"
    return f"venuebox-{event}-{at.strftime('%Y%m%dT%H%M%SZ')}"


def estimate_bytes(config: Config) -> int:
    """What an export of this box needs on the key, with room to spare: the database twice over
    (the encrypted copy, and the plain files are never bigger than it), plus 2 MB. The box's own
    disk needs room for one plain copy (in ``export-scratch/``, deleted after)."""
    return int(config.db_path.stat().st_size * 2.2) + 2 * MB


def preflight(config: Config, target: Path) -> int:
    """Refuse before writing anything when ``target`` cannot take the export; returns the bytes
    the export needs."""
    need = estimate_bytes(config)
    with contextlib.closing(sqlite3.connect(f"file:{config.db_path}?mode=ro", uri=True)) as conn:
        if conn.execute("SELECT event_id FROM box WHERE id = 1").fetchone()[0] is None:
            raise ExportRefused(
                "no event on this box yet, so nothing to tabulate: import one (`venuebox event import`)"
            )
    if not os.access(target, os.W_OK | os.X_OK):
        raise ExportRefused(
            f"the box may not write to {target} (read-only, or not writable for this user): "
            "unlock the key, or run `sudo venuebox export` in a shell"
        )
    try:
        free = shutil.disk_usage(target).free
    except OSError as exc:
        raise ExportRefused(f"cannot use {target}: {_plain_words(exc)}") from None
    if free < need:
        raise ExportRefused(
            f"the USB key has {free / MB:.0f} MB free, the export needs {need / MB:.0f} MB: use a larger key"
        )
    return need


def _plain_words(exc: OSError) -> str:
    reasons = {
        errno.ENOSPC: "the USB key is full",
        errno.EIO: "the USB key failed to write (input/output error)",
        errno.ENODEV: "the USB key was removed",
        errno.ENOENT: "the USB key's folder disappeared (was it removed?)",
        errno.EROFS: "the USB key is read-only (its lock switch, or the box's service may not write there: "
        "`sudo venuebox export` in a shell can)",
        errno.EACCES: "the box may not write there (permissions; `sudo venuebox export` in a shell can)",
        errno.EPERM: "the box may not write there (permissions; `sudo venuebox export` in a shell can)",
    }
    return reasons.get(exc.errno or 0, f"{exc.strerror or exc}")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    files: int
    bytes: int
    ledger_rows: int
    ledger_head: str
    seconds: float
    fingerprint: str
    csv_dialect: str = csv_dialects.EXCEL.name
    # PERSONAL_FILE when the export holds participants' names (encrypted), else None; ``names`` says
    # in words who can open it, or why there is none.
    personal_file: str | None = None
    names: str = ""
    # In words: results.pdf is in the export, or why it is not (fonts missing).
    results_print: str = ""


def export_to(
    config: Config,
    target: Path,
    progress: Progress | None = None,
    *,
    opener: Opener = _open_new,
    now: datetime | None = None,
    csv_dialect: str | None = None,
) -> ExportResult:
    """Write a complete, verified export into ``target`` (a folder on the USB key); see the module
    docstring. ``csv_dialect`` (``csv_dialects.CSV_DIALECTS``; default: the ``export_csv_dialect``
    setting) is how the spreadsheet files are written; an unknown one is refused before anything
    is written. Blocking: run it in a worker thread. On a damaged database it exports what it can
    read; when it meets the damage it raises DatabaseDamaged naming the live file."""
    dialect = csv_dialects.csv_dialect(csv_dialect or config.export_csv_dialect)
    try:
        return _export(config, target, progress, opener=opener, now=now, dialect=dialect)
    except (sqlite3.DatabaseError, MemoryError) as exc:
        # The export reads a copy of the database, which carries the live file's damage: when the
        # live file has it, say so, naming it; the export and the USB key are not to blame.
        problems = database_problems(config.db_path)
        if problems:
            raise DatabaseDamaged(config.db_path, problems) from exc
        raise


def export_and_audit(
    config: Config,
    target: Path,
    actor: str,
    write: Callable[[Callable[[sqlite3.Connection], object]], object],
    *,
    progress: Progress | None = None,
    csv_dialect: str | None = None,
    request_id: str | None = None,
    exported: Callable[[ExportResult], object] | None = None,
) -> ExportResult:
    """An export (``export_to``), then its ``export.done`` audit record (the folder's name, its file
    count, the participants' file if any) by ``actor``, written through ``write`` (runs a function
    in the writer's transaction and returns once it is committed). ``exported`` hears of the
    export as soon as it is written and read back, before the record is written. Blocking; what
    `venuebox export` and ``POST /admin/v1/export`` both run."""
    result = export_to(config, target, progress, csv_dialect=csv_dialect)
    if exported is not None:
        exported(result)
    detail = {"name": result.path.name, "files": result.files, "participants_file": result.personal_file}
    write(lambda conn: audit.record(conn, actor, "export.done", detail, request_id))
    return result


def _export(
    config: Config,
    target: Path,
    progress: Progress | None,
    *,
    opener: Opener,
    now: datetime | None,
    dialect: csv_dialects.CsvDialect,
) -> ExportResult:
    import time

    started = time.monotonic()
    say = progress or (lambda _f, _s: None)
    now = now or utcnow()
    preflight(config, target)
    say(0.02, "copying the database")
    keys.ensure_box_keys(config)
    scratch_root = config.data_dir / "export-scratch"
    scratch_root.mkdir(mode=0o700, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch_root) as scratch_dir:
        scratch = Path(scratch_dir)
        copy = scratch / "venuebox.sqlite"
        copy_database(config.db_path, copy)
        facts = database_facts(copy)
        conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        try:
            box = conn.execute("SELECT box_id, name, event_id FROM box WHERE id = 1").fetchone()
            event = conn.execute("SELECT name FROM events WHERE event_id = ?", (box["event_id"],)).fetchone()
            name = export_name(box["event_id"], now)
            fingerprint = keys.key_fingerprint(keys.public_key_text(keys.signing_key(config).public_key()))
            event_name = event["name"] if event else "no event"
            heading = (
                f"venuebox export: {event_name}, box {box['name']} ({box['box_id']}), "
                f"{to_rfc3339(now)[:19]}Z, {facts['ledger_rows']} sheets, signing key {fingerprint}"
            )
            partial = target / f".{name}.partial"
            final = target / name
            if final.exists():
                raise ExportRefused(f"{final} already exists: wait a second and export again")
            recipients = keys.recipients(config)
            names = _Names(config)
            printed = _ResultsPrint(config, scratch, to_rfc3339(now))
            try:
                partial.mkdir()
                writer = _Writer(partial, opener)
                steps: list[tuple[str, Callable[[], None]]] = [
                    (
                        "scores.csv",
                        lambda: writer.write("scores.csv", _csv(tabulation.scores_table(conn), dialect)),
                    ),
                    (
                        "results.csv",
                        lambda: writer.write("results.csv", _csv(tabulation.results_table(conn), dialect)),
                    ),
                    ("results.pdf", lambda: printed.write(writer, conn)),
                    (
                        "ledger.csv",
                        lambda: writer.write("ledger.csv", _csv(tabulation.ledger_table(conn), dialect)),
                    ),
                    (
                        "audit.jsonl",
                        lambda: writer.write("audit.jsonl", _lines(tabulation.audit_jsonl(conn))),
                    ),
                    ("event/", lambda: _write_event(writer, conn)),
                    (
                        "database.sqlite.age",
                        lambda: writer.write("database.sqlite.age", _encrypted(copy, recipients)),
                    ),
                    ("keys.age", lambda: _write_keys(writer, config, scratch, copy)),
                    (
                        PERSONAL_FILE,
                        lambda: names.write(writer, conn, sealing_key(config, copy), recipients, dialect),
                    ),
                    (
                        "README.txt",
                        lambda: writer.write(
                            "README.txt", _readme(config, name, heading, dialect, names, printed)
                        ),
                    ),
                ]
                for index, (label, step) in enumerate(steps):
                    say(0.2 + 0.6 * index / len(steps), f"writing {label}")
                    step()
                manifest = _manifest(config, box, event, facts, writer.files, now, printed.absent)
                writer.write(MANIFEST, lambda out: out.write(manifest))
                say(0.85, "syncing the USB key")
                for directory in sorted({partial, *(p.parent for p in partial.rglob("*"))}, reverse=True):
                    fsync_dir(directory)
                # Not atomic_write's job: new files in a hidden folder, made whole by one directory rename.
                os.rename(partial, final)
                fsync_dir(target)
            except OSError as exc:
                shutil.rmtree(partial, ignore_errors=True)
                raise ExportFailed(
                    f"writing the export to {target} failed: {_plain_words(exc)}. No export was made "
                    "(nothing that looks complete is left on the key); the box is unaffected: try another key"
                ) from None
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)  # whatever went wrong, no half export stays
                raise
        finally:
            conn.close()
    say(0.9, "reading the export back")
    report = verify_export(final)
    if not report.ok:
        failed = final.with_name(final.name + ".FAILED")
        try:
            os.rename(final, failed)
        except OSError:
            shutil.rmtree(final, ignore_errors=True)
        raise ExportFailed(
            f"the export read back wrong ({'; '.join(report.problems[:3])}): it was renamed {failed.name}; "
            "the USB key is unreliable, try another"
        )
    say(1.0, "done")
    total = sum(f["bytes"] for f in report.files)
    return ExportResult(
        final,
        len(report.files),
        total,
        facts["ledger_rows"],
        facts["ledger_head"],
        time.monotonic() - started,
        report.fingerprint or "",
        dialect.name,
        PERSONAL_FILE if names.written else None,
        names.says,
        printed.says,
    )


def _encrypted(source: Path, recipients: list[Any]) -> Callable[[Any], Any]:
    """age-encrypt ``source`` straight onto the key (no second copy on the box's own disk)."""

    def fill(out: Any) -> None:
        failures: list[OSError] = []

        class Recording:
            """pyrage reports a failing write as its own EncryptError: keep the OSError (the key's
            errno) so the tech gets the same plain words as for any other file."""

            def write(self, data: bytes) -> int:
                try:
                    return out.write(data)
                except OSError as exc:
                    failures.append(exc)
                    raise

            def flush(self) -> None:
                pass

        with source.open("rb") as plain:
            try:
                pyrage.encrypt_io(plain, Recording(), recipients)
            except pyrage.EncryptError:
                if failures:
                    raise failures[0] from None
                raise

    return fill


# -- participants' names, for awards --------------------------------------------------------------

PERSONAL_FILE = "personal.csv.age"
PERSONAL_PLAIN = "personal.csv"
PERSONAL_HEAD = ["entry_id", "session_id", "running_order", "title", "category", "division", "participants"]


def participants_table(conn: sqlite3.Connection, key: bytes) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Every entry of the current event with its participants' names in full ("; " between two),
    in running order: what ``personal.csv`` holds, to join to results.csv on entry_id (solo awards
    name the dancer). Decrypts every name: only ever written encrypted (``_Names``)."""
    event_id = conn.execute("SELECT event_id FROM box WHERE id = 1").fetchone()[0]
    entries = conn.execute(
        "SELECT e.entry_id, e.session_id, e.running_order, e.title, e.category, e.division,"
        " e.participants_enc FROM entries e"
        " LEFT JOIN sessions se ON se.event_id = e.event_id AND se.session_id = e.session_id"
        " WHERE e.event_id = ? ORDER BY se.position, e.running_order, e.entry_id",
        (event_id,),
    ).fetchall()
    rows = [
        (
            *tuple(row)[:6],
            "; ".join(personal_fields.participant_names(key, event_id, row[0], row["participants_enc"])),
        )
        for row in entries
    ]
    return list(PERSONAL_HEAD), rows


class _Names:
    """``personal.csv.age``: written when someone besides the box can open it (an organiser key, or
    the backup passphrase, which opens the box's key); ``says`` puts in words who can, or why there
    is no such file (for the CLI's output and README.txt)."""

    def __init__(self, config: Config) -> None:
        self.organisers = len(keys.organiser_recipients(config))
        self.passphrase = keys.passphrase(config) is not None
        self.written = False
        self.no_key = not (self.organisers or self.passphrase)
        self.reason = ""

    @property
    def says(self) -> str:
        if not self.written:
            advice = (
                ": to have them, set one (`venuebox backup configure --recipient age1...`) and export again"
                if self.no_key
                else ""
            )
            return f"participants' names are not in this export: {self.reason}{advice}"
        who = []
        if self.organisers:
            who.append(f"the organiser key{'s' if self.organisers > 1 else ''}")
        if self.passphrase:
            who.append("the backup passphrase")
        return f"participants' names: {PERSONAL_FILE}, encrypted to {' and '.join(who)}"

    def write(
        self,
        writer: _Writer,
        conn: sqlite3.Connection,
        key: bytes | None,
        recipients: list[Any],
        dialect: csv_dialects.CsvDialect,
    ) -> None:
        if self.no_key:
            self.reason = (
                "no organiser key is set on the box, and names are never written in clear (they stay in "
                "database.sqlite.age, which only the box's own key opens)"
            )
            return
        plain = io.BytesIO()
        try:
            if key is None:
                raise ValueError("no personal-data key of this box opens this database")
            tabulation.write_csv(plain, *participants_table(conn, key), dialect=dialect)
        except (InvalidTag, ValueError) as exc:
            self.reason = (
                f"the box's personal-data key does not open them ({exc or 'a key from another box?'}); "
                "they stay in database.sqlite.age"
            )
            return
        sealed = pyrage.encrypt(plain.getvalue(), recipients)
        writer.write(PERSONAL_FILE, lambda out: out.write(sealed))
        self.written = True


class _ResultsPrint:
    """``results.pdf``: the results as printed (``print_results.results_pdf``), made in the scratch
    folder, then copied onto the key. Without the fonts it needs (``FontsMissing``) the export goes
    on without it; ``absent`` (for the manifest) and ``says`` (README.txt, the CLI) say why."""

    def __init__(self, config: Config, scratch: Path, generated_at: str) -> None:
        self.config = config
        self.scratch = scratch
        self.generated_at = generated_at
        self.reason: str | None = None

    @property
    def absent(self) -> dict[str, str]:
        return {} if self.reason is None else {RESULTS_PDF: self.reason}

    @property
    def says(self) -> str:
        if self.reason is None:
            return f"printed results: {RESULTS_PDF}"
        return f"no {RESULTS_PDF} in this export: {self.reason}"

    def write(self, writer: _Writer, conn: sqlite3.Connection) -> None:
        from appliance.core.print_results import find_fonts, results_pdf

        out = results_out.results_out(conn, generated_at=self.generated_at)
        made = self.scratch / RESULTS_PDF
        try:
            fonts = find_fonts(self.config.results_fonts)
            letter = self.config.results_paper == "Letter"
            results_pdf(out, made, paper="Letter" if letter else "A4", fonts=fonts)
        except FontsMissing as exc:
            self.reason = exc.detail
            return
        writer.copy(RESULTS_PDF, made)


def _write_event(writer: _Writer, conn: sqlite3.Connection) -> None:
    for file_name, content in sorted(tabulation.event_package_files(conn).items()):
        writer.write(f"event/{file_name}", _lines(iter([content])))


def _write_keys(writer: _Writer, config: Config, scratch: Path, database: Path) -> None:
    """keys.age, the keys bundle for this export's copy of the database (appliance/core/keys_bundle.py:
    the box's keys, certificate, tokens and settings, so the export restores the same box), with
    the personal-data key that opens the copy (during a key rotation the key file and the copy may
    briefly disagree)."""
    keys_dir = scratch / "keys"
    keys_dir.mkdir()
    keys_bundle.write_key_files(config, keys_dir, sealing_key(config, database), database=database)
    for path in sorted(keys_dir.iterdir()):
        writer.copy(path.name, path)


def _manifest(
    config: Config,
    box: sqlite3.Row,
    event: sqlite3.Row | None,
    facts: dict[str, Any],
    files: list[dict[str, Any]],
    now: datetime,
    absent: dict[str, str],
) -> bytes:
    body: dict[str, Any] = {
        "format": FORMAT,
        "created_at": to_rfc3339(now),
        "box": {"id": box["box_id"], "name": box["name"]},
        "event": {"id": box["event_id"], "name": event["name"] if event else None},
        "ledger": {"rows": facts["ledger_rows"], "head_hash": facts["ledger_head"]},
        "audit": {"rows": facts["audit_rows"], "head_hash": facts["audit_head"]},
        "files": sorted(files, key=lambda f: f["path"]),
    }
    if absent:
        body["absent"] = absent  # a file an export has when it can, and why this one has not
    key = keys.signing_key(config)
    public = keys.public_key_text(key.public_key())
    signature = key.sign(canonical_json(body).encode("utf-8"))
    document = {
        "manifest": body,
        "signature": {
            "algorithm": "ed25519",
            "signed": "canonical JSON of `manifest` (sorted keys, no spaces, UTF-8)",
            "public_key": public,
            "public_key_fingerprint": keys.key_fingerprint(public),
            "value": base64.b64encode(signature).decode("ascii"),
        },
    }
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# -- checking -------------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    path: Path
    problems: list[str] = field(default_factory=list)
    bad_files: list[str] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    fingerprint: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def _sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def verify_export(path: Path) -> VerifyReport:
    """Check an export: the manifest's signature, then every file's size and SHA-256; names every
    file that is missing, differs, or is not in the manifest."""
    report = VerifyReport(path)
    manifest_path = path / MANIFEST
    try:
        document = json.loads(manifest_path.read_text(encoding="utf-8"))
        body, signature = document["manifest"], document["signature"]
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(signature["public_key"]))
        public.verify(base64.b64decode(signature["value"]), canonical_json(body).encode("utf-8"))
    except FileNotFoundError:
        report.problems.append(f"{MANIFEST} is missing: this is not a complete venuebox export")
        report.bad_files.append(MANIFEST)
        return report
    except InvalidSignature:
        report.problems.append(f"{MANIFEST}: the signature does not match its content (it was changed)")
        report.bad_files.append(MANIFEST)
        return report
    except (ValueError, KeyError, TypeError) as exc:
        report.problems.append(f"{MANIFEST} is not readable ({exc})")
        report.bad_files.append(MANIFEST)
        return report
    report.manifest = body
    report.files = body.get("files", [])
    report.fingerprint = keys.key_fingerprint(signature["public_key"])
    listed = set()
    for entry in report.files:
        relative = entry["path"]
        listed.add(relative)
        file_path = path / relative
        if not file_path.is_file():
            report.problems.append(f"{relative}: missing")
            report.bad_files.append(relative)
            continue
        size, digest = _sha256(file_path)
        if size != entry["bytes"] or digest != entry["sha256"]:
            report.problems.append(f"{relative}: differs from the manifest (size or SHA-256)")
            report.bad_files.append(relative)
    for extra in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = extra.relative_to(path).as_posix()
        if relative != MANIFEST and relative not in listed:
            report.problems.append(f"{relative}: not in the manifest")
            report.bad_files.append(relative)
    return report


# -- README ---------------------------------------------------------------------------------------


def _paragraph(text: str) -> str:
    """``text`` as README.txt's lines: 2 spaces in, at most 102 characters, commands never cut."""
    kept = re.sub(r"`[^`]*`", lambda m: m.group(0).replace(" ", "\0"), text)
    lines = textwrap.wrap(
        kept, width=102, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False
    )
    return "\n".join(lines).replace("\0", " ") + "\n"


def _readme(
    config: Config,
    name: str,
    heading: str,
    dialect: csv_dialects.CsvDialect,
    names: _Names,
    printed: _ResultsPrint,
) -> Callable[[Any], Any]:
    has_passphrase = keys.passphrase(config) is not None
    organisers = keys.organiser_recipients(config)
    how = []
    if organisers:
        how.append(
            """  With the organiser's age key (the file made by age-keygen):
      age -d -i organiser-key.txt -o database.sqlite database.sqlite.age
"""
        )
    if has_passphrase:
        how.append(
            """  With the backup passphrase (two steps; age asks for the passphrase each time it needs it):
      age -d -o identity.txt backup-identity.age
      age -d -i identity.txt -o database.sqlite database.sqlite.age
"""
        )
    if not how:
        how.append(
            """  This box had no organiser key and no passphrase set: only the box's own key
  (backup-identity.key in its data dir) opens it:
      age -d -i backup-identity.key -o database.sqlite database.sqlite.age
"""
        )
    restore_with = "--identity organiser-key.txt" + (" (or --passphrase-file FILE)" if has_passphrase else "")
    other = next(d for d in csv_dialects.CSV_DIALECTS.values() if d is not dialect)
    if names.written:
        keys_open = []
        if organisers:
            keys_open.append(
                f"""  With the organiser's age key, on your own computer (not onto this key: the names
  would be on it in clear):
      age -d -i organiser-key.txt {PERSONAL_FILE} > {PERSONAL_PLAIN}
"""
            )
        if has_passphrase:
            keys_open.append(
                f"""  With the backup passphrase (age asks for it):
      age -d -o identity.txt backup-identity.age
      age -d -i identity.txt {PERSONAL_FILE} > {PERSONAL_PLAIN}
"""
            )
        personal_text = f"""PARTICIPANTS' NAMES (for awards: a solo award names its dancer)
  {PERSONAL_FILE}  one line per routine: entry_id, session_id, running_order, title, category,
                    division, and its participants' names in full ("; " between two). Join it to
                    results.csv on entry_id. It is encrypted with age, like the database:
{"".join(keys_open)}  Then open {PERSONAL_PLAIN} like the other CSV files (the same separators). It is
  personal data: show it only to who may see it, and delete it when the awards are done.
"""
    else:
        personal_text = "PARTICIPANTS' NAMES\n" + _paragraph(
            f"This export has no {PERSONAL_FILE}: {names.reason}."
        )
        if names.no_key:
            personal_text += """  For awards that need names, set an organiser key on the box
  (`venuebox backup configure --recipient age1...`, the public key age-keygen printed) and export
  again: the names then come encrypted to that key, never in clear.
"""
    plain_too = f" (and {PERSONAL_PLAIN} below)" if names.written else ""
    names_in = (
        f"{PERSONAL_FILE} and the database, both encrypted" if names.written else "the encrypted database"
    )
    csv_text = _paragraph(
        f"These CSV files{plain_too} are UTF-8 (with a byte-order mark, so spreadsheet "
        f'programs show accents right), in the "{dialect.name}" dialect: {dialect.says}. If your '
        "spreadsheet puts whole lines in one column, or reads a score as a date, export again with "
        f"`venuebox export --csv-dialect {other.name}` ({other.says}), or set the box's default (the "
        "setting export_csv_dialect). A text holding a separator, a quote, a tab or a line break is "
        "quoted; a title that starts with = + - or @ is written with a leading ' so a spreadsheet shows "
        "it as text instead of running it as a formula. They hold no personal data beyond judges' names "
        f"and routine titles: dancers' names are only in {names_in}, judges' comments only in the "
        "encrypted database."
    )
    if printed.reason is None:
        results_pdf_text = (
            "  results.pdf   the same results, printable: a page per group with the rule used,\n"
            "                each row PROVISIONAL or FINAL.\n"
        )
    else:
        results_pdf_text = _paragraph(f"No results.pdf: {printed.reason}. Print results.csv instead.")
    text = f"""{heading}
{"=" * len(heading)}
Folder: {name}

This folder is a complete copy of the scoring box at the moment of the export. Nothing here needs the
box, the network or the cloud. Keep the key safe: it holds the scores and the encrypted database.

TO FINISH THE COMPETITION BY HAND
  results.csv   one line per routine, as the box computes results under the event's scoring rules
                (without rules: the mean of the judges' totals, 2 decimals, ranked highest first within
                category and division): each judge's total, the judges dropped, the score (what is
                ranked), the rank within its group (ties share a rank), the award, and complete /
                provisional / final. "complete" = yes when every judge on the panel has scored the
                routine; an incomplete routine has its partial score but no rank and no award.
                "final" = yes only when its session is locked and every panel judge signed off;
                every other row is provisional: check it before announcing.
{results_pdf_text}\
  scores.csv    one line per routine and judge: the judge's current scores per criterion and the
                total ("corrected" = yes when the judge corrected an earlier sheet).
  ledger.csv    every sheet ever received, in order, corrections included ("current" = yes for the
                one that counts; "superseded_by" names the sheet that corrected it). submitted_at is
                the tablet's clock, received_at the box's (UTC).
{csv_text}
{personal_text}
OTHER FILES
  audit.jsonl          who did what on the box, one JSON object per line (freezes, pairing, ...)
  event/               the event as its current schedule version has it (without participants' names;
                       scratched entries and unscheduled walk-ons left out), re-importable on
                       another box, so its CSVs are always in the event package's own format
                       (commas, decimal points), whatever the dialect above.
                       CAUTION: they are not guarded against formulas (that would change the titles):
                       a cell beginning with =, +, - or @ may be taken by a spreadsheet for a formula
                       and run. Do not double-click them: open them as text (in the spreadsheet's
                       import dialog, set every column to Text), or use results.csv and scores.csv.
  database.sqlite.age  the full database, personal data included, encrypted with age
  keys.age             the box's keys, TLS certificate, tokens and settings: a restore brings the same
                       box back (names readable, tablets reconnect); secrets, encrypted like the database
  backup-identity.age  (only with a backup passphrase) the box's key, locked with the passphrase
  MANIFEST.json        every file's size and SHA-256, signed by the box

OPENING THE DATABASE (the standard `age` tool, https://age-encryption.org; Debian: apt install age)
{"".join(how)}  Then open database.sqlite with sqlite3 or any SQLite browser. To bring a box back from it:
      venuebox restore database.sqlite.age --to NEW_DATA_DIR {restore_with}

CHECKING THIS FOLDER
  venuebox export verify THIS_FOLDER   checks the signature and every file, and names any that differ
  (a file added to the folder too: decrypt {PERSONAL_FILE} and the database elsewhere).
  Without venuebox: `sha256sum FILE` and compare with MANIFEST.json (that checks the files, not the
  signature).
"""
    return lambda out: out.write(text.encode("utf-8"))


# -- one export at a time, for the admin API ------------------------------------------------------


class ExportBusy(DomainError):
    """An export is already running; the console shows its progress."""


class ExportJob:
    """The daemon's export in progress (or the last one): what the console's progress bar reads.
    Written by the export's worker thread, read by the API: plain attribute writes."""

    def __init__(self) -> None:
        self.state: ExportState = "idle"
        self.fraction = 0.0
        self.step = ""
        self.target: str | None = None
        self.path: str | None = None
        self.error: str | None = None
        self.started_at: str | None = None
        self.finished_at: str | None = None

    def view(self) -> ExportJobView:
        return ExportJobView(
            state=self.state,
            fraction=self.fraction,
            step=self.step,
            target=self.target,
            path=self.path,
            error=self.error,
            started_at=self.started_at,
            finished_at=self.finished_at,
        )

    def start(self, target: Path) -> None:
        if self.state == "running":
            raise ExportBusy(f"an export to {self.target} is running ({self.fraction:.0%}): wait for it")
        self.__init__()  # type: ignore[misc]
        self.state, self.target, self.started_at = "running", str(target), to_rfc3339(utcnow())

    def progress(self, fraction: float, step: str) -> None:
        self.fraction, self.step = fraction, step

    def finish(self, result: ExportResult | None, error: str | None) -> None:
        self.finished_at = to_rfc3339(utcnow())
        if result is not None:
            self.state, self.path, self.fraction = "done", str(result.path), 1.0
        else:
            self.state, self.error = "failed", error
