"""App factories: the tablet API and the admin API, each a Litestar app built from its dependencies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig

from appliance import __version__
from appliance.core.config import Config
from appliance.core.storage import Store
from appliance.web.metrics import MetricsMiddleware, metrics_route
from appliance.web.middleware import LogContextMiddleware, RequestIdMiddleware
from appliance.web.problems import problem_page
from edge_api.admin.controllers import AdminController, admin_guard
from edge_api.context import ApiContext
from edge_api.errors import DESCRIPTIONS, make_exception_handlers
from edge_api.guard import ClientGuard
from edge_api.metrics import Metrics
from edge_api.openapi import FinishedOpenAPIPlugin
from edge_api.tablet.controllers import TabletController
from edge_api.webapp import webapp_handlers

# Where a problem type URI leads, on both apps.
_problem_type = problem_page(DESCRIPTIONS)


def _litestar(config: Config, ctx: ApiContext, handlers: list[Any], title: str, **state: Any) -> Litestar:
    return Litestar(
        route_handlers=[*handlers, _problem_type],
        exception_handlers=make_exception_handlers(config.freeze_retry_after_s),
        request_max_body_size=config.max_body_bytes,
        state=State({"ctx": ctx, **state}),
        openapi_config=OpenAPIConfig(
            title=title, version=__version__, path="/schema", render_plugins=[FinishedOpenAPIPlugin()]
        ),
        logging_config=None,
        debug=False,
    )


def _wrap(app: Any, metrics: Metrics | None, name: str) -> RequestIdMiddleware:
    # Plain ASGI layers around the whole Litestar app, not per route: a 404 or 405 for a path no
    # route matches must carry its request id and be counted too.
    inner: Any = app if metrics is None else MetricsMiddleware(app, metrics, name)
    return RequestIdMiddleware(LogContextMiddleware(inner))  # the log context reads the request id


def create_app(
    store: Store, config: Config, box_id: str, metrics: Metrics | None = None
) -> RequestIdMiddleware:
    """The tablet API (PROTOCOL.md) and the judge app, served to the venue LAN."""
    ctx = ApiContext(store=store, config=config, box_id=box_id, metrics=metrics)
    # The judge app (static files at /, outside the OpenAPI document) is served beside the API.
    handlers = [TabletController, *webapp_handlers()]
    litestar = _litestar(config, ctx, handlers, "venuebox tablet API")
    # The LAN side also gets per-address limits, a header cap and a body deadline (edge_api/guard.py).
    return _wrap(ClientGuard(litestar, config), metrics, "tablet")


def create_admin_app(
    store: Store,
    config: Config,
    box_id: str,
    admin_token: str,
    metrics: Metrics | None = None,
    on_uplink_request: Callable[[], None] | None = None,
) -> RequestIdMiddleware:
    """The admin API (console, CLI), served on loopback; Prometheus metrics at /metrics.
    ``on_uplink_request`` wakes the uplink worker when a tech asks for a sync or a retry."""
    ctx = ApiContext(
        store=store, config=config, box_id=box_id, metrics=metrics, on_uplink_request=on_uplink_request
    )
    handlers: list[Any] = [AdminController]
    if metrics is not None:
        handlers.append(metrics_route(metrics, guards=[admin_guard]))
    return _wrap(
        _litestar(config, ctx, handlers, "venuebox admin API", admin_token=admin_token), metrics, "admin"
    )
