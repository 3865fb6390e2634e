"""Crash safety and tamper evidence, with real processes and the real sqlite3 CLI."""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest

from tests.conftest import RunningBox, make_box, panel_entries, venuebox


def test_sigkill_while_eight_clients_submit_loses_no_acknowledged_sheet(tmp_path) -> None:
    box = RunningBox(make_box(tmp_path / "box", device_rate_per_s=10_000.0, device_burst=10_000)).start()
    tablets = [box.pair(f"J{1 + i % 5}", f"tablet {i}") for i in range(8)]
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def judge(index: int) -> None:
        tablet = tablets[index]
        # Tablets i and i+5 share a judge, so each scores its own entry; after the first sheet every
        # further one corrects the previous (a chain as long as the test lasts).
        template = tablet.sheet_for(panel_entries(tablet.event())[index // 5])
        head: str | None = None
        with tablet.client() as c:
            while not stop.is_set():
                sheet = {**template, "sheet_id": str(uuid.uuid4())}
                if head:
                    sheet["supersedes"] = head
                try:
                    answer = c.post("/api/v1/sheets", json=sheet)
                except httpx.HTTPError:
                    return  # the box died under us: what was acknowledged is what counts
                assert answer.status_code in (200, 201), answer.text
                with lock:
                    acknowledged.append(sheet["sheet_id"])
                head = sheet["sheet_id"]

    threads = [threading.Thread(target=judge, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    # Kill at a random moment once the clients are well under way (however slow the machine).
    deadline = time.monotonic() + 60
    while len(acknowledged) < 80 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(random.random() * 0.5)
    box.kill()  # SIGKILL: no shutdown code runs
    stop.set()
    for t in threads:
        t.join(10)
    assert len(acknowledged) >= 80, "the clients should have stored a good number of sheets before the kill"

    box.start()
    try:
        conn = sqlite3.connect(box.config.db_path)
        stored = {r[0] for r in conn.execute("SELECT sheet_id FROM sheets")}
        conn.close()
        assert set(acknowledged) <= stored
        verified = venuebox(box.config, "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        box.stop()


@pytest.mark.skipif(
    shutil.which("sqlite3") is None, reason="the sqlite3 CLI is not installed (.ci/run installs it)"
)
@pytest.mark.parametrize("table", ["sheets", "audit_log"])
def test_tampering_through_the_sqlite3_cli_is_found_by_verify(tmp_path, table) -> None:
    box = RunningBox(make_box(tmp_path / "box")).start()
    try:
        tablet = box.pair("J1")
        with tablet.client() as c:
            for entry in panel_entries(tablet.event())[:4]:
                assert c.post("/api/v1/sheets", json=tablet.sheet_for(entry)).status_code == 201
    finally:
        box.stop()
    assert venuebox(box.config, "verify").returncode == 0
    column = "score_values" if table == "sheets" else "detail"
    value = "'{\"technique\":10.0}'" if table == "sheets" else "'{}'"
    script = f"DROP TRIGGER {table}_no_update; UPDATE {table} SET {column} = {value} WHERE seq = 3;"
    subprocess.run(["sqlite3", str(box.config.db_path), script], check=True, timeout=30)
    result = venuebox(box.config, "verify")
    assert result.returncode == 1
    assert f"{table}: BROKEN at row 3" in result.stderr


def test_cli_errors_are_one_line_and_non_zero(tmp_path) -> None:
    config = make_box(tmp_path / "box")
    bad_judge = venuebox(config, "pair", "new", "--judge", "J99")
    assert bad_judge.returncode == 1
    assert bad_judge.stderr.strip().count("\n") == 0 and "J99" in bad_judge.stderr
    assert "Traceback" not in bad_judge.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "appliance", "--data-dir", str(tmp_path / "nothing"), "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1 and "venuebox init" in missing.stderr and "Traceback" not in missing.stderr
    no_device = venuebox(config, "devices", "revoke", "nope")
    assert no_device.returncode == 1 and "no device" in no_device.stderr


def test_cli_pair_status_and_devices(tmp_path) -> None:
    config = make_box(tmp_path / "box")
    made = venuebox(config, "pair", "new", "--judge", "J1", "--ttl", "120")
    assert made.returncode == 0, made.stderr
    code = made.stdout.strip().splitlines()[-1]
    assert len(code) == 9 and code[4] == "-"
    as_json = venuebox(config, "pair", "new", "--judge", "J2", "--json")
    assert json.loads(as_json.stdout)["judge"]["id"] == "J2"
    status = venuebox(config, "status", "--json")
    snap = json.loads(status.stdout)
    assert snap["event"]["entries"] > 0 and snap["freeze"]["frozen"] is False and snap["daemon"] is None
    assert venuebox(config, "devices").stdout.strip() == "no paired tablets"
    assert (config.admin_token_path.stat().st_mode & 0o777) == 0o600
    assert (config.data_key_path.stat().st_mode & 0o777) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the data dir to another user")
def test_root_cli_leaves_no_root_owned_files_in_the_services_data_dir(tmp_path) -> None:
    config = make_box(tmp_path / "box")
    service_uid = 65534  # nobody: stands for the service's (dynamic) user
    for path in [config.data_dir, *config.data_dir.rglob("*")]:
        os.chown(path, service_uid, service_uid)
    tmp_path.chmod(0o755)
    for side_file in config.data_dir.glob("venuebox.sqlite-*"):
        side_file.unlink()  # as after a clean stop: the next opener creates them
    done = venuebox(config, "freeze", "--reason", "dispute")
    assert done.returncode == 0, done.stderr
    owners = {path.name: path.stat().st_uid for path in config.data_dir.rglob("*")}
    assert set(owners.values()) == {service_uid}, owners
