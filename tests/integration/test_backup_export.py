"""Backups and USB exports as the people at the venue use them: the `venuebox` commands, the standard
`age` tool to open what the box wrote (with the organiser's key, or the passphrase typed at a
terminal), a real tmpfs too small for the export, and the daemon taking snapshots on its own."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from appliance.core.config import Config
from tests.conftest import RunningBox, make_box, needs_tool, tmpfs, venuebox
from tests.unit.test_backup import score

AGE = shutil.which("age")
needs_age = needs_tool(AGE is not None, "the age tool is not installed (.ci/run installs it)")
PASSPHRASE = "correct horse battery staple"


def organiser_key(tmp_path: Path) -> tuple[Path, str]:
    key = tmp_path / "organiser.key"
    done = subprocess.run(["age-keygen", "-o", str(key)], capture_output=True, text=True, check=True)
    public = next(word for word in done.stderr.split() if word.startswith("age1"))
    return key, public


def ledger_head(db: Path) -> tuple[int, str, list[str]]:
    conn = sqlite3.connect(db)
    try:
        integrity = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        seq, head = conn.execute("SELECT seq, hash FROM sheets ORDER BY seq DESC LIMIT 1").fetchone()
        return seq, head, integrity
    finally:
        conn.close()


def age_with_passphrase(args: list[str], passphrase: str, timeout: float = 30) -> int:
    """Run the age tool in a pseudo-terminal and type the passphrase when it asks, as a person
    would (age reads passphrases from the terminal only)."""
    assert AGE is not None
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes age
        os.execv(AGE, [AGE, *args])
    seen = b""
    typed = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 1024)
                except OSError:  # the child closed the terminal: it is done
                    break
                if not chunk:
                    break
                seen += chunk
                if not typed and b"passphrase" in seen.lower():
                    os.write(fd, passphrase.encode() + b"\n")
                    typed = True
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)
    finally:
        os.close(fd)


@pytest.fixture
def box(tmp_path: Path) -> Config:
    config = make_box(tmp_path / "box")
    score(config, 6)
    return config


@needs_age
def test_the_age_tool_opens_a_snapshot_and_an_export_with_the_organisers_key(
    box: Config, tmp_path: Path
) -> None:
    assert AGE is not None
    key, public = organiser_key(tmp_path)
    assert venuebox(box, "backup", "configure", "--recipient", public).returncode == 0
    taken = venuebox(box, "backup", "now")
    assert taken.returncode == 0, taken.stderr
    assert "verified: decrypts, integrity_check ok" in taken.stdout
    [snapshot] = (box.data_dir / "backups").glob("snapshot-*.sqlite.age")
    usb = tmp_path / "usb"
    usb.mkdir()
    exported = venuebox(box, "export", "--to", str(usb))
    assert exported.returncode == 0, exported.stderr
    [folder] = usb.iterdir()
    expected = ledger_head(box.db_path)
    for encrypted in (snapshot, folder / "database.sqlite.age"):
        plain = tmp_path / f"{encrypted.parent.name}.sqlite"
        subprocess.run([AGE, "-d", "-i", str(key), "-o", str(plain), str(encrypted)], check=True, timeout=60)
        seq, head, integrity = ledger_head(plain)
        assert integrity == ["ok"] and (seq, head) == expected[:2]
    # The keys files beside them, as operations.md shows them: the box's identity, as JSON.
    own = snapshot.with_name(snapshot.name.replace(".sqlite.age", ".keys.age"))
    for keys_file in (own, box.backup_path / "keys.age", folder / "keys.age"):
        opened = subprocess.run(
            [AGE, "-d", "-i", str(key), str(keys_file)], capture_output=True, check=True, timeout=60
        )
        bundle = json.loads(opened.stdout)
        assert bundle["format"] == "venuebox-keys/2"
        assert bundle["tls_pem"] == (box.data_dir / "tls" / "box.pem").read_text()
        assert bundle["admin_token"] == box.admin_token_path.read_text().strip()
        assert bundle["database"]["ledger_rows"] == expected[0]


@needs_age
def test_the_age_tool_opens_them_with_the_passphrase_typed_at_a_terminal(box: Config, tmp_path: Path) -> None:
    assert AGE is not None
    secret = tmp_path / "passphrase.txt"
    secret.write_text(PASSPHRASE + "\n")
    assert venuebox(box, "backup", "configure", "--passphrase-file", str(secret)).returncode == 0
    assert venuebox(box, "backup", "now").returncode == 0
    usb = tmp_path / "usb"
    usb.mkdir()
    assert venuebox(box, "export", "--to", str(usb)).returncode == 0
    [folder] = usb.iterdir()
    expected = ledger_head(box.db_path)
    [snapshot] = (box.data_dir / "backups").glob("snapshot-*.sqlite.age")
    for encrypted in (snapshot, folder / "database.sqlite.age"):
        identity = tmp_path / f"{encrypted.parent.name}-identity.txt"
        wrapped = encrypted.parent / "backup-identity.age"
        assert age_with_passphrase(["-d", "-o", str(identity), str(wrapped)], PASSPHRASE) == 0
        plain = tmp_path / f"{encrypted.parent.name}.sqlite"
        subprocess.run(
            [AGE, "-d", "-i", str(identity), "-o", str(plain), str(encrypted)], check=True, timeout=60
        )
        seq, head, integrity = ledger_head(plain)
        assert integrity == ["ok"] and (seq, head) == expected[:2]
    # The passphrase opens the participants' names too (the box's key, which it unlocks, is a recipient).
    identity = tmp_path / f"{folder.name}-identity.txt"
    names = subprocess.run(
        [AGE, "-d", "-i", str(identity), str(folder / "personal.csv.age")], capture_output=True, check=True
    ).stdout.decode("utf-8-sig")
    assert "entry_id,session_id," in names and "Naomi Roy" in names
    wrong = tmp_path / "wrong.txt"
    assert (
        age_with_passphrase(["-d", "-o", str(wrong), str(folder / "backup-identity.age")], "nope nope nope")
        != 0
    )


def test_snapshot_restore_verify_round_trip_is_equal(box: Config, tmp_path: Path) -> None:
    assert venuebox(box, "backup", "now").returncode == 0
    [snapshot] = (box.data_dir / "backups").glob("snapshot-*.sqlite.age")
    target = tmp_path / "restored"
    restored = venuebox(box, "restore", str(snapshot), "--to", str(target))
    assert restored.returncode == 0, restored.stderr
    assert "box keys restored" in restored.stdout
    original = venuebox(box, "verify")
    again = venuebox(None, "--data-dir", str(target), "verify")
    assert original.returncode == again.returncode == 0
    sheets_line = [line for line in original.stdout.splitlines() if line.startswith("sheets:")]
    assert sheets_line == [line for line in again.stdout.splitlines() if line.startswith("sheets:")]
    assert "6 rows, chain intact" in sheets_line[0]
    refused = venuebox(box, "restore", str(snapshot), "--to", str(box.data_dir))
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"venuebox: error: {box.data_dir} is not empty: restore only into a new data dir (never over a box's "
        "data), then point the service at it"
    ]


def test_export_verify_names_a_changed_file(box: Config, tmp_path: Path) -> None:
    usb = tmp_path / "usb"
    usb.mkdir()
    exported = venuebox(box, "export", "--to", str(usb))
    assert exported.returncode == 0, exported.stderr
    [folder] = usb.iterdir()
    # The sample event prints, its emoji titles too (Symbola): results.pdf is in, nothing absent.
    assert "printed results: results.pdf" in exported.stdout.splitlines()
    assert (folder / "results.pdf").is_file()
    assert "absent" not in json.loads((folder / "MANIFEST.json").read_text())["manifest"]
    ok = venuebox(None, "export", "verify", str(folder))
    assert ok.returncode == 0 and ok.stdout.startswith("ok: ")
    results = folder / "results.csv"
    data = bytearray(results.read_bytes())
    data[-3] ^= 0x01
    results.write_bytes(bytes(data))
    bad = venuebox(None, "export", "verify", str(folder))
    assert bad.returncode == 1
    assert "FAILED results.csv: differs from the manifest" in bad.stderr
    assert bad.stderr.strip().splitlines()[-1] == "venuebox: error: the export does not verify: results.csv"


def test_export_without_a_usb_key_or_to_is_one_readable_line(box: Config) -> None:
    done = venuebox(box, "export")
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("venuebox: error: no USB key found: plug one in")


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "small-key", "256k") as mount:
        yield mount


def test_a_key_too_small_is_refused_cleanly(box: Config, small_tmpfs: Path) -> None:
    done = venuebox(box, "export", "--to", str(small_tmpfs))
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert "MB free, the export needs" in line and "use a larger key" in line
    assert list(small_tmpfs.iterdir()) == []


def test_the_daemon_takes_and_verifies_snapshots_by_itself(tmp_path: Path) -> None:
    config = make_box(
        tmp_path / "box", backup_interval_s=10, backup_verify_interval_s=1, status_interval_s=0.5
    )
    box = RunningBox(config).start()
    try:
        deadline = time.monotonic() + 40
        backup = None
        while time.monotonic() < deadline:
            with box.admin() as admin:
                backup = admin.get("/admin/v1/status").raise_for_status().json()["backup"]
            if backup["last"] and backup["last"]["verified"]:
                break
            time.sleep(0.5)
        assert backup is not None and backup["last"] is not None, backup
        assert backup["last"]["verified"] is True and backup["kept"] >= 1
        assert not backup["configured"]  # only the box's own key: the console says so
        with box.admin() as admin:
            audit = admin.get("/admin/v1/audit", params={"action": "backup.snapshot"}).json()
        assert audit and audit[0]["actor"] == "backup"
    finally:
        box.stop()


# -- retention with a damaged database; the backup dir on a second disk ------------------------------


def damage_a_sheet(db: Path) -> int:
    """What a failing SD card does, silently: one byte of a stored score sheet changes on disk. The
    WAL is checkpointed into the database file first, then one hex digit of the first sheet's stored
    hash is changed inside the leaf page of the `sheets` table that holds it (the page layout stays
    sound, so SQLite reads on and the box keeps scoring; only the hash chain shows it). Returns the
    page number."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        leaves = [
            row[0]
            for row in conn.execute("SELECT pageno FROM dbstat WHERE name = 'sheets' AND pagetype = 'leaf'")
        ]
        stored = conn.execute("SELECT hash FROM sheets WHERE seq = 1").fetchone()[0].encode()
    finally:
        conn.close()
    with db.open("r+b") as f:
        for pageno in leaves:
            f.seek((pageno - 1) * page_size)
            page = f.read(page_size)
            at = page.find(stored)
            if at >= 0:
                f.seek((pageno - 1) * page_size + at)
                f.write(b"0" if stored[:1] != b"0" else b"1")
                os.fsync(f.fileno())
                return pageno
    raise AssertionError("the first sheet's hash is in no leaf page of `sheets`")


