"""The corruption drill (docs/operations.md, "The SD card died / the database is damaged"), end to
end with real processes: eight simulated judge tablets (the project's own client, pinning the box's
TLS certificate) score at a quick pace with dropouts while the uplink sends to a real receiver; a
snapshot is taken along the way; mid-run a leaf page of the ledger is damaged as a failing disk does
it and the daemon is killed. Then the runbook's steps, with its commands and flags: `venuebox
recover`, `venuebox verify` on the new data dir, the box started on it at the same address,
`venuebox status`. The tablets reconnect with the pin and token they hold, see the new ledger epoch
and send back what they kept.

What must hold: every sheet any tablet ever got a 200/201 for is in the recovered ledger exactly
once; the chains verify; no tablet paired again and the box serves the same certificate; the
receiver holds one record per ledger place, equal to the box's ledger, and the uplink never forked.
Three drills: the old card readable with the uplink running; readable with the cloud down all along;
the card lost, the snapshots on a second disk opened with the organiser's key.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from appliance.core import tls
from appliance.core.config import load_config
from appliance.shared.fingerprint import grouped
from tests.conftest import RunningBox, box_id_of, make_box, served_certificate, venuebox, wait_for
from tests.damage import damage_table
from tests.faultproxy import Faults
from tests.integration.test_restore_identity import organiser_key
from tests.integration.test_uplink import Cloud
from tests.powercut import Judges, free_port, write_event_package

pytestmark = pytest.mark.timeout(300)

TABLETS = 8
PACE_S = 0.2  # seconds between one tablet's sheets (a judge takes minutes: a quick pace)
ENTRIES = 600  # enough that no tablet runs out of entries during a drill
BEFORE_SNAPSHOT = 40  # sheets acknowledged before `venuebox backup now`
AFTER_SNAPSHOT = 120  # and after it, before the damage (so the damaged middle leaf is past the snapshot)
NEW_SCORES = 40  # sheets stored on the recovered box before the tablets stop (scoring goes on)


def ok(done: Any) -> Any:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


class Venue:
    """What tests.powercut.Judges reads of a box, for a plain RunningBox: where it listens, its admin
    token, the certificate fingerprint the tablets pin, its log."""

    def __init__(self, box: RunningBox) -> None:
        self.box = box

    @property
    def admin_url(self) -> str:
        return self.box.admin_url

    @property
    def tablet_url(self) -> str:
        return self.box.tablet_url

    def admin_token(self) -> str:
        return self.box.config.admin_token_path.read_text().strip()

    def fingerprint(self) -> str:
        return tls.load_identity(self.box.config.data_dir).fingerprint

    def log_tail(self, chars: int = 3000) -> str:
        assert self.box.log_path is not None
        return self.box.log_path.read_text(errors="replace")[-chars:]


@dataclass
class Drill:
    """One box through the drill, and everything the checks afterwards read."""

    tmp_path: Path
    cloud: Cloud
    second_disk: Path | None = None  # where the snapshots go when the card is to be lost
    organiser: Path | None = None  # the organiser's key file (made off the box)
    old: RunningBox | None = None
    new: RunningBox | None = None
    judges: Judges | None = None
    box_id: str = ""
    fingerprint: str = ""
    acknowledged_by_old_box: set[str] = field(default_factory=set)
    kept_at_the_kill: set[str] = field(default_factory=set)  # what the tablets held that a box could lose
    judges_stopped: bool = False

    @property
    def target(self) -> Path:
        return self.tmp_path / "venuebox-recovered"

    def set_up(self) -> None:
        """A box with TLS, the event, the uplink configured as a tech does; with a second disk, the
        snapshots go there and the organiser's key opens them."""
        package = write_event_package(self.tmp_path / "package", ENTRIES)
        config = make_box(
            self.tmp_path / "venuebox",
            package,
            tls=True,
            heartbeat_interval_s=2,
            status_interval_s=0.5,
            backup_interval_s=3600.0,  # the snapshots: one after each pairing, and `backup now`
            uplink_poll_s=0.1,
            uplink_backoff_base_s=0.2,
            uplink_backoff_cap_s=2.0,
            uplink_read_timeout_s=3.0,
            device_rate_per_s=1000.0,
            device_burst=1000,
        )
        self.box_id = box_id_of(config)
        token = self.tmp_path / "cloud.token"
        token.write_text(self.cloud.issue(self.box_id) + "\n")
        token.chmod(0o600)
        ok(venuebox(config, "uplink", "configure", "--url", self.cloud.url, "--token-file", str(token)))
        if self.second_disk is not None:
            self.second_disk.mkdir()
            self.organiser, public = organiser_key(self.tmp_path)
            ok(venuebox(config, "backup", "configure", "--recipient", public, "--dir", str(self.second_disk)))
        self.fingerprint = tls.load_identity(config.data_dir).fingerprint
        self.old = RunningBox(config, port=free_port(), admin_port=free_port()).start()

    def score_then_damage(self) -> None:
        """Tablets score; a snapshot; more scores; the ledger's middle leaf damaged under the
        running daemon; a few moments of the box running on it; then the daemon killed (SIGKILL)."""
        old = self.old
        assert old is not None
        # Judges reads a box's URLs, admin token, fingerprint and log: Venue gives them.
        judges = Judges(Venue(old), TABLETS, self.tmp_path / "tablets", PACE_S, seed=15)  # type: ignore[arg-type]
        self.judges = judges.start()
        judges.wait_for_acks(BEFORE_SNAPSHOT)
        taken = ok(venuebox(old.config, "backup", "now")).stdout
        assert "verified: " in taken, taken
        judges.wait_for_acks(len(judges.acknowledged()) + AFTER_SNAPSHOT)
        damage_table(old.config.db_path, "sheets", "middle")
        acked = len(judges.acknowledged())
        # Mid-run: the box goes on until it meets the damage or a few more sheets are stored.
        wait_for(
            "the box to meet the damage or store more sheets",
            lambda: self._says_damaged(old) or len(judges.acknowledged()) >= acked + 10,
            timeout=30,
        )
        old.kill()
        self.acknowledged_by_old_box = judges.acknowledged()
        self.kept_at_the_kill = self.kept_by_tablets()

    @staticmethod
    def _says_damaged(box: RunningBox) -> bool:
        assert box.process is not None and box.log_path is not None
        assert box.process.poll() is None, f"the daemon exited:\n{box.log_path.read_text()[-3000:]}"
        with box.client() as client:
            return client.get("/api/v1/health").json().get("database") == "damaged"

    def recover(self, *args: str) -> list[str]:
        """`venuebox recover ARGS --to NEW` as the runbook gives it (no --data-dir), then `verify`."""
        done = ok(venuebox(None, "recover", *args, "--to", str(self.target), timeout=180))
        verified = ok(venuebox(self.target, "verify")).stdout
        assert "chain intact" in verified, verified
        return done.stdout.splitlines()

    def restart(self) -> RunningBox:
        """The box started on the recovered data dir, at the old box's address."""
        old = self.old
        assert old is not None
        self.new = RunningBox(
            load_config(self.target, environ={}), port=old.port, admin_port=old.admin_port
        ).start()
        assert self.new.tablet_url == old.tablet_url
        return self.new

    def tablet_queues(self) -> list[Path]:
        return sorted((self.tmp_path / "tablets").glob("tablet-*/sheets.sqlite3"))

    def kept_by_tablets(self) -> set[str]:
        """The sheets the tablets keep (stored by a box, not yet safe), whatever the epoch."""
        return {row[0] for queue in self.tablet_queues() for row in query(queue, "SELECT sheet_id FROM kept")}

    def tablets_on_the_new_epoch(self) -> bool:
        """Every tablet heard the recovered box's epoch, and none still waits to send a sheet the old
        box acknowledged (what it kept went back in its queue at the new epoch: now answered)."""
        (epoch,) = query(self.target / "venuebox.sqlite", "SELECT ledger_epoch FROM box WHERE id = 1")[0]
        queues = self.tablet_queues()
        assert len(queues) == TABLETS, queues
        for queue in queues:
            if query(queue, "SELECT value FROM meta WHERE key = 'ledger_epoch'") != [(epoch,)]:
                return False
            if query(queue, "SELECT count(*) FROM kept WHERE epoch IS NOT ?", epoch) != [(0,)]:
                return False
            waiting = {row[0] for row in query(queue, "SELECT sheet_id FROM sheets WHERE state = 'queued'")}
            if waiting & self.acknowledged_by_old_box:
                return False
        return True

    def tablets_sent_back(self) -> set[str]:
        """Waits until every tablet heard the recovered box's new epoch and sent back what it kept,
        every sheet the old box acknowledged is in the recovered ledger, and the judges' new scores
        are being stored; then stops the tablets. Returns every sheet id ever acknowledged."""
        judges, new = self.judges, self.new
        assert judges is not None and new is not None

        def back() -> bool:
            return self.tablets_on_the_new_epoch() and self.acknowledged_by_old_box <= set(self.ledger_ids())

        try:
            wait_for("the tablets to reconnect and send back what they kept", back, timeout=90)
            wait_for(
                "new scores stored on the recovered box",
                lambda: len(judges.acknowledged()) >= len(self.acknowledged_by_old_box) + NEW_SCORES,
                timeout=60,
            )
        except AssertionError as exc:
            missing = sorted(self.acknowledged_by_old_box - set(self.ledger_ids()))
            raise AssertionError(
                f"{exc}: {len(missing)} acknowledged sheet(s) not in the recovered ledger, e.g. "
                f"{missing[:3]}; tablets: {judges.report.summary()}"
            ) from None
        self.judges_stopped = True
        judges.stop()
        return judges.acknowledged()

    def ledger(self) -> list[tuple[int, str, str]]:
        """The recovered ledger: (seq, hash, sheet_id) in seq order."""
        rows = query(self.target / "venuebox.sqlite", "SELECT seq, hash, sheet_id FROM sheets ORDER BY seq")
        return [(seq, digest, sheet_id) for seq, digest, sheet_id in rows]

    def ledger_ids(self) -> list[str]:
        return [row[2] for row in self.ledger()]

    def admin(self, path: str) -> Any:
        assert self.new is not None
        with self.new.admin() as admin:
            return admin.get(path).raise_for_status().json()

    def uplink_caught_up(self) -> dict[str, Any]:
        def drained() -> dict[str, Any] | None:
            view = self.admin("/admin/v1/uplink")
            assert view["state"] != "paused", f"the uplink paused: {view.get('paused_reason')}"
            return view if view["backlog"] == 0 and view["batch"] is None else None

        return wait_for("the recovered box's uplink to catch up", drained, timeout=60)

    def close(self) -> None:
        if self.judges is not None and not self.judges_stopped:
            self.judges_stopped = True
            self.judges.stop()
        for box in (self.new, self.old):
            if box is not None and box.process is not None:
                box.stop()


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    c = Cloud(tmp_path).start()
    yield c
    c.stop()


