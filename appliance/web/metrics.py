"""Prometheus HTTP metrics, for the box's apps and the receiver: request timings and outcomes per app
and route (``MetricsMiddleware``), and the ``GET /metrics`` route that serves them.

Everything lives on a registry of its own, not prometheus_client's global one, so two apps (or two
tests) in one process never clash over metric names. An app adds its own series to that registry
(edge_api/metrics.py, uplink/receiver.py).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from litestar import Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.types import Guard
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

# 1 ms to 5 s: a health check answers in about a millisecond, a big batch of sheets in seconds.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
OTHER = "other"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetrics:
    """Request timings and responses by status, on a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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

    def observe_request(self, app: str, method: str, route: str, status: int, seconds: float) -> None:
        self.request_duration.labels(app, method, route, str(status)).observe(seconds)
        self.responses.labels(app, str(status)).inc()


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

    def __init__(self, app: Any, metrics: HttpMetrics, app_name: str) -> None:
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


def metrics_response(metrics: HttpMetrics) -> tuple[bytes, str]:
    """The exposition text and its content type, for a ``GET /metrics`` handler. Runs the registry's
    collectors (the box's reads its status snapshot), so serve it from a sync handler run in a thread
    (``sync_to_thread=True``)."""
    return generate_latest(metrics.registry), CONTENT_TYPE_LATEST


def metrics_route(
    metrics: HttpMetrics, *, path: str = "/metrics", guards: Sequence[Guard] | None = None
) -> HTTPRouteHandler:
    """A ``GET /metrics`` route handler serving ``metrics``."""

    @get(path, sync_to_thread=True, include_in_schema=False, guards=list(guards or []))
    def scrape() -> Response[bytes]:
        body, content_type = metrics_response(metrics)
        # A content-type header, not media_type: Litestar would append a second charset to a text/ type.
        return Response(body, headers={"content-type": content_type})

    return scrape
