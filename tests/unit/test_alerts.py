"""Alerts on a real box database: one row per condition, counted occurrences, audited transitions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import msgspec
import pytest

from appliance.core import alerts, audit
from appliance.core.storage import Store
from appliance.shared.errors import NotFound
from appliance.shared.times import to_rfc3339
from tests.conftest import make_box

T0 = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    config = make_box(tmp_path / "box")
    with Store(config.db_path) as s:
        yield s


def audit_actions(store: Store) -> list[str]:
    rows = store.query(lambda c: audit.tail(c, 100))
    return [row.action for row in reversed(rows) if row.action.startswith("alert.")]


def test_a_condition_that_stays_true_is_one_row_counted_once(store: Store) -> None:
    for i in range(3):
        store.write_sync(
            partial(
                alerts.raise_alert,
                fingerprint="disk-free",
                severity="warning",
                title="Disk",
                detail=f"{900 - i} MB",
                at=at(i * 30),
            )
        )

    rows = store.query(lambda c: alerts.list_alerts(c, include_cleared=True))
    assert len(rows) == 1
    alert = rows[0]
    assert alert.count == 1
    assert alert.active is True
    assert alert.first_seen == to_rfc3339(at(0))
    assert alert.last_seen == to_rfc3339(at(60))
    assert alert.detail == "898 MB"


def test_a_condition_that_comes_back_reactivates_its_row_and_counts_again(store: Store) -> None:
    fp = "tablet-offline:d1"
    store.write_sync(lambda c: alerts.raise_alert(c, fp, "warning", "Tablet offline", "", at(0)))
    assert store.write_sync(lambda c: alerts.clear_alert(c, fp, at(10))) is True
    cleared = store.query(lambda c: alerts.get_alert(c, fp))
    assert cleared is not None
    assert cleared.active is False
    assert cleared.cleared_at == to_rfc3339(at(10))
    assert store.query(alerts.list_alerts) == []

    again = store.write_sync(lambda c: alerts.raise_alert(c, fp, "warning", "Tablet offline", "", at(20)))

    assert again.count == 2
    assert again.active is True
    assert again.first_seen == to_rfc3339(at(0))
    assert again.last_seen == to_rfc3339(at(20))
    assert again.cleared_at is None
    assert [a.fingerprint for a in store.query(alerts.list_alerts)] == [fp]


def test_clearing_an_inactive_or_unknown_alert_returns_false(store: Store) -> None:
    assert store.write_sync(lambda c: alerts.clear_alert(c, "never-raised")) is False
    store.write_sync(lambda c: alerts.raise_alert(c, "disk-free", "warning", "Disk", ""))
    assert store.write_sync(lambda c: alerts.clear_alert(c, "disk-free")) is True
    assert store.write_sync(lambda c: alerts.clear_alert(c, "disk-free")) is False


def test_acknowledgement_records_who_and_a_new_occurrence_needs_a_new_one(store: Store) -> None:
    fp = "clock-skew:d1"
    store.write_sync(lambda c: alerts.raise_alert(c, fp, "warning", "Clock", "", at(0)))

    acked = store.write_sync(lambda c: alerts.acknowledge(c, fp, "tech:sam", at(5)))
    assert (acked.acknowledged_by, acked.acknowledged_at) == ("tech:sam", to_rfc3339(at(5)))
    # A second acknowledgement keeps the first; the alert stays active until its condition ends.
    again = store.write_sync(lambda c: alerts.acknowledge(c, fp, "tech:alex", at(9)))
    assert again.acknowledged_by == "tech:sam"
    assert again.active is True
    # Still the same occurrence: the acknowledgement stays.
    still = store.write_sync(lambda c: alerts.raise_alert(c, fp, "warning", "Clock", "", at(30)))
    assert still.acknowledged_by == "tech:sam"

    store.write_sync(lambda c: alerts.clear_alert(c, fp, at(40)))
    back = store.write_sync(lambda c: alerts.raise_alert(c, fp, "warning", "Clock", "", at(50)))
    assert back.acknowledged_at is None
    assert back.acknowledged_by is None

    with pytest.raises(NotFound):
        store.write_sync(lambda c: alerts.acknowledge(c, "no-such-alert", "tech:sam"))


def test_escalation_drops_the_acknowledgement(store: Store) -> None:
    store.write_sync(lambda c: alerts.raise_alert(c, "disk-free", "warning", "Disk", "", at(0)))
    store.write_sync(lambda c: alerts.acknowledge(c, "disk-free", "tech:sam"))
    critical = store.write_sync(lambda c: alerts.raise_alert(c, "disk-free", "critical", "Disk", "", at(30)))
    assert critical.severity == "critical"
    assert critical.acknowledged_by is None
    assert critical.count == 1


def test_alerts_are_listed_most_severe_first_then_most_recent(store: Store) -> None:
    def raise_all(c: sqlite3.Connection) -> None:
        alerts.raise_alert(c, "w-old", "warning", "w", "", at(0))
        alerts.raise_alert(c, "info", "info", "i", "", at(50))
        alerts.raise_alert(c, "crit", "critical", "c", "", at(1))
        alerts.raise_alert(c, "w-new", "warning", "w", "", at(40))
        alerts.raise_alert(c, "gone", "critical", "g", "", at(60))
        alerts.clear_alert(c, "gone", at(61))

    store.write_sync(raise_all)

    assert [a.fingerprint for a in store.query(alerts.list_alerts)] == ["crit", "w-new", "w-old", "info"]
    everything = store.query(lambda c: alerts.list_alerts(c, include_cleared=True))
    assert [a.fingerprint for a in everything] == ["gone", "crit", "w-new", "w-old", "info"]
    assert msgspec.to_builtins(store.query(alerts.active_counts)) == {"info": 1, "warning": 2, "critical": 1}


def test_audit_rows_are_written_only_on_transitions(store: Store) -> None:
    for i in range(3):
        store.write_sync(
            partial(
                alerts.raise_alert,
                fingerprint="db-integrity",
                severity="critical",
                title="DB",
                detail="",
                at=at(i),
            )
        )
    assert audit_actions(store) == ["alert.raise"]

    # Warnings are not audited when raised, only when they clear.
    for i in range(3):
        store.write_sync(
            partial(
                alerts.raise_alert,
                fingerprint="disk-free",
                severity="warning",
                title="Disk",
                detail="",
                at=at(i),
            )
        )
    assert audit_actions(store) == ["alert.raise"]
    # Escalating to critical is a transition; staying critical is not.
    store.write_sync(lambda c: alerts.raise_alert(c, "disk-free", "critical", "Disk", "", at(10)))
    store.write_sync(lambda c: alerts.raise_alert(c, "disk-free", "critical", "Disk", "", at(11)))
    assert audit_actions(store) == ["alert.raise", "alert.raise"]

    store.write_sync(lambda c: alerts.clear_alert(c, "db-integrity"))
    store.write_sync(lambda c: alerts.clear_alert(c, "db-integrity"))
    store.write_sync(lambda c: alerts.raise_alert(c, "db-integrity", "critical", "DB", "", at(20)))
    assert audit_actions(store) == ["alert.raise", "alert.raise", "alert.clear", "alert.raise"]

    row = store.query(lambda c: audit.tail(c, 1, action="alert.raise"))[0]
    assert '"fingerprint":"db-integrity"' in row.detail
    assert '"count":2' in row.detail


def test_an_unknown_severity_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="severity"):
        store.write_sync(lambda c: alerts.raise_alert(c, "x", "fatal", "X", ""))
    # The table refuses it too, whoever writes.
    with pytest.raises(sqlite3.IntegrityError):
        store.write_sync(
            lambda c: c.execute(
                "INSERT INTO alerts (fingerprint, severity, title, first_seen, last_seen)"
                " VALUES ('x', 'fatal', 'X', '', '')"
            )
        )
