"""Export bench: how long the USB export and the encrypted snapshot of a box holding 100,000 sheets
take, against the cost of moving and encrypting the same bytes on the same disk.

What it does, in one run:

* **Fill** (not measured): a fresh data dir with the shipped sample event (``tests.conftest.make_box``),
  one really paired device per judge (J1..J5), and ``--sheets`` score sheets (default 100,000)
  through the real ledger path (``appliance.core.ledger.submit_sheets`` in the writer's transaction, as
  ``bench/uplink.py`` fills its box: ``loadgen.submit_sheet_chains``), so every sheet is
  hash-chained and queued in the outbox. The sample event has 200 (entry, judge) pairs, so each pair
  carries a long correction chain; ledger.csv gets every sheet, scores.csv and results.csv only the
  heads. The store is then closed (checkpointed: the database is one file, no WAL content).
* **Baselines**, on that database file, before anything else reads it:
  (a) ``shutil.copyfile`` of the file plus an fsync of the copy: the floor for moving those bytes
  durably on this disk; (b) SQLite's online backup API alone (``appliance.core.backup.copy_database``),
  the copy the export and the snapshot start from; (c) age encryption alone of that copy
  (``appliance.core.backup.encrypt_to``: ``pyrage.encrypt_file`` to
  ``appliance.core.keys.recipients(config)``, i.e. the box's own recipient, then fsync and
  rename). (b) + (c) is what a snapshot cannot avoid.
* **Export**: ``appliance.core.export.export_to(config, target, progress=...)`` into a temporary
  directory standing in for the USB key, on the same file system as the data dir (printed, and
  checked by device number): the whole call's wall time and each step's, from the progress
  callback's texts and the times it was called (a step runs from its text to the next one; the
  manifest is written inside the README.txt step); every file's size; then
  ``appliance.core.export.verify_export(path)`` once more from the bench, timed, and its ``ok``.
  The Store is open (idle) while the export runs, as in the daemon.
* **Snapshot**: ``appliance.core.backup.snapshot_job(config, store)`` with the box's
  ``appliance.core.storage.Store(config.db_path)``, then ``appliance.core.backup.verify_job(config,
  store)`` (decrypt, integrity check, both hash chains, counts against the recorded ones): wall
  times and the snapshot's size.
* The ratios export / baseline and snapshot / baseline, and the target (export < 10 s) as "target
  met" / "target NOT met". Every phase runs once, on a warm page cache (the box was just filled),
  on a machine other work may share (the load average before the run is printed).

``--profile`` runs a second export (into a second target directory) under cProfile and prints where
the time goes; by default (``--profile auto``) that happens only when the first export misses the
target. The profiled export's time is not comparable.

Run from the repo root (never run as a test)::

    .venv/bin/python bench/export.py                   # 100,000 sheets
    .venv/bin/python bench/export.py --sheets 5000     # a quick run
    .venv/bin/python bench/export.py --profile always

Exit status: 0 when every check passes (the export verifies, the snapshot verifies, both hold
every sheet; the target is reported, not enforced), 1 when a check fails or the export or snapshot
raised, 2 when the box could not be set up.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import loadgen

sys.path.insert(0, str(loadgen.ROOT))

TARGET_EXPORT_S = 10.0
BOX_DIR = "box"
USB_DIR = "usb"  # stands in for the USB key: a directory on the data dir's file system
MB = 1024 * 1024
T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


# --------------------------------------------------------------------------------------------
# The box: filled through the ledger
# --------------------------------------------------------------------------------------------


@dataclass
class FilledBox:
    config: Any
    sheets: int
    seconds: float

    @property
    def db_bytes(self) -> int:
        return self.config.db_path.stat().st_size


def fill_box(data_dir: Path, sheets: int) -> FilledBox:
    """A real box with the sample event and ``sheets`` sheets in correction chains; the store closed."""
    make_box, _ = loadgen.load_fixtures()
    from appliance.core.storage import Store

    started = time.perf_counter()
    config = make_box(data_dir)
    with Store(config.db_path) as store:
        devices = loadgen.pair_judges(store)
        made = loadgen.submit_sheet_chains(store, devices, sheets)
    wal = config.db_path.with_name(config.db_path.name + "-wal")
    if wal.exists() and wal.stat().st_size:
        raise RuntimeError(f"{wal} still holds {wal.stat().st_size} bytes after the store closed")
    return FilledBox(config, made, time.perf_counter() - started)


def file_system(path: Path) -> str:
    """'device, type, mounted at M' of the file system holding ``path`` (from /proc/mounts)."""
    best = ("?", "?", "/")
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown file system"
    resolved = str(path.resolve())
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1].replace("\\040", " ")
        inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best[2]):
            best = (parts[0], parts[2], mount)
    return f"{best[0]}, {best[1]}, mounted at {best[2]}"


# --------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------


@dataclass
class Baseline:
    key: str
    name: str
    seconds: float
    bytes: int  # bytes written
    note: str = ""


def baselines(filled: FilledBox, scratch: Path) -> list[Baseline]:
    """(a) copyfile + fsync, (b) the online backup API, (c) age encryption of (b)'s copy."""
    from appliance.core import keys
    from appliance.core.backup import copy_database, encrypt_to
    from appliance.shared.secrets_files import fsync_file

    db = filled.config.db_path
    scratch.mkdir()
    plain = scratch / "copyfile.sqlite"
    _, copy_s = timed(lambda: shutil.copyfile(db, plain))
    _, sync_s = timed(lambda: fsync_file(plain))
    copied = scratch / "backup-api.sqlite"
    _, backup_s = timed(lambda: copy_database(db, copied))
    recipients = keys.recipients(filled.config)
    encrypted = scratch / "encrypted.sqlite.age"
    _, encrypt_s = timed(lambda: encrypt_to(recipients, copied, encrypted))
    return [
        Baseline(
            "a",
            "shutil.copyfile + fsync",
            copy_s + sync_s,
            plain.stat().st_size,
            f"copyfile {copy_s:.3f} s + fsync {sync_s:.3f} s",
        ),
        Baseline("b", "online backup API (copy_database)", backup_s, copied.stat().st_size),
        Baseline(
            "c",
            "age encrypt of (b) (encrypt_to)",
            encrypt_s,
            encrypted.stat().st_size,
            f"{len(recipients)} recipient(s), fsync included",
        ),
        Baseline("b+c", "(b) + (c): copy, then encrypt", backup_s + encrypt_s, encrypted.stat().st_size),
    ]


