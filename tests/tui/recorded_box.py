"""A recorded admin API, for snapshot tests that need the same screen every run.

The JSON files in fixtures/ were recorded from a real daemon running `venuebox demo` (then given a
stale and an offline tablet, two alerts, an uplink backing off after a DNS failure, six verified
snapshots, two USB keys (export.json: during an export to the first), and addresses from the
documentation ranges); results.json, `GET /admin/v1/results`, from the box of
tests/integration/test_console_fixtures.py's ``results_box`` (the sample event with a scoring block,
Saturday morning scored, signed off and locked, Saturday afternoon partly scored and open). They are
served through httpx's MockTransport to the console's real AdminClient: only the network is
replaced. tests/integration/test_console_fixtures.py checks that the recordings still have the shape
the live admin API answers with, so the snapshots cannot drift from the real contract
(personal.json, entry 104's masked participants, is written by hand to that shape).
"""

from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from appliance.shared.times import parse_rfc3339
from tui.app import ConsoleApp
from tui.client import AdminClient, fixed

FIXTURES = Path(__file__).parent / "fixtures"
# The moment the status was recorded: the console's clock is pinned to it (pairing countdowns).
RECORDED_AT = "2026-11-22T01:55:56.641973Z"

ROUTES = {
    ("GET", "/admin/v1/status"): "status",
    ("GET", "/admin/v1/devices"): "devices",
    ("GET", "/admin/v1/judges"): "judges",
    ("GET", "/admin/v1/sessions"): "sessions",
    ("GET", "/admin/v1/sheets"): "sheets",
    ("GET", "/admin/v1/alerts"): "alerts",
    ("GET", "/admin/v1/audit"): "audit",
    ("GET", "/admin/v1/results"): "results",
    ("POST", "/admin/v1/pairing-codes"): "pairing_code",
}
# What GET /admin/v1/export says of a daemon that has made no export yet (appliance/core/export.py ExportJob).
IDLE_EXPORT = {
    "state": "idle",
    "fraction": 0.0,
    "step": "",
    "target": None,
    "path": None,
    "error": None,
    "started_at": None,
    "finished_at": None,
}
# The admin API's answer to a sync when no uplink target is set (edge_api/errors.py).
NOT_CONFIGURED = {
    "type": "/problems/uplink-not-configured",
    "title": "The uplink is not configured",
    "status": 409,
    "detail": "set where the outbox goes with `venuebox uplink configure --url URL --token-file FILE`",
}


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


class RecordedBox:
    """Answers the admin API from the recordings; ``status`` can be edited per test."""

    def __init__(self) -> None:
        self.status = fixture("status")
        self.calls: list[tuple[str, str]] = []
        # The USB export: the keys the box sees, the job (a POST starts the recorded one, which then
        # stays where it was recorded until a test moves it on), and a refusal a test may set.
        self.usb_keys: list[dict[str, Any]] = fixture("export")["targets"]
        self.export_job: dict[str, Any] = dict(IDLE_EXPORT)
        self.export_refusal: dict[str, Any] | None = None
        self.export_asked: list[dict[str, Any]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        self.calls.append((method, path))
        if (method, path) == ("GET", "/admin/v1/status"):
            return httpx.Response(200, json=self.status)
        if (method, path) == ("POST", "/admin/v1/uplink/sync"):
            if not self.status["uplink"]["configured"]:
                return httpx.Response(409, json=NOT_CONFIGURED)
            return httpx.Response(202, json={"requested_at": RECORDED_AT})
        if (method, path) == ("GET", "/admin/v1/export"):
            return httpx.Response(200, json={"job": self.export_job, "targets": self.usb_keys})
        if (method, path) == ("POST", "/admin/v1/export"):
            return self._start_export(json.loads(request.content or b"{}"))
        if (method, path) == ("GET", "/admin/v1/pairing-codes"):
            return httpx.Response(200, json=[_active(fixture("pairing_code"))])
        if method == "GET" and path.startswith("/admin/v1/sessions/") and path.endswith("/grid"):
            return httpx.Response(200, json=fixture("grid"))
        if method == "GET" and path.startswith("/admin/v1/entries/") and path.endswith("/personal"):
            return httpx.Response(200, json=fixture("personal"))
        if method == "GET" and path.startswith("/admin/v1/entries/"):
            return httpx.Response(200, json=fixture("entry"))
        name = ROUTES.get((method, path))
        if name is None:
            return httpx.Response(404, json={"title": "Not Found", "status": 404, "detail": path})
        return httpx.Response(201 if method == "POST" else 200, json=fixture(name))

    def _start_export(self, body: dict[str, Any]) -> httpx.Response:
        self.export_asked.append(body)
        if self.export_refusal is not None:
            return httpx.Response(self.export_refusal["status"], json=self.export_refusal)
        if self.export_job["state"] == "running":
            return httpx.Response(409, json=export_problem(409, "an export is running: wait for it"))
        recorded = fixture("export")["job"]
        self.export_job = recorded | {"target": body.get("to") or recorded["target"]}
        return httpx.Response(202, json={"job": self.export_job})

    def frozen(self) -> RecordedBox:
        self.status = copy.deepcopy(self.status)
        self.status["freeze"] = {
            "frozen": True,
            "reason": "Score dispute on entry 104: hold all scoring",
            "since": "2026-11-22T01:55:30.000000Z",
            "by": "admin-api",
            "category": "dispute",
        }
        return self

    def app(self, start_screen: str = "overview") -> ConsoleApp:
        client = AdminClient(
            fixed("http://box.invalid", "recorded"), transport=httpx.MockTransport(self.handle)
        )
        return ConsoleApp(client, start_screen=start_screen, poll=False, clock=recorded_now)


def export_problem(status: int, detail: str) -> dict[str, Any]:
    """The admin API's refusal of an export (edge_api/errors.py): 422 cannot be made there, 409 busy."""
    slug, title = {
        422: ("export-refused", "The export cannot be made there"),
        409: ("export-busy", "An export is already running"),
    }[status]
    return {"type": f"/problems/{slug}", "title": title, "status": status, "detail": detail}


def recorded_now() -> datetime:
    return parse_rfc3339(RECORDED_AT)


def _active(code: dict[str, Any]) -> dict[str, Any]:
    return {k: code[k] for k in ("code_id", "expires_at")} | {
        "judge_id": code["judge"]["id"],
        "created_at": RECORDED_AT,
    }
