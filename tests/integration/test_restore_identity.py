"""The box's identity travels with its snapshots (issue 15): a box restored from a snapshot onto an
empty disk serves the same certificate, so a tablet that pinned it reconnects with the token it
holds, without pairing again; the old admin token works; the uplink sends with its old token; the
settings come back. A snapshot restores with the identity in force when it was taken, an old
("venuebox-keys/1") keys file still restores, and a snapshot or keys file of another box is refused
without writing anything."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import socket
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pyrage
import pytest
from pyrage import x25519

from appliance.core import keys, keys_bundle, personal, tls
from appliance.core.config import Config, load_config
from appliance.core.uplink_state import resolve_target
from appliance.shared.fingerprint import grouped
from appliance.shared.secrets_files import read_secret
from appliance.storage.db import connect
from appliance.tablet_client.client import TabletClient
from appliance.tablet_client.sheet_queue import make_sheet
from tests.conftest import (
    TIMEOUT,
    RunningBox,
    box_id_of,
    make_box,
    new_code,
    served_certificate,
    venuebox,
    wait_for,
)
from tests.receiver_process import RunningReceiver, add_box
from tests.unit.test_backup import score

pytestmark = pytest.mark.timeout(180)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def organiser_key(tmp_path: Path) -> tuple[Path, str]:
    """An organiser's age key file (made off the box) and its public key."""
    identity = x25519.Identity.generate()
    path = tmp_path / "organiser-key.txt"
    path.write_text(f"# public key: {identity.to_public()}\n{identity}\n")
    return path, str(identity.to_public())


def ok(done: Any) -> Any:
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    return done


def fingerprint(data_dir: Path) -> str:
    return tls.load_identity(data_dir).fingerprint