def test_retention_keeps_the_verified_snapshot_of_a_database_damaged_after_it(tmp_path: Path) -> None:
    """Retention with `keep_last=2` and a database damaged after a verified snapshot: the verified one
    survives any number of later, failing snapshots, and `backup status` names it."""
    from appliance.core import backup, keys, recovery
    from appliance.core.storage import Store
    from appliance.shared.times import utcnow

    config = make_box(tmp_path / "box", backup_keep_last=2, backup_keep_hourly_h=0)
    score(config, 6)
    start = utcnow()
    with Store(config.db_path) as store:
        good = backup.snapshot_job(config, store, start)
        assert backup.verify_job(config, store, start) == [(good.name, [])]
    damage_a_sheet(config.db_path)
    [damage] = backup.check_database(config.db_path)  # the live database now fails its own check
    assert damage.startswith("sheets chain broken at row ")
    failed = []
    with Store(config.db_path) as store:
        for i in range(1, 7):  # the daemon's rhythm: a snapshot (and retention), then its check
            when = start + timedelta(minutes=15 * i)
            failed.append(backup.snapshot_job(config, store, when))
            [(name, problems)] = backup.verify_job(config, store, when)
            assert (name, problems) == (failed[-1].name, [damage])
            assert good.path.exists()
            if i > 1:  # retention ran before the new one's check: it, the failed one before, the good one
                kept = [row["name"] for row in store.query(backup.list_snapshots)]
                assert kept == [failed[-1].name, failed[-2].name, good.name]
        backup.apply_retention(config, store, start + timedelta(hours=2))
        kept = [row["name"] for row in store.query(backup.list_snapshots)]
    # The verified one, and the newest failed one (evidence); the older failed ones are gone.
    assert kept == [failed[-1].name, good.name]
    assert sorted(p.name for p in config.backup_path.glob("snapshot-*.sqlite.age")) == sorted(kept)

    status = venuebox(config, "backup", "status")
    assert status.returncode == 0, status.stderr
    assert f"newest verified: {good.path} ({good.created_at}, 6 sheets)" in status.stdout.splitlines()
    as_json = json.loads(venuebox(config, "backup", "status", "--json").stdout)
    assert as_json["newest_verified"]["name"] == good.name
    assert as_json["last"]["name"] == failed[-1].name and as_json["last"]["verified"] is False
    # And it is the one that brings the box back.
    done = recovery.restore(good.path, tmp_path / "restored", [keys.box_identity(config)]).restored
    assert done.ledger_rows == 6 and backup.check_database(tmp_path / "restored" / "venuebox.sqlite") == []