# -- the checks every drill makes ------------------------------------------------------------------


def assert_every_acknowledged_sheet_once(drill: Drill, acknowledged: set[str]) -> None:
    ids = drill.ledger_ids()
    twice = [sheet_id for sheet_id, n in Counter(ids).items() if n > 1]
    assert not twice, f"stored more than once in the recovered ledger: {twice[:5]}"
    missing = sorted(acknowledged - set(ids))
    assert not missing, f"{len(missing)} acknowledged sheet(s) lost, e.g. {missing[:5]}"
    assert [row[0] for row in drill.ledger()] == list(range(1, len(ids) + 1)), "the ledger has a gap"
    verified = ok(venuebox(drill.target, "verify")).stdout
    assert f"sheets: {len(ids)} rows, chain intact" in verified, verified


def assert_no_tablet_paired_again(drill: Drill) -> None:
    assert drill.judges is not None and drill.new is not None
    report = drill.judges.report
    assert report.paired == TABLETS, report.summary()
    assert report.repaired == 0, f"tablets paired again:\n{report.summary()}"
    assert report.held == 0, f"sheets set aside by the tablets:\n{report.summary()}"
    served = hashlib.sha256(served_certificate(drill.new.tablet_url)).hexdigest()
    assert served == drill.fingerprint, "the recovered box serves another certificate than the one pinned"


