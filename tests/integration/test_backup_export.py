"""Backups and USB exports as the people at the venue use them: the `venuebox` commands, the standard
`age` tool to open what the box wrote (with the organiser's key, or the passphrase typed at a
terminal), a real tmpfs too small for the export, and the daemon taking snapshots on its own."""

from __future__ import annotations

import os
import pty
import select
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from appliance.config import Config
from tests.conftest import RunningBox, make_box, needs_tool, venuebox
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


@needs_age
def test_the_age_tool_opens_them_with_the_passphrase_typed_at_a_terminal(box: Config, tmp_path: Path) -> None:
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
    assert venuebox(box, "export", "--to", str(usb)).returncode == 0
    [folder] = usb.iterdir()
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
def small_tmpfs(tmp_path: Path):  # type: ignore[no-untyped-def]
    mount = tmp_path / "small-key"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"this machine does not allow mounting a tmpfs: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


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