@pytest.fixture
def second_disk(tmp_path: Path) -> Iterator[Path]:
    """A real second file system (a tmpfs), as a USB disk would be."""
    with tmpfs(tmp_path / "second-disk", "16m") as mount:
        yield mount


SETTINGS = """\
# Main stage box: set up by the venue tech, do not lose
mdns_enabled = false
tls = false  # a lab box
address_rate_per_s = 1e6
address_burst = 1_000_000

[backups]
# how many to keep on the USB disk
backup_keep_last = 5
"""


def test_backup_configure_dir_on_a_second_disk(tmp_path: Path, second_disk: Path) -> None:
    import tomllib

    from appliance.core.config import load_config

    config = make_box(tmp_path / "box")
    settings = config.data_dir / "venuebox.toml"
    settings.write_text(SETTINGS)
    folder = second_disk / "venuebox-backups"
    folder.mkdir()

    done = venuebox(config, "backup", "configure", "--dir", str(folder))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == (
        f"snapshots go to {folder} (another disk than the database), set in {settings}"
    )
    assert "same disk" not in done.stderr and "mount point" not in done.stderr
    # One key added; the tech's comments, keys and section as they were.
    text = settings.read_text()
    assert text.replace(f'backup_dir = "{folder}"\n', "", 1) == SETTINGS
    assert tomllib.loads(text)["backup_dir"] == str(folder)
    assert load_config(config.data_dir, environ={}).backup_path == folder  # what the daemon reads

    taken = venuebox(config, "backup", "now")
    assert taken.returncode == 0, taken.stderr
    [snapshot] = folder.glob("snapshot-*.sqlite.age")
    assert f"snapshot {snapshot} (" in taken.stdout and (folder / "keys.age").exists()
    assert not (config.data_dir / "backups").exists()
    status = venuebox(config, "backup", "status").stdout.splitlines()
    assert status[0].startswith(f"backups   {folder}, ")
    assert "          on another disk than the database" in status
    assert f"newest verified: {snapshot} (" in status[3]

    # The disk's mount point itself is refused nothing, but the tech is told why a folder is better.
    mount_point = venuebox(config, "backup", "configure", "--dir", str(second_disk))
    assert mount_point.returncode == 0 and "is a mount point" in mount_point.stderr
    assert venuebox(config, "backup", "configure", "--dir", str(folder)).returncode == 0

    # Unplugged: the folder is gone; a snapshot fails saying so, and nothing is written elsewhere.
    subprocess.run(["umount", str(second_disk)], check=True)
    unplugged = venuebox(config, "backup", "now")
    assert unplugged.returncode == 1
    assert f"the backup directory {folder} is missing: plug its disk back in" in unplugged.stderr
    assert list(second_disk.iterdir()) == [] and not (config.data_dir / "backups").exists()
    shown = venuebox(config, "backup", "status").stdout
    assert "MISSING: plug its disk back in" in shown