def assert_the_receiver_holds_the_ledger_once(drill: Drill) -> None:
    """After the uplink caught up: one sheet record per ledger place, the receiver's chain equal to
    the box's ledger; the audit log's places agree too; no fork anywhere."""
    drill.uplink_caught_up()
    ledger = drill.ledger()
    receiver_db = drill.cloud.receiver.data_dir / "receiver.sqlite"
    places = query(
        receiver_db,
        "SELECT seq, hash FROM chain_places WHERE box_id = ? AND chain = 'sheets' ORDER BY seq",
        drill.box_id,
    )
    assert places == [(seq, digest) for seq, digest, _ in ledger], (
        f"the receiver's chain ({len(places)} places) is not the box's ledger ({len(ledger)} rows)"
    )
    records = [
        json.loads(row[0])
        for row in query(
            receiver_db, "SELECT payload FROM records WHERE box_id = ? AND kind = 'sheet'", drill.box_id
        )
    ]
    per_seq = Counter(r["seq"] for r in records)
    per_sheet = Counter(r["sheet_id"] for r in records)
    assert max(per_seq.values()) == 1, [seq for seq, n in per_seq.items() if n > 1][:5]
    assert max(per_sheet.values()) == 1, [s for s, n in per_sheet.items() if n > 1][:5]
    assert {(r["seq"], r["hash"], r["sheet_id"]) for r in records} == set(ledger)
    audit = dict(query(drill.target / "venuebox.sqlite", "SELECT seq, hash FROM audit_log"))
    audit_places = query(
        receiver_db, "SELECT seq, hash FROM chain_places WHERE box_id = ? AND chain = 'audit'", drill.box_id
    )
    assert all(audit.get(seq) == digest for seq, digest in audit_places), "the audit chains disagree"
    alerts = drill.admin("/admin/v1/alerts?include_cleared=true")
    assert not [a for a in alerts if a["fingerprint"] == "uplink-fork"], alerts
    assert drill.cloud.receiver.metric("venuebox_receiver_chain_forks_total") == 0


