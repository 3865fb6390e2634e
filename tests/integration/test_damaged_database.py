"""A damaged database is caught at once, frozen, and explained (issue 14, items 4 and 5).

The damage is what the issue describes: bytes overwritten in a leaf page of the sheets table (for
one test, of the audit log), in the database file, by the test (tests/damage.py), on a box holding
a few hundred sheets. Under a running
daemon the WAL is checkpointed first (so the file holds the pages SQLite reads) and another
connection then commits a change, so that none of the daemon's connections keeps a clean copy of the
page in its cache.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.core.config import Config, load_config
from appliance.core.watchdog import INTEGRITY_FINGERPRINT, INTEGRITY_FREEZE_REASON
from appliance.shared.errors import DAMAGED_DATABASE_SECTION, DatabaseDamaged
from appliance.shell.cli import EXIT_DATABASE_DAMAGED
from appliance.shell.daemon import damaged_status_line
from tests.conftest import ROOT, NotifySocket, RunningBox, Tablet, make_box, panel_entries, venuebox, wait_for
from tests.damage import damage_table, store_sheets

SHEETS = 300
RUNBOOK = ROOT / "docs" / "operations.md"
UNIT = ROOT / "systemd" / "venuebox.service"
# What the one line says, in the runbook's words (its steps 1 and 2, and the section's title).
POINTER = f'"{DAMAGED_DATABASE_SECTION}" in docs/operations.md'
FIRST_STEPS = ("stop the service", "copy the whole data dir to a USB key")
TIMEOUT_S = 15.0


def damaged_box_settings(**settings: Any) -> dict[str, Any]:
    return {"device_rate_per_s": 1000.0, "device_burst": 1000, **settings}


def integrity_alert(box: RunningBox) -> dict[str, Any] | None:
    with box.admin() as admin:
        alerts = admin.get("/admin/v1/alerts").raise_for_status().json()
    return next((a for a in alerts if a["fingerprint"] == INTEGRITY_FINGERPRINT and a["active"]), None)


def freeze_reason(config: Config) -> str | None:
    """The box row as the daemon left it (read on a connection of the test's own: the box's page is
    not the damaged one)."""
    conn = sqlite3.connect(f"file:{config.db_path}?mode=ro", uri=True)
    try:
        frozen, reason = conn.execute("SELECT frozen, freeze_reason FROM box WHERE id = 1").fetchone()
    finally:
        conn.close()
    return reason if frozen else None


def health(box: RunningBox) -> dict[str, Any]:
    with box.client() as client:
        return client.get("/api/v1/health").raise_for_status().json()


def post_sheet(tablet: Tablet, entry_id: str) -> Any:
    with tablet.client() as client:
        return client.post("/api/v1/sheets", json=tablet.sheet_for(entry_id))


def says_damaged(box: RunningBox) -> bool:
    """The admin status (what the console shows) says the database is damaged: in its `database`
    field, or as a database-damaged problem when the snapshot itself meets the damaged page."""
    with box.admin() as admin:
        answer = admin.get("/admin/v1/status")
    if answer.status_code == 503:
        return answer.json()["type"].endswith("/database-damaged")
    return answer.raise_for_status().json()["database"]["state"] == "damaged"


def assert_explained(result: Any, config: Config) -> None:
    """One line on stderr naming the database file and the runbook's next steps, exit status 3, and
    never SQLite's own words."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("venuebox: error: ")
    assert str(config.db_path) in line
    assert POINTER in line and all(step in line for step in FIRST_STEPS), line
    assert "malformed" not in result.stderr + result.stdout
    assert result.returncode == EXIT_DATABASE_DAMAGED


