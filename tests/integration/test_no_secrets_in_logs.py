"""Everything the box and its reference receiver log during a full, scripted day (at DEBUG), read
back whole: no device token, admin token, uplink token, pairing code, backup passphrase or
participant's name may appear in it."""

from __future__ import annotations

import csv
import subprocess
import time
from pathlib import Path

from tests.conftest import SAMPLE_EVENT, RunningBox, box_id_of, make_box, panel_entries, venuebox, wait_for
from tests.integration.test_uplink import Cloud, uplink

PASSPHRASE = "velvet lanterns at midnight"


def participant_names() -> set[str]:
    with (SAMPLE_EVENT / "entries.csv").open(encoding="utf-8") as f:
        names = {name.strip() for row in csv.DictReader(f) for name in row["participants"].split(";")}
    return {name for name in names if name}


def debug_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with DEBUG logs: everything it logs must be clean too."""
    return venuebox(data_dir, *args, timeout=120, env={"VENUEBOX_LOG_LEVEL": "DEBUG"})


def test_a_full_day_logs_no_secret_and_no_participant(tmp_path: Path) -> None:
    cloud = Cloud(tmp_path).start()
    config = make_box(
        tmp_path / "box",
        uplink_poll_s=0.1,
        status_interval_s=0.5,
        backup_interval_s=10,
        export_roots=[str(tmp_path)],
    )
    good_token = tmp_path / "uplink.token"
    good_token.write_text(cloud.issue(box_id_of(config)) + "\n")
    wrong_token = tmp_path / "wrong.token"
    wrong_token.write_text("an-uplink-token-nobody-issued-0123456789\n")
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE + "\n")
    assert (
        debug_cli(config.data_dir, "backup", "configure", "--passphrase-file", str(passphrase)).returncode
        == 0
    )
    assert (
        debug_cli(
            config.data_dir, "uplink", "configure", "--url", cloud.url, "--token-file", str(wrong_token)
        )
    ).returncode == 0
    box = RunningBox(config, env={"VENUEBOX_LOG_LEVEL": "DEBUG"}).start()
    secrets = {config.admin_token_path.read_text().strip(), PASSPHRASE, wrong_token.read_text().strip()}
    secrets.add(good_token.read_text().strip())
    try:
        with box.admin() as admin:
            code = admin.post("/admin/v1/pairing-codes", json={"judge_id": "J1"}).json()["code"]
            secrets.add(code)
            admin.post("/admin/v1/pairing-codes", json={"judge_id": "J2"})  # made, never used
            bad = admin.get("/admin/v1/status", headers={"Authorization": "Bearer not-the-admin-token"})
            assert bad.status_code == 401
        with box.client() as client:
            paired = client.post("/api/v1/pair", json={"code": code, "device_name": "J1 tablet"}).json()
            token = paired["token"]
            secrets.add(token)
            assert client.post("/api/v1/pair", json={"code": code, "device_name": "again"}).status_code == 403
            headers = {"Authorization": f"Bearer {token}"}
            event = client.get("/api/v1/event", headers=headers).json()
            entries = panel_entries(event)
            values = {c["key"]: c["max"] for c in event["criteria"]}
            for entry in entries[:5]:
                sheet = {
                    "sheet_id": f"7d0c6a2e-1b3f-4c5d-8e9f-{entries.index(entry):012d}",
                    "entry_id": entry,
                    "values": values,
                    "comment": "lovely lines",
                    "submitted_at": "2026-03-14T10:42:07-05:00",
                }
                assert client.post("/api/v1/sheets", json=sheet, headers=headers).status_code == 201
            client.post("/api/v1/sheets", json={"sheet_id": "nope"}, headers=headers)  # a refused one
            client.post("/api/v1/heartbeat", json={"sent_at": "2026-03-14T10:42:07Z"}, headers=headers)
            client.get("/api/v1/event", headers={"Authorization": f"Bearer {token}x"})  # unknown token
        # The uplink is refused (wrong token), then configured right and drains.
        wait_for("paused", lambda: uplink(box)["state"] == "paused")
        fixed = debug_cli(
            config.data_dir, "uplink", "configure", "--url", cloud.url, "--token-file", str(good_token)
        )
        assert fixed.returncode == 0
        wait_for("idle", lambda: (v := uplink(box))["state"] == "idle" and v["backlog"] == 0)
        with box.admin() as admin:
            admin.post("/admin/v1/freeze", json={"reason": "dispute on entry 101", "category": "dispute"})
            admin.post("/admin/v1/unfreeze")
            usb = tmp_path / "usb"
            usb.mkdir()
            assert admin.post("/admin/v1/export", json={"to": str(usb)}).status_code == 202
            wait_for("the export", lambda: admin.get("/admin/v1/export").json()["job"]["state"] == "done")
            device = admin.get("/admin/v1/devices").json()[0]["device_id"]
            admin.post(f"/admin/v1/devices/{device}/revoke")
        assert debug_cli(config.data_dir, "backup", "now").returncode == 0
        time.sleep(1)
    finally:
        box.stop()
        cloud.stop()

    assert box.log_path is not None
    logs = box.log_path.read_text(encoding="utf-8") + (cloud.receiver.data_dir / "receiver.log").read_text(
        encoding="utf-8"
    )
    assert '"level": "DEBUG"' in logs or '"level": "INFO"' in logs  # the log was really captured
    assert "uplink paused" in logs  # and it holds the day's events
    leaked = sorted(s for s in secrets if s and s in logs)
    assert leaked == [], "secrets in the logs"
    names = participant_names()
    assert len(names) > 20
    found = sorted(name for name in names if name in logs)
    assert found == [], f"participants' names in the logs: {found[:5]}"
