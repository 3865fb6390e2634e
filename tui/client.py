"""The console's one way to the box: an async client of the daemon's admin API, whose answers it
decodes into the admin API's wire types (appliance/shared/admin_wire.py, status.py, results_wire.py
and schedule_wire.py).

The console never opens the database. Where the daemon listens comes from a locator the console's
caller gives (the shell's: the data dir's ``daemon.json``, written by a running daemon, and its
``admin.token``), asked again after every failed call, so a daemon that restarted on another port (or
that was not running yet when the console started) is found again without anyone touching the
console. A daemon that stopped is "not running", with the address it was on, never a connection
error to some default port.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from appliance.shared.admin_wire import (
    ActiveCode,
    AuditRow,
    Device,
    EntryChains,
    ExportStarted,
    ExportStatus,
    JudgeRow,
    NewPairingCode,
    PersonalOut,
    RevokedDevice,
    SessionGrid,
    SessionOverview,
    SheetFeed,
    SyncRequested,
    VerifyReport,
)
from appliance.shared.netloc import host_port
from appliance.shared.results_wire import ResultsOut, SessionState
from appliance.shared.schedule_wire import Discarded, DraftView, Published, ScheduleVersion, Validation
from appliance.shared.status import Alert, ConsoleStatus, FreezeCategory, FreezeView

T = TypeVar("T")

# The kinds of change the admin API takes into the draft (a rollback is its own call).
ScheduleKind = Literal["scratch", "restore", "walk-on", "move", "retime"]

# Loopback calls: a healthy daemon answers in milliseconds. A short read timeout keeps the
# "unreachable" banner honest when the daemon hangs instead of refusing.
TIMEOUT = httpx.Timeout(connect=1.0, read=4.0, write=2.0, pool=1.0)


class Unreachable(Exception):
    """The daemon could not be asked (not running, not ready, hung); the message says why."""


class NotRunning(Unreachable):
    """No daemon runs on the data dir: ``was_on`` is the admin URL it had (from the last ``daemon.json``
    the locator read), or None when none was seen (``data_dir`` then says where none was found)."""

    def __init__(self, was_on: str | None, data_dir: object = "") -> None:
        self.where = f"it was on {_host_port(was_on)}" if was_on else f"no daemon.json in {data_dir}"
        super().__init__(f"daemon not running ({self.where})")


class AdminError(Exception):
    """The daemon answered with a problem (RFC 9457); ``detail`` is what to show the tech."""

    def __init__(self, status: int, title: str, detail: str, request_id: str | None) -> None:
        super().__init__(f"{title}: {detail}" if detail else title)
        self.status = status
        self.title = title
        self.detail = detail
        self.request_id = request_id


@dataclass(frozen=True)
class Endpoint:
    """Where the admin API answers and its token; ``pid``: the daemon's process, when known (a
    refused connection to a process that no longer exists is a daemon that is not running)."""

    url: str
    token: str
    pid: int | None = None


# Finds the daemon: an Endpoint, or Unreachable (NotRunning when no daemon runs) saying why.
Locate = Callable[[], Endpoint]


def fixed(url: str, token: str) -> Locate:
    """A locator of a daemon at a known address (tests, a remote admin API)."""
    endpoint = Endpoint(url.rstrip("/"), token)
    return lambda: endpoint


class AdminClient:
    """Typed calls of the admin API. One instance per console, owned by the App."""

    def __init__(self, locate: Locate, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._locate = locate
        self._endpoint: Endpoint | None = None
        self._http = httpx.AsyncClient(timeout=TIMEOUT, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, answer: type[T], **kwargs: Any) -> T:
        if self._endpoint is None:
            self._endpoint = self._locate()
        endpoint = self._endpoint
        try:
            response = await self._http.request(
                method,
                endpoint.url + path,
                headers={"Authorization": f"Bearer {endpoint.token}"},
                **kwargs,
            )
        except httpx.TimeoutException as exc:
            self._endpoint = None
            raise Unreachable(f"no answer from {endpoint.url} within {TIMEOUT.read:g} s") from exc
        except httpx.TransportError as exc:
            self._endpoint = None
            if isinstance(exc, httpx.ConnectError) and not _alive(endpoint.pid):
                # Killed (no clean stop removed its daemon.json): the process is gone.
                raise NotRunning(endpoint.url) from exc
            raise Unreachable(f"cannot connect to {endpoint.url}: {_reason(exc)}") from exc
        if response.status_code == 401:
            # A re-initialised box has a new token: read it again next time.
            self._endpoint = None
        if response.status_code >= 400:
            raise _problem(response)
        try:
            return msgspec.json.decode(response.content, type=answer)
        except msgspec.ValidationError as exc:
            raise Unreachable(
                f"{endpoint.url} answered {path} in a shape this console does not read: {exc}"
            ) from exc
        except msgspec.DecodeError as exc:
            raise Unreachable(
                f"{endpoint.url} answered {path} with something that is not JSON: {exc}"
            ) from exc

    # Reads --------------------------------------------------------------------------------------
    async def status(self) -> ConsoleStatus:
        return await self._call("GET", "/admin/v1/status", ConsoleStatus)

    async def devices(self) -> list[Device]:
        return await self._call("GET", "/admin/v1/devices", list[Device])

    async def judges(self) -> list[JudgeRow]:
        return await self._call("GET", "/admin/v1/judges", list[JudgeRow])

    async def sessions(self) -> list[SessionOverview]:
        return await self._call("GET", "/admin/v1/sessions", list[SessionOverview])

    async def grid(self, session_id: str) -> SessionGrid:
        return await self._call("GET", f"/admin/v1/sessions/{_seg(session_id)}/grid", SessionGrid)

    async def sheets(self, after: int | None = None, limit: int = 50) -> SheetFeed:
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        return await self._call("GET", "/admin/v1/sheets", SheetFeed, params=params)

    async def entry(self, entry_id: str) -> EntryChains:
        return await self._call("GET", f"/admin/v1/entries/{_seg(entry_id)}", EntryChains)

    async def personal(self, entry_id: str) -> PersonalOut:
        """The entry's personal fields, masked by the box (names to initials): the console never
        reveals them (that needs a reason, through the admin API)."""
        return await self._call("GET", f"/admin/v1/entries/{_seg(entry_id)}/personal", PersonalOut)

    async def alerts(self, include_cleared: bool = False) -> list[Alert]:
        params = {"include_cleared": "true" if include_cleared else "false"}
        return await self._call("GET", "/admin/v1/alerts", list[Alert], params=params)

    async def audit(self, limit: int = 200, action: str | None = None) -> list[AuditRow]:
        params: dict[str, Any] = {"limit": limit}
        if action:
            params["action"] = action
        return await self._call("GET", "/admin/v1/audit", list[AuditRow], params=params)

    async def pairing_codes(self) -> list[ActiveCode]:
        return await self._call("GET", "/admin/v1/pairing-codes", list[ActiveCode])

    async def verify(self) -> VerifyReport:
        return await self._call("GET", "/admin/v1/verify", VerifyReport)

    async def export_status(self) -> ExportStatus:
        """The USB export in progress (or the last one made) as ``job``, and the USB keys the box
        sees mounted now as ``targets``."""
        return await self._call("GET", "/admin/v1/export", ExportStatus)

    # Writes -------------------------------------------------------------------------------------
    async def freeze(self, category: FreezeCategory, reason: str) -> FreezeView:
        body = {"category": category, "reason": reason}
        return await self._call("POST", "/admin/v1/freeze", FreezeView, json=body)

    async def unfreeze(self) -> FreezeView:
        return await self._call("POST", "/admin/v1/unfreeze", FreezeView, json={})

    async def new_pairing_code(self, judge_id: str) -> NewPairingCode:
        body = {"judge_id": judge_id}
        return await self._call("POST", "/admin/v1/pairing-codes", NewPairingCode, json=body)

    async def revoke(self, device_id: str) -> RevokedDevice:
        return await self._call("POST", f"/admin/v1/devices/{_seg(device_id)}/revoke", RevokedDevice, json={})

    async def uplink_sync(self) -> SyncRequested:
        """Ask the uplink to try now; 409 (AdminError) when it is not configured."""
        return await self._call("POST", "/admin/v1/uplink/sync", SyncRequested, json={})

    async def export_start(self, to: str | None = None) -> ExportStarted:
        """Start a USB export in the daemon, into the folder ``to`` (or the one key the box finds);
        AdminError 422 when it cannot be made there, 409 while another runs. Then follow
        ``export_status``: the export carries on in the daemon whatever the console does."""
        return await self._call("POST", "/admin/v1/export", ExportStarted, json={"to": to} if to else {})

    async def acknowledge(self, fingerprint: str) -> Alert:
        return await self._call("POST", f"/admin/v1/alerts/{_seg(fingerprint)}/ack", Alert, json={})

    # Sessions at results time ---------------------------------------------------------------------
    async def results(self, session_id: str | None = None) -> ResultsOut:
        """The current event's results (ranks those of the whole event), optionally one session's
        entries; AdminError 503 before an event is imported."""
        params = {} if session_id is None else {"session": session_id}
        return await self._call("GET", "/admin/v1/results", ResultsOut, params=params)

    async def session_states(self) -> list[SessionState]:
        """Each session's lock, panel and the judges who signed it off."""
        return await self._call("GET", "/admin/v1/sessions/states", list[SessionState])

    async def lock_session(self, session_id: str, reason: str) -> SessionState:
        """Lock a session (every sheet for it refused); AdminError 404 for an unknown session, 422
        for an empty reason."""
        path = f"/admin/v1/sessions/{_seg(session_id)}/lock"
        return await self._call("POST", path, SessionState, json={"reason": reason})

    async def unlock_session(self, session_id: str, reason: str) -> SessionState:
        path = f"/admin/v1/sessions/{_seg(session_id)}/unlock"
        return await self._call("POST", path, SessionState, json={"reason": reason})

    async def reopen_sign_off(self, session_id: str, judge_id: str, reason: str) -> SessionState:
        """Take back ``judge_id``'s sign-off of a session; AdminError 404 when there is none."""
        path = f"/admin/v1/sessions/{_seg(session_id)}/reopen"
        return await self._call("POST", path, SessionState, json={"judge_id": judge_id, "reason": reason})

    # Day-of schedule changes -----------------------------------------------------------------------
    async def schedule_draft(self) -> DraftView:
        """The draft of day-of changes, in the order typed, and the version it would follow."""
        return await self._call("GET", "/admin/v1/schedule/draft", DraftView)

    async def schedule_change(self, kind: ScheduleKind, reason: str, **fields: str | int) -> DraftView:
        """Type one change into the draft: ``kind`` with the fields it needs (``entry_id``,
        ``session_id``, ``position``, ``scheduled_at``; a walk-on's ``title``, ``category``, ...,
        ``participants``); AdminError 404 (unknown entry or session), 409 or 423 (locked session)
        names what refused it, and the draft is unchanged."""
        body: dict[str, str | int] = {"kind": kind, "reason": reason, **fields}
        return await self._call("POST", "/admin/v1/schedule/draft", DraftView, json=body)

    async def schedule_validate(self) -> Validation:
        """Every problem of the schedule as publishing the draft would make it (errors refuse a
        publish, warnings are said), at once."""
        return await self._call("GET", "/admin/v1/schedule/validate", Validation)

    async def schedule_publish(self, reason: str) -> Published:
        """Apply the whole draft as the next version; AdminError 423 while frozen, 409 for an empty
        draft or one ``validate`` finds errors in."""
        return await self._call("POST", "/admin/v1/schedule/publish", Published, json={"reason": reason})

    async def schedule_discard(self) -> Discarded:
        """Drop the draft; ``discarded`` says how many changes it held."""
        return await self._call("POST", "/admin/v1/schedule/discard", Discarded, json={})

    async def schedule_versions(self) -> list[ScheduleVersion]:
        """Every published schedule version, 1 (the import) first."""
        return await self._call("GET", "/admin/v1/schedule/versions", list[ScheduleVersion])

    async def schedule_rollback(self, version: int, reason: str) -> Published:
        """Publish a copy of ``version`` as the next one; AdminError 404 for an unknown version."""
        body = {"version": version, "reason": reason}
        return await self._call("POST", "/admin/v1/schedule/rollback", Published, json=body)


def _seg(value: str) -> str:
    """One URL path segment (ids come from the box, but an entry id may hold any character)."""
    return quote(value, safe=":")


def _host_port(url: str) -> str:
    """'127.0.0.1:8081' of 'http://127.0.0.1:8081': where the daemon listened, as a tech says it."""
    parsed = httpx.URL(url)
    return host_port(parsed.host, parsed.port)


def _alive(pid: int | None) -> bool:
    """Whether process ``pid`` exists (True when unknown: then only the connection error is said)."""
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, as another user's (EPERM)
    return True


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "Connection refused" in text or "ConnectError" in text:
        return "connection refused (is the daemon running?)"
    return text


def _problem(response: httpx.Response) -> AdminError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return AdminError(
        response.status_code,
        str(body.get("title") or response.reason_phrase),
        str(body.get("detail") or ""),
        body.get("request_id") or response.headers.get("x-request-id"),
    )
