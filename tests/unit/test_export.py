"""The USB export on real files: what it writes, that it verifies, that a byte changed anywhere is
named, that a failing key leaves nothing that looks complete, and how USB keys are found."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import pytest

from appliance.core import export
from appliance.core.box import freeze
from appliance.core.chain import verify_chain
from appliance.core.config import Config
from appliance.core.storage import Store
from tests.unit.test_backup import score


@pytest.fixture
def config(tmp_path: Path) -> Config:
    from tests.conftest import make_box

    box = make_box(tmp_path / "box")
    score(box, 4)
    return box


@pytest.fixture
def usb(tmp_path: Path) -> Path:
    key = tmp_path / "usb"
    key.mkdir()
    return key


def test_the_export_holds_every_file_and_verifies(config: Config, usb: Path) -> None:
    steps: list[str] = []
    done = export.export_to(config, usb, progress=lambda _f, step: steps.append(step))
    assert done.path.parent == usb and done.path.name.startswith("venuebox-glow-2026-toronto-")
    assert [p.name for p in usb.iterdir()] == [done.path.name]  # nothing partial left beside it
    names = {p.relative_to(done.path).as_posix() for p in done.path.rglob("*") if p.is_file()}
    assert {
        "scores.csv",
        "ledger.csv",
        "results.csv",
        "audit.jsonl",
        "event/event.json",
        "event/entries.csv",
        "event/judges.csv",
        "database.sqlite.age",
        "keys.age",
        "MANIFEST.json",
        "README.txt",
    } <= names
    report = export.verify_export(done.path)
    assert report.ok, report.problems
    manifest = json.loads((done.path / "MANIFEST.json").read_text())["manifest"]
    assert manifest["ledger"]["rows"] == done.ledger_rows == 4
    assert {f["path"] for f in manifest["files"]} == names - {"MANIFEST.json"}
    assert steps[-1] == "done" and "reading the export back" in steps
    ledger = (done.path / "ledger.csv").read_bytes()
    assert ledger.startswith(b"\xef\xbb\xbf")
    assert len(list(csv.reader(io.StringIO(ledger.decode("utf-8-sig"))))) == 1 + 4


def test_a_byte_changed_in_any_file_is_named(config: Config, usb: Path) -> None:
    done = export.export_to(config, usb)
    for path in sorted(p for p in done.path.rglob("*") if p.is_file()):
        original = path.read_bytes()
        changed = bytearray(original)
        changed[len(changed) // 2] ^= 0x01
        path.write_bytes(bytes(changed))
        report = export.verify_export(done.path)
        relative = path.relative_to(done.path).as_posix()
        assert not report.ok and report.bad_files == [relative], (relative, report.problems)
        path.write_bytes(original)
    assert export.verify_export(done.path).ok
    (done.path / "notes.txt").write_text("added later")
    assert export.verify_export(done.path).bad_files == ["notes.txt"]


def test_exports_work_while_frozen(config: Config, usb: Path) -> None:
    with Store(config.db_path) as store:
        store.write_sync(lambda c: freeze(c, "dispute on entry 142", "test"))
    assert export.verify_export(export.export_to(config, usb).path).ok


class FailingKey:
    """A USB key that fails after ``budget`` bytes (the outer boundary: a real key pulled out or
    dying mid-write), with the errno it fails with."""

    def __init__(self, budget: int, code: int) -> None:
        self.budget = budget
        self.code = code

    def open(self, path: Path) -> BinaryIO:
        return _Dying(open(path, "xb"), self)  # type: ignore[return-value]


class _Dying:
    def __init__(self, stream: BinaryIO, key: FailingKey) -> None:
        self.stream, self.key = stream, key

    def write(self, data: bytes) -> int:
        self.key.budget -= len(data)
        if self.key.budget < 0:
            raise OSError(self.key.code, os.strerror(self.key.code))
        return self.stream.write(data)

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def close(self) -> None:
        self.stream.close()


@pytest.mark.parametrize(
    ("code", "words"),
    [(errno.EIO, "failed to write"), (errno.ENOSPC, "is full"), (errno.ENODEV, "was removed")],
)
@pytest.mark.parametrize("budget", [10, 200_000])
def test_a_key_failing_mid_export_leaves_nothing_that_looks_complete(
    config: Config, usb: Path, code: int, words: str, budget: int
) -> None:
    before = config.db_path.read_bytes()
    with pytest.raises(export.ExportFailed, match=words) as failed:
        export.export_to(config, usb, opener=FailingKey(budget, code).open)
    assert "No export was made" in failed.value.detail
    assert list(usb.iterdir()) == []  # the partial directory is gone too
    assert config.db_path.read_bytes() == before
    with Store(config.db_path) as store:
        assert store.query(lambda c: verify_chain(c, "sheets")).ok


def test_a_key_too_small_is_refused_before_anything_is_written(config: Config, usb: Path) -> None:
    need = export.estimate_bytes(config)
    assert need > config.db_path.stat().st_size
    with pytest.raises(export.ExportRefused, match=r"MB free, the export needs \d+ MB: use a larger key"):
        export.preflight(config, Path("/proc"))  # a file system with nothing free
    assert list(usb.iterdir()) == []


def test_usb_keys_are_found_from_proc_mounts_and_sysfs(tmp_path: Path) -> None:
    sys_block = tmp_path / "sys" / "class" / "block"
    devices = tmp_path / "sys" / "devices"
    for disk, removable in (("sda", "0"), ("sdb", "1")):
        (devices / disk / f"{disk}1").mkdir(parents=True)
        (devices / disk / f"{disk}1" / "partition").write_text("1\n")
        (devices / disk / "removable").write_text(removable + "\n")
        sys_block.mkdir(parents=True, exist_ok=True)
        (sys_block / f"{disk}1").symlink_to(devices / disk / f"{disk}1")
    key_mount = tmp_path / "mnt" / "KEY 1"
    key_mount.mkdir(parents=True)
    mounts = tmp_path / "mounts"
    escaped = str(key_mount).replace(" ", "\\040")
    mounts.write_text(
        "\n".join(
            [
                "proc /proc proc rw 0 0",
                f"/dev/sda1 {tmp_path} ext4 rw 0 0",  # the box's own disk: not removable
                f"/dev/sdb1 {escaped} vfat rw 0 0",  # a removable disk, wherever it is mounted
                "tmpfs /run tmpfs rw 0 0",
            ]
        )
        + "\n"
    )
    found = export.find_usb_targets(mounts, sys_block)
    assert [(t.mountpoint, t.device, t.removable) for t in found] == [(key_mount, "/dev/sdb1", True)]
    assert found[0].free_bytes > 0
    assert export.choose_target(None, found) == key_mount
    with pytest.raises(export.ExportRefused, match="no USB key found"):
        export.choose_target(None, [])
    with pytest.raises(export.ExportRefused, match=r"choose one \(--to PATH\)"):
        export.choose_target(None, found * 2)


@pytest.mark.parametrize("to", ["/" + "a" * 300, "/tmp/" + "b/" * 3000, "nul\x00byte", "/no/such/folder"])
def test_a_folder_that_cannot_be_one_is_refused_in_words(to: str) -> None:
    """Found by fuzzing the admin API: a name too long for the file system answered 500."""
    with pytest.raises(export.ExportRefused):
        export.choose_target(Path(to), [])


def test_the_api_exports_only_where_keys_are_mounted(tmp_path: Path) -> None:
    mounts = tmp_path / "media"
    (mounts / "usb").mkdir(parents=True)
    assert export.check_api_target(mounts / "usb", [str(mounts)]) == (mounts / "usb").resolve()
    with pytest.raises(export.ExportRefused, match="USB keys only"):
        export.check_api_target(tmp_path, [str(mounts)])
    with pytest.raises(export.ExportRefused, match="USB keys only"):
        export.check_api_target(mounts / "usb" / ".." / "..", [str(mounts)])  # no way out by ..


def test_an_export_during_a_half_done_key_rotation_carries_the_key_that_opens_its_database(
    tmp_path: Path, usb: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64

    import pyrage

    from appliance.core import data_key, keys, personal
    from tests.conftest import make_box
    from tests.personal_package import personal_package

    config = make_box(tmp_path / "personal-box", package=personal_package(tmp_path / "package"))
    old = personal.load_key(config.data_key_path)

    def crash(path: Path) -> None:
        raise OSError("power cut before the key file was renamed")

    # The database committed to the new key; personal-data.key still holds the old one.
    monkeypatch.setattr(data_key, "_promote", crash)
    with Store(config.db_path) as store, pytest.raises(OSError):
        data_key.rotate(config, store)
    monkeypatch.undo()
    new = personal.load_key(data_key.pending_path(config.data_key_path))
    assert new != old and personal.load_key(config.data_key_path) == old

    done = export.export_to(config, usb)
    bundle = json.loads(pyrage.decrypt((done.path / "keys.age").read_bytes(), [keys.box_identity(config)]))
    assert base64.b64decode(bundle["personal_data_key"]) == new
    assert export.verify_export(done.path).ok


# -- the CSV dialect, and titles a spreadsheet could cut (issue 17, item 19) -----------------------

TRICKY = 'Tab\there; semi, comma "quote"'
JUST_A_TAB = "Left\tRight"  # nothing else the csv module would quote


def tricky_box(tmp_path: Path, **settings: object) -> Config:
    """The sample event with entry 101 titled ``TRICKY`` (a tab, a semicolon, a comma, a quote) and 102
    ``JUST_A_TAB``; 4 sheets."""
    import shutil

    from tests.conftest import SAMPLE_EVENT, make_box

    package = tmp_path / "tricky-package"
    shutil.copytree(SAMPLE_EVENT, package)
    entries = package / "entries.csv"
    with entries.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    for row in rows:
        row[4] = {"101": TRICKY, "102": JUST_A_TAB}.get(row[0], row[4])
    with entries.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    box = make_box(tmp_path / "tricky-box", package=package, **settings)
    score(box, 4)
    return box


def read_csv(path: Path, delimiter: str) -> list[dict[str, str]]:
    """A CSV file as a spreadsheet (or a tabulator's script) reads it with the given separator."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f, delimiter=delimiter))


@pytest.mark.parametrize(
    ("dialect", "delimiter", "decimal"), [("excel", ",", "."), ("excel-semicolon", ";", ",")]
)
def test_each_dialect_round_trips_a_tricky_title_and_writes_its_decimal_mark(
    tmp_path: Path, usb: Path, dialect: str, delimiter: str, decimal: str
) -> None:
    box = tricky_box(tmp_path)
    done = export.export_to(box, usb, csv_dialect=dialect)
    assert done.csv_dialect == dialect
    assert export.verify_export(done.path).ok
    for name in ("results.csv", "scores.csv"):
        raw = (done.path / name).read_bytes()
        # A tab is quoted like the separator: a spreadsheet told to split on tabs too keeps the cell.
        assert b'"Tab\there; semi, comma ""quote"""' in raw, name
        assert b'"Left\tRight"' in raw, name
        assert raw.decode("utf-8-sig").splitlines()[0].startswith(f"session_id{delimiter}")
        titles = {row["entry_id"]: row["title"] for row in read_csv(done.path / name, delimiter)}
        assert (titles["101"], titles["102"]) == (TRICKY, JUST_A_TAB), name
    results = {row["entry_id"]: row for row in read_csv(done.path / "results.csv", delimiter)}
    scored = [row for row in results.values() if row["score"]]
    assert scored and all(row["score"] == f"25{decimal}5" for row in scored)  # 9 + 8.5 + 8
    ledger = read_csv(done.path / "ledger.csv", delimiter)
    assert len(ledger) == 4 and {row["total"] for row in ledger} == {f"25{decimal}5"}
    # The event package keeps its own format whatever the dialect: it must re-import.
    package = read_csv(done.path / "event" / "entries.csv", ",")
    assert {row["entry_id"]: row["title"] for row in package}["101"] == TRICKY
    readme = " ".join((done.path / "README.txt").read_text().split())
    assert f'in the "{dialect}" dialect' in readme and "event package's own format (commas" in readme


def test_the_setting_chooses_the_dialect_and_an_unknown_one_is_refused_before_anything_is_written(
    tmp_path: Path, usb: Path
) -> None:
    from appliance.core.config import ConfigError, load_config
    from appliance.shared.csv_dialects import UnknownCsvDialect

    box = tricky_box(tmp_path, export_csv_dialect="excel-semicolon")
    done = export.export_to(box, usb, now=datetime(2026, 3, 14, 18, 0, 0, tzinfo=UTC))
    assert done.csv_dialect == "excel-semicolon"
    assert (done.path / "results.csv").read_bytes().startswith(b"\xef\xbb\xbfsession_id;session_name;")
    later = datetime(2026, 3, 14, 18, 0, 1, tzinfo=UTC)
    again = export.export_to(box, usb, csv_dialect="excel", now=later)  # the flag wins over the setting
    assert again.csv_dialect == "excel"
    assert (again.path / "results.csv").read_bytes().startswith(b"\xef\xbb\xbfsession_id,session_name,")
    before = sorted(p.name for p in usb.iterdir())
    with pytest.raises(
        UnknownCsvDialect, match=r"unknown CSV dialect 'tsv': choose excel \(.*\) or excel-semicolon"
    ):
        export.export_to(box, usb, csv_dialect="tsv")
    assert sorted(p.name for p in usb.iterdir()) == before
    (box.data_dir / "venuebox.toml").write_text('export_csv_dialect = "semicolon"\n')
    with pytest.raises(ConfigError, match="export_csv_dialect: unknown CSV dialect 'semicolon'"):
        load_config(box.data_dir, environ={})


# -- participants' names (issue 17, item 18) --------------------------------------------------------


def every_participant() -> set[str]:
    from tests.personal_package import participants_of_sample

    return {name for names in participants_of_sample().values() for name in names}


def names_in_clear(folder: Path) -> list[tuple[str, str]]:
    """(file, name) for every participant's name found in any file of the export, as bytes."""
    everyone = every_participant()
    assert len(everyone) > 20
    return [
        (path.relative_to(folder).as_posix(), name)
        for path in sorted(p for p in folder.rglob("*") if p.is_file())
        for name in everyone
        if name.encode("utf-8") in path.read_bytes()
    ]


def test_names_come_encrypted_to_the_organiser_joined_to_entry_ids(config: Config, usb: Path) -> None:
    import pyrage
    from pyrage import x25519

    from appliance.core import keys
    from tests.personal_package import participants_of_sample

    organiser = x25519.Identity.generate()
    keys.configure(config, [str(organiser.to_public())], None)
    done = export.export_to(config, usb, csv_dialect="excel-semicolon")
    assert done.personal_file == "personal.csv.age" and export.verify_export(done.path).ok
    assert done.names == "participants' names: personal.csv.age, encrypted to the organiser key"
    assert names_in_clear(done.path) == []
    plain = pyrage.decrypt((done.path / "personal.csv.age").read_bytes(), [organiser])
    rows = list(csv.DictReader(io.StringIO(plain.decode("utf-8-sig"), newline=""), delimiter=";"))
    expected = participants_of_sample()
    assert {
        row["entry_id"]: row["participants"].split("; ") if row["participants"] else [] for row in rows
    } == (expected)
    results = {row["entry_id"] for row in read_csv(done.path / "results.csv", ";")}
    assert results == {row["entry_id"] for row in rows}  # every result row has its names


def test_without_an_organiser_key_the_export_says_names_are_not_in_it_and_writes_none(
    config: Config, usb: Path
) -> None:
    done = export.export_to(config, usb)
    assert done.personal_file is None and not (done.path / "personal.csv.age").exists()
    assert done.names.startswith("participants' names are not in this export: no organiser key is set")
    assert "venuebox backup configure --recipient" in done.names
    readme = " ".join((done.path / "README.txt").read_text().split())
    assert "This export has no personal.csv.age: no organiser key is set on the box" in readme
    assert names_in_clear(done.path) == []


@pytest.mark.parametrize("dialect", ["excel", "excel-semicolon"])
def test_a_tab_deep_in_a_long_file_is_quoted_and_every_row_reads_back(dialect: str) -> None:
    """The csv module writes in chunks; the chunk holding a tab is written again with it quoted, the
    ones around it stay as they were."""
    from decimal import Decimal

    from appliance.core import tabulation
    from appliance.shared.csv_dialects import csv_dialect

    chosen = csv_dialect(dialect)
    rows = [[i, f"title {i}", "", None, 9.5, Decimal("27.25"), i % 2 == 0] for i in range(20_000)]
    rows[12_345][1] = "left\tright"
    stream = io.BytesIO()
    written = tabulation.write_csv(
        stream, ["n", "title", "empty", "none", "score", "sum", "flag"], rows, dialect=chosen
    )
    data = stream.getvalue()
    assert written == len(data) and len(data) > 4 * 65536
    d = chosen.decimal
    assert f'{chosen.delimiter}"left\tright"{chosen.delimiter}'.encode() in data
    line = chosen.delimiter.join(["7", "title 7", "", "", f"9{d}5", f"27{d}25", "no"])
    assert f"\r\n{line}\r\n".encode() in data
    back = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""), delimiter=chosen.delimiter))
    assert len(back) == 1 + len(rows)
    assert back[1 + 12_345][1] == "left\tright"
    assert all(row[0] == str(i) and row[4] == f"9{d}5" for i, row in enumerate(back[1:]))
