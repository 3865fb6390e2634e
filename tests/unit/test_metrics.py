"""Metrics: request timings by route template, statuses counted, state gauges read at scrape time."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar
from prometheus_client.parser import text_string_to_metric_families

from appliance.core.box import get_box
from appliance.core.config import Config
from appliance.core.status import gauges, snapshot
from appliance.core.storage import Store
from appliance.shared.status import AlertCounts, StatusGauges, TabletCounts, UplinkView, gauges_of
from appliance.web.metrics import MetricsMiddleware, metrics_response, metrics_route
from edge_api.app import create_admin_app, create_app
from edge_api.metrics import Metrics
from tests.conftest import make_box

ADMIN_TOKEN = "test-admin-token"
DURATION = "venuebox_http_request_duration_seconds"


@pytest.fixture
def box(tmp_path: Path) -> Iterator[tuple[Store, Config, str]]:
    config = make_box(tmp_path / "box")
    with Store(config.db_path) as store:
        yield store, config, store.query(get_box)["box_id"]


def samples(metrics: Metrics, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """The samples called ``name`` in the exposition text, keyed by their labels."""
    body, _ = metrics_response(metrics)
    return {
        frozenset(sample.labels.items()): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == name
    }


def labels(**pairs: str) -> frozenset[tuple[str, str]]:
    return frozenset(pairs.items())


def state_gauges(
    frozen: bool = False,
    tablets: tuple[int, int, int] = (0, 0, 0),
    sheets_total: int = 0,
    outbox_records: int = 0,
    alerts: AlertCounts | None = None,
) -> StatusGauges:
    """What a scrape reads, of a box whose uplink is not configured."""
    online, stale, offline = tablets
    uplink = msgspec.convert(
        {
            "state": "not configured",
            "configured": False,
            "target": None,
            "breaker": "closed",
            "backlog": outbox_records,
            "oldest_created_at": None,
            "oldest_age_s": None,
            "quarantined": 0,
            "acked_retained": 0,
            "records_acked": 0,
            "batch": None,
            "consecutive_failures": 0,
            "last_attempt_at": None,
            "last_success_at": None,
            "last_error": None,
            "last_error_at": None,
            "paused_reason": None,
            "next_attempt_at": None,
            "next_attempt_in_s": None,
            "sync_requested_at": None,
        },
        UplinkView,
    )
    return StatusGauges(
        frozen=frozen,
        tablets=TabletCounts(online=online, stale=stale, offline=offline),
        sheets_total=sheets_total,
        outbox_records=outbox_records,
        uplink=uplink,
        alerts_active=alerts,
    )


def drive(app: Any, requests: list[tuple[str, str]], **headers: str) -> list[int]:
    async def go() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://box", headers=headers) as client:
            return [(await client.request(method, path)).status_code for method, path in requests]

    return asyncio.run(go())


def test_durations_are_labelled_with_the_route_template_not_the_raw_ids(
    box: tuple[Store, Config, str],
) -> None:
    store, config, box_id = box
    metrics = Metrics()
    app = MetricsMiddleware(create_admin_app(store, config, box_id, ADMIN_TOKEN), metrics, "admin")
    device_ids = [uuid.uuid4().hex for _ in range(3)]

    statuses = drive(
        app,
        [("GET", "/admin/v1/status"), *(("POST", f"/admin/v1/devices/{d}/revoke") for d in device_ids)],
        authorization=f"Bearer {ADMIN_TOKEN}",
    )

    assert statuses == [200, 404, 404, 404]
    counts = samples(metrics, f"{DURATION}_count")
    assert counts == {
        labels(app="admin", method="GET", route="/admin/v1/status", status="200"): 1.0,
        labels(app="admin", method="POST", route="/admin/v1/devices/{device_id}/revoke", status="404"): 3.0,
    }
    text = metrics_response(metrics)[0].decode()
    assert not any(device_id in text for device_id in device_ids)
    buckets = samples(metrics, f"{DURATION}_bucket")
    assert {dict(key)["le"] for key in buckets} >= {"0.001", "5.0", "+Inf"}


def test_client_errors_are_counted_by_status(box: tuple[Store, Config, str]) -> None:
    store, config, box_id = box
    metrics = Metrics()
    app = MetricsMiddleware(create_app(store, config, box_id), metrics, "tablet")

    statuses = drive(app, [("GET", "/api/v1/health"), ("GET", "/api/v1/event"), ("GET", "/api/v1/event")])

    assert statuses == [200, 401, 401]
    assert samples(metrics, "venuebox_http_responses_total") == {
        labels(app="tablet", status="200"): 1.0,
        labels(app="tablet", status="401"): 2.0,
    }
    counts = samples(metrics, f"{DURATION}_count")
    assert counts[labels(app="tablet", method="GET", route="/api/v1/event", status="401")] == 2.0


def test_unknown_paths_share_one_other_label(box: tuple[Store, Config, str]) -> None:
    store, config, box_id = box
    metrics = Metrics()
    app = MetricsMiddleware(create_app(store, config, box_id), metrics, "tablet")
    paths = [f"/probe/{uuid.uuid4().hex}" for _ in range(100)]

    statuses = drive(app, [("GET", path) for path in paths])

    assert set(statuses) == {404}
    assert samples(metrics, f"{DURATION}_count") == {
        labels(app="tablet", method="GET", route="other", status="404"): 100.0
    }
    assert samples(metrics, "venuebox_http_responses_total") == {labels(app="tablet", status="404"): 100.0}


def test_odd_methods_are_bucketed_too(box: tuple[Store, Config, str]) -> None:
    store, config, box_id = box
    metrics = Metrics()
    app = MetricsMiddleware(create_app(store, config, box_id), metrics, "tablet")

    drive(app, [("BREW", "/api/v1/health"), ("DELETE", "/api/v1/health")])

    assert {dict(key)["method"] for key in samples(metrics, f"{DURATION}_count")} == {"other", "DELETE"}


def test_state_gauges_come_from_the_snapshot_at_scrape_time() -> None:
    state = state_gauges(
        frozen=True,
        tablets=(5, 1, 2),
        sheets_total=340,
        outbox_records=17,
        alerts=AlertCounts(critical=1, warning=3, info=0),
    )
    metrics = Metrics(snapshot=lambda: state)

    assert samples(metrics, "venuebox_tablets") == {
        labels(state="online"): 5.0,
        labels(state="stale"): 1.0,
        labels(state="offline"): 2.0,
    }
    assert samples(metrics, "venuebox_outbox_records") == {labels(): 17.0}
    assert samples(metrics, "venuebox_sheets_total") == {labels(): 340.0}
    assert samples(metrics, "venuebox_frozen") == {labels(): 1.0}
    assert samples(metrics, "venuebox_alerts_active") == {
        labels(severity="critical"): 1.0,
        labels(severity="warning"): 3.0,
        labels(severity="info"): 0.0,
    }

    state.frozen = False
    state.sheets_total = 341
    assert samples(metrics, "venuebox_frozen") == {labels(): 0.0}
    assert samples(metrics, "venuebox_sheets_total") == {labels(): 341.0}


def test_real_status_snapshot_fills_the_gauges_and_no_alerts_means_no_samples(
    box: tuple[Store, Config, str],
) -> None:
    store, config, _ = box
    metrics = Metrics(snapshot=lambda: gauges_of(store.query(lambda conn: snapshot(conn, config))))

    assert samples(metrics, "venuebox_sheets_total") == {labels(): 0.0}
    # The box's set-up (init, event import) is in the audit log, so its audit records wait to go out.
    waiting = store.query(lambda conn: conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
    assert waiting > 0
    assert samples(metrics, "venuebox_outbox_records") == {labels(): float(waiting)}
    assert samples(metrics, "venuebox_uplink_backlog_records") == {labels(): float(waiting)}
    uplink_states = samples(metrics, "venuebox_uplink_state")
    assert uplink_states[labels(state="not configured")] == 1.0
    assert sum(uplink_states.values()) == 1.0
    assert samples(metrics, "venuebox_frozen") == {labels(): 0.0}
    assert set(samples(metrics, "venuebox_tablets")) == {
        labels(state="online"),
        labels(state="stale"),
        labels(state="offline"),
    }
    assert samples(metrics, "venuebox_alerts_active") == {}


def test_a_failing_snapshot_drops_the_gauges_and_is_counted() -> None:
    def broken() -> StatusGauges:
        raise RuntimeError("database is locked")

    metrics = Metrics(snapshot=broken)

    assert samples(metrics, "venuebox_tablets") == {}
    assert samples(metrics, "venuebox_status_snapshot_errors_total") == {labels(): 2.0}


def test_sheets_accepted_counter_and_content_type() -> None:
    metrics = Metrics()
    metrics.sheets_accepted.inc(3)

    body, content_type = metrics_response(metrics)

    assert content_type.startswith("text/plain; version=")
    assert samples(metrics, "venuebox_sheets_accepted_total") == {labels(): 3.0}
    assert b"venuebox_tablets" not in body


def test_two_metrics_in_one_process_do_not_clash() -> None:
    first, second = Metrics(), Metrics()
    first.sheets_accepted.inc()

    assert samples(first, "venuebox_sheets_accepted_total") == {labels(): 1.0}
    assert samples(second, "venuebox_sheets_accepted_total") == {labels(): 0.0}


def test_metrics_route_serves_the_exposition_with_its_content_type() -> None:
    metrics = Metrics(snapshot=lambda: state_gauges(frozen=False))
    metrics.sheets_accepted.inc(2)
    app = MetricsMiddleware(Litestar([metrics_route(metrics)], logging_config=None), metrics, "admin")

    async def scrape() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://box") as client:
            await client.get("/metrics")
            return await client.get("/metrics")

    response = asyncio.run(scrape())

    assert response.status_code == 200
    assert response.headers["content-type"] == metrics_response(metrics)[1]
    assert "venuebox_sheets_accepted_total 2.0" in response.text
    assert "venuebox_frozen 0.0" in response.text
    assert 'route="/metrics",status="200"' in response.text


def test_the_daemons_scrape_time_snapshot_gives_the_gauges_the_full_status_gives(
    box: tuple[Store, Config, str],
) -> None:
    """The daemon reads the cheaper ``status.gauges`` at every scrape: the same state gauges as the
    full status snapshot, on a box with a frozen state, a paired tablet, a sheet and an alert."""
    from appliance.core.alerts import raise_alert
    from appliance.core.box import freeze
    from appliance.core.ledger import SheetSubmission, submit_sheet
    from appliance.shell.daemon import full_status
    from tests.conftest import paired_device

    store, config, _ = box
    device = paired_device(store, "J1")
    values = {"technique": 9.4, "performance": 9.1, "choreography": 8.5}
    sheet = SheetSubmission(str(uuid.uuid4()), "101", values, "2026-03-14T10:42:07-04:00")
    store.write_sync(lambda c: submit_sheet(c, device, sheet))
    store.write_sync(lambda c: freeze(c, "protest", "test"))
    store.write_sync(lambda c: raise_alert(c, "test-alert", "warning", "a test", "detail"))

    def state_families(metrics: Metrics) -> dict[str, dict[frozenset[tuple[str, str]], float]]:
        body, _ = metrics_response(metrics)
        return {
            family.name: {frozenset(s.labels.items()): s.value for s in family.samples}
            for family in text_string_to_metric_families(body.decode())
            if not family.name.startswith(
                ("venuebox_http", "venuebox_status_snapshot", "venuebox_sheets_acc")
            )
            and not family.name.startswith("venuebox_connections")
        }

    full = state_families(Metrics(snapshot=lambda: gauges_of(*store.query(lambda c: full_status(c, config)))))
    cheap = state_families(Metrics(snapshot=lambda: store.query(lambda c: gauges(c, config))))
    # The oldest record's age is read a moment apart by the two scrapes.
    age = "venuebox_uplink_oldest_record_age_seconds"
    assert cheap.pop(age)[labels()] == pytest.approx(full.pop(age)[labels()], abs=5.0)
    assert cheap == full
    assert full["venuebox_frozen"] == {labels(): 1.0}
    assert full["venuebox_sheets_total"] == {labels(): 1.0}
    assert full["venuebox_tablets"][labels(state="offline")] == 1.0
    assert full["venuebox_alerts_active"][labels(severity="warning")] == 1.0
