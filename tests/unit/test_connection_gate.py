"""The per-address connection cap (edge_api/connections.py) and the connection-flood alert it feeds
(appliance/core/watchdog.py), without sockets: tests/integration/test_connections.py has those."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from appliance.core import alerts
from appliance.core.storage import Store
from appliance.core.watchdog import WatchdogSettings, check_connection_floods
from appliance.shared.status import Alert
from edge_api.connections import ConnectionGate
from tests.conftest import make_box


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_address_holds_at_most_its_cap_and_others_are_not_affected() -> None:
    refused: list[int] = []
    gate = ConnectionGate(3, on_refused=lambda: refused.append(1), clock=Clock())
    assert [gate.admit("10.0.0.5") for _ in range(5)] == [True, True, True, False, False]
    assert gate.admit("10.0.0.6")
    assert gate.open_from("10.0.0.5") == 3 and gate.refused == 2 and len(refused) == 2
    gate.release("10.0.0.5")
    assert gate.admit("10.0.0.5")  # one closed: one more may come
    for _ in range(3):
        gate.release("10.0.0.5")
    gate.release("10.0.0.6")
    assert gate.open_total == 0


def test_a_flood_lasts_while_the_address_is_refused_or_at_its_cap() -> None:
    clock = Clock()
    gate = ConnectionGate(2, clock=clock)
    assert gate.floods(5.0) == {}
    for _ in range(4):
        gate.admit("10.0.0.5")
    clock.now += 10  # no more refusals, but it still holds its cap
    assert gate.floods(5.0) == {"10.0.0.5": {"for_s": 10.0, "refused": 2, "open": 2}}
    gate.release("10.0.0.5")
    clock.now += 4  # below its cap, refused 14 s ago: calm
    assert gate.floods(5.0) == {}


def test_the_alert_is_raised_after_a_while_and_cleared_when_the_flood_ends(tmp_path: Path) -> None:
    settings = WatchdogSettings(connection_flood_alert_s=30.0)
    now = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
    flood = {"for_s": 10.0, "refused": 50, "open": 64}
    with Store(make_box(tmp_path / "box", package=None).db_path) as store:

        def check(floods: dict) -> set[str]:
            return store.write_sync(lambda conn: check_connection_floods(conn, settings, floods, now))

        def alert(conn: sqlite3.Connection) -> Alert | None:
            return alerts.get_alert(conn, "connection-flood:10.0.0.5")

        assert check({"10.0.0.5": flood}) == set()  # not for long enough yet
        assert store.write_sync(alert) is None
        assert check({"10.0.0.5": {**flood, "for_s": 31.0}}) == {"10.0.0.5"}
        raised = store.write_sync(alert)
        assert raised is not None
        assert raised.active and raised.severity == "warning" and "10.0.0.5" in raised.title
        assert check({}) == set()
        cleared = store.write_sync(alert)
        assert cleared is not None and not cleared.active
