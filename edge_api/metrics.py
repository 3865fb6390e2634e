"""The box's Prometheus metrics: the HTTP request timings and outcomes (appliance/web/metrics.py),
sheets accepted, connections refused, and the box's state (tablets, outbox, alerts, freeze, uplink)
read from a status snapshot at scrape time. Exposed on the admin API only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from msgspec import structs
from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from appliance.shared.status import SEVERITIES, UPLINK_STATES, StatusGauges, UplinkView
from appliance.shared.times import parse_rfc3339
from appliance.web.metrics import HttpMetrics

log = logging.getLogger("venuebox.metrics")

Snapshot = Callable[[], StatusGauges | None]


class Metrics(HttpMetrics):
    """The box's metrics: the HTTP ones and the box's own, on one registry.

    ``snapshot`` returns the state gauges (``appliance.core.status.gauges``) when scraped.
    It is called on the scraping thread, so it must be cheap and must not need the event loop;
    it may be set after construction, and with none (or returning None) the state gauges are left out."""

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        super().__init__()
        self.snapshot = snapshot
        self.sheets_accepted = Counter(
            "venuebox_sheets_accepted",
            "Score sheets the tablet API stored in the ledger (a replay of a stored sheet is not counted).",
            registry=self.registry,
        )
        self.connections_refused = Counter(
            "venuebox_connections_refused",
            "Connections on the tablet port (or the plain-HTTP page) closed as soon as accepted: their client"
            " address already held max_connections_per_address.",
            registry=self.registry,
        )
        self.registry.register(_StateCollector(self))
        # Registered after the state collector, so a scrape reports its own snapshot failure.
        self.snapshot_errors = Counter(
            "venuebox_status_snapshot_errors",
            "Scrapes whose status snapshot failed; the state gauges are missing from those scrapes.",
            registry=self.registry,
        )

    def read_snapshot(self) -> StatusGauges | None:
        if self.snapshot is None:
            return None
        try:
            return self.snapshot()
        except Exception:
            log.warning("status snapshot for metrics failed", exc_info=True)
            self.snapshot_errors.inc()
            return None


class _StateCollector:
    """Gauges computed from the status snapshot at each scrape, so they are never stale."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        snap = self._metrics.read_snapshot()
        if snap is None:
            return
        family = GaugeMetricFamily(
            "venuebox_tablets", "Paired (not revoked) tablets by presence state.", labels=["state"]
        )
        for state, count in structs.asdict(snap.tablets).items():
            family.add_metric([state], float(count))
        yield family
        yield GaugeMetricFamily(
            "venuebox_outbox_records", "Records waiting in the outbox for upload.", snap.outbox_records
        )
        yield GaugeMetricFamily("venuebox_sheets_total", "Sheets in the ledger.", snap.sheets_total)
        if snap.alerts_active is not None:
            family = GaugeMetricFamily(
                "venuebox_alerts_active", "Active alerts by severity.", labels=["severity"]
            )
            counts = structs.asdict(snap.alerts_active)
            for severity in reversed(SEVERITIES):  # the most severe first
                family.add_metric([severity], float(counts[severity]))
            yield family
        yield from _uplink_families(snap.uplink)
        yield GaugeMetricFamily(
            "venuebox_frozen", "1 while the box is frozen (competition writes refused).", int(snap.frozen)
        )


def _uplink_families(uplink: UplinkView) -> Iterator[Metric]:
    """The uplink as gauges: which state it is in (one series per state, 1 for the current one),
    backlog and its oldest record's age, quarantine, failures in a row, last success, acks."""
    family = GaugeMetricFamily(
        "venuebox_uplink_state", "1 for the uplink's current state, 0 for the others.", labels=["state"]
    )
    for state in UPLINK_STATES:
        family.add_metric([state], float(uplink.state == state))
    yield family
    plain = (
        ("venuebox_uplink_backlog_records", "Records waiting to be acked by the cloud.", uplink.backlog),
        (
            "venuebox_uplink_oldest_record_age_seconds",
            "Age of the oldest record waiting (0 when none waits).",
            uplink.oldest_age_s or 0,
        ),
        (
            "venuebox_uplink_quarantined_records",
            "Records the receiver rejected, set aside.",
            uplink.quarantined,
        ),
        (
            "venuebox_uplink_consecutive_failures",
            "Failed attempts since the last success.",
            uplink.consecutive_failures,
        ),
    )
    for name, doc, value in plain:
        yield GaugeMetricFamily(name, doc, float(value))
    last_success = uplink.last_success_at
    if last_success:
        yield GaugeMetricFamily(
            "venuebox_uplink_last_success_timestamp_seconds",
            "Unix time of the last batch the cloud acked.",
            parse_rfc3339(last_success).timestamp(),
        )
    acked = CounterMetricFamily("venuebox_uplink_records_acked", "Records the cloud has acked, ever.")
    acked.add_metric([], float(uplink.records_acked))
    yield acked