def status_lines(drill: Drill) -> list[str]:
    return ok(venuebox(drill.target, "status")).stdout.splitlines()


def line_of(lines: list[str], start: str) -> str:
    found = [line for line in lines if line.startswith(start)]
    assert len(found) == 1, f"not one line starting {start!r} in:\n" + "\n".join(lines)
    return found[0]


def recovered_rows(out: list[str]) -> int:
    """How many sheets `venuebox recover` put in the new ledger (its ``ledger`` line)."""
    found = re.match(r"ledger    (\d+) sheets \(", line_of(out, "ledger    "))
    assert found, out
    return int(found.group(1))


def not_appended(out: list[str]) -> set[str]:
    """The sheet ids `venuebox recover` lists as not appended."""
    return set(re.findall(r"^  \w+ sheets seq \d+ \(sheet ([0-9a-f-]+)\): ", "\n".join(out), re.MULTILINE))


def assert_status_after_the_tablets(drill: Drill, out: list[str]) -> list[str]:
    """`venuebox status` on the recovered box: its recovery line, the sheets stored since, and no
    sheet a source named still missing (the tablets sent them back)."""
    lines = status_lines(drill)
    recovery = line_of(lines, "recovery ")
    snapshot = line_of(out, "snapshot  snapshot-").split()[1].rstrip(":")
    since = len(drill.ledger()) - recovered_rows(out)
    assert f" from {snapshot}: " in recovery and f"; {since} stored since (" in recovery, (recovery, since)
    missing = line_of(lines, "missing  ")
    assert "seen but not restorable" not in missing, missing
    return lines


# -- the drills ------------------------------------------------------------------------------------


def test_drill_card_readable_uplink_running(tmp_path: Path, cloud: Cloud) -> None:
    """The runbook's first command (`recover --from OLD --to NEW`) on a box whose uplink ran: the
    snapshot, then what the damaged file still holds, then the cloud for the rows the damage took."""
    drill = Drill(tmp_path, cloud)
    try:
        drill.set_up()
        drill.score_then_damage()
        assert drill.old is not None
        out = drill.recover("--from", str(drill.old.config.data_dir))
        assert line_of(out, "salvage   ").endswith("(its pages read one by one)"), out
        assert line_of(out, "cloud     ").endswith(f"from {cloud.url}"), out
        assert f"tls       certificate {grouped(drill.fingerprint)} restored" in "\n".join(out), out
        drill.restart()
        acknowledged = drill.tablets_sent_back()

        assert_every_acknowledged_sheet_once(drill, acknowledged)
        assert_no_tablet_paired_again(drill)
        assert_the_receiver_holds_the_ledger_once(drill)
        lines = assert_status_after_the_tablets(drill, out)
        unused = [line for line in lines if line.startswith(("         salvage ", "         cloud "))]
        assert not unused, lines  # both sources were used
    finally:
        drill.close()