def test_backup_configure_dir_on_the_databases_disk_warns_and_a_missing_dir_changes_nothing(
    tmp_path: Path,
) -> None:
    config = make_box(tmp_path / "box")
    settings = config.data_dir / "venuebox.toml"
    before = settings.read_bytes()

    missing = venuebox(config, "backup", "configure", "--dir", str(tmp_path / "usb" / "backups"))
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        f"venuebox: error: {tmp_path / 'usb' / 'backups'} does not exist: plug in and mount the backup disk, "
        "make the folder on it, then configure again"
    ]
    relative = venuebox(config, "backup", "configure", "--dir", "backups")
    assert relative.returncode == 1 and len(relative.stderr.splitlines()) == 1
    assert "not an absolute path" in relative.stderr
    assert settings.read_bytes() == before and not (tmp_path / "usb").exists()

    same_disk = tmp_path / "same-disk"
    same_disk.mkdir()
    done = venuebox(config, "backup", "configure", "--dir", str(same_disk))
    assert done.returncode == 0, done.stderr
    assert (
        f"venuebox: warning: {same_disk} is on the same disk as the database ({config.data_dir}): a dead SD "
        "card or disk takes the snapshots with it; choose a folder on another disk"
    ) in done.stderr.splitlines()
    assert "(the database's disk)" in done.stdout
    status = venuebox(config, "backup", "status").stdout
    assert "on the database's disk: lost with it" in status
    assert venuebox(config, "backup", "now").returncode == 0
    assert len(list(same_disk.glob("snapshot-*.sqlite.age"))) == 1


