"""The USB export on real files: what it writes, that it verifies, that a byte changed anywhere is
named, that a failing key leaves nothing that looks complete, and how USB keys are found."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
from pathlib import Path
from typing import BinaryIO

import pytest

from appliance import export
from appliance.box import freeze
from appliance.chain import verify_chain
from appliance.config import Config
from appliance.storage.db import Store
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

    from appliance import data_key, keys, personal
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
