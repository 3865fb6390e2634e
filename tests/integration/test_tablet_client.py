"""The tablet client and the simulator against a real `venuebox serve` process over real HTTP.

pytest-asyncio is not used: each test drives its coroutine with ``asyncio.run``."""

from __future__ import annotations

import asyncio
import random
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.shared.protocol_names import SERVICE_TYPE
from appliance.tablet_client.client import TabletClient
from appliance.tablet_client.discovery import async_discover, discover
from appliance.tablet_client.sheet_queue import make_sheet
from appliance.tablet_client.simulator import run_simulation
from appliance.web.retry import Backoff
from tests.conftest import RunningBox, make_box, panel_entries


def start_box(data_dir: Path, **settings: Any) -> RunningBox:
    limits = {"device_rate_per_s": 1000.0, "device_burst": 1000, "pair_attempts_per_minute": 1000}
    return RunningBox(make_box(data_dir, **(limits | settings))).start()


@pytest.fixture
def box(tmp_path: Path) -> Iterator[RunningBox]:
    running = start_box(tmp_path / "box")
    yield running
    running.stop()


class RecordingTransport(httpx.AsyncHTTPTransport):
    """The real transport, noting each exchange so a test can see what went over the wire."""

    def __init__(self) -> None:
        super().__init__()
        self.exchanges: list[tuple[str, str, httpx.Headers, int | None, httpx.Headers | None]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except httpx.TransportError:
            self.exchanges.append((request.method, request.url.path, request.headers, None, None))
            raise
        self.exchanges.append(
            (request.method, request.url.path, request.headers, response.status_code, response.headers)
        )
        return response

    def paths(self) -> list[str]:
        return [f"{method} {path}" for method, path, *_ in self.exchanges]


def code_for(box: RunningBox, judge_id: str) -> str:
    with box.admin() as admin:
        answer = admin.post("/admin/v1/pairing-codes", json={"judge_id": judge_id})
    assert answer.status_code == 201, answer.text
    return answer.json()["code"]


def values_for(event: dict[str, Any], share: float = 0.8) -> dict[str, float]:
    """A score ``share`` of the way up each criterion's range, on its step."""
    values = {}
    for c in event["criteria"]:
        steps = round((c["max"] - c["min"]) / c["step"] * share)
        values[c["key"]] = round(c["min"] + c["step"] * steps, 6)
    return values


def stored_counts(box: RunningBox, sheet_ids: list[str]) -> dict[str, int]:
    conn = sqlite3.connect(box.config.db_path)
    try:
        return {
            sheet_id: conn.execute("SELECT count(*) FROM sheets WHERE sheet_id = ?", (sheet_id,)).fetchone()[
                0
            ]
            for sheet_id in sheet_ids
        }
    finally:
        conn.close()


def ledger_rows(box: RunningBox) -> int:
    conn = sqlite3.connect(box.config.db_path)
    try:
        return conn.execute("SELECT count(*) FROM sheets").fetchone()[0]
    finally:
        conn.close()


def test_pair_event_with_etag_cache_submit_and_heartbeat(box: RunningBox, tmp_path: Path) -> None:
    async def scenario() -> None:
        wire = RecordingTransport()
        async with TabletClient(box.tablet_url, tmp_path / "tablet", transport=wire) as client:
            assert client.needs_pairing
            pairing = await client.pair(code_for(box, "J1"), "Judge 1 iPad")
            assert (pairing.judge_id, client.needs_pairing) == ("J1", False)
            assert "token" not in repr(pairing)

            first = await client.event()
            second = await client.event()
            assert second == first and first["judge"]["id"] == "J1"
            _, _, sent, status, _ = wire.exchanges[-1]
            answered = wire.exchanges[-2][4]
            assert answered is not None
            assert sent["if-none-match"] == answered["etag"] and status == 304

            entry = panel_entries(first)[0]
            sheet = make_sheet(entry, values_for(first), comment="clean lines")
            assert sheet["submitted_at"][-6] in "+-" or sheet["submitted_at"].endswith("Z")
            submitted = await client.submit(sheet)
            assert submitted.state == "stored" and submitted.receipt
            assert submitted.receipt["sheet_id"] == sheet["sheet_id"]
            assert wire.paths()[-1] == "POST /api/v1/sheets"  # one queued sheet: the single call
            assert client.queue.depth() == 0

            correction = make_sheet(entry, values_for(first, 0.9), supersedes=sheet["sheet_id"])
            assert (await client.submit(correction)).state == "stored"

            # The sheets changed, so the ETag did: a full download with the current sheet.
            after = await client.event()
            assert wire.exchanges[-1][3] == 200
            assert [s["sheet_id"] for s in after["sheets"]] == [correction["sheet_id"]]

            beat = await client.heartbeat(battery=77, app_version="test-1")
            assert (beat.frozen, beat.freeze_reason, beat.next_heartbeat_s) == (False, None, 10)
            assert (client.frozen, client.next_heartbeat_s) == (False, 10)

    asyncio.run(scenario())
    with box.admin() as admin:
        device = admin.get("/admin/v1/devices").json()[0]
    assert (device["battery"], device["app_version"], device["queue_depth"]) == (77, "test-1", 0)


def test_sheets_queued_while_the_box_is_down_are_stored_once_after_restart(
    box: RunningBox, tmp_path: Path
) -> None:
    state = tmp_path / "tablet"

    async def before() -> list[str]:
        async with TabletClient(box.tablet_url, state) as client:
            await client.pair(code_for(box, "J2"), "Judge 2 iPad")
            event = await client.event()
            box.stop()
            sheets = [make_sheet(e, values_for(event)) for e in panel_entries(event)[:3]]
            results = [await client.submit(sheet) for sheet in sheets]
            assert [r.state for r in results] == ["queued"] * 3
            assert results[0].flush.blocked == "unreachable"
            return [s["sheet_id"] for s in sheets]

    sheet_ids = asyncio.run(before())

    async def after() -> None:
        # A new process: a new client on the same state dir, the box on new ports.
        wire = RecordingTransport()
        async with TabletClient(box.tablet_url, state, transport=wire) as client:
            assert [q.sheet_id for q in client.queue.pending()] == sheet_ids
            assert client.pairing is not None and client.cached_event is not None
            result = await client.flush()
            assert result.acknowledged == sheet_ids and result.still_queued == 0
            assert wire.paths() == ["POST /api/v1/sheets/batch"]
            assert (await client.flush()).requests == 0

    box.start()
    asyncio.run(after())
    assert stored_counts(box, sheet_ids) == dict.fromkeys(sheet_ids, 1)
    assert ledger_rows(box) == 3


def test_frozen_box_keeps_sheets_queued_until_unfrozen(box: RunningBox, tmp_path: Path) -> None:
    reason = "Judges' conference on entry 104"

    async def scenario() -> list[str]:
        async with TabletClient(box.tablet_url, tmp_path / "tablet") as client:
            await client.pair(code_for(box, "J3"), "Judge 3 iPad")
            event = await client.event()
            with box.admin() as admin:
                admin.post("/admin/v1/freeze", json={"reason": reason}).raise_for_status()
            first, second = (make_sheet(e, values_for(event)) for e in panel_entries(event)[:2])
            refused = await client.submit(first)
            assert refused.state == "queued" and refused.flush.blocked == "frozen"
            assert (client.frozen, client.freeze_reason) == (True, reason)
            assert refused.flush.retry_in_s is not None and refused.flush.retry_in_s >= 1
            waiting = await client.submit(second)
            assert waiting.state == "queued" and waiting.flush.requests == 0

            beat = await client.heartbeat()
            assert (beat.frozen, beat.freeze_reason) == (True, reason)
            assert client.queue.depth() == 2

            with box.admin() as admin:
                admin.post("/admin/v1/unfreeze").raise_for_status()
            beat = await client.heartbeat()
            assert (beat.frozen, client.frozen, client.freeze_reason) == (False, False, None)
            assert client.retry_in_s() == 0  # an unfreeze lets the queue go at once
            flushed = await client.flush()
            assert flushed.acknowledged == [first["sheet_id"], second["sheet_id"]]
            return flushed.acknowledged

    sheet_ids = asyncio.run(scenario())
    assert stored_counts(box, sheet_ids) == dict.fromkeys(sheet_ids, 1)


def test_conflict_is_held_aside_and_revoked_token_keeps_sheets_queued(
    box: RunningBox, tmp_path: Path
) -> None:
    async def scenario() -> tuple[str, str]:
        wire = RecordingTransport()
        async with TabletClient(box.tablet_url, tmp_path / "tablet", transport=wire) as client:
            pairing = await client.pair(code_for(box, "J1"), "Judge 1 iPad")
            event = await client.event()
            entry, other = panel_entries(event)[:2]
            original = make_sheet(entry, values_for(event))
            assert (await client.submit(original)).state == "stored"

            second = make_sheet(entry, values_for(event, 0.5))
            held = await client.submit(second)
            assert held.state == "held" and held.problem is not None
            assert held.problem["status"] == 409 and held.problem["current_sheet_id"] == original["sheet_id"]
            [aside] = client.queue.held()
            assert (aside.sheet_id, aside.last_status, aside.sheet) == (second["sheet_id"], 409, second)
            sent = len(wire.exchanges)
            assert (await client.flush(force=True)).requests == 0  # never resent unchanged
            assert len(wire.exchanges) == sent

            with box.admin() as admin:
                admin.post(f"/admin/v1/devices/{pairing.device_id}/revoke").raise_for_status()
            later = make_sheet(other, values_for(event))
            refused = await client.submit(later)
            assert refused.state == "queued" and refused.flush.blocked == "needs-pairing"
            assert client.needs_pairing and client.queue.depth() == 1
            assert (await client.flush(force=True)).requests == 0  # nothing goes without a token

            await client.pair(code_for(box, "J1"), "Judge 1 iPad, again")
            resent = await client.flush()
            assert resent.acknowledged == [later["sheet_id"]]
            return second["sheet_id"], later["sheet_id"]

    conflicting, later = asyncio.run(scenario())
    assert stored_counts(box, [conflicting, later]) == {conflicting: 0, later: 1}


def test_failed_flushes_back_off_with_full_jitter_up_to_the_cap(box: RunningBox, tmp_path: Path) -> None:
    now = [1000.0]

    async def scenario() -> None:
        backoff = Backoff(base_s=1.0, cap_s=10.0, rng=random.Random(1234))
        async with TabletClient(
            box.tablet_url, tmp_path / "tablet", backoff=backoff, clock=lambda: now[0]
        ) as c:
            await c.pair(code_for(box, "J4"), "Judge 4 iPad")
            event = await c.event()
            box.stop()
            sheet = make_sheet(panel_entries(event)[0], values_for(event))
            c.enqueue(sheet)

            delays = []
            for _ in range(8):
                result = await c.flush()
                assert result.blocked == "unreachable" and result.requests == 1
                assert result.retry_in_s is not None
                delays.append(result.retry_in_s)
                # Too early: nothing is sent.
                now[0] += result.retry_in_s / 2
                early = await c.flush()
                assert (early.blocked, early.requests) == ("waiting", 0)
                now[0] += result.retry_in_s / 2 + 0.001

            reference = random.Random(1234)
            ceilings = [min(10.0, 2.0**n) for n in range(8)]
            assert delays == pytest.approx([reference.uniform(0, ceiling) for ceiling in ceilings])
            assert all(0 <= d <= ceiling for d, ceiling in zip(delays, ceilings, strict=True))
            assert c.failures == 8
            queued = c.queue.get(sheet["sheet_id"])
            assert queued is not None and queued.state == "queued" and queued.attempts == 8
            assert queued.last_status is None and "ConnectError" in (queued.last_error or "")

    asyncio.run(scenario())


def test_rate_limited_flush_waits_at_least_retry_after(tmp_path: Path) -> None:
    box = start_box(tmp_path / "tight", device_rate_per_s=0.1, device_burst=2)
    try:

        async def scenario() -> None:
            wire = RecordingTransport()
            async with TabletClient(box.tablet_url, tmp_path / "tablet", transport=wire) as client:
                await client.pair(code_for(box, "J1"), "Judge 1 iPad")
                event = await client.event()  # one of two tokens
                await client.heartbeat()  # the other
                result = await client.submit(make_sheet(panel_entries(event)[0], values_for(event)))
                assert result.state == "queued" and result.flush.blocked == "retry"
                *_, status, headers = wire.exchanges[-1]
                assert status == 429 and headers is not None
                retry_after = float(headers["retry-after"])
                assert retry_after >= 5
                assert result.flush.retry_in_s is not None and result.flush.retry_in_s >= retry_after
                assert client.retry_in_s() > retry_after - 1
                assert (await client.flush()).requests == 0

        asyncio.run(scenario())
    finally:
        box.stop()


def test_discover_reads_the_txt_record_of_advertised_boxes() -> None:
    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

    tag = uuid.uuid4().hex[:8]
    adverts = [
        (
            "Plain Box " + tag,
            18080,
            {"v": "1", "box": "vb-plain-" + tag, "event": "glow", "api": "/api/v1", "tls": "0"},
        ),
        (
            "Secure Box " + tag,
            18443,
            {"v": "1", "box": "vb-tls-" + tag, "event": "", "api": "/api/v1", "tls": "1", "fp": "ab" * 32},
        ),
    ]

    async def scenario() -> None:
        aiozc = AsyncZeroconf(interfaces=["127.0.0.1"])
        infos = [
            AsyncServiceInfo(
                SERVICE_TYPE,
                f"{name}.{SERVICE_TYPE}",
                addresses=[socket.inet_aton("127.0.0.1")],
                port=port,
                properties=txt,
                server=f"box-{port}-{tag}.local.",
            )
            for name, port, txt in adverts
        ]
        try:
            # Registering returns once probing started; wait until both are announced.
            await asyncio.gather(*[await aiozc.async_register_service(info) for info in infos])
            found = await asyncio.to_thread(discover, 4.0, interfaces=["127.0.0.1"])
            ours = {b.box_id: b for b in found if b.box_id.endswith(tag)}
            assert set(ours) == {"vb-plain-" + tag, "vb-tls-" + tag}
            plain, secure = ours["vb-plain-" + tag], ours["vb-tls-" + tag]
            assert (plain.name, plain.port, plain.addresses) == ("Plain Box " + tag, 18080, ("127.0.0.1",))
            assert (plain.protocol, plain.event_id, plain.api, plain.tls, plain.fingerprint) == (
                "1",
                "glow",
                "/api/v1",
                False,
                None,
            )
            assert plain.base_url == "http://127.0.0.1:18080"
            assert (secure.event_id, secure.tls, secure.fingerprint) == (None, True, "ab" * 32)
            assert secure.base_url == "https://127.0.0.1:18443" and secure.host == f"box-18443-{tag}.local."

            # With max_boxes, browsing ends as soon as that many are resolved.
            started = time.monotonic()
            first = await async_discover(10.0, max_boxes=1, interfaces=["127.0.0.1"])
            assert first and time.monotonic() - started < 8.0
        finally:
            for info in infos:
                await aiozc.async_unregister_service(info)
            await aiozc.async_close()

    asyncio.run(scenario())


def _sheet_rows(box: RunningBox) -> list[tuple[str, str, str, str]]:
    conn = sqlite3.connect(box.config.db_path)
    try:
        return conn.execute("SELECT sheet_id, entry_id, judge_id, device_id FROM sheets").fetchall()
    finally:
        conn.close()


def test_simulated_tablets_score_and_every_acknowledged_sheet_is_stored_once(
    box: RunningBox, tmp_path: Path
) -> None:
    token = box.config.admin_token_path.read_text().strip()
    report = asyncio.run(
        run_simulation(
            box.admin_url,
            token,
            tablets=4,
            tablet_url=box.tablet_url,
            seconds=4.0,
            pace_s=0.2,
            dropout=0.1,
            state_dir=tmp_path / "sim",
            seed=7,
        )
    )
    assert report.errors == []
    assert report.paired == 4 and report.heartbeats >= 4
    assert report.acknowledged > 0 and report.held == 0
    # No sheet dropped silently: each one made is stored, held or still queued.
    assert report.sheets_made == report.acknowledged + report.held + report.still_queued
    ids = report.acknowledged_sheet_ids
    assert len(ids) == len(set(ids)) == report.acknowledged
    assert stored_counts(box, ids) == dict.fromkeys(ids, 1)

    with box.admin() as admin:
        status = admin.get("/admin/v1/status").json()
    assert status["sheets"]["total"] == report.acknowledged
    assert status["tablets"]["online"] == 4
    # The queues left on disk hold exactly what the report says is still queued.
    leftover = 0
    for state in (tmp_path / "sim").iterdir():
        conn = sqlite3.connect(state / "sheets.sqlite3")
        leftover += conn.execute("SELECT count(*) FROM sheets WHERE state = 'queued'").fetchone()[0]
        conn.close()
    assert leftover == report.still_queued


def test_two_simulated_tablets_of_one_judge_never_score_the_same_entry(
    box: RunningBox, tmp_path: Path
) -> None:
    token = box.config.admin_token_path.read_text().strip()
    # Five judges in the sample event: tablets 1 and 6 both sit for J1, 2 and 7 for J2.
    report = asyncio.run(
        run_simulation(
            box.admin_url, token, tablets=7, tablet_url=box.tablet_url, seconds=3.0, pace_s=0.1, seed=3
        )
    )
    assert report.errors == [] and report.paired == 7
    # Had two tablets scored one entry, the second original would have been a 409, held aside.
    assert report.held == 0 and report.acknowledged > 0
    devices_by_entry: dict[tuple[str, str], set[str]] = {}
    devices_by_judge: dict[str, set[str]] = {}
    for _, entry, judge, device in _sheet_rows(box):
        devices_by_entry.setdefault((entry, judge), set()).add(device)
        devices_by_judge.setdefault(judge, set()).add(device)
    assert all(len(devices) == 1 for devices in devices_by_entry.values())
    assert all(len(devices) <= 2 for devices in devices_by_judge.values())
