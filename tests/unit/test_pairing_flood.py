"""The box-wide budget of failed pairing attempts on a real database: failures from many addresses
spend one budget, each address far under its own limit; the pairing-flood alert is written once
while a flood goes on, and the watchdog clears it after a calm spell."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from appliance.core import alerts
from appliance.core.storage import Store
from appliance.core.watchdog import (
    PAIRING_FLOOD_FINGERPRINT,
    WatchdogSettings,
    check_pairing_calm,
    raise_pairing_flood,
)
from appliance.shared.errors import TooManyRequests
from appliance.shared.status import Alert
from appliance.shared.times import utcnow
from edge_api.limits import PairingFloodGuard, TokenBuckets
from tests.conftest import make_box


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(make_box(tmp_path / "box", package=None).db_path) as store:
        yield store


def flood_alert(store: Store) -> Alert | None:
    return store.query(lambda conn: alerts.get_alert(conn, PAIRING_FLOOD_FINGERPRINT))


def test_failures_from_many_addresses_spend_one_box_wide_budget(store: Store) -> None:
    async def run() -> tuple[int, TooManyRequests]:
        guard = PairingFloodGuard(60, 60.0, store.write)
        per_address = TokenBuckets(10 / 60.0, 10)
        for failures in range(200):
            address = f"10.0.0.{failures + 1}"  # a new address each time
            per_address.take(address, "pairing attempts from this address")  # never refused
            try:
                await guard.admit(address)
            except TooManyRequests as exc:
                return failures, exc
            await guard.failed(address)
        raise AssertionError("200 failures from 200 addresses were never refused box-wide")

    failures, refused = asyncio.run(run())
    # 60 a minute, refilled at one a second: a slow machine may earn one or two more meanwhile.
    assert 60 <= failures <= 62
    assert refused.retry_after >= 1 and "on this box" in refused.detail
    alert = flood_alert(store)
    assert alert is not None and alert.active and alert.severity == "warning"
    assert "10.0.0." in alert.detail


def test_a_flood_refreshes_its_alert_at_most_every_few_seconds(store: Store) -> None:
    writes: list[object] = []

    async def counted_write(fn: Any) -> Any:
        writes.append(fn)
        return await store.write(fn)

    async def run() -> None:
        guard = PairingFloodGuard(5, 60.0, counted_write)
        for _ in range(5):
            await guard.failed("10.0.0.9")
        for _ in range(500):
            with pytest.raises(TooManyRequests):
                await guard.admit("10.0.0.9")

    asyncio.run(run())
    assert len(writes) == 1  # 505 refusals, one alert write
    alert = flood_alert(store)
    assert alert is not None and alert.active and alert.count == 1


def test_the_pairing_flood_alert_clears_after_a_calm_spell_and_comes_back_counted(store: Store) -> None:
    settings = WatchdogSettings(pair_flood_calm_s=60.0)
    start = utcnow()
    store.write_sync(lambda conn: raise_pairing_flood(conn, 60, ["10.0.0.5", "10.0.0.6"], start))
    later = start + timedelta(seconds=30)
    assert store.write_sync(lambda conn: check_pairing_calm(conn, settings, later)) is False
    raised = flood_alert(store)
    assert raised is not None and raised.active
    calm = start + timedelta(seconds=61)
    assert store.write_sync(lambda conn: check_pairing_calm(conn, settings, calm)) is True
    cleared = flood_alert(store)
    assert cleared is not None and not cleared.active and cleared.cleared_at is not None
    again = calm + timedelta(seconds=5)
    store.write_sync(lambda conn: raise_pairing_flood(conn, 60, ["10.0.0.7"], again))
    back = flood_alert(store)
    assert back is not None and back.active and back.count == 2
