"""Prometheus metrics: request timings and outcomes per app and route, sheets accepted, and the box's
state (tablets, outbox, alerts, freeze) read from a status snapshot at scrape time.

Everything lives on a registry of its own, not prometheus_client's global one, so two apps (or two
tests) in one process never clash over metric names. Exposed on the admin API only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from litestar import Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.types import Guard
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from appliance.shared.times import parse_rfc3339

log = logging.getLogger("venuebox.metrics")

# 1 ms to 5 s: a health check answers in about a millisecond, a big batch of sheets in seconds.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
OTHER = "other"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
TABLET_STATES = ("online", "stale", "offline")
ALERT_SEVERITIES = ("critical", "warning", "info")

Snapshot = Callable[[], Mapping[str, Any] | None]


class Metrics:
    """The box's metrics on their own registry.

    ``snapshot`` returns the status snapshot (``appliance.core.status.snapshot``'s dict) when scraped.
    It is called on the scraping thread, so it must be cheap and must not need the event loop;
    it may be set after construction, and with none (or returning None) the state gauges are left out."""

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self.registry = CollectorRegistry()
        self.snapshot = snapshot
        self.request_duration = Histogram(
            "venuebox_http_request_duration_seconds",
            "Time from request to the end of the response, by app, method, route template and status.",
            ["app", "method", "route", "status"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.responses = Counter(
            "venuebox_http_responses",
            "HTTP responses by app and status code.",
            ["app", "status"],
            registry=self.registry,
        )
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

    def observe_request(self, app: str, method: str, route: str, status: int, seconds: float) -> None:
        self.request_duration.labels(app, method, route, str(status)).observe(seconds)
        self.responses.labels(app, str(status)).inc()

    def read_snapshot(self) -> Mapping[str, Any] | None:
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
        tablets = snap.get("tablets")
        if isinstance(tablets, Mapping):
            family = GaugeMetricFamily(
                "venuebox_tablets", "Paired (not revoked) tablets by presence state.", labels=["state"]
            )
            for state in TABLET_STATES:
                family.add_metric([state], float(tablets.get(state, 0)))
            yield family
        outbox = snap.get("outbox")
        if isinstance(outbox, Mapping) and outbox.get("records") is not None:
            yield GaugeMetricFamily(
                "venuebox_outbox_records", "Records waiting in the outbox for upload.", outbox["records"]
            )
        sheets = snap.get("sheets")
        if isinstance(sheets, Mapping) and sheets.get("total") is not None:
            yield GaugeMetricFamily("venuebox_sheets_total", "Sheets in the ledger.", sheets["total"])
        alerts = snap.get("alerts_active")
        if isinstance(alerts, Mapping):
            family = GaugeMetricFamily(
                "venuebox_alerts_active", "Active alerts by severity.", labels=["severity"]
            )
            for severity in ALERT_SEVERITIES:
                family.add_metric([severity], float(alerts.get(severity, 0)))
            yield family
        uplink = snap.get("uplink")
        if isinstance(uplink, Mapping) and "state" in uplink:
            yield from _uplink_families(uplink)
        freeze = snap.get("freeze")
        if isinstance(freeze, Mapping) and "frozen" in freeze:
            yield GaugeMetricFamily(
                "venuebox_frozen",
                "1 while the box is frozen (competition writes refused).",
                int(bool(freeze["frozen"])),
            )


from appliance.core.uplink_state import STATES as UPLINK_STATES  # noqa: E402


def _uplink_families(uplink: Mapping[str, Any]) -> Iterator[Metric]:
    """The uplink as gauges: which state it is in (one series per state, 1 for the current one),
    backlog and its oldest record's age, quarantine, failures in a row, last success, acks."""
    family = GaugeMetricFamily(
        "venuebox_uplink_state", "1 for the uplink's current state, 0 for the others.", labels=["state"]
    )
    for state in UPLINK_STATES:
        family.add_metric([state], float(uplink["state"] == state))
    yield family
    plain = (
        ("venuebox_uplink_backlog_records", "Records waiting to be acked by the cloud.", "backlog"),
        (
            "venuebox_uplink_oldest_record_age_seconds",
            "Age of the oldest record waiting (0 when none waits).",
            "oldest_age_s",
        ),
        ("venuebox_uplink_quarantined_records", "Records the receiver rejected, set aside.", "quarantined"),
        (
            "venuebox_uplink_consecutive_failures",
            "Failed attempts since the last success.",
            "consecutive_failures",
        ),
    )
    for name, doc, key in plain:
        yield GaugeMetricFamily(name, doc, float(uplink.get(key) or 0))
    last_success = uplink.get("last_success_at")
    if last_success:
        yield GaugeMetricFamily(
            "venuebox_uplink_last_success_timestamp_seconds",
            "Unix time of the last batch the cloud acked.",
            parse_rfc3339(last_success).timestamp(),
        )
    acked = CounterMetricFamily("venuebox_uplink_records_acked", "Records the cloud has acked, ever.")
    acked.add_metric([], float(uplink.get("records_acked") or 0))
    yield acked


def route_of(scope: Mapping[str, Any]) -> str:
    """The route template Litestar matched (``/admin/v1/devices/{device_id}/revoke``), never the raw
    path: ids in paths would make a new series per device. Unmatched requests (404, 405) are "other"."""
    template = scope.get("path_template")
    if template:
        return template
    paths = getattr(scope.get("route_handler"), "paths", None)
    if paths and len(paths) == 1:
        return next(iter(paths))
    return OTHER


class MetricsMiddleware:
    """Time every HTTP request and count its status. Plain ASGI, outside the Litestar app, so 404s
    and 405s for unrouted paths are counted too. Litestar writes the matched route into the scope
    dict it was given, which is how the route label is read after the fact."""

    def __init__(self, app: Any, metrics: Metrics, app_name: str) -> None:
        self.app = app
        self.metrics = metrics
        self.app_name = app_name

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status: int | None = None

        async def send_and_watch(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        except Exception:
            # The server answers 500 for an app that raised before starting its response.
            status = status or 500
            raise
        finally:
            # status is None only when the request was cancelled (client gone) before any answer.
            if status is not None:
                method = scope.get("method", "")
                self.metrics.observe_request(
                    self.app_name,
                    method if method in _METHODS else OTHER,
                    route_of(scope),
                    status,
                    time.perf_counter() - start,
                )


def metrics_response(metrics: Metrics) -> tuple[bytes, str]:
    """The exposition text and its content type, for a ``GET /metrics`` handler. Calls the snapshot
    callback, so serve it from a sync handler run in a thread (``sync_to_thread=True``)."""
    return generate_latest(metrics.registry), CONTENT_TYPE_LATEST


def metrics_route(
    metrics: Metrics, *, path: str = "/metrics", guards: Sequence[Guard] | None = None
) -> HTTPRouteHandler:
    """A ``GET /metrics`` route handler for the admin app, serving ``metrics``."""

    @get(path, sync_to_thread=True, include_in_schema=False, guards=list(guards or []))
    def scrape() -> Response[bytes]:
        body, content_type = metrics_response(metrics)
        # A content-type header, not media_type: Litestar would append a second charset to a text/ type.
        return Response(body, headers={"content-type": content_type})

    return scrape
