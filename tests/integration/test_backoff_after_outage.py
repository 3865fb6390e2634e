"""A box that could not be reached and is back: the Python tablet client and the simulator send what
waits as soon as a heartbeat gets through, as the judge app does, not at the end of the backoff the
outage grew.

A real `venuebox run` process behind tests/faultproxy.py, which stops listening (connections
refused, open ones cut) to make the box unreachable, then listens again on the same port. The
backoff is held at its longest (60 s), so a queue that waits it out is plainly told apart from one
that goes at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.tablet_client import simulator
from appliance.tablet_client.client import TabletClient
from appliance.tablet_client.sheet_queue import make_sheet
from appliance.tablet_client.simulator import SimulationReport, run_simulation
from appliance.web.retry import Backoff
from tests.conftest import RunningBox, make_box, panel_entries
from tests.faultproxy import FaultProxy, Faults

LONGEST_S = 60.0


@dataclass
class LongestBackoff(Backoff):
    """Every wait as long as the backoff allows: 60 s from the first failure."""

    base_s: float = LONGEST_S
    cap_s: float = LONGEST_S

    def delay(self, failures: int) -> float:
        return self.ceiling(failures)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[RunningBox]:
    # Heartbeats every 2 s: the first one after the box is back comes soon (the judge app's is 10 s).
    config = make_box(
        tmp_path / "box",
        heartbeat_interval_s=2,
        device_rate_per_s=1000.0,
        device_burst=1000,
        pair_attempts_per_minute=1000,
    )
    running = RunningBox(config).start()
    yield running
    running.stop()


@pytest.fixture
def proxy(box: RunningBox) -> Iterator[FaultProxy]:
    url = httpx.URL(box.tablet_url)
    with FaultProxy(url.host, url.port or 80, Faults()) as running:
        yield running


def sheets_on(box: RunningBox) -> int:
    with box.admin() as admin:
        return admin.get("/admin/v1/status").raise_for_status().json()["sheets"]["total"]


def values_for(event: dict[str, Any]) -> dict[str, float]:
    return {c["key"]: c["min"] + c["step"] * 3 for c in event["criteria"]}


def test_the_client_sends_its_queue_as_soon_as_a_heartbeat_gets_through(
    tmp_path: Path, box: RunningBox, proxy: FaultProxy
) -> None:
    async def scenario() -> None:
        client = TabletClient(proxy.url, tmp_path / "tablet", backoff=LongestBackoff())
        try:
            with box.admin() as admin:
                code = admin.post("/admin/v1/pairing-codes", json={"judge_id": "J1"}).json()["code"]
            await client.pair(code, "outage tablet")
            event = await client.event()
            entries = panel_entries(event)
            values = values_for(event)
            assert (await client.submit(make_sheet(entries[0], values))).state == "stored"

            await asyncio.to_thread(proxy.refuse, True)  # the box is gone
            first = await client.submit(make_sheet(entries[1], values))
            assert first.state == "queued" and first.flush.blocked == "unreachable"
            for entry in entries[2:4]:
                assert (await client.submit(make_sheet(entry, values))).flush.blocked == "waiting"
            assert client.retry_in_s() > LONGEST_S - 10

            await asyncio.to_thread(proxy.refuse, False)  # back, on the same address
            # Nothing told the client yet: the backoff still holds.
            assert (await client.flush()).blocked == "waiting"
            beat_at = time.monotonic()
            await client.heartbeat()
            assert client.retry_in_s() == 0
            result = await client.flush()
            took = time.monotonic() - beat_at
            assert len(result.acknowledged) == 3 and client.queue.depth() == 0
            assert took < 5, f"the queue took {took:.1f} s after the heartbeat"
            assert await asyncio.to_thread(sheets_on, box) == 4

            # A box that answers "not now" (503) keeps its backoff: a heartbeat says it is there,
            # not that it takes sheets again (the judge app does the same).
            proxy.set_faults(Faults(status_503=1.0, retry_after_s=1))
            waiting = await client.submit(make_sheet(entries[4], values))
            assert waiting.state == "queued" and waiting.flush.blocked == "retry"
            proxy.set_faults(Faults())
            await client.heartbeat()
            assert client.retry_in_s() > LONGEST_S - 10
            assert (await client.flush(force=True)).acknowledged == [waiting.sheet_id]
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_the_simulator_drains_its_tablets_queue_at_the_first_heartbeat_after_an_outage(
    tmp_path: Path, box: RunningBox, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(simulator, "Backoff", LongestBackoff)
    token = box.config.admin_token_path.read_text().strip()

    async def scenario() -> SimulationReport:
        report = SimulationReport()
        stop = asyncio.Event()
        run = asyncio.create_task(
            run_simulation(
                box.admin_url,
                token,
                1,
                tablet_url=proxy.url,
                pace_s=0.3,
                dropout=0.0,
                state_dir=tmp_path / "sim",
                seed=7,
                stop=stop,
                report=report,
            )
        )
        try:

            async def until(what: str, check: Callable[[], object], timeout: float) -> float:
                start = time.monotonic()
                while not check():
                    assert not run.done(), run.result().summary()
                    assert time.monotonic() - start < timeout, f"not within {timeout} s: {what}"
                    await asyncio.sleep(0.05)
                return time.monotonic() - start

            await until("a first sheet stored", lambda: report.acknowledged >= 1, 30)
            await asyncio.to_thread(proxy.refuse, True)
            made = report.sheets_made
            await until("sheets made while the box is away", lambda: report.sheets_made >= made + 4, 10)
            await asyncio.sleep(2.5)  # a failed send (a 60 s backoff from now) and failed heartbeats
            await asyncio.to_thread(proxy.refuse, False)
            made = report.sheets_made
            # The next heartbeat (within 1 s: the simulator retries a failed one every second) ends
            # the wait; without that, nothing is sent for a minute.
            took = await until("the queue sent", lambda: report.acknowledged >= made, 10)
            assert took < 5, f"drained {took:.1f} s after the box came back"
        finally:
            stop.set()
            done = await run
        assert not done.errors, done.errors
        assert done.held == 0
        return done

    done = asyncio.run(scenario())
    assert sheets_on(box) == done.acknowledged  # what the tablet counts as sent, the box holds