def test_drill_card_readable_cloud_down_all_along(tmp_path: Path, cloud: Cloud) -> None:
    """The same with the cloud never reached (the receiver's address refuses connections): the
    chain stops at the damaged rows; everything after them comes back from the tablets, which kept it
    (only a verified snapshot made it safe). Then the cloud comes back and gets the whole ledger."""
    assert cloud.proxy is not None
    cloud.proxy.refuse(True)
    drill = Drill(tmp_path, cloud)
    try:
        drill.set_up()
        drill.score_then_damage()
        assert drill.old is not None
        assert cloud.stored() == [], "the cloud was to be down all along"
        out = drill.recover("--from", str(drill.old.config.data_dir))
        assert line_of(out, "salvage   ").endswith("(its pages read one by one)"), out
        assert line_of(out, "cloud     ").startswith("cloud     unreachable: "), out
        # The damage took rows past the snapshot: the rows after them do not link, so the tablets,
        # which kept them, must send them back.
        listed = not_appended(out)
        assert listed, "the damaged rows were to be past the snapshot:\n" + "\n".join(out)
        # What only those rows held, a tablet kept (the watermark's promise).
        let_go = (listed & drill.acknowledged_by_old_box) - drill.kept_at_the_kill
        assert not let_go, f"tablets let go of sheets only the lost rows held: {sorted(let_go)[:3]}"
        drill.restart()
        acknowledged = drill.tablets_sent_back()

        assert_every_acknowledged_sheet_once(drill, acknowledged)
        assert_no_tablet_paired_again(drill)
        lines = assert_status_after_the_tablets(drill, out)
        assert " 0 from the cloud; " in line_of(lines, "recovery "), lines
        assert line_of(lines, "         cloud ").startswith("         cloud unreachable: "), lines
        # The cloud answers again: the recovered box sends its whole ledger, each record once, no fork.
        cloud.proxy.refuse(False)
        assert_the_receiver_holds_the_ledger_once(drill)
    finally:
        drill.close()


def test_drill_card_lost_snapshots_on_a_second_disk(tmp_path: Path, cloud: Cloud) -> None:
    """The runbook's second command (`recover --snapshot BACKUP_DIR --identity organiser-key.txt
    --to NEW`): the card is gone, keys and all; the snapshots on the second disk open with the
    organiser's key, the cloud and the tablets give the rest."""
    drill = Drill(tmp_path, cloud, second_disk=tmp_path / "backup-disk")
    try:
        drill.set_up()
        drill.score_then_damage()
        assert drill.old is not None and drill.organiser is not None and drill.second_disk is not None
        assert list(drill.second_disk.glob("snapshot-*.sqlite.age")), "no snapshot on the second disk"
        assert not list(drill.old.config.data_dir.glob("**/snapshot-*")), "snapshots on the card"
        shutil.rmtree(drill.old.config.data_dir)  # the card is gone
        out = drill.recover("--snapshot", str(drill.second_disk), "--identity", str(drill.organiser))
        assert line_of(out, "salvage   ") == "salvage   skipped: no old data dir given (--from)", out
        assert line_of(out, "cloud     ").endswith(f"from {cloud.url}"), out
        drill.restart()
        acknowledged = drill.tablets_sent_back()

        assert_every_acknowledged_sheet_once(drill, acknowledged)
        assert_no_tablet_paired_again(drill)
        assert_the_receiver_holds_the_ledger_once(drill)
        lines = assert_status_after_the_tablets(drill, out)
        assert " 0 salvaged, " in line_of(lines, "recovery "), lines
        skipped = line_of(lines, "         salvage ")
        assert skipped == "         salvage skipped: no old data dir given (--from)", lines
    finally:
        drill.close()


def test_a_cloud_answering_503_is_reported_unreachable_as_the_runbook_says(
    tmp_path: Path, cloud: Cloud
) -> None:
    """The drill with the cloud down behind its proxy ("503 Service Unavailable") instead of refusing
    connections: the runbook's `cloud unreachable: …`, "recover again once it answers"."""
    assert cloud.proxy is not None
    cloud.proxy.set_faults(Faults(status_503=1.0))  # the receiver's proxy: "Service Unavailable"
    config = make_box(tmp_path / "venuebox")
    token = tmp_path / "cloud.token"
    token.write_text(cloud.issue(box_id_of(config)) + "\n")
    ok(venuebox(config, "uplink", "configure", "--url", cloud.url, "--token-file", str(token)))
    ok(venuebox(config, "backup", "now"))
    target = tmp_path / "venuebox-recovered"
    out = ok(venuebox(None, "recover", "--from", str(config.data_dir), "--to", str(target))).stdout
    assert line_of(out.splitlines(), "cloud     ").startswith("cloud     unreachable: "), out