def tree(root: Path) -> dict[str, tuple[int, str]]:
    """Every file and folder under ``root``: its mode and content hash (to prove nothing changed).
    Not a database's -shm file: SQLite's shared-memory index, which a reader may touch."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.name.endswith("-shm"):
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        found[str(path.relative_to(root))] = (path.stat().st_mode, digest)
    return found


# -- the same box, end to end ---------------------------------------------------------------------


def test_a_box_restored_onto_an_empty_disk_is_the_same_box_for_tablets_the_admin_and_the_cloud(
    tmp_path: Path,
) -> None:
    receiver = RunningReceiver(tmp_path / "receiver").start()
    second_disk = tmp_path / "second-disk"  # where the snapshots go: outlives the box's own disk
    second_disk.mkdir()
    config = make_box(
        tmp_path / "box",
        tls=True,
        status_interval_s=0.3,
        uplink_poll_s=0.2,
        backup_dir=str(second_disk),
        device_rate_per_s=1000.0,
        device_burst=1000,
    )
    box_id = box_id_of(config)
    organiser, public = organiser_key(tmp_path)
    ok(venuebox(config, "backup", "configure", "--recipient", public))
    given_token = tmp_path / "cloud.token"
    given_token.write_text(add_box(receiver.data_dir, box_id) + "\n")
    ok(venuebox(config, "uplink", "configure", "--url", receiver.url, "--token-file", str(given_token)))
    port = free_port()
    old_fingerprint = fingerprint(config.data_dir)
    old_admin_token = read_secret(config.admin_token_path)
    tablet_dir = tmp_path / "tablet"

    def sheet_at_the_cloud(sheet_id: str) -> bool:
        conn = sqlite3.connect(receiver.data_dir / "receiver.sqlite")
        try:
            payloads = [json.loads(row[0]) for row in conn.execute("SELECT payload FROM records")]
        finally:
            conn.close()
        return any(payload.get("sheet_id") == sheet_id for payload in payloads)

    async def pair_and_score(url: str) -> tuple[dict[str, Any], str]:
        async with TabletClient(url, tablet_dir, fingerprint=old_fingerprint) as tablet:
            await tablet.pair(new_code(config, "J1"), "judge 1 tablet")
            event = await tablet.event()
            first, second = [e["entry_id"] for s in event["sessions"] if s["on_panel"] for e in s["entries"]][
                :2
            ]
            values = {c["key"]: c["min"] for c in event["criteria"]}
            stored = await tablet.submit(make_sheet(first, values))
            assert stored.state == "stored"
            return {"entry": second, "values": values}, stored.sheet_id

    box = RunningBox(config, port=port).start()
    try:
        assert hashlib.sha256(served_certificate(box.tablet_url)).hexdigest() == old_fingerprint
        scoring, first = asyncio.run(pair_and_score(box.tablet_url))
        wait_for("the first sheet at the cloud", lambda: sheet_at_the_cloud(first))
        taken = ok(venuebox(config, "backup", "now"))
    finally:
        box.stop()
    [snapshot] = second_disk.glob("snapshot-*.sqlite.age")
    assert f"snapshot {snapshot} (" in taken.stdout
    assert (second_disk / keys_bundle.bundle_name(snapshot.name)).exists()

    # The box's disk dies: its data dir is gone, and so is the token file the tech configured with.
    shutil.rmtree(config.data_dir)
    given_token.unlink()

    target = tmp_path / "restored"
    restored = ok(venuebox(None, "restore", str(snapshot), "--to", str(target), "--identity", str(organiser)))
    lines = restored.stdout.splitlines()
    assert (
        f"box       {box_id}, identity from {keys_bundle.bundle_name(snapshot.name)} (venuebox-keys/2)"
        in lines
    )
    assert (
        f"tls       certificate {grouped(old_fingerprint)} restored: tablets that pinned it reconnect "
        "with the tokens they hold"
    ) in lines
    assert "admin     the old box's admin token" in lines
    assert f"uplink    {receiver.url} (set by `uplink configure`), its token restored" in lines
    assert (
        f"settings  venuebox.toml restored; its backup_dir {second_disk} is kept: the restored box takes its "
        "snapshots where the old one did (`venuebox backup configure --dir` changes it)"
    ) in lines
    for secret in ("admin.token", "tls/box.pem", "personal-data.key", keys.SIGNING_KEY, keys.IDENTITY):
        assert (target / secret).stat().st_mode & 0o777 == 0o600, secret
    [token_file] = target.glob("uplink-*.token")
    assert token_file.stat().st_mode & 0o777 == 0o600
    restored_config = load_config(target, environ={})
    assert restored_config.backup_path == second_disk and restored_config.tls is True

    box = RunningBox(restored_config, port=port).start()
    try:
        assert box.tablet_url.startswith("https://")
        assert hashlib.sha256(served_certificate(box.tablet_url)).hexdigest() == old_fingerprint

        async def score_again() -> str:
            # The same tablet, as it was: its saved pin and device token, no pairing.
            async with TabletClient(box.tablet_url, tablet_dir) as tablet:
                assert tablet.pinned_fingerprint == old_fingerprint and not tablet.needs_pairing
                heartbeat = await tablet.heartbeat()
                assert heartbeat.frozen is False
                stored = await tablet.submit(make_sheet(scoring["entry"], scoring["values"]))
                assert stored.state == "stored", stored
                return stored.sheet_id

        second = asyncio.run(score_again())
        with httpx.Client(
            base_url=box.admin_url, timeout=TIMEOUT, headers={"Authorization": f"Bearer {old_admin_token}"}
        ) as admin:
            status = admin.get("/admin/v1/status")
            assert status.status_code == 200, status.text
            assert status.json()["box"]["id"] == box_id
        uplink = ok(venuebox(restored_config, "uplink", "status")).stdout.splitlines()
        assert f"target    {receiver.url} (configure)" in uplink
        checked = ok(venuebox(restored_config, "uplink", "check"))
        assert checked.stdout.startswith("ok: ")
        wait_for("the sheet scored on the restored box at the cloud", lambda: sheet_at_the_cloud(second))
        verified = ok(venuebox(restored_config, "verify"))
        assert "sheets: 2 rows, chain intact" in verified.stdout
    finally:
        box.stop()
        receiver.stop()


# -- the identity in force when the snapshot was taken --------------------------------------------


def test_each_snapshot_restores_the_certificate_and_uplink_token_in_force_when_it_was_taken(
    tmp_path: Path,
) -> None:
    config = make_box(tmp_path / "box", tls=True)
    cloud = tmp_path / "cloud"
    tokens = []
    for name in ("first.token", "second.token"):
        tokens.append(tmp_path / name)
        tokens[-1].write_text(add_box(cloud, box_id_of(config), "--rotate") + "\n")
    url = "https://cloud.example.org"
    ok(venuebox(config, "uplink", "configure", "--url", url, "--token-file", str(tokens[0])))
    before_fingerprint = fingerprint(config.data_dir)
    ok(venuebox(config, "backup", "now"))
    ok(venuebox(config, "tls", "rotate"))
    ok(venuebox(config, "uplink", "configure", "--url", url, "--token-file", str(tokens[1])))
    after_fingerprint = fingerprint(config.data_dir)
    assert after_fingerprint != before_fingerprint
    ok(venuebox(config, "backup", "now"))
    before, after = sorted(config.backup_path.glob("snapshot-*.sqlite.age"))

    for snapshot, expected, token in (
        (before, before_fingerprint, tokens[0]),
        (after, after_fingerprint, tokens[1]),
    ):
        target = tmp_path / f"restored-{snapshot.name}"
        done = ok(venuebox(config, "restore", str(snapshot), "--to", str(target)))
        assert f"tls       certificate {grouped(expected)} restored" in done.stdout
        assert fingerprint(target) == expected
        restored = load_config(target, environ={})
        status = json.loads(ok(venuebox(restored, "uplink", "status", "--json")).stdout)
        assert status["target"]["url"] == url
        [token_file] = target.glob("uplink-*.token")
        assert read_secret(token_file) == token.read_text().strip()
        # The database names it relative to the data dir, so the restored dir can be moved into place.
        conn = sqlite3.connect(restored.db_path)
        try:
            assert conn.execute("SELECT token_file FROM uplink_target").fetchone()[0] == token_file.name
        finally:
            conn.close()
        moved = tmp_path / f"moved-{snapshot.name}"
        target.rename(moved)
        check = json.loads(ok(venuebox(moved, "uplink", "status", "--json")).stdout)
        assert check["target"]["url"] == url
        moved_config = load_config(moved, environ={})
        conn = connect(moved_config.db_path, readonly=True)
        try:
            target_now = resolve_target(conn, moved_config)
        finally:
            conn.close()
        assert target_now is not None and read_secret(target_now.token_file) == token.read_text().strip()


# -- an old keys file ------------------------------------------------------------------------------


def test_a_snapshot_with_an_old_venuebox_keys_1_file_still_restores(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box", tls=True)
    score(config, 3)
    ok(venuebox(config, "backup", "now"))
    [snapshot] = config.backup_path.glob("snapshot-*.sqlite.age")
    # The backup dir as the old venuebox left it: no bundle per snapshot, keys.age in the old shape.
    (config.backup_path / keys_bundle.bundle_name(snapshot.name)).unlink()
    old_bundle = {
        "format": "venuebox-keys/1",
        "personal_data_key": read_secret(config.data_key_path),
        "box_signing_key": read_secret(config.data_dir / keys.SIGNING_KEY),
        "backup_identity": read_secret(config.data_dir / keys.IDENTITY),
    }
    sealed = pyrage.encrypt(json.dumps(old_bundle, indent=2).encode("ascii"), keys.recipients(config))
    (config.backup_path / "keys.age").write_bytes(sealed)

    target = tmp_path / "restored"
    done = ok(venuebox(config, "restore", str(snapshot), "--to", str(target)))
    lines = done.stdout.splitlines()
    [summary] = [line for line in lines if line.startswith("restored ")]
    assert summary.endswith("; box keys restored")
    assert f"box       {box_id_of(config)}, identity from keys.age (venuebox-keys/1)" in lines
    assert (
        "tls       not in keys.age: a new certificate at the first start, which pinned tablets refuse; "
        "pair them again"
    ) in lines
    assert "admin     a new admin token" in lines
    assert f"settings  not in keys.age: copy your venuebox.toml into {target}" in lines
    assert read_secret(target / "personal-data.key") == old_bundle["personal_data_key"]
    assert read_secret(target / keys.SIGNING_KEY) == old_bundle["box_signing_key"]
    assert read_secret(target / "admin.token") != read_secret(config.admin_token_path)
    assert personal.load_key(target / "personal-data.key") == personal.load_key(config.data_key_path)
    assert not (target / "tls").exists() and not (target / "venuebox.toml").exists()
    assert "sheets: 3 rows, chain intact" in ok(venuebox(target, "verify")).stdout


# -- refused: another box's snapshot, a keys file that does not belong ----------------------------


@pytest.fixture
def two_boxes(tmp_path: Path) -> tuple[Config, Config, Path]:
    """Two boxes whose backups the same organiser key opens, each with a snapshot."""
    organiser, public = organiser_key(tmp_path)
    boxes = []
    for name in ("main-stage", "studio-b"):
        config = make_box(tmp_path / name, tls=True)
        ok(venuebox(config, "backup", "configure", "--recipient", public))
        ok(venuebox(config, "backup", "now"))
        boxes.append(config)
    return boxes[0], boxes[1], organiser


def refused(tmp_path: Path, *args: str, data_dir: Path | None = None) -> str:
    """`venuebox restore` refused: exit 1, one line, and nothing anywhere changed; returns the line."""
    before = tree(tmp_path)
    done = venuebox(data_dir, "restore", *args)
    assert done.returncode == 1, done.stdout + done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("venuebox: error: ")
    assert tree(tmp_path) == before
    return line.removeprefix("venuebox: error: ")


def test_another_boxs_snapshot_restored_with_this_boxs_data_dir_is_refused(
    two_boxes: tuple[Config, Config, Path], tmp_path: Path
) -> None:
    main, studio, organiser = two_boxes
    [theirs] = studio.backup_path.glob("snapshot-*.sqlite.age")
    target = tmp_path / "restored"
    # With this box's own key: it does not open another box's snapshot.
    line = refused(tmp_path, str(theirs), "--to", str(target), data_dir=main.data_dir)
    assert line.startswith(f"{theirs.name} could not be decrypted with the key given (")
    assert line.endswith(
        f": this box's key ({main.data_dir}) opens only its own snapshots; for another box's, give the key "
        "that opens it (--identity FILE or --passphrase-file FILE) without --data-dir"
    )
    # With the organiser key, which opens both boxes' snapshots, --data-dir still names this box.
    line = refused(
        tmp_path, str(theirs), "--to", str(target), "--identity", str(organiser), data_dir=main.data_dir
    )
    assert line == (
        f"{theirs.name} is a snapshot of box {box_id_of(studio)}, not of box {box_id_of(main)} (--data-dir): "
        "restore it without --data-dir, with the key that opens it (--identity or --passphrase-file)"
    )
    # An empty folder given as the target stays, empty, as it was.
    target.mkdir()
    refused(tmp_path, str(theirs), "--to", str(target), "--identity", str(organiser), data_dir=main.data_dir)
    # Without --data-dir, the organiser restores the other box: that is allowed.
    done = ok(venuebox(None, "restore", str(theirs), "--to", str(target), "--identity", str(organiser)))
    assert f"box       {box_id_of(studio)}, identity from" in done.stdout


def test_a_keys_file_that_does_not_belong_to_the_snapshot_is_refused(
    two_boxes: tuple[Config, Config, Path], tmp_path: Path
) -> None:
    main, studio, organiser = two_boxes
    [mine] = main.backup_path.glob("snapshot-*.sqlite.age")
    [theirs] = studio.backup_path.glob("snapshot-*.sqlite.age")
    own = main.backup_path / keys_bundle.bundle_name(mine.name)
    target = str(tmp_path / "restored")

    # The snapshot's own keys file swapped for the other box's.
    kept = tmp_path / "kept.age"
    shutil.copy2(own, kept)
    shutil.copy2(studio.backup_path / keys_bundle.bundle_name(theirs.name), own)
    line = refused(tmp_path, str(mine), "--to", target, "--identity", str(organiser))
    assert line == (
        f"{own.name} holds the keys of box {box_id_of(studio)}, but {mine.name} is a snapshot of box "
        f"{box_id_of(main)}: it does not belong to this snapshot; put the snapshot's own {own.name} "
        "beside it and restore again"
    )

    # Its own box's, but written with another snapshot (another database).
    score(main, 2)
    ok(venuebox(main, "backup", "now"))
    later = max(main.backup_path.glob("snapshot-*.sqlite.age"))
    shutil.copy2(main.backup_path / keys_bundle.bundle_name(later.name), own)
    line = refused(tmp_path, str(mine), "--to", target, "--identity", str(organiser))
    assert line.startswith(
        f"{own.name} was written with another database than {mine.name} (ledger 2 rows, 0 "
    )
    assert line.endswith(
        "it does not belong to this snapshot; put the snapshot's own keys file beside it and restore again"
    )

    # No keys file of its own, and the keys.age beside it is the other box's.
    own.unlink()
    shutil.copy2(studio.backup_path / "keys.age", main.backup_path / "keys.age")
    line = refused(tmp_path, str(mine), "--to", target, "--identity", str(organiser))
    assert line.startswith(
        f"keys.age holds the keys of box {box_id_of(studio)}, but {mine.name} is a snapshot"
    )

    # Its own keys file back: restored.
    shutil.copy2(kept, own)
    done = ok(venuebox(None, "restore", str(mine), "--to", target, "--identity", str(organiser)))
    assert f"identity from {own.name} (venuebox-keys/2)" in done.stdout
    assert fingerprint(Path(target)) == fingerprint(main.data_dir)