# -- what a tabulator with only a spreadsheet opens (issue 17, items 18 to 20) -----------------------


def participants_by_entry() -> dict[str, list[str]]:
    from tests.personal_package import participants_of_sample

    return participants_of_sample()


def clear_names(folder: Path) -> list[tuple[str, str]]:
    """Every (file, participant name) found as plain UTF-8 in any file of the export: grep, file by file."""
    everyone = {name for names in participants_by_entry().values() for name in names}
    assert len(everyone) > 20
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [(path.relative_to(folder).as_posix(), name) for name in everyone if name.encode() in data]
    return found


def one_line(text: str) -> str:
    return " ".join(text.split())


def read_csv(text: str, delimiter: str) -> list[dict[str, str]]:
    import csv
    import io

    return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter))


@needs_age
def test_the_organiser_opens_the_names_with_the_age_tool_and_no_file_holds_them_in_clear(
    box: Config, tmp_path: Path
) -> None:
    key, public = organiser_key(tmp_path)
    assert venuebox(box, "backup", "configure", "--recipient", public).returncode == 0
    usb = tmp_path / "usb"
    usb.mkdir()
    exported = venuebox(box, "export", "--to", str(usb), "--csv-dialect", "excel-semicolon")
    assert exported.returncode == 0, exported.stderr
    assert (
        "participants' names: personal.csv.age, encrypted to the organiser key"
        in exported.stdout.splitlines()
    )
    [folder] = usb.iterdir()
    assert (folder / "personal.csv.age").is_file()
    assert clear_names(folder) == []

    # The tabulator copies the file to their computer, beside their key, and types README's command.
    readme = (folder / "README.txt").read_text(encoding="utf-8")
    [command] = [line.strip() for line in readme.splitlines() if "personal.csv.age >" in line]
    assert command == "age -d -i organiser-key.txt personal.csv.age > personal.csv"
    desk = tmp_path / "desk"
    desk.mkdir()
    shutil.copy(key, desk / "organiser-key.txt")
    shutil.copy(folder / "personal.csv.age", desk)
    subprocess.run(["sh", "-c", command], cwd=desk, check=True, timeout=60)
    rows = read_csv((desk / "personal.csv").read_text(encoding="utf-8-sig"), ";")
    assert list(rows[0]) == [
        "entry_id",
        "session_id",
        "running_order",
        "title",
        "category",
        "division",
        "participants",
    ]
    named = {row["entry_id"]: [n for n in row["participants"].split("; ") if n] for row in rows}
    assert named == participants_by_entry()

    # Solo awards: results.csv joined to the names on entry_id.
    results = read_csv((folder / "results.csv").read_text(encoding="utf-8-sig"), ";")
    solos = {row["entry_id"]: named[row["entry_id"]] for row in results if row["category"] == "Solo"}
    assert solos and all(len(names) == 1 for names in solos.values())
    assert solos["101"] == ["Naomi Roy"]
    checked = venuebox(None, "export", "verify", str(folder))
    assert checked.returncode == 0, checked.stderr