# --------------------------------------------------------------------------------------------
# The export
# --------------------------------------------------------------------------------------------


@dataclass
class Step:
    text: str
    seconds: float
    bytes: int | None  # what the step wrote (or read back), when one file set stands for it


@dataclass
class ExportRun:
    seconds: float = 0.0  # the bench's wall clock around export_to
    reported_s: float = 0.0  # ExportResult.seconds (the export's own clock)
    steps: list[Step] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)  # path, bytes (MANIFEST.json included)
    bytes: int = 0
    ledger_rows: int = 0
    path: Path | None = None
    verify_s: float = 0.0
    verify_ok: bool = False
    problems: list[str] = field(default_factory=list)
    error: str | None = None


# Files written in a step besides the one its text names (the manifest is written after README.txt,
# before the next progress call; backup-identity.age only with a passphrase).
STEP_EXTRA_FILES = {"keys.age": ("backup-identity.age",), "README.txt": ("MANIFEST.json",)}


def step_bytes(text: str, files: dict[str, int], db_bytes: int, export_bytes: int) -> int | None:
    if text == "copying the database":
        return db_bytes
    if text == "encrypting the database":
        return files.get("database.sqlite.age")
    if text == "reading the export back":
        return export_bytes
    if not text.startswith("writing "):
        return None
    label = text.removeprefix("writing ")
    wanted = (label, *STEP_EXTRA_FILES.get(label, ()))
    matched = [
        size
        for path, size in files.items()
        if path in wanted or (label.endswith("/") and path.startswith(label))
    ]
    return sum(matched) if matched else None


def run_export(filled: FilledBox, target: Path) -> ExportRun:
    """export_to into ``target`` with its progress timed, then verify_export of the result."""
    from appliance.core.export import export_to, verify_export
    from appliance.shared.errors import DomainError

    run = ExportRun()
    marks: list[tuple[float, str]] = []
    started = time.perf_counter()
    try:
        result = export_to(
            filled.config, target, progress=lambda _f, text: marks.append((time.perf_counter(), text))
        )
    except DomainError as exc:
        run.seconds = time.perf_counter() - started
        run.error = f"{type(exc).__name__}: {exc.detail}"
        return run
    ended = time.perf_counter()
    run.seconds, run.reported_s = ended - started, result.seconds
    run.bytes, run.ledger_rows, run.path = result.bytes, result.ledger_rows, result.path
    files = {
        p.relative_to(result.path).as_posix(): p.stat().st_size for p in result.path.rglob("*") if p.is_file()
    }
    run.files = [{"path": path, "bytes": size} for path, size in sorted(files.items())]
    if marks and marks[0][0] - started > 0.0005:
        run.steps.append(Step("(before the first step: preflight)", marks[0][0] - started, None))
    for (at, text), (until, _) in zip(marks, [*marks[1:], (ended, "")], strict=True):
        if text != "done" or until - at > 0.0005:
            run.steps.append(Step(text, until - at, step_bytes(text, files, filled.db_bytes, result.bytes)))
    report, run.verify_s = timed(lambda: verify_export(result.path))
    run.verify_ok, run.problems = report.ok, report.problems
    return run


