"""The tablet API (PROTOCOL.md v1): health, pairing, event download, sheets, heartbeats, and token
rotation (this project's addition)."""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath

from appliance.core import data_key
from appliance.core.box import get_box
from appliance.core.config import MAX_COMMENT_CHARS
from appliance.core.devices import rotate_token
from appliance.core.event import judge_event
from appliance.core.keys import pairing_key
from appliance.core.ledger import SheetReceipt, SheetSubmission, submit_batch
from appliance.core.pairing import redeem
from appliance.core.presence import record_heartbeat
from appliance.core.sessions import sign_off
from appliance.shared import errors as domain
from appliance.shared.protocol_names import API_PATH
from appliance.web.body import check_time, decode
from appliance.web.middleware import request_id_of
from appliance.web.responses import json_response as _json
from edge_api.context import context_of
from edge_api.errors import problem_for
from edge_api.responses import NO_STORE, not_modified, problems
from edge_api.schemas import (
    BatchIn,
    BatchItem,
    BatchOut,
    EventOut,
    Health,
    HeartbeatIn,
    HeartbeatOut,
    LedgerMark,
    PairIn,
    PairOut,
    SheetAnswer,
    SheetBatchIn,
    SheetIn,
    SignOffIn,
    SignOffOut,
    TokenOut,
)


def parse_sheet(raw: bytes, comment_max_chars: int = MAX_COMMENT_CHARS) -> SheetSubmission:
    """A sheet body -> SheetSubmission, or MalformedRequest / InvalidInput."""
    try:
        sheet = decode(raw, SheetIn)
    except domain.InvalidInput as exc:
        raise _name_the_value(raw, exc) from None
    return to_submission(sheet, comment_max_chars)


def to_submission(sheet: SheetIn, comment_max_chars: int = MAX_COMMENT_CHARS) -> SheetSubmission:
    """A decoded sheet -> SheetSubmission, after the checks msgspec cannot express: the box's own
    ``comment_max_chars`` (refused in the schema's words for its ceiling) and the time."""
    if sheet.comment is not None and len(sheet.comment) > comment_max_chars:
        message = f"must have at most {comment_max_chars} characters"
        raise domain.InvalidInput(f"comment: {message}", [{"field": "comment", "message": message}])
    errors: list[dict[str, str]] = []
    check_time("submitted_at", sheet.submitted_at, errors)
    if errors:
        raise domain.InvalidInput("submitted_at: " + errors[0]["message"], errors)
    return SheetSubmission(
        sheet_id=str(sheet.sheet_id),
        entry_id=sheet.entry_id,
        values=sheet.values,
        submitted_at=sheet.submitted_at,
        comment=sheet.comment,
        supersedes=str(sheet.supersedes) if sheet.supersedes else None,
    )


def _name_the_value(raw: bytes, exc: domain.InvalidInput) -> domain.InvalidInput:
    """msgspec says ``values[...]`` for a bad score; say which criterion instead."""
    if not exc.errors or not exc.errors[0]["field"].startswith("values["):
        return exc
    body = _lenient_json(raw)
    values = body.get("values") if isinstance(body, dict) else None
    errors = [
        {"field": f"values.{key}", "message": problem}
        for key, value in (values.items() if isinstance(values, dict) else ())
        if (problem := _not_a_score(value))
    ]
    if not errors:
        return exc
    return domain.InvalidInput(f"{errors[0]['field']}: {errors[0]['message']}", errors)


