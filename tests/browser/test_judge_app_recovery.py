"""The judge app and `venuebox recover` (docs/operations.md, "The SD card died / the database is
damaged"), in Debian's Chromium against real daemons: the box's card dies right after it answered
201 for a sheet no snapshot holds; the card is lost, so nothing can be salvaged from it; the box is
rebuilt with the runbook's second command from the snapshots on the second disk and the organiser's
key, and started at the same address. The app reconnects, sees the new epoch and sends the sheet
back from its IndexedDB: stored once; the app lets it go once a verified snapshot holds it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Response, expect

from appliance.core.config import load_config
from tests.browser.conftest import HEARTBEAT_S, NEEDS_CHROMIUM, JudgeApp, free_port
from tests.browser.test_judge_app_watermark import (
    MARK_S,
    batch_results,
    epoch_of,
    kept_ids,
    ledger,
    paired,
    wait_until_kept,
)
from tests.conftest import RunningBox, make_box, venuebox, wait_for
from tests.integration.test_restore_identity import organiser_key

pytestmark = [pytest.mark.timeout(120), NEEDS_CHROMIUM]


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    return done.stdout


def test_a_sheet_stored_just_before_the_card_died_comes_back_from_the_app_once(
    tmp_path: Path, open_app: Callable[..., JudgeApp]
) -> None:
    # Section 8 of the runbook: the snapshots go to a second disk, and the organiser's key opens them.
    second_disk = tmp_path / "backup-disk"
    second_disk.mkdir()
    organiser, public = organiser_key(tmp_path)
    config = make_box(
        tmp_path / "venuebox",
        heartbeat_interval_s=HEARTBEAT_S,
        device_rate_per_s=1000.0,
        device_burst=1000,
        backup_interval_s=3600.0,  # the snapshots: the one after pairing, and `backup now`
    )
    ok(venuebox(config, "backup", "configure", "--recipient", public, "--dir", str(second_disk)))
    box = RunningBox(config, port=free_port()).start()
    recovered: RunningBox | None = None
    try:
        app = paired(box, open_app)
        page = app.page
        old_epoch = epoch_of(config.db_path)
        app.score("101", "9.0", "8.5", "9.5")
        app.score("102", "8.0", "8.5", "9.0")
        app.expect_on_the_box("102")  # before the snapshot is taken
        ok(venuebox(config, "backup", "now"))
        app.score("103", "7.0", "7.5", "8.0")  # answered 201; in no snapshot, and no cloud
        # The app heard the snapshot's mark: it let 101 and 102 go and keeps 103 alone.
        wait_until_kept(app, 1, old_epoch, timeout=MARK_S + 5)
        [lost] = kept_ids(app)
        assert ledger(box)[lost] == 3

        # The card dies with the box on it; the card is lost (nothing to salvage from).
        box.kill()
        expect(page.locator("#link-state")).to_have_text("Offline", timeout=MARK_S * 1000)
        shutil.rmtree(config.data_dir)

        # The runbook's second command, then `verify`, then the box started on it at the same address.
        target = tmp_path / "venuebox-recovered"
        out = ok(
            venuebox(
                None,
                "recover",
                "--snapshot",
                str(second_disk),
                "--identity",
                str(organiser),
                "--to",
                str(target),
            )
        ).splitlines()
        [snapshot] = [line for line in out if line.startswith("snapshot  ")]
        assert ": 2 sheets, " in snapshot, out
        assert "salvage   skipped: no old data dir given (--from)" in out
        assert "cloud     none: no uplink configured" in out
        assert "sheets: 2 rows, chain intact" in ok(venuebox(target, "verify"))
        new_epoch = epoch_of(target / "venuebox.sqlite")
        assert new_epoch != old_epoch
        recovered = RunningBox(load_config(target, environ={}), port=box.port)
        responses: list[Response] = []
        page.on("response", lambda r: responses.append(r) if r.url.endswith("/api/v1/sheets/batch") else None)
        recovered.start()

        # The app hears the new epoch and sends the sheet back: the box lost it, so 201, stored once.
        sheets = wait_until_kept(app, 1, new_epoch, timeout=20)
        assert batch_results(responses) == [(lost, 201)]
        stored = ledger(recovered)
        assert len(stored) == 3 and stored[lost] == 3
        assert [s["state"] for s in sheets] == ["stored"] * 3  # nothing set aside
        assert kept_ids(app) == [lost]
        status = ok(venuebox(target, "status")).splitlines()
        recovery = next(line for line in status if line.startswith("recovery "))
        assert "2 sheets from the snapshot, 0 salvaged, 0 from the cloud; 1 stored since" in recovery

        # A verified snapshot of the recovered box holds it: the app lets it go, never sending it again.
        ok(venuebox(target, "backup", "now"))
        wait_for("the app to let the sheet go", lambda: kept_ids(app) == [], MARK_S + 5)
        assert app.stored("ledger") == {"epoch": new_epoch, "safe_seq": 3}
        assert batch_results(responses) == [(lost, 201)]
        assert ledger(recovered) == stored
        expect(page.locator("#queue-banner")).to_be_empty()
        expect(page.locator("#attention-banner")).to_be_empty()
        app.assert_stayed_on_the_box()
    finally:
        box.stop()
        if recovered is not None:
            recovered.stop()