def profile_export(filled: FilledBox, target: Path, top: int) -> str:
    """A second export under cProfile (this thread: the export runs here); the top functions."""
    from appliance.core.export import export_to

    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    try:
        export_to(filled.config, target)
    finally:
        profile.disable()
    seconds = time.perf_counter() - started
    out = io.StringIO()
    out.write(f"cProfile of a second export ({seconds:.2f} s under the profiler, into {target.name}/)\n")
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# --------------------------------------------------------------------------------------------
# The snapshot
# --------------------------------------------------------------------------------------------


@dataclass
class SnapshotRun:
    seconds: float = 0.0
    bytes: int = 0
    name: str = ""
    ledger_rows: int = 0
    verify_s: float = 0.0
    verified: list[tuple[str, list[str]]] = field(default_factory=list)
    error: str | None = None

    @property
    def verify_ok(self) -> bool:
        return bool(self.verified) and all(not problems for _, problems in self.verified)


def run_snapshot(filled: FilledBox, store: Any) -> SnapshotRun:
    from appliance.core.backup import snapshot_job, verify_job
    from appliance.shared.errors import DomainError

    run = SnapshotRun()
    try:
        snapshot, run.seconds = timed(lambda: snapshot_job(filled.config, store))
        run.bytes, run.name = snapshot.bytes, snapshot.name
        run.ledger_rows = snapshot.facts["ledger_rows"]
        run.verified, run.verify_s = timed(lambda: verify_job(filled.config, store))
    except DomainError as exc:
        run.error = f"{type(exc).__name__}: {exc.detail}"
    return run


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def _mb(size: int | None) -> str:
    return "-" if size is None else f"{size / MB:.1f}"


def _rate(size: int | None, seconds: float) -> str:
    # A rate over less than a megabyte says more about the call overhead than about the disk.
    return "-" if size is None or size < MB or seconds <= 0 else f"{size / MB / seconds:.0f}"


def report(
    filled: FilledBox,
    args: argparse.Namespace,
    where: str,
    base: list[Baseline],
    export: ExportRun,
    snapshot: SnapshotRun,
) -> None:
    print()
    print(
        f"venuebox export bench: {filled.sheets:,} sheets, database {filled.db_bytes / MB:.1f} MB "
        f"({filled.db_bytes:,} bytes); data dir and export target on the same file system ({where}); "
        f"warm page cache; {os.cpu_count()} CPUs, load average {args.load_before:.2f} before the run"
    )
    print(
        f"fill (not measured): {filled.sheets:,} sheets through submit_sheets in {filled.seconds:.1f} s "
        f"({filled.sheets / filled.seconds:,.0f} sheets/s)"
    )

    print()
    header = f"{'baseline':<42}{'seconds':>9}{'MB':>8}{'MB/s':>7}  notes"
    print(header)
    print("-" * len(header))
    for b in base:
        print(
            f"({b.key}) {b.name:<{38 - len(b.key)}}{b.seconds:>9.3f}{_mb(b.bytes):>8}"
            f"{_rate(b.bytes, b.seconds):>7}  {b.note}"
        )

    print()
    if export.error:
        print(f"export: FAILED after {export.seconds:.2f} s: {export.error}")
    else:
        header = f"{'export step (progress text)':<42}{'seconds':>9}{'share':>7}{'MB':>8}{'MB/s':>7}"
        print(header)
        print("-" * len(header))
        for s in export.steps:
            share = s.seconds / export.seconds * 100 if export.seconds else 0.0
            print(
                f"{s.text:<42}{s.seconds:>9.3f}{share:>6.1f}%{_mb(s.bytes):>8}{_rate(s.bytes, s.seconds):>7}"
            )
        print("-" * len(header))
        print(
            f"{'export_to, whole call':<42}{export.seconds:>9.3f}{100:>6.1f}%{_mb(export.bytes):>8}"
            f"{_rate(export.bytes, export.seconds):>7}"
        )
        print(
            f"(a step runs from its progress text to the next; 'writing README.txt' includes MANIFEST.json; "
            f"the export's own clock: {export.reported_s:.3f} s; MB of a step = the files it wrote, "
            "or the database it copied, or the export it read back)"
        )
        sizes = ", ".join(f"{f['path']} {_mb(f['bytes'])}" for f in export.files)
        total = sum(f["bytes"] for f in export.files)
        print(
            f"export size: {export.bytes:,} bytes in the manifest, {total:,} bytes ({total / MB:.1f} MB) on "
            f"disk with MANIFEST.json, {len(export.files)} files; MB: {sizes}"
        )
        print(
            f"verify_export(path).ok: {export.verify_ok} ({export.verify_s:.3f} s, run again by the bench"
            f"{'; ' + '; '.join(export.problems[:3]) if export.problems else ''})"
        )

    if snapshot.error:
        print(f"snapshot: FAILED: {snapshot.error}")
    else:
        print(
            f"snapshot_job: {snapshot.seconds:.3f} s, {snapshot.name} {snapshot.bytes:,} bytes "
            f"({snapshot.bytes / MB:.1f} MB, {_rate(snapshot.bytes, snapshot.seconds)} MB/s), "
            f"{snapshot.ledger_rows:,} ledger rows"
        )
        problems = "; ".join(p for _, found in snapshot.verified for p in found)
        print(
            f"verify_job: {snapshot.verify_s:.3f} s, {len(snapshot.verified)} snapshot(s) verified, "
            f"ok: {snapshot.verify_ok}{' (' + problems + ')' if problems else ''}"
        )

    print()
    header = f"{'ratio':<22}" + "".join(f"{'/ (' + b.key + ')':>10}" for b in base)
    print(header)
    print("-" * len(header))
    for name, seconds, failed in (
        ("export_to", export.seconds, export.error),
        ("snapshot_job", snapshot.seconds, snapshot.error),
    ):
        if failed:
            continue
        print(
            f"{name:<22}"
            + "".join(f"{seconds / b.seconds:>10.1f}" if b.seconds else f"{'-':>10}" for b in base)
        )
    print()
    met = export.error is None and export.seconds < TARGET_EXPORT_S
    print(
        f"target export < {TARGET_EXPORT_S:g} s ({filled.sheets:,} sheets): {export.seconds:.2f} s "
        f"-> {loadgen.verdict(met)}"
    )