def _not_a_score(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "must be a number"
    if not math.isfinite(value):
        return "is out of range"
    return None


class TabletController(Controller):
    path = API_PATH  # what the mDNS TXT record advertises as ``api``
    tags = ["tablet"]

    @get("/health", summary="Is the box up, which event, is it frozen", responses=problems(429, 431))
    async def health(self, request: Request[Any, Any, Any]) -> Response[Health]:
        ctx = context_of(request)
        try:
            box = ctx.store.query(get_box)
        except (sqlite3.Error, domain.DomainError):
            box = None
        # The store's own memory of damage first: it holds when the box row cannot be read, or the
        # watchdog's freeze could not be written to the damaged file.
        if ctx.store.damaged is not None:
            # Every write is refused, as frozen: a tablet keeps its sheets.
            body = Health(
                status="degraded",
                box=ctx.box_id,
                event=box["event_id"] if box else None,
                frozen=True,
                version=ctx.version,
                name=box["name"] if box else None,
                database="damaged",
            )
        elif box is None:
            body = Health(status="degraded", box=ctx.box_id, event=None, frozen=False, version=ctx.version)
        else:
            body = Health(
                status="ok",
                box=box["box_id"],
                event=box["event_id"],
                frozen=bool(box["frozen"]),
                version=ctx.version,
                name=box["name"],
            )
        return _json(body)

    @post(
        "/pair",
        summary="Trade a one-time pairing code for a device token",
        status_code=201,
        responses=problems(400, 403, 408, 413, 422, 429, 431, 503),
        cache_control=NO_STORE,
    )
    async def pair(self, request: Request[Any, Any, Any]) -> Response[PairOut]:
        ctx = context_of(request)
        address = request.client.host if request.client else "unknown"
        ctx.pair_limits.take(address, "pairing attempts from this address")
        await ctx.pair_flood.admit(address)
        body = decode(await request.body(), PairIn)
        rid = request_id_of(request.scope)
        ttl_h = ctx.config.device_token_ttl_h
        try:
            paired = await ctx.write(
                lambda conn: redeem(
                    conn, body.code, body.device_name, address, rid, ttl_h, key=pairing_key(ctx.config)
                )
            )
        except domain.PairingRefused:
            await ctx.pair_flood.failed(address)
            raise
        return _json({**paired, "tls_fingerprint": ctx.tls_fingerprint}, 201)

    @post(
        "/token",
        summary="Rotate this tablet's token: a new one, with a new expiry; the old one stops at once",
        status_code=200,
        responses=problems(401, 408, 413, 429, 431, 503),
        cache_control=NO_STORE,
    )
    async def rotate(self, request: Request[Any, Any, Any]) -> Response[TokenOut]:
        ctx = context_of(request)
        device = ctx.device(request)
        rid = request_id_of(request.scope)
        ttl_h = ctx.config.device_token_ttl_h
        rotated = await ctx.write(lambda conn: rotate_token(conn, device, ttl_h, rid))
        ctx.forget_token(request)
        return _json(rotated)

    @get(
        "/event",
        summary="The event as this judge needs it (ETag / If-None-Match)",
        responses={
            304: ResponseSpec(None, description="Not modified since the ETag sent"),
            **problems(401, 429, 431, 503),
        },
    )
    async def event(self, request: Request[Any, Any, Any]) -> Response[EventOut]:
        ctx = context_of(request)
        device = ctx.device(request)
        # The key is read only when the event lets tablets see participants (then they are in the body,
        # so the ETag changes with them).
        key_path = ctx.config.data_key_path
        view = await data_key.read_retrying(
            ctx.store, key_path, lambda conn: judge_event(conn, device, key_path)
        )
        content = msgspec.json.encode(view)
        etag = '"' + hashlib.sha256(content).hexdigest()[:32] + '"'
        # No copy anywhere: the body names the judge and holds their sheets, and participants' names
        # when the event lets tablets see them. The ETag still saves a tablet the download.
        headers = {"ETag": etag, "Cache-Control": NO_STORE.to_header()}
        # The body goes out as encoded above (the ETag hashes these bytes); EventOut is its schema.
        answer: Response[Any]
        if not_modified(request.headers.get("if-none-match", ""), etag):
            answer = Response(content=b"", status_code=304, headers=headers)
        else:
            answer = Response(
                content=content, status_code=200, media_type="application/json", headers=headers
            )
        return answer

    @post(
        "/sheets",
        summary="Submit one score sheet",
        status_code=201,
        responses={
            200: ResponseSpec(
                SheetAnswer, description="Replay: the sheet was already stored", generate_examples=False
            ),
            **problems(400, 401, 403, 408, 409, 413, 422, 423, 429, 431, 503),
        },
    )
    async def submit(self, request: Request[Any, Any, Any]) -> Response[SheetAnswer]:
        ctx = context_of(request)
        device = ctx.device(request)
        sheet = parse_sheet(await request.body(), ctx.config.comment_max_chars)
        receipt = await ctx.sheets.submit(device, sheet)
        if receipt.status == 201 and ctx.metrics is not None:
            ctx.metrics.sheets_accepted.inc()
        answer = SheetAnswer(**msgspec.structs.asdict(receipt.sheet), ledger=LedgerMark(**ctx.ledger_mark()))
        return _json(answer, receipt.status)

    @post(
        "/sheets/batch",
        summary="Submit up to 500 sheets; each item answered as the single call would",
        status_code=200,
        responses=problems(400, 401, 408, 413, 422, 423, 429, 431, 503),
    )
    async def batch(self, request: Request[Any, Any, Any]) -> Response[BatchOut]:
        ctx = context_of(request)
        device = ctx.device(request)
        body = await request.body()
        batch = decode(body, BatchIn)
        limit = ctx.config.batch_max_sheets
        if len(batch.sheets) > limit:
            raise domain.InvalidInput(
                f"a batch holds at most {limit} sheets, got {len(batch.sheets)}",
                [{"field": "sheets", "message": f"must have at most {limit} items"}],
            )
        rid = request_id_of(request.scope)
        parsed, sheet_ids = _parse_batch(body, batch, ctx.config.comment_max_chars)
        outcomes = await ctx.write(lambda conn: submit_batch(conn, device, parsed), weight=len(parsed))
        if ctx.metrics is not None:
            ctx.metrics.sheets_accepted.inc(
                sum(isinstance(o, SheetReceipt) and o.status == 201 for o in outcomes)
            )
        results: list[BatchItem] = []
        for sheet_id, outcome in zip(sheet_ids, outcomes, strict=True):
            if isinstance(outcome, SheetReceipt):
                results.append(BatchItem(sheet_id=sheet_id, status=outcome.status, sheet=outcome.sheet))
            else:
                problem, _ = problem_for(outcome, rid, ctx.config.freeze_retry_after_s)
                results.append(BatchItem(sheet_id=sheet_id, status=problem.status, problem=problem))
        return _json(BatchOut(results=results, ledger=LedgerMark(**ctx.ledger_mark())))

    @post(
        "/sessions/{session_id:str}/final",
        summary="The judge signs a session off: their sheets for it become read-only (idempotent)",
        status_code=200,
        responses=problems(400, 401, 403, 404, 408, 413, 423, 429, 431, 503),
    )
    async def final(self, request: Request[Any, Any, Any], session_id: FromPath[str]) -> Response[SignOffOut]:
        ctx = context_of(request)
        device = ctx.device(request)
        body = await request.body()
        if body.strip():  # empty, or {}: the sign-off has nothing to say
            decode(body, SignOffIn)
        rid = request_id_of(request.scope)
        signed = await ctx.write(lambda conn: sign_off(conn, device, session_id, rid))
        return _json(SignOffOut(**signed))

    @post(
        "/heartbeat",
        summary="Tablet heartbeat; the answer carries freeze state",
        status_code=200,
        responses=problems(400, 401, 408, 413, 422, 429, 431, 503),
    )
    async def heartbeat(self, request: Request[Any, Any, Any]) -> Response[HeartbeatOut]:
        ctx = context_of(request)
        device = ctx.device(request)
        beat = decode(await request.body(), HeartbeatIn)
        errors: list[dict[str, str]] = []
        check_time("sent_at", beat.sent_at, errors)
        if errors:
            raise domain.InvalidInput("sent_at: " + errors[0]["message"], errors)
        address = request.client.host if request.client else None
        state = await ctx.write(
            lambda conn: record_heartbeat(
                conn,
                device,
                beat.sent_at,
                beat.battery,
                beat.app_version,
                beat.queue_depth,
                address,
                ctx.config.heartbeat_history_per_device,
            )
        )
        return _json(
            HeartbeatOut(
                server_time=state["server_time"],
                frozen=state["frozen"],
                freeze_reason=state["freeze_reason"] if state["frozen"] else None,
                next_heartbeat_s=ctx.config.heartbeat_interval_s,
                ledger=LedgerMark(**ctx.ledger_mark()),
                event_version=state["event_version"],
            )
        )


def _parse_batch(
    body: bytes, batch: BatchIn, comment_max_chars: int
) -> tuple[list[SheetSubmission | domain.DomainError], list[str | None]]:
    """Each item as the single call would read it, plus its sheet_id for the answer. The usual
    case, every item well-formed, is decoded in one pass; otherwise item by item."""
    try:
        sheets = msgspec.json.decode(body, type=SheetBatchIn).sheets
    except msgspec.ValidationError:
        sheets = None
    parsed: list[SheetSubmission | domain.DomainError] = []
    sheet_ids: list[str | None] = []
    for index, raw in enumerate(batch.sheets):
        try:
            sheet = (
                to_submission(sheets[index], comment_max_chars)
                if sheets is not None
                else parse_sheet(bytes(raw), comment_max_chars)
            )
        except domain.DomainError as exc:
            parsed.append(exc)
            sheet_ids.append(_readable_sheet_id(bytes(raw)))
        else:
            parsed.append(sheet)
            sheet_ids.append(sheet.sheet_id)
    return parsed, sheet_ids


def _readable_sheet_id(raw: bytes) -> str | None:
    # A sheet that failed validation may still carry a readable id; the tablet needs it to match
    # the answer to its queued sheet.
    value = _lenient_json(raw)
    sheet_id = value.get("sheet_id") if isinstance(value, dict) else None
    return sheet_id if isinstance(sheet_id, str) and len(sheet_id) <= 100 else None


def _lenient_json(raw: bytes) -> Any:
    """A refused body read again to name what is wrong in it, or None. The standard library reads a
    number beyond a float (1e400) as infinity where msgspec refuses it."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None