def test_without_an_organiser_key_the_export_says_the_names_are_not_in_it(
    box: Config, tmp_path: Path
) -> None:
    usb = tmp_path / "usb"
    usb.mkdir()
    exported = venuebox(box, "export", "--to", str(usb))
    assert exported.returncode == 0, exported.stderr
    said = [line for line in exported.stdout.splitlines() if line.startswith("participants' names")]
    assert said == [
        "participants' names are not in this export: no organiser key is set on the box, and names are never "
        "written in clear (they stay in database.sqlite.age, which only the box's own key opens): to have "
        "them, set one (`venuebox backup configure --recipient age1...`) and export again"
    ]
    [folder] = usb.iterdir()
    assert not (folder / "personal.csv.age").exists() and clear_names(folder) == []
    readme = one_line((folder / "README.txt").read_text(encoding="utf-8"))
    assert "This export has no personal.csv.age: no organiser key is set on the box" in readme
    assert "(`venuebox backup configure --recipient age1...`, the public key age-keygen printed)" in readme


def test_export_csv_dialect_semicolons_and_decimal_commas_and_both_dialects_verify(
    box: Config, tmp_path: Path
) -> None:
    made = {}
    for dialect in ("excel", "excel-semicolon"):
        usb = tmp_path / dialect
        usb.mkdir()
        exported = venuebox(box, "export", "--to", str(usb), "--csv-dialect", dialect)
        assert exported.returncode == 0, exported.stderr
        [made[dialect]] = usb.iterdir()
        checked = venuebox(None, "export", "verify", str(made[dialect]))
        assert checked.returncode == 0 and checked.stdout.startswith("ok: "), checked.stderr
    comma = read_csv((made["excel"] / "results.csv").read_text(encoding="utf-8-sig"), ",")
    semicolon = read_csv((made["excel-semicolon"] / "results.csv").read_text(encoding="utf-8-sig"), ";")
    assert [row["entry_id"] for row in semicolon] == [row["entry_id"] for row in comma]
    for a, b in zip(comma, semicolon, strict=True):  # only numbers change: 25.5 -> 25,5
        assert b == {k: v.replace(".", ",") if re.fullmatch(r"\d+\.\d+", v) else v for k, v in a.items()}
    assert {row["score"] for row in semicolon if row["score"]} == {"25,5"}
    # event/ stays in the package's own format, byte for byte, and re-imports on a fresh box.
    for name in ("entries.csv", "judges.csv", "event.json"):
        assert (made["excel"] / "event" / name).read_bytes() == (
            made["excel-semicolon"] / "event" / name
        ).read_bytes()
    fresh = make_box(tmp_path / "fresh", package=None)
    imported = venuebox(fresh, "event", "import", str(made["excel-semicolon"] / "event"))
    assert imported.returncode == 0, imported.stderr
    readme = one_line((made["excel-semicolon"] / "README.txt").read_text(encoding="utf-8"))
    assert 'in the "excel-semicolon" dialect: semicolons between cells, decimal commas: 9,4' in readme
    assert "always in the event package's own format (commas, decimal points), whatever the dialect" in readme


