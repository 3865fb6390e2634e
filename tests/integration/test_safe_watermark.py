"""The ledger's safe watermark (PROTOCOL.md, "Recovery and the safe watermark"): answers carry
``{"epoch", "safe_seq"}``; it advances when a snapshot verifies and when the cloud acknowledges, and
the Python tablet client keeps each stored sheet until it is safe, sending kept sheets again when
the epoch changes. Real daemons over HTTP, a real receiver, the project's own tablet client."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from appliance.core.config import load_config
from appliance.core.storage import Store
from appliance.core.watermark import new_epoch
from appliance.tablet_client.client import TabletClient
from appliance.tablet_client.sheet_queue import make_sheet
from tests.conftest import RunningBox, panel_entries, venuebox, wait_for
from tests.integration.test_tablet_client import code_for, start_box, values_for
from tests.integration.test_uplink import Cloud, uplinked_box


async def _paired(box: RunningBox, state: Path) -> TabletClient:
    client = TabletClient(box.tablet_url, state)
    await client.pair(code_for(box, "J1"), "J1 tablet")
    return client


async def _score(client: TabletClient, count: int, start: int = 0) -> list[str]:
    event = await client.event()
    entries = panel_entries(event)[start : start + count]
    sheets = [make_sheet(entry, values_for(event)) for entry in entries]
    for sheet in sheets:
        assert (await client.submit(sheet)).state == "stored"
    return [s["sheet_id"] for s in sheets]


def _ledger_seqs(box: RunningBox) -> dict[str, int]:
    conn = sqlite3.connect(box.config.db_path)
    try:
        return {row[0]: row[1] for row in conn.execute("SELECT sheet_id, seq FROM sheets")}
    finally:
        conn.close()


def test_safe_seq_follows_a_verified_snapshot_and_the_tablet_forgets_only_what_is_safe(
    tmp_path: Path,
) -> None:
    box = start_box(tmp_path / "box")
    try:

        async def run() -> None:
            client = await _paired(box, tmp_path / "tablet")
            first = await _score(client, 3)
            # Stored, but in no snapshot and no cloud yet: the tablet keeps all three.
            beat = await client.heartbeat()
            assert beat is not None
            assert [sheet_id for sheet_id, _ in client.queue.kept()] == first
            assert client.queue.depth() == 0  # kept is not queued: nothing is sent again

            taken = venuebox(box.config, "backup", "now")  # takes and verifies a snapshot
            assert taken.returncode == 0, taken.stderr
            later = await _score(client, 2, start=3)
            # The mark is read at most once a second: the next answers carry the snapshot's.
            await asyncio.sleep(1.1)
            await client.heartbeat()
            seqs = _ledger_seqs(box)
            assert sorted(seqs[s] for s in first) == [1, 2, 3]  # what the snapshot holds
            assert [sheet_id for sheet_id, _ in client.queue.kept()] == later
            await client.aclose()

        asyncio.run(run())
    finally:
        box.stop()


def test_safe_seq_follows_the_clouds_acknowledgements(tmp_path: Path) -> None:
    cloud = Cloud(tmp_path).start()
    box = uplinked_box(tmp_path, cloud).start()
    try:

        async def run() -> None:
            client = await _paired(box, tmp_path / "tablet")
            await _score(client, 4)
            # The uplink sends within a second or two; then every heartbeat answer makes them safe.

            async def kept_after_beat() -> int:
                await asyncio.sleep(0.3)
                await client.heartbeat()
                return len(client.queue.kept())

            for _ in range(100):
                if await kept_after_beat() == 0:
                    break
            assert client.queue.kept() == []
            await client.aclose()

        asyncio.run(run())
    finally:
        box.stop()
        cloud.stop()


def test_a_new_epoch_sends_every_kept_sheet_again(tmp_path: Path) -> None:
    box = start_box(tmp_path / "box")
    try:

        async def run() -> None:
            client = await _paired(box, tmp_path / "tablet")
            sent = await _score(client, 3)
            await client.heartbeat()
            old_epoch = client.queue.epoch()
            assert [s for s, _ in client.queue.kept()] == sent

            # The box is rebuilt (here: only its epoch changes, as `recover` and `restore` do it),
            # and comes back at the same address.
            box.port = int(box.tablet_url.rsplit(":", 1)[1])
            box.stop()
            with Store(box.config.db_path) as store:
                store.write_sync(new_epoch)
            box.start()
            again = client
            beat = await again.heartbeat()
            assert beat is not None
            assert again.queue.epoch() != old_epoch
            # Every kept sheet is queued again, in its first order, and goes at the next flush:
            # the box has them, so each answers 200 (a replay) and is kept under the new epoch.
            assert [q.sheet_id for q in again.queue.pending()] == sent
            flushed = await again.flush()
            assert flushed.acknowledged == sent
            assert {r["sheet_id"] for r in flushed.receipts.values()} == set(sent)
            assert [s for s, _ in again.queue.kept()] == sent
            await again.aclose()

        asyncio.run(run())
        # Nothing was stored twice.
        assert len(_ledger_seqs(box)) == 3
    finally:
        box.stop()


def test_pairing_revoking_and_a_token_rotation_each_take_a_verified_snapshot(tmp_path: Path) -> None:
    """PROTOCOL.md: a box takes a snapshot right after each pairing and each revoke, so a box
    rebuilt from its backups knows every tablet (and its current token)."""
    box = start_box(tmp_path / "box", backup_interval_s=3600.0)  # no scheduled one during the test

    def verified() -> int:
        conn = sqlite3.connect(box.config.db_path)
        try:
            return conn.execute("SELECT count(*) FROM snapshots WHERE verify_ok = 1").fetchone()[0]
        finally:
            conn.close()

    try:
        assert verified() == 0
        tablet = box.pair("J1")
        wait_for("a snapshot after the pairing", lambda: verified() == 1)
        with tablet.client() as c:
            assert c.post("/api/v1/token").status_code == 200
        wait_for("a snapshot after the token rotation", lambda: verified() == 2)
        revoked = venuebox(box.config, "devices", "revoke", tablet.pairing["device_id"])
        assert revoked.returncode == 0, revoked.stderr
        wait_for("a snapshot after the revoke", lambda: verified() == 3)
    finally:
        box.stop()


def test_a_restored_box_gets_back_the_sheet_it_lost_and_the_correction_after_it(tmp_path: Path) -> None:
    """The rebuilt box lost the last sheet (after its snapshot), and the judge corrected that sheet
    while the box was down: the tablet sends the lost sheet first, then the correction; both are
    stored once and nothing is set aside."""
    box = start_box(tmp_path / "box")
    rebuilt: list[RunningBox] = []
    try:

        async def run() -> None:
            client = await _paired(box, tmp_path / "tablet")
            await _score(client, 2)
            taken = venuebox(box.config, "backup", "now")
            assert taken.returncode == 0, taken.stderr
            (lost,) = await _score(client, 1, start=2)
            port = int(box.tablet_url.rsplit(":", 1)[1])
            old_epoch = client.queue.epoch()
            box.stop()

            event = client.cached_event
            assert event is not None
            entry = panel_entries(event)[2]
            correction = make_sheet(entry, values_for(event, 0.5), supersedes=lost)
            client.enqueue(correction)  # scored while the box is down

            (snapshot,) = sorted(box.config.backup_path.glob("snapshot-*.sqlite.age"))
            target = tmp_path / "restored"
            done = venuebox(box.config, "restore", str(snapshot), "--to", str(target))
            assert done.returncode == 0, done.stderr
            rebuilt.append(RunningBox(load_config(target, environ={}), port=port).start())
            flushed = await client.flush(force=True)
            assert client.queue.epoch() != old_epoch  # restore gave the ledger a new epoch
            assert client.queue.held() == [] and client.queue.depth() == 0
            assert lost in flushed.acknowledged and correction["sheet_id"] in flushed.acknowledged
            await client.aclose()

        asyncio.run(run())
        conn = sqlite3.connect(rebuilt[0].config.db_path)
        try:
            rows = conn.execute("SELECT sheet_id, supersedes FROM sheets ORDER BY seq").fetchall()
        finally:
            conn.close()
        assert len(rows) == 4 and len({r[0] for r in rows}) == 4  # each once
        assert rows[3][1] == rows[2][0]  # the correction follows the sheet it corrects
    finally:
        box.stop()
        for running in rebuilt:
            running.stop()