def checks(filled: FilledBox, export: ExportRun, snapshot: SnapshotRun) -> bool:
    results = {
        "export finished": export.error is None,
        "verify_export ok": export.verify_ok,
        f"export ledger rows == {filled.sheets:,} sheets": export.ledger_rows == filled.sheets,
        "snapshot taken": snapshot.error is None,
        "snapshot verifies": snapshot.verify_ok,
        f"snapshot ledger rows == {filled.sheets:,} sheets": snapshot.ledger_rows == filled.sheets,
    }
    print("checks: " + ", ".join(f"{name}: {'OK' if ok else 'FAILED'}" for name, ok in results.items()))
    return all(results.values())


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> int:
    from appliance.core.storage import Store

    filled = fill_box(workdir / BOX_DIR, args.sheets)
    target = workdir / USB_DIR
    target.mkdir()
    if target.stat().st_dev != filled.config.data_dir.stat().st_dev:
        raise RuntimeError(f"{target} and {filled.config.data_dir} are not on the same file system")
    where = file_system(target)
    print(
        f"bench: box with {filled.sheets:,} sheets ({filled.db_bytes / MB:.1f} MB database) in "
        f"{filled.seconds:.1f} s, data dir {filled.config.data_dir}; baselines ...",
        flush=True,
    )
    base = baselines(filled, workdir / "baseline")
    print("  ... " + ", ".join(f"({b.key}) {b.seconds:.2f} s" for b in base), flush=True)

    with Store(filled.config.db_path) as store:
        print(f"bench: export into {target} ...", flush=True)
        export = run_export(filled, target)
        print(f"  ... export {export.seconds:.2f} s{', FAILED' if export.error else ''}", flush=True)
        print("bench: snapshot_job, then verify_job ...", flush=True)
        snapshot = run_snapshot(filled, store)
        print(f"  ... snapshot {snapshot.seconds:.2f} s, verify {snapshot.verify_s:.2f} s", flush=True)

    report(filled, args, where, base, export, snapshot)
    ok = checks(filled, export, snapshot)

    missed = export.error is None and export.seconds >= TARGET_EXPORT_S
    if args.profile == "always" or (args.profile == "auto" and missed):
        second = workdir / f"{USB_DIR}-profiled"
        second.mkdir()
        print()
        print(profile_export(filled, second, args.profile_top))
    return 0 if ok else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sheets", type=int, default=100_000, help="sheets in the box (100000)")
    parser.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        default="auto",
        help="cProfile a second export: when the first misses the target (auto), always or never",
    )
    parser.add_argument("--profile-top", type=int, default=25, help="functions shown by the profile (25)")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and exports (path printed)")
    args = parser.parse_args(argv)
    if args.sheets < 1:
        parser.error("--sheets must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    try:
        return loadgen.run_in_workdir("export", parse_args(argv), run, "data dir and exports")
    finally:
        print(f"bench: whole run {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