@pytest.fixture
def scored_box(tmp_path: Path) -> Iterator[Callable[..., tuple[RunningBox, Tablet, list[str]]]]:
    """A started daemon on a box holding SHEETS sheets, and a J1 tablet whose first sheet was stored
    (201): the sheet a later test sends would be stored too on a sound box."""
    boxes: list[RunningBox] = []

    def start(env: dict[str, str] | None = None, **settings: Any) -> tuple[RunningBox, Tablet, list[str]]:
        config = make_box(tmp_path / "box", **damaged_box_settings(**settings))
        store_sheets(config, SHEETS)
        box = RunningBox(config, env=env or {}).start()
        boxes.append(box)
        tablet = box.pair("J1")
        entries = panel_entries(tablet.event())
        assert post_sheet(tablet, entries[0]).status_code == 201
        return box, tablet, entries[1:]

    yield start
    for box in boxes:
        box.stop()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    """A socket standing in for systemd's NOTIFY_SOCKET."""
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def test_the_watchdog_finds_a_damaged_page_within_its_interval_and_freezes_the_box(
    scored_box: Callable[..., tuple[RunningBox, Tablet, list[str]]], notify_socket: NotifySocket
) -> None:
    systemd = notify_socket
    env = {"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "1000000"}
    box, tablet, entries = scored_box(env, quick_check_s=1)
    assert health(box)["database"] == "ok"

    # Nothing reads the middle of the ledger while the box is idle: only the watchdog can find it.
    damage_table(box.config.db_path, "sheets", "middle")
    damaged_at = time.monotonic()
    alert = wait_for("the db-integrity alert", lambda: integrity_alert(box))
    # One interval is 1 s here; the margin only absorbs a loaded test machine (the default is 600 s).
    assert time.monotonic() - damaged_at < 10
    assert alert["severity"] == "critical"
    assert DAMAGED_DATABASE_SECTION in alert["detail"]
    assert freeze_reason(box.config) == INTEGRITY_FREEZE_REASON == "auto: database integrity"

    now = health(box)
    assert (now["status"], now["database"], now["frozen"]) == ("degraded", "damaged", True)
    assert says_damaged(box)

    refused = post_sheet(tablet, entries[0])
    assert refused.status_code == 503, refused.text
    assert refused.json()["type"].endswith("/database-damaged")
    assert refused.headers["retry-after"]

    # systemd's status line says it, and the daemon goes on feeding the watchdog: a restart could
    # not repair the file, and the box must go on answering "damaged" meanwhile.
    systemd.messages(1.0)  # what was sent before
    told = systemd.messages(2.0)
    assert any(m.startswith("STATUS=DATABASE DAMAGED") and DAMAGED_DATABASE_SECTION in m for m in told), told
    assert "WATCHDOG=1" in told

    # The running box is explained by the CLI too, and the daemon still stops cleanly.
    assert_explained(venuebox(box.config, "status"), box.config)
    assert box.stop() == 0


def test_a_sheet_that_meets_a_damaged_page_is_refused_and_raises_the_alert_at_once(
    scored_box: Callable[..., tuple[RunningBox, Tablet, list[str]]],
) -> None:
    # quick_check every hour: its first run would be a minute after the start. Everything below must
    # come from the write that met the damage.
    started = time.monotonic()
    box, tablet, entries = scored_box(quick_check_s=3600)

    # The last leaf holds the ledger's head, which storing the next sheet reads.
    damage_table(box.config.db_path, "sheets", "last")
    refused = post_sheet(tablet, entries[0])
    assert refused.status_code == 503, refused.text
    assert refused.json()["type"].endswith("/database-damaged")
    assert "malformed" not in refused.text

    assert health(box)["database"] == "damaged"  # at once, from the store's memory
    wait_for("the db-integrity alert", lambda: integrity_alert(box), timeout=5)
    assert freeze_reason(box.config) == INTEGRITY_FREEZE_REASON
    assert says_damaged(box)
    assert time.monotonic() - started < 55, "too slow to tell the write's alert from the scheduled check"

    # Nothing more is acknowledged: not a sheet, not a batch.
    assert post_sheet(tablet, entries[1]).status_code == 503
    with tablet.client() as client:
        batch = client.post("/api/v1/sheets/batch", json={"sheets": [tablet.sheet_for(entries[2])]})
    assert batch.status_code == 503
    assert box.stop() == 0


def test_when_the_alert_cannot_be_written_the_box_still_says_damaged_and_refuses_sheets(
    scored_box: Callable[..., tuple[RunningBox, Tablet, list[str]]],
) -> None:
    box, tablet, entries = scored_box(quick_check_s=1)

    # The audit log's head page: the freeze and the alert both append to the audit log, so the
    # watchdog's own write fails on the damaged file.
    damage_table(box.config.db_path, "audit_log", "last")
    wait_for("health saying the database is damaged", lambda: health(box)["database"] == "damaged")
    time.sleep(1.5)  # another interval: the watchdog tried to write its alert again
    assert integrity_alert(box) is None
    assert freeze_reason(box.config) is None

    refused = post_sheet(tablet, entries[0])
    assert refused.status_code == 503, refused.text
    assert refused.json()["type"].endswith("/database-damaged")
    assert says_damaged(box)
    assert box.stop() == 0
    assert "database is damaged" in (box.log_path.read_text() if box.log_path else "")


@pytest.fixture(scope="module")
def damaged_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = make_box(tmp_path_factory.mktemp("damaged") / "box")
    store_sheets(config, SHEETS)
    damage_table(config.db_path, "sheets", "middle")
    return config.data_dir


@pytest.fixture
def damaged_box(damaged_template: Path, tmp_path: Path) -> Config:
    shutil.copytree(damaged_template, tmp_path / "box")
    return load_config(tmp_path / "box", environ={})


@pytest.mark.parametrize(
    "command",
    [
        ["verify"],
        ["status"],
        ["status", "--json"],
        ["backup", "now"],
        ["export", "--to", "{usb}"],
        ["run", "--host", "127.0.0.1", "--port", "0", "--admin-port", "0"],
    ],
    ids=lambda command: " ".join(command),
)
def test_every_command_explains_a_damaged_database_in_one_line(
    damaged_box: Config, tmp_path: Path, command: list[str]
) -> None:
    usb = tmp_path / "usb"
    usb.mkdir()
    result = venuebox(damaged_box, *(part.format(usb=usb) for part in command), timeout=60)
    assert_explained(result, damaged_box)
    # The live file is what is damaged: no snapshot is blamed, none is taken (retention would
    # delete a good older one for it), no export is left on the key.
    assert "snapshot" not in result.stderr
    assert not list(damaged_box.backup_path.glob("snapshot-*"))
    assert not list(usb.iterdir())


def test_systemd_does_not_restart_a_box_whose_database_is_damaged(damaged_box: Config) -> None:
    result = venuebox(damaged_box, "run", "--host", "127.0.0.1", "--port", "0", "--admin-port", "0")
    assert result.returncode == EXIT_DATABASE_DAMAGED
    prevented = [
        status
        for line in UNIT.read_text().splitlines()
        if line.startswith("RestartPreventExitStatus=")
        for status in line.partition("=")[2].split()
    ]
    assert str(result.returncode) in prevented
    assert "Restart=always" in UNIT.read_text().splitlines()


def runbook_section() -> str:
    text = RUNBOOK.read_text()
    match = re.search(rf"^### {re.escape(DAMAGED_DATABASE_SECTION)}\n(.*?)(?=^#{{2,3}} )", text, re.M | re.S)
    assert match, f'docs/operations.md has no section titled exactly "{DAMAGED_DATABASE_SECTION}"'
    return match.group(1)


def test_the_runbook_section_the_error_points_at_has_the_steps_it_names() -> None:
    section = runbook_section()
    steps = {
        int(n): " ".join(text.split()).lower()  # as read: one line, whatever the wrapping
        for n, text in re.findall(r"^(\d+)\. (.*?)(?=^\d+\. |\Z)", section, re.M | re.S)
    }
    assert sorted(steps) == list(range(1, len(steps) + 1)) and len(steps) >= 4, steps.keys()
    # What the tech sees, word for word: the alert, the freeze, systemd's status line, the one line
    # every command prints (for the service's data dir) and its exit status.
    damage = DatabaseDamaged(Path("/var/lib/venuebox/venuebox.sqlite"))
    as_read = " ".join(section.split())
    assert INTEGRITY_FINGERPRINT in section and INTEGRITY_FREEZE_REASON in as_read
    assert damaged_status_line(damage) in as_read
    assert f"venuebox: error: {damage.detail}" in as_read and f"exits {EXIT_DATABASE_DAMAGED}" in as_read
    # The steps, in the order the one line gives them, then recovery with the commands that exist.
    assert "systemctl stop venuebox" in steps[1] and FIRST_STEPS[0] in steps[1]
    assert FIRST_STEPS[1].lower() in steps[2]
    assert "venuebox" in steps[3] and "export" in steps[3]
    recovery = " ".join(steps[n] for n in range(4, len(steps) + 1))
    assert "venuebox recover" in recovery and "verify" in recovery and "venuebox status" in recovery
    # The commands for each card, word for word as tests/integration/test_recovery_drill.py runs them.
    assert "sudo venuebox recover --from /media/oldcard/venuebox --to /var/lib/venuebox-recovered" in section
    assert (
        "sudo venuebox recover --snapshot /media/backup/venuebox --identity organiser-key.txt "
        "--to /var/lib/venuebox-recovered" in section
    )
