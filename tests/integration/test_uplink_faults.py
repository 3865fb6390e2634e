"""Exactly once through everything: 20,000 sheets submitted to a real daemon whose uplink goes through
a fault-injecting proxy (dropped and reset connections, delays past the read timeout, 500/503/429,
answers cut after the receiver committed or half-way) to a real receiver process, while the box is
SIGKILLed and restarted twice. The receiver must end with exactly the box's 20,000 sheets, once each,
and the box with an empty backlog."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningBox, panel_entries
from tests.faultproxy import Faults
from tests.integration.test_uplink import Cloud, uplink, uplinked_box, wait_for

SHEETS = 20_000
PER_CALL = 500
FAULTS = Faults(
    drop=0.04,
    reset_before=0.02,
    delay=0.03,
    delay_s=1.5,  # past the box's read timeout (1 s): the box gives up, the receiver still commits
    status_500=0.04,
    status_503=0.04,
    status_429=0.03,
    retry_after_s=1,
    cut_after_commit=0.06,
    cut_mid_response=0.03,
)


def sheet_calls(box: RunningBox, judges: list[str], total: int) -> list[tuple[str, list[dict[str, Any]]]]:
    """(device token, sheets) per batch call: each judge's tablet keeps a correction chain on every
    entry of its panel (an original, then each sheet superseding the one before), ``total`` in all."""
    tablets = [box.pair(judge, f"{judge} tablet") for judge in judges]
    submitted_at = datetime.now(UTC).isoformat()
    per_tablet = total // len(tablets)
    calls = []
    for tablet in tablets:
        event = tablet.event()
        values = {c["key"]: c["min"] + c["step"] for c in event["criteria"]}
        entries = panel_entries(event)
        heads: dict[str, str] = {}
        sheets = []
        for i in range(per_tablet):
            entry = entries[i % len(entries)]
            sheet: dict[str, Any] = {
                "sheet_id": str(uuid.uuid4()),
                "entry_id": entry,
                "values": values,
                "submitted_at": submitted_at,
            }
            if entry in heads:
                sheet["supersedes"] = heads[entry]
            heads[entry] = sheet["sheet_id"]
            sheets.append(sheet)
        token = tablet.pairing["token"]
        calls += [(token, sheets[i : i + PER_CALL]) for i in range(0, len(sheets), PER_CALL)]
    assert sum(len(s) for _, s in calls) == total
    return calls


class Submitter(threading.Thread):
    """Sends every call as a tablet would: a call that fails on the network (the box was killed) is
    sent again, unchanged, once the box answers again; the sheet ids make that safe."""

    def __init__(self, box: RunningBox, calls: list[tuple[str, list[dict[str, Any]]]]) -> None:
        super().__init__(daemon=True)
        self.box, self.calls = box, calls
        self.done = 0
        self.resent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for token, sheets in self.calls:
                while True:
                    try:
                        with httpx.Client(base_url=self.box.tablet_url, timeout=30.0) as client:
                            answer = client.post(
                                "/api/v1/sheets/batch",
                                json={"sheets": sheets},
                                headers={"Authorization": f"Bearer {token}"},
                            )
                    except httpx.TransportError:
                        self.resent += 1
                        time.sleep(0.2)
                        continue
                    if answer.status_code == 503:
                        time.sleep(0.2)
                        continue
                    assert answer.status_code == 200, answer.text
                    statuses = {item["status"] for item in answer.json()["results"]}
                    assert statuses <= {200, 201}, answer.text[:500]
                    break
                self.done += len(sheets)
        except BaseException as exc:
            self.error = exc


def receiver_rows(cloud: Cloud) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(cloud.receiver.data_dir / "receiver.sqlite")
    try:
        return conn.execute("SELECT record_id, kind, payload FROM records").fetchall()
    finally:
        conn.close()


def box_rows(box: RunningBox) -> tuple[set[str], set[str], int]:
    """(outbox record ids, ledger sheet ids, records still pending)."""
    conn = sqlite3.connect(box.config.db_path)
    try:
        records = {r[0] for r in conn.execute("SELECT record_id FROM outbox")}
        sheets = {r[0] for r in conn.execute("SELECT sheet_id FROM sheets")}
        pending = conn.execute(
            "SELECT count(*) FROM outbox WHERE acked_at IS NULL AND quarantined_at IS NULL"
        ).fetchone()[0]
        return records, sheets, pending
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_20000_sheets_reach_the_receiver_exactly_once_through_faults_and_two_kills(
    tmp_path: Path,
) -> None:
    cloud = Cloud(tmp_path).start()
    assert cloud.proxy is not None
    box = uplinked_box(
        tmp_path,
        cloud,
        uplink_batch_max_records=200,
        uplink_read_timeout_s=1.0,
        uplink_backoff_base_s=0.05,
        uplink_backoff_cap_s=0.5,
        uplink_breaker_failures=4,
        # Acked records stay for the whole run: the test compares the box's records with the cloud's.
        uplink_retention_h=24.0,
    ).start()
    try:
        calls = sheet_calls(box, ["J1", "J2", "J3", "J4", "J5"], SHEETS)
        cloud.proxy.set_faults(FAULTS)
        submitter = Submitter(box, calls)
        submitter.start()
        pending_at_kill = []
        for stored_before_kill in (3_000, 11_000):

            def stored_enough(n: int = stored_before_kill) -> bool:
                return len(receiver_rows(cloud)) >= n

            wait_for(f"{stored_before_kill} records at the receiver", stored_enough, timeout=240)
            box.kill()  # SIGKILL: no goodbye, whatever was in flight
            pending_at_kill.append(box_rows(box)[2])
            box.start()
        submitter.join(300)
        assert not submitter.is_alive(), "the submitter did not finish"
        assert submitter.error is None, submitter.error
        assert submitter.done == SHEETS
        wait_for("an empty backlog", lambda: uplink(box)["backlog"] == 0, timeout=300)
        view = uplink(box)
        assert view["quarantined"] == 0 and view["state"] == "idle"
    finally:
        box.stop()
        counts = dict(cloud.proxy.counts)
        cloud.stop()

    records, sheets, pending = box_rows(box)
    rows = receiver_rows(cloud)
    stored_ids = [r[0] for r in rows]
    stored_sheets = [json.loads(r[2])["sheet_id"] for r in rows if r[1] == "sheet"]
    assert len(sheets) == SHEETS and pending == 0
    assert len(stored_sheets) == len(set(stored_sheets)) == SHEETS
    assert set(stored_sheets) == sheets
    assert len(stored_ids) == len(set(stored_ids)) and set(stored_ids) == records
    # Both kills found records still on their way, and every kind of fault really happened.
    assert all(p > 0 for p in pending_at_kill), pending_at_kill
    faults = ("drop", "reset_before", "delay", "status_500", "status_503", "status_429")
    for fault in (*faults, "cut_after_commit", "cut_mid_response"):
        assert counts[fault] > 0, f"no {fault} was injected: {counts}"