def test_an_unknown_dialect_is_one_readable_line_and_the_setting_sets_the_default(
    box: Config, tmp_path: Path
) -> None:
    usb = tmp_path / "usb"
    usb.mkdir()
    refused = venuebox(box, "export", "--to", str(usb), "--csv-dialect", "semicolons")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.splitlines() == [
        "venuebox: error: unknown CSV dialect 'semicolons': choose excel (commas between cells, decimal "
        "points: 9.4) or excel-semicolon (semicolons between cells, decimal commas: 9,4)"
    ]
    assert list(usb.iterdir()) == []

    exported = venuebox(
        box, "export", "--to", str(usb), env={"VENUEBOX_EXPORT_CSV_DIALECT": "excel-semicolon"}
    )
    assert exported.returncode == 0, exported.stderr
    assert (
        "spreadsheet files: excel-semicolon (semicolons between cells, decimal commas: 9,4)"
        in exported.stdout
    )
    [folder] = usb.iterdir()
    assert (folder / "scores.csv").read_bytes().startswith(b"\xef\xbb\xbfsession_id;session_name;")

    (box.data_dir / "venuebox.toml").write_text('export_csv_dialect = "excel-tab"\n')
    bad = venuebox(box, "export", "--to", str(usb))
    assert bad.returncode == 1 and len(bad.stderr.splitlines()) == 1
    assert "export_csv_dialect: unknown CSV dialect 'excel-tab'" in bad.stderr


def test_readme_warns_that_the_event_files_are_not_guarded_against_formulas(tmp_path: Path) -> None:
    import csv

    from tests.conftest import SAMPLE_EVENT

    package = tmp_path / "package"
    shutil.copytree(SAMPLE_EVENT, package)
    with (package / "entries.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    rows[1][4] = '=HYPERLINK("http://evil.example","Rose")'
    with (package / "entries.csv").open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    config = make_box(tmp_path / "box", package=package)
    usb = tmp_path / "usb"
    usb.mkdir()
    assert venuebox(config, "export", "--to", str(usb)).returncode == 0
    [folder] = usb.iterdir()
    # Why the warning: the event package keeps the title as typed, results.csv guards it.
    event_titles = read_csv((folder / "event" / "entries.csv").read_text(encoding="utf-8-sig"), ",")
    assert event_titles[0]["title"] == '=HYPERLINK("http://evil.example","Rose")'
    results = read_csv((folder / "results.csv").read_text(encoding="utf-8-sig"), ",")
    assert {row["entry_id"]: row["title"] for row in results}["101"].startswith("'=HYPERLINK(")
    readme = one_line((folder / "README.txt").read_text(encoding="utf-8"))
    assert (
        "CAUTION: they are not guarded against formulas (that would change the titles): a cell beginning "
        "with =, +, - or @ may be taken by a spreadsheet for a formula and run. Do not double-click them: "
        "open them as text (in the spreadsheet's import dialog, set every column to Text), or use "
        "results.csv and scores.csv."
    ) in readme
