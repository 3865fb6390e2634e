"""The recorded admin API behind the snapshot tests still has the live API's shape.

tests/tui/recorded_box.py serves JSON recorded from a daemon. If the admin API changes a field, this
test fails, so the snapshots never show a console that works only against an old contract."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import msgspec

from appliance.core import alerts, backup, export
from appliance.core.storage import Store
from appliance.shared.secrets_files import write_secret
from tests.conftest import RunningBox, make_box, panel_entries
from tests.tui.recorded_box import fixture


def shape(value: Any) -> Any:
    """The keys of dicts, recursively; a list by the shape of its first item; scalars by nothing."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None


def same_shape(recorded: Any, live: Any, where: str = "") -> list[str]:
    problems: list[str] = []
    if isinstance(recorded, dict) and isinstance(live, dict):
        for key in recorded.keys() | live.keys():
            if key not in live:
                problems.append(f"{where}.{key}: recorded but no longer in the live API")
            elif key not in recorded:
                problems.append(f"{where}.{key}: in the live API but not in the recording")
            else:
                problems += same_shape(recorded[key], live[key], f"{where}.{key}")
    elif isinstance(recorded, list) and isinstance(live, list) and recorded and live:
        problems += same_shape(recorded[0], live[0], f"{where}[0]")
    return problems


def test_recordings_match_the_live_admin_api(tmp_path: Path) -> None:
    # An uplink target (where nothing listens), so the live uplink block has a target's keys too.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token_file = tmp_path / "uplink.token"
    write_secret(token_file, "recording-token")
    config = make_box(
        tmp_path / "box",
        uplink_url=f"http://127.0.0.1:{port}",
        uplink_token_file=str(token_file),
        export_roots=[str(tmp_path)],
    )
    with Store(config.db_path) as store:
        store.write_sync(
            lambda conn: alerts.raise_alert(conn, "disk-free", "warning", "Disk filling", "12 MB")
        )
        # A verified snapshot, so the live backup block has a last snapshot's keys too.
        backup.snapshot_job(config, store)
        backup.verify_job(config, store)
    box = RunningBox(config).start()
    try:
        tablet = box.pair("J3")
        with tablet.client() as c:
            c.post(
                "/api/v1/heartbeat", json={"sent_at": "2026-03-14T10:42:07Z", "battery": 50}
            ).raise_for_status()
            entry = panel_entries(tablet.event())[0]
            c.post("/api/v1/sheets", json=tablet.sheet_for(entry)).raise_for_status()
        with box.admin() as admin:
            session = admin.get("/admin/v1/status").json()["session"]["id"]
            live = {
                "status": admin.get("/admin/v1/status").json(),
                "devices": admin.get("/admin/v1/devices").json(),
                "judges": admin.get("/admin/v1/judges").json(),
                "sessions": admin.get("/admin/v1/sessions").json(),
                "grid": admin.get(f"/admin/v1/sessions/{session}/grid").json(),
                "sheets": admin.get("/admin/v1/sheets").json(),
                "entry": admin.get(f"/admin/v1/entries/{entry}").json(),
                "personal": admin.get(f"/admin/v1/entries/{entry}/personal").json(),
                "alerts": admin.get("/admin/v1/alerts").json(),
                "audit": admin.get("/admin/v1/audit").json(),
                "pairing_code": admin.post("/admin/v1/pairing-codes", json={"judge_id": "J1"}).json(),
                "export": finished_export(admin, tmp_path / "usb"),
            }
    finally:
        box.stop()
    assert live["status"]["backup"]["last"] is not None
    problems = [p for name, value in live.items() for p in same_shape(fixture(name), value, name)]
    # No USB key is plugged into a test machine: the keys' shape is what the API serialises one as.
    key = msgspec.to_builtins(export.UsbTarget(Path("/media/usb"), "/dev/sda1", "vfat", True, 0).view())
    problems += same_shape(fixture("export")["targets"][0], key, "export.targets[0]")
    assert problems == [], "\n".join(problems)


def finished_export(admin: Any, folder: Path) -> dict[str, Any]:
    """GET /admin/v1/export after an export (to ``folder``) has finished."""
    folder.mkdir()
    admin.post("/admin/v1/export", json={"to": str(folder)}).raise_for_status()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answer = admin.get("/admin/v1/export").raise_for_status().json()
        if answer["job"]["state"] != "running":
            assert answer["job"]["state"] == "done", answer
            return answer
        time.sleep(0.1)
    raise AssertionError("the export did not finish within 30 s")
