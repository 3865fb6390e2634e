"""Everything the box makes in its data dir is its own user's alone (files 0600, folders 0700), made so
by the box itself, not by the umask it was started with: every command and the daemon run here with
umask 000, the most open a shell or a service manager could pass on."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyrage import x25519

from appliance.core.config import load_config
from tests.conftest import SAMPLE_EVENT, RunningBox, venuebox

pytestmark = pytest.mark.timeout(180)

# RunningBox sends the daemon's output to <data dir>/daemon.log, a file this test's process makes.
TEST_HARNESS_FILES = {"daemon.log"}


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 000 in this process, so in every command and daemon it starts, until the test ends."""
    before = os.umask(0)
    try:
        yield
    finally:
        os.umask(before)


def modes_not_private(data_dir: Path) -> dict[str, str]:
    """Every file not 0600 and every folder (the data dir included) not 0700, by relative path."""
    wrong = {}
    for path in [data_dir, *data_dir.rglob("*")]:
        name = str(path.relative_to(data_dir))
        if name in TEST_HARNESS_FILES:
            continue
        mode = stat.S_IMODE(path.lstat().st_mode)
        wanted = 0o700 if path.is_dir() else 0o600
        if mode != wanted:
            wrong[name] = f"{mode:o}"
    return wrong


def ok(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr


def test_every_file_in_the_data_dir_is_0600_and_every_folder_0700_whatever_the_umask(
    tmp_path: Path, open_umask: None
) -> None:
    data_dir = tmp_path / "box"
    token, passphrase = tmp_path / "uplink.token", tmp_path / "passphrase"
    token.write_text("a-token-for-the-uplink\n")
    passphrase.write_text("correct horse battery staple\n")
    organiser = str(x25519.Identity.generate().to_public())
    second_disk, usb_key = tmp_path / "second-disk", tmp_path / "usb-key"
    second_disk.mkdir()
    usb_key.mkdir()

    ok(venuebox(data_dir, "init", "--name", "Modes box"))
    ok(venuebox(data_dir, "event", "import", str(SAMPLE_EVENT)))
    ok(venuebox(data_dir, "uplink", "configure", "--url", "http://127.0.0.1:9", "--token-file", str(token)))
    ok(
        venuebox(
            data_dir, "backup", "configure", "--recipient", organiser, "--passphrase-file", str(passphrase)
        )
    )
    ok(venuebox(data_dir, "backup", "now"))
    ok(venuebox(data_dir, "tls", "rotate", "--address", "192.0.2.10"))
    ok(venuebox(data_dir, "keys", "rotate-data-key"))
    ok(venuebox(data_dir, "export", "--to", str(usb_key)))
    ok(venuebox(data_dir, "backup", "configure", "--dir", str(second_disk)))  # writes venuebox.toml

    box = RunningBox(load_config(data_dir, environ={}), env={"VENUEBOX_MDNS_ENABLED": "false"}).start()
    try:
        assert box.tablet_url.startswith("https://")
        with box.admin() as admin:
            admin.get("/admin/v1/status").raise_for_status()
        running = modes_not_private(data_dir)
        seen_running = {str(p.relative_to(data_dir)) for p in data_dir.rglob("*")}
    finally:
        assert box.stop() == 0
    assert running == {}
    assert modes_not_private(data_dir) == {}

    # What the walk covered: the database with its -wal and -shm, the daemon's files, the TLS pair,
    # the keys, the settings, the uplink token, the default backups folder and the export's scratch.
    expected = {
        "venuebox.sqlite",
        "venuebox.sqlite-wal",
        "venuebox.sqlite-shm",
        "daemon.json",
        "daemon.lock",
        "tls",
        "tls/box.pem",
        "tls/box.crt",
        "admin.token",
        "personal-data.key",
        "personal-data.key.lock",
        "backup-recipients.txt",
        "backup.passphrase",
        "venuebox.toml",
        "backups",
        "export-scratch",
    }
    assert expected <= seen_running
    assert any(name.startswith("uplink-") and name.endswith(".token") for name in seen_running)
    assert any(name.startswith("backups/snapshot-") for name in seen_running)
