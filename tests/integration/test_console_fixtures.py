"""The recorded admin API behind the snapshot tests still has the live API's shape.

tests/tui/recorded_box.py serves JSON recorded from a daemon. If the admin API changes a field, this
test fails, so the snapshots never show a console that works only against an old contract."""

from __future__ import annotations

import json
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from appliance.core import alerts, backup, export
from appliance.core.storage import Store
from appliance.shared.secrets_files import write_secret
from tests.conftest import SAMPLE_EVENT, RunningBox, make_box, panel_entries
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


# The scoring block results.json was recorded with (on the sample event): a trimmed mean, award bands.
SCORING = {
    "judges": "trimmed_mean",
    "drop_highest": 1,
    "drop_lowest": 1,
    "precision": 2,
    "ties": ["criterion:technique"],
    "awards": [{"label": "Platinum", "min": 27}, {"label": "Gold", "min": 25}],
}


def results_box(tmp_path: Path) -> RunningBox:
    """The box tests/tui/fixtures/results.json was recorded from (its GET /admin/v1/results): the
    sample event with ``SCORING``; Saturday morning (SAT-AM) scored by its whole panel (J1 J2 J3),
    signed off by all three and locked (FINAL); Saturday afternoon (SAT-PM, J1 J3 J4) partly scored,
    four entries by two judges only, signed off by J1 alone and open (PROVISIONAL); Sunday not
    started. A running daemon: stop it."""
    package = tmp_path / "package"
    shutil.copytree(SAMPLE_EVENT, package)
    event = json.loads((package / "event.json").read_text(encoding="utf-8"))
    (package / "event.json").write_text(json.dumps(event | {"scoring": SCORING}), encoding="utf-8")
    box = RunningBox(make_box(tmp_path / "box", package=package)).start()
    panels = {"SAT-AM": ("J1", "J2", "J3"), "SAT-PM": ("J1", "J3", "J4")}
    scored = {"SAT-AM": range(101, 121), "SAT-PM": range(121, 135)}
    tablets = {judge: box.pair(judge) for judge in ("J1", "J2", "J3", "J4")}
    for session_id, entries in scored.items():
        for judge in panels[session_id]:
            with tablets[judge].client() as c:
                for entry in entries:
                    if entry >= 131 and judge == "J4":
                        continue  # 131-134: J4 has not scored them yet
                    c.post("/api/v1/sheets", json=varied_sheet(judge, entry)).raise_for_status()
    for judge in ("J1", "J2", "J3"):
        with tablets[judge].client() as c:
            c.post("/api/v1/sessions/SAT-AM/final", json={}).raise_for_status()
    with tablets["J1"].client() as c:
        c.post("/api/v1/sessions/SAT-PM/final", json={}).raise_for_status()
    with box.admin() as admin:
        admin.post("/admin/v1/sessions/SAT-AM/lock", json={"reason": "awards at 1 pm"}).raise_for_status()
    return box


def varied_sheet(judge: str, entry: int) -> dict[str, Any]:
    """A sheet whose values vary by judge and entry (so ranks, awards and dropped judges vary)."""
    spread = (entry * 7 + int(judge[1:]) * 3) % 10
    values = {
        "technique": round(8.0 + spread * 0.19, 1),
        "performance": round(7.6 + ((entry + int(judge[1:])) % 9) * 0.25, 1),
        "choreography": 8.0 + (entry % 4) * 0.5,
    }
    return {
        "sheet_id": str(uuid.uuid4()),
        "entry_id": str(entry),
        "values": values,
        "submitted_at": "2026-03-14T12:40:00-04:00",
    }


def test_the_results_recording_matches_the_live_admin_api(tmp_path: Path) -> None:
    box = results_box(tmp_path)
    try:
        with box.admin() as admin:
            live = admin.get("/admin/v1/results").raise_for_status().json()
    finally:
        box.stop()
    recorded = fixture("results")
    assert same_shape(recorded, live, "results") == []
    # The recording is of this box: the same groups, entries, ranks, scores, awards and states.
    assert [(g["fields"], [strip(r) for r in g["rows"]]) for g in recorded["groups"]] == [
        (g["fields"], [strip(r) for r in g["rows"]]) for g in live["groups"]
    ]
    assert [strip(s) for s in recorded["sessions"]] == [strip(s) for s in live["sessions"]]


def strip(item: dict[str, Any]) -> dict[str, Any]:
    """A row or session state without the moments of the recording (lock time)."""
    return {k: v for k, v in item.items() if k != "locked_at"}


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
