"""The console's one way to the box: an async client of the daemon's admin API.

The console never opens the database. It finds the daemon the way a tech would: the data dir's
``daemon.json`` (written by a running daemon) says where the admin API listens, and the admin token
is the data dir's ``admin.token``. Both are read again after every failed call, so a daemon that
restarted on another port (or that was not running yet when the console started) is found again
without anyone touching the console. A daemon that stopped (``daemon.json`` gone, or left behind by
a process that no longer exists) is "not running", with the address it was on, never a connection
error to some default port.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from appliance.core.config import RUNTIME_FILE, Config
from appliance.shared.netloc import host_port
from appliance.shared.secrets_files import InsecureSecretFile, read_secret

# Loopback calls: a healthy daemon answers in milliseconds. A short read timeout keeps the
# "unreachable" banner honest when the daemon hangs instead of refusing.
TIMEOUT = httpx.Timeout(connect=1.0, read=4.0, write=2.0, pool=1.0)


class Unreachable(Exception):
    """The daemon could not be asked (not running, not ready, hung); the message says why."""


class NotRunning(Unreachable):
    """No daemon runs on the data dir: ``was_on`` is the admin address it had (from the last
    ``daemon.json`` the console read), or None when the console has not seen one."""

    def __init__(self, data_dir: object, was_on: str | None) -> None:
        self.was_on = was_on
        self.where = f"it was on {was_on}" if was_on else f"no daemon.json in {data_dir}"
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
    url: str
    token: str


class AdminClient:
    """Typed calls of the admin API. One instance per console, owned by the App."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if config is None and (url is None or token is None):
            raise ValueError("give a config (data dir) or both url and token")
        self._config = config
        self._fixed = Endpoint(url.rstrip("/"), token) if url and token else None
        self._endpoint: Endpoint | None = self._fixed
        self._pid: int | None = None  # the daemon's process, from daemon.json
        self._was_on: str | None = None  # the admin address of the last daemon.json read
        self._http = httpx.AsyncClient(timeout=TIMEOUT, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    def _locate(self) -> Endpoint:
        if self._fixed is not None:
            return self._fixed
        assert self._config is not None
        config = self._config
        runtime_path = config.data_dir / RUNTIME_FILE
        try:
            runtime = json.loads(runtime_path.read_text())
            url = runtime["admin_url"]
        except FileNotFoundError:
            # Written when the daemon is ready, removed when it stops: no daemon answers here (the
            # settings' admin port is not where to look; a daemon may have been on another one).
            raise NotRunning(config.data_dir, self._was_on) from None
        except (OSError, ValueError, KeyError) as exc:
            raise Unreachable(f"cannot read {runtime_path}: {exc}") from exc
        self._pid = runtime.get("pid") if isinstance(runtime.get("pid"), int) else None
        self._was_on = _host_port(url)
        try:
            token = read_secret(config.admin_token_path)
        except FileNotFoundError as exc:
            raise Unreachable(
                f"no admin token at {config.admin_token_path}: is this the box's data dir?"
            ) from exc
        except PermissionError as exc:
            raise Unreachable(
                f"cannot read {config.admin_token_path}: run the console as the box's user or root"
            ) from exc
        except InsecureSecretFile as exc:
            raise Unreachable(str(exc)) from exc
        return Endpoint(url.rstrip("/"), token)

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
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
            if isinstance(exc, httpx.ConnectError) and self._fixed is None and not _alive(self._pid):
                # Killed (no clean stop removed its daemon.json): the process is gone.
                raise NotRunning(self._config.data_dir if self._config else "", self._was_on) from exc
            raise Unreachable(f"cannot connect to {endpoint.url}: {_reason(exc)}") from exc
        if response.status_code == 401:
            # A re-initialised box has a new token: read it again next time.
            self._endpoint = None
        if response.status_code >= 400:
            raise _problem(response)
        return response.json()

    # Reads --------------------------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        return await self._call("GET", "/admin/v1/status")

    async def devices(self) -> list[dict[str, Any]]:
        return await self._call("GET", "/admin/v1/devices")

    async def judges(self) -> list[dict[str, Any]]:
        return await self._call("GET", "/admin/v1/judges")

    async def sessions(self) -> list[dict[str, Any]]:
        return await self._call("GET", "/admin/v1/sessions")

    async def grid(self, session_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/admin/v1/sessions/{_seg(session_id)}/grid")

    async def sheets(self, after: int | None = None, limit: int = 50) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        return await self._call("GET", "/admin/v1/sheets", params=params)

    async def entry(self, entry_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/admin/v1/entries/{_seg(entry_id)}")

    async def personal(self, entry_id: str) -> dict[str, Any]:
        """The entry's personal fields, masked by the box (names to initials): the console never
        reveals them (that needs a reason, through the admin API)."""
        return await self._call("GET", f"/admin/v1/entries/{_seg(entry_id)}/personal")

    async def alerts(self, include_cleared: bool = False) -> list[dict[str, Any]]:
        params = {"include_cleared": "true" if include_cleared else "false"}
        return await self._call("GET", "/admin/v1/alerts", params=params)

    async def audit(self, limit: int = 200, action: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if action:
            params["action"] = action
        return await self._call("GET", "/admin/v1/audit", params=params)

    async def pairing_codes(self) -> list[dict[str, Any]]:
        return await self._call("GET", "/admin/v1/pairing-codes")

    async def verify(self) -> dict[str, Any]:
        return await self._call("GET", "/admin/v1/verify")

    async def export_status(self) -> dict[str, Any]:
        """The USB export in progress (or the last one made) as ``job``, and the USB keys the box
        sees mounted now as ``targets``."""
        return await self._call("GET", "/admin/v1/export")

    # Writes -------------------------------------------------------------------------------------
    async def freeze(self, category: str, reason: str) -> dict[str, Any]:
        return await self._call("POST", "/admin/v1/freeze", json={"category": category, "reason": reason})

    async def unfreeze(self) -> dict[str, Any]:
        return await self._call("POST", "/admin/v1/unfreeze", json={})

    async def new_pairing_code(self, judge_id: str) -> dict[str, Any]:
        return await self._call("POST", "/admin/v1/pairing-codes", json={"judge_id": judge_id})

    async def revoke(self, device_id: str) -> dict[str, Any]:
        return await self._call("POST", f"/admin/v1/devices/{_seg(device_id)}/revoke", json={})

    async def uplink_sync(self) -> dict[str, Any]:
        """Ask the uplink to try now; 409 (AdminError) when it is not configured."""
        return await self._call("POST", "/admin/v1/uplink/sync", json={})

    async def export_start(self, to: str | None = None) -> dict[str, Any]:
        """Start a USB export in the daemon, into the folder ``to`` (or the one key the box finds);
        AdminError 422 when it cannot be made there, 409 while another runs. Then follow
        ``export_status``: the export carries on in the daemon whatever the console does."""
        return await self._call("POST", "/admin/v1/export", json={"to": to} if to else {})

    async def acknowledge(self, fingerprint: str) -> dict[str, Any]:
        return await self._call("POST", f"/admin/v1/alerts/{_seg(fingerprint)}/ack", json={})


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
