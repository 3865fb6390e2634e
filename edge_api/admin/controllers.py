"""The admin API (console and CLI): status, freeze, pairing codes, devices, judges, scoring progress
(sessions, grid, sheet feed, entry chains), results, alerts, audit, verify, uplink (state, sync,
retry), USB export (start, progress).

Served by its own listener (loopback by default), guarded by the admin token and, unless
``admin_allow_remote`` is set, by the client address too: a tablet's token is never accepted here."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import sqlite3
from pathlib import Path
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, FromQuery
from msgspec import convert

from appliance.core import (
    alerts,
    audit,
    box,
    chain,
    data_key,
    devices,
    export,
    pairing,
    personal_fields,
    progress,
    results_out,
    schedule,
    sessions,
    status,
    uplink_state,
)
from appliance.core.event_package.format import PARTICIPANTS
from appliance.core.keys import pairing_key
from appliance.core.tls import pairing_url
from appliance.shared.admin_wire import (
    ActiveCode,
    AuditRow,
    Device,
    EntryChains,
    ExportStarted,
    ExportStatus,
    JudgeRow,
    NewPairingCode,
    Participants,
    PersonalOut,
    PersonalRevealOut,
    Requeued,
    RevokedDevice,
    SessionGrid,
    SessionOverview,
    SheetFeed,
    SyncRequested,
    UplinkAnswer,
    VerifyReport,
)
from appliance.shared.errors import DomainError, UplinkNotConfigured
from appliance.shared.results_wire import ResultsOut, SessionState
from appliance.shared.schedule_wire import Discarded, DraftView, Published, ScheduleVersion, Validation
from appliance.shared.status import Alert, ConsoleStatus, FreezeView
from appliance.shared.times import utcnow
from appliance.web.body import decode
from appliance.web.middleware import request_id_of
from appliance.web.responses import json_response as _json
from edge_api.context import context_of
from edge_api.responses import NO_STORE, problems
from edge_api.schemas import (
    ExportIn,
    FreezeIn,
    PairingCodeIn,
    PersonalRevealIn,
    ReopenIn,
    RevealIn,
    RollbackIn,
    ScheduleChangeIn,
    ScheduleReasonIn,
    SessionReasonIn,
    UplinkRetryIn,
)


def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    ctx = connection.app.state.ctx
    if not ctx.config.admin_allow_remote and not _is_loopback(
        connection.client.host if connection.client else ""
    ):
        raise PermissionDeniedException("the admin API only answers on this box (loopback)")
    header = connection.headers.get("authorization", "")
    scheme, _space, token = header.partition(" ")
    expected = connection.app.state.admin_token
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise NotAuthorizedException("admin token missing or wrong (it is in the data dir's admin.token)")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        # Unix socket peers have no IP address; the socket's file permissions guard them.
        return host in ("", "unix")


class AdminController(Controller):
    path = "/admin/v1"
    guards = [admin_guard]
    tags = ["admin"]
    # Answers carry pairing codes, names and, revealed, personal data: none is kept by any cache.
    cache_control = NO_STORE

    @get("/status", responses=problems(401, 503))
    async def status(self, request: Request[Any, Any, Any]) -> Response[ConsoleStatus]:
        ctx = context_of(request)
        # A damaged page the snapshot reads answers 503 database-damaged instead.
        return _json(
            await ctx.store.read(
                lambda conn: status.console_snapshot(conn, ctx.config, ctx.tablet_urls, ctx.store)
            )
        )

    @post("/freeze", status_code=200, responses=problems(400, 401, 422, 503))
    async def freeze(self, request: Request[Any, Any, Any]) -> Response[FreezeView]:
        ctx = context_of(request)
        body = decode(await request.body(), FreezeIn)
        rid = request_id_of(request.scope)
        state = await ctx.write(
            lambda conn: box.freeze(conn, body.reason, "admin-api", rid, category=body.category)
        )
        return _json(status.freeze_view(state))

    @post("/unfreeze", status_code=200, responses=problems(401, 503))
    async def unfreeze(self, request: Request[Any, Any, Any]) -> Response[FreezeView]:
        ctx = context_of(request)
        rid = request_id_of(request.scope)
        state = await ctx.write(lambda conn: box.unfreeze(conn, "admin-api", rid))
        return _json(status.freeze_view(state))

    @post("/pairing-codes", status_code=201, responses=problems(400, 401, 404, 422, 503))
    async def new_code(self, request: Request[Any, Any, Any]) -> Response[NewPairingCode]:
        ctx = context_of(request)
        body = decode(await request.body(), PairingCodeIn)
        rid = request_id_of(request.scope)
        ttl = body.ttl_s or ctx.config.pairing_code_ttl_s
        cap = ctx.config.pairing_code_max_ttl_s
        code = await ctx.write(
            lambda conn: pairing.create_code(
                conn, body.judge_id, ttl, "admin-api", rid, key=pairing_key(ctx.config), max_ttl_s=cap
            )
        )
        # What a QR code on the console carries: the tablet web app, told which code to redeem, and
        # the certificate fingerprint the tablet should see (in the URL's fragment; null without TLS).
        url = pairing_url(ctx.tablet_urls[0], code["code"], ctx.tls_fingerprint)
        made = {**code, "url": url, "tls_fingerprint": ctx.tls_fingerprint}
        return _json(convert(made, NewPairingCode), 201)

    @get("/pairing-codes", responses=problems(401))
    async def codes(self, request: Request[Any, Any, Any]) -> Response[list[ActiveCode]]:
        return _json(await context_of(request).store.read(pairing.active_codes))

    @get("/devices", responses=problems(401, 422))
    async def devices(
        self, request: Request[Any, Any, Any], include_revoked: FromQuery[bool] = True
    ) -> Response[list[Device]]:
        ctx = context_of(request)
        return _json(
            await ctx.store.read(lambda conn: status.devices_with_presence(conn, ctx.config, include_revoked))
        )

    @post("/devices/{device_id:str}/revoke", status_code=200, responses=problems(401, 404, 503))
    async def revoke(
        self, request: Request[Any, Any, Any], device_id: FromPath[str]
    ) -> Response[RevokedDevice]:
        ctx = context_of(request)
        rid = request_id_of(request.scope)
        revoked = await ctx.write(lambda conn: devices.revoke(conn, device_id, "admin-api", rid))
        return _json(revoked)

    @get("/judges", responses=problems(401))
    async def judges(self, request: Request[Any, Any, Any]) -> Response[list[JudgeRow]]:
        def read(conn: sqlite3.Connection) -> list[JudgeRow]:
            rows = conn.execute(
                "SELECT j.judge_id, j.name, group_concat(p.session_id, ';') AS sessions FROM judges j"
                " JOIN box b ON b.event_id = j.event_id"
                " LEFT JOIN panels p ON p.event_id = j.event_id AND p.judge_id = j.judge_id"
                " GROUP BY j.judge_id, j.name ORDER BY j.judge_id"
            )
            return [JudgeRow(**dict(r)) for r in rows]

        return _json(await context_of(request).store.read(read))

    @get("/sessions", responses=problems(401))
    async def sessions(self, request: Request[Any, Any, Any]) -> Response[list[SessionOverview]]:
        return _json(await context_of(request).store.read(progress.sessions_overview))

    @get("/sessions/{session_id:str}/grid", responses=problems(401, 404))
    async def session_grid(
        self, request: Request[Any, Any, Any], session_id: FromPath[str]
    ) -> Response[SessionGrid]:
        return _json(
            await context_of(request).store.read(lambda conn: progress.session_grid(conn, session_id))
        )

    @get("/sessions/states", responses=problems(401))
    async def session_states(self, request: Request[Any, Any, Any]) -> Response[list[SessionState]]:
        """Each session's lock, panel and sign-offs (empty before an event is imported)."""
        states = await context_of(request).store.read(sessions.session_states)
        return _json(list(states.values()))

    @post("/sessions/{session_id:str}/lock", status_code=200, responses=problems(400, 401, 404, 422, 503))
    async def lock_session(
        self, request: Request[Any, Any, Any], session_id: FromPath[str]
    ) -> Response[SessionState]:
        """Lock a session: every sheet for it answers 423 session-locked. Needs ``{"reason"}``."""
        ctx = context_of(request)
        body = decode(await request.body(), SessionReasonIn)
        rid = request_id_of(request.scope)
        return _json(
            await ctx.write(lambda conn: sessions.lock(conn, session_id, body.reason, "admin-api", rid))
        )

    @post("/sessions/{session_id:str}/unlock", status_code=200, responses=problems(400, 401, 404, 422, 503))
    async def unlock_session(
        self, request: Request[Any, Any, Any], session_id: FromPath[str]
    ) -> Response[SessionState]:
        """Unlock a session. Needs ``{"reason"}``."""
        ctx = context_of(request)
        body = decode(await request.body(), SessionReasonIn)
        rid = request_id_of(request.scope)
        return _json(
            await ctx.write(lambda conn: sessions.unlock(conn, session_id, body.reason, "admin-api", rid))
        )

    @post("/sessions/{session_id:str}/reopen", status_code=200, responses=problems(400, 401, 404, 422, 503))
    async def reopen_sign_off(
        self, request: Request[Any, Any, Any], session_id: FromPath[str]
    ) -> Response[SessionState]:
        """Take back a judge's sign-off of a session: ``{"judge_id", "reason"}``; 404 when that judge
        has not signed it off."""
        ctx = context_of(request)
        body = decode(await request.body(), ReopenIn)
        rid = request_id_of(request.scope)
        return _json(
            await ctx.write(
                lambda conn: sessions.reopen(conn, session_id, body.judge_id, body.reason, "admin-api", rid)
            )
        )

    @get("/schedule/draft", responses=problems(401, 503))
    async def schedule_draft(self, request: Request[Any, Any, Any]) -> Response[DraftView]:
        """The draft of day-of changes, in the order typed, and the version it would follow."""
        return _json(await context_of(request).store.read(schedule.draft))

    @post("/schedule/draft", status_code=200, responses=problems(400, 401, 404, 409, 422, 423, 503))
    async def schedule_change(self, request: Request[Any, Any, Any]) -> Response[DraftView]:
        """Type one change into the draft (``{"kind", "reason", ...}``), or refuse it naming the entry
        or session: 404 unknown, 409 ``schedule-conflict``, 423 ``session-locked``; the draft unchanged."""
        ctx = context_of(request)
        body = decode(await request.body(), ScheduleChangeIn)
        fields = {
            name: getattr(body, name)
            for name in ScheduleChangeIn.__struct_fields__
            if name not in ("kind", "reason", "participants")
        }
        change = schedule.stamp(body.kind.replace("-", "_"), "admin-api", body.reason, **fields)
        key_path = ctx.config.data_key_path
        return _json(
            await ctx.write(lambda conn: schedule.add_change(conn, change, body.participants, key_path))
        )

    @post("/schedule/discard", status_code=200, responses=problems(401, 503))
    async def schedule_discard(self, request: Request[Any, Any, Any]) -> Response[Discarded]:
        """Drop the draft: how many changes it held."""
        ctx = context_of(request)
        rid = request_id_of(request.scope)
        dropped = await ctx.write(lambda conn: schedule.discard(conn, "admin-api", rid))
        return _json(Discarded(discarded=dropped))

    @get("/schedule/validate", responses=problems(401, 503))
    async def schedule_validate(self, request: Request[Any, Any, Any]) -> Response[Validation]:
        """Every problem of the schedule as publishing the draft would make it, at once."""
        ctx = context_of(request)
        key_path = ctx.config.data_key_path
        return _json(await ctx.store.read(lambda conn: schedule.validate(conn, key_path)))

    @post("/schedule/publish", status_code=200, responses=problems(400, 401, 409, 422, 423, 503))
    async def schedule_publish(self, request: Request[Any, Any, Any]) -> Response[Published]:
        """Apply the whole draft as the next version (``{"reason"}``), or nothing: 423 ``frozen``,
        409 ``schedule-conflict`` (empty draft, or validate's errors)."""
        ctx = context_of(request)
        body = decode(await request.body(), ScheduleReasonIn)
        rid = request_id_of(request.scope)
        key_path = ctx.config.data_key_path
        return _json(
            await ctx.write(lambda conn: schedule.publish(conn, "admin-api", body.reason, key_path, rid))
        )

    @get("/schedule/versions", responses=problems(401, 503))
    async def schedule_versions(self, request: Request[Any, Any, Any]) -> Response[list[ScheduleVersion]]:
        """Every schedule version, 1 (the import) first: who, when, why, its changes and diff."""
        return _json(await context_of(request).store.read(schedule.versions))

    @post("/schedule/rollback", status_code=200, responses=problems(400, 401, 404, 409, 422, 423, 503))
    async def schedule_rollback(self, request: Request[Any, Any, Any]) -> Response[Published]:
        """Publish a copy of version ``{"version"}`` as the next one (``{"reason"}`` required)."""
        ctx = context_of(request)
        body = decode(await request.body(), RollbackIn)
        rid = request_id_of(request.scope)
        key_path = ctx.config.data_key_path
        return _json(
            await ctx.write(
                lambda conn: schedule.rollback(conn, body.version, "admin-api", body.reason, key_path, rid)
            )
        )

    @get("/sheets", responses=problems(401, 422))
    async def sheet_feed(
        self,
        request: Request[Any, Any, Any],
        after: FromQuery[int | None] = None,
        limit: FromQuery[int] = progress.FEED_LIMIT_DEFAULT,
    ) -> Response[SheetFeed]:
        return _json(
            await context_of(request).store.read(lambda conn: progress.sheet_feed(conn, after, limit))
        )

    @get("/entries/{entry_id:str}", responses=problems(401, 404))
    async def entry(self, request: Request[Any, Any, Any], entry_id: FromPath[str]) -> Response[EntryChains]:
        return _json(await context_of(request).store.read(lambda conn: progress.entry_chains(conn, entry_id)))

    @get("/entries/{entry_id:str}/participants", responses=problems(401, 404, 503))
    async def participants_masked(
        self, request: Request[Any, Any, Any], entry_id: FromPath[str]
    ) -> Response[Participants]:
        """The entry's participants masked to initials (no access record: nothing personal shown).
        The participants field of ``GET /entries/{entry_id}/personal``, kept at its documented path."""
        ctx = context_of(request)
        names = await data_key.read_with_key(
            ctx.store,
            ctx.config.data_key_path,
            lambda conn, key: personal_fields.mask(
                PARTICIPANTS, personal_fields.value(conn, key, entry_id, PARTICIPANTS)
            ),
        )
        return _json(Participants(entry_id=entry_id, participants=_names(names), masked=True))

    @post(
        "/entries/{entry_id:str}/participants/reveal",
        status_code=200,
        responses=problems(400, 401, 404, 422, 503),
    )
    async def participants_reveal(
        self, request: Request[Any, Any, Any], entry_id: FromPath[str]
    ) -> Response[Participants]:
        """The entry's participants in full; needs ``{"reason"}`` and writes one access record. The
        participants case of ``POST /entries/{entry_id}/personal/reveal``, kept at its documented path."""
        ctx = context_of(request)
        body = decode(await request.body(), RevealIn)
        rid = request_id_of(request.scope)
        names = await ctx.write(
            data_key.with_key(
                ctx.config.data_key_path,
                lambda conn, key: personal_fields.reveal(
                    conn, key, entry_id, PARTICIPANTS, "admin-api", body.reason, rid
                ),
            )
        )
        return _json(Participants(entry_id=entry_id, participants=_names(names), masked=False))

    @get("/entries/{entry_id:str}/personal", responses=problems(401, 404, 503))
    async def personal_masked(
        self, request: Request[Any, Any, Any], entry_id: FromPath[str]
    ) -> Response[PersonalOut]:
        """Every personal field of the entry: participants, then the columns the event package marks
        personal, masked (names to initials, other values to their first character and '•••'; null
        when the entry has none). No access record: nothing personal is shown."""
        ctx = context_of(request)
        fields = await data_key.read_with_key(
            ctx.store, ctx.config.data_key_path, lambda conn, key: personal_fields.masked(conn, key, entry_id)
        )
        return _json(PersonalOut(entry_id=entry_id, masked=True, fields=fields))

    @post(
        "/entries/{entry_id:str}/personal/reveal",
        status_code=200,
        responses=problems(400, 401, 404, 422, 503),
    )
    async def personal_reveal(
        self, request: Request[Any, Any, Any], entry_id: FromPath[str]
    ) -> Response[PersonalRevealOut]:
        """One personal field in full; needs ``{"field", "reason"}`` and writes exactly one
        ``personal.reveal`` access record (actor, entry, field, reason, request id; never the value).
        422 without a reason or for a field that is not personal in this event, 404 for no entry."""
        ctx = context_of(request)
        body = decode(await request.body(), PersonalRevealIn)
        rid = request_id_of(request.scope)
        shown = await ctx.write(
            data_key.with_key(
                ctx.config.data_key_path,
                lambda conn, key: personal_fields.reveal(
                    conn, key, entry_id, body.field, "admin-api", body.reason, rid
                ),
            )
        )
        return _json(PersonalRevealOut(entry_id=entry_id, field=body.field, value=shown, masked=False))

    @get("/alerts", responses=problems(401, 422))
    async def alerts(
        self, request: Request[Any, Any, Any], include_cleared: FromQuery[bool] = False
    ) -> Response[list[Alert]]:
        return _json(
            await context_of(request).store.read(lambda conn: alerts.list_alerts(conn, include_cleared))
        )

    @post("/alerts/{fingerprint:str}/ack", status_code=200, responses=problems(401, 404, 503))
    async def acknowledge_alert(
        self, request: Request[Any, Any, Any], fingerprint: FromPath[str]
    ) -> Response[Alert]:
        ctx = context_of(request)
        return _json(await ctx.write(lambda conn: alerts.acknowledge(conn, fingerprint, "admin-api")))

    @get("/audit", responses=problems(401, 422))
    async def audit_tail(
        self,
        request: Request[Any, Any, Any],
        limit: FromQuery[int] = 50,
        action: FromQuery[str | None] = None,
    ) -> Response[list[AuditRow]]:
        limit = max(1, min(limit, 1000))
        rows = await context_of(request).store.read(lambda conn: audit.tail(conn, limit, action))
        return _json(rows)

    @get("/uplink", responses=problems(401, 422))
    async def uplink(
        self, request: Request[Any, Any, Any], quarantined: FromQuery[int] = 50
    ) -> Response[UplinkAnswer]:
        """The uplink's state, backlog and last error, and the first ``quarantined`` quarantined records."""
        ctx = context_of(request)
        limit = max(0, min(quarantined, 1000))
        return _json(
            await ctx.store.read(lambda conn: uplink_state.uplink_answer(conn, ctx.config, utcnow(), limit))
        )

    @post("/uplink/sync", status_code=202, responses=problems(401, 409, 503))
    async def uplink_sync(self, request: Request[Any, Any, Any]) -> Response[SyncRequested]:
        """Ask the uplink to try now, whatever its backoff, open circuit or pause (409 when it is not
        configured). The answer comes back in ``GET /uplink``: ``last_attempt_at`` moves past
        ``requested_at``."""
        ctx = context_of(request)
        rid = request_id_of(request.scope)

        def ask(conn: sqlite3.Connection) -> str:
            if uplink_state.resolve_target(conn, ctx.config) is None:
                raise UplinkNotConfigured(
                    "set where the outbox goes with `venuebox uplink configure --url URL --token-file FILE`"
                )
            return uplink_state.request_sync(conn, "admin-api", utcnow(), rid)

        requested_at = await ctx.write(ask)
        if ctx.on_uplink_request is not None:
            ctx.on_uplink_request()
        return _json(SyncRequested(requested_at=requested_at), 202)

    @post("/uplink/retry", status_code=200, responses=problems(400, 401, 422, 503))
    async def uplink_retry(self, request: Request[Any, Any, Any]) -> Response[Requeued]:
        """Send quarantined records again (all, or ``record_ids``); answers how many were requeued."""
        ctx = context_of(request)
        raw = await request.body()
        body = decode(raw, UplinkRetryIn) if raw.strip() else UplinkRetryIn()
        rid = request_id_of(request.scope)
        requeued = await ctx.write(
            lambda conn: uplink_state.retry_quarantined(conn, body.record_ids, "admin-api", rid)
        )
        if ctx.on_uplink_request is not None:
            ctx.on_uplink_request()
        return _json(Requeued(requeued=requeued))

    @get("/export", responses=problems(401))
    async def export_status(self, request: Request[Any, Any, Any]) -> Response[ExportStatus]:
        """The export in progress (or the last one) and the USB keys the box sees now."""
        ctx = context_of(request)
        targets = await asyncio.to_thread(export.find_usb_targets)
        return _json(
            ExportStatus(
                job=ctx.export_job.view(),
                targets=[t.view() for t in targets],
            )
        )

    @post("/export", status_code=202, responses=problems(400, 401, 409, 422))
    async def export_start(self, request: Request[Any, Any, Any]) -> Response[ExportStarted]:
        """Start a USB export (to ``to``, or the one key found); refused at once (422) when there is
        no key or it is too small. Progress: ``GET /export``. Allowed while frozen: it only reads."""
        ctx = context_of(request)
        raw = await request.body()
        body = decode(raw, ExportIn) if raw.strip() else ExportIn()
        targets = [] if body.to else await asyncio.to_thread(export.find_usb_targets)
        target = export.choose_target(Path(body.to) if body.to else None, targets)
        if body.to:  # a folder typed in, not a key the box found: only where keys are mounted
            target = export.check_api_target(target, ctx.config.export_roots)
        await asyncio.to_thread(export.preflight, ctx.config, target)
        job = ctx.export_job
        job.start(target)
        rid = request_id_of(request.scope)

        def write(fn: Any) -> object:  # ctx.write, from the export's thread
            return ctx.store.submit(fn, timeout=ctx.config.write_timeout_s).result()

        async def run() -> None:
            try:
                await asyncio.to_thread(
                    export.export_and_audit,
                    ctx.config,
                    target,
                    "admin-api",
                    write,
                    progress=job.progress,
                    request_id=rid,
                    exported=lambda result: job.finish(result, None),
                )
            except Exception as exc:  # the job must end, whatever happened
                if job.state == "done":
                    raise  # exported and read back; only its audit record could not be written
                why = exc.detail if isinstance(exc, DomainError) else f"{type(exc).__name__}: {exc}"
                job.finish(None, why)

        ctx.background[:] = [task for task in ctx.background if not task.done()]
        ctx.background.append(asyncio.ensure_future(run()))
        return _json(ExportStarted(job=job.view()), 202)

    @get("/results", responses=problems(401, 404, 422, 503))
    async def results(
        self,
        request: Request[Any, Any, Any],
        session: FromQuery[str | None] = None,
        group: FromQuery[list[str] | None] = None,
    ) -> Response[ResultsOut]:
        """The current event's results (ranks those of the whole event), filtered to ``session`` and
        to the groups equal to every ``group`` (``FIELD=VALUE``, repeatable)."""
        wanted = results_out.parse_group(group or [])
        return _json(
            await context_of(request).store.read(
                lambda conn: results_out.results_out(conn, session=session, group=wanted)
            )
        )

    @get("/verify", responses=problems(401))
    async def verify(self, request: Request[Any, Any, Any]) -> Response[VerifyReport]:
        return _json(await context_of(request).store.read(chain.verify_chains))


def _names(value: personal_fields.Value) -> list[str]:
    """The participants field's value: a list of names (none when the entry has no value)."""
    assert not isinstance(value, str)  # participants are a list, never a column's text
    return value or []
