"""JSON-lines logging: one parseable line per record, request ids attached, secrets and names gone."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from appliance.shared.logs import (
    REDACTED,
    RedactingFilter,
    bind_request_id,
    current_request_id,
    redact_text,
    reset_request_id,
    setup_logging,
)
from appliance.shared.times import parse_rfc3339
from appliance.web.middleware import LogContextMiddleware, RequestIdMiddleware

log = logging.getLogger("venuebox.test")


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    handler = setup_logging("DEBUG", stream=stream)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_record_is_one_json_line_with_the_standard_fields(output: io.StringIO) -> None:
    log.info("box %s ready", "venuebox-1a2b")
    log.warning("disk %d%% full", 91)

    first, second = lines(output)
    assert first["msg"] == "box venuebox-1a2b ready"
    assert first["level"] == "INFO"
    assert first["logger"] == "venuebox.test"
    assert first["ts"].endswith("Z")
    offset = parse_rfc3339(first["ts"]).utcoffset()
    assert offset is not None and offset.total_seconds() == 0
    assert second["msg"] == "disk 91% full"
    assert second["level"] == "WARNING"


def test_extra_fields_appear_as_top_level_keys(output: io.StringIO) -> None:
    log.info("sheets stored", extra={"count": 12, "judge_id": "J3", "elapsed_s": 0.04})

    (line,) = lines(output)
    assert line["count"] == 12
    assert line["judge_id"] == "J3"
    assert line["elapsed_s"] == 0.04


def test_tokens_bearer_headers_and_participant_names_are_redacted(output: io.StringIO) -> None:
    device_token = secrets.token_urlsafe(32)
    admin_token = secrets.token_urlsafe(32)
    log.info("paired tablet, token %s", device_token)
    log.warning("rejected request with Authorization: Bearer %s", admin_token)
    log.info(
        "entry updated",
        extra={
            "token": device_token,
            "participants": "Ana López",
            "headers": {"Authorization": f"Bearer {admin_token}", "Accept": "application/json"},
            "code": "K7QX-M2PA",
        },
    )
    log.info('request body {"code": "K7QX-M2PA", "device_name": "tablet 1"} from ?code=K7QXM2PA')

    text = output.getvalue()
    for secret in (device_token, admin_token, "Ana", "L\\u00f3pez", "López", "K7QX", "M2PA"):
        assert secret not in text
    paired, rejected, updated, body = lines(output)
    assert paired["msg"] == f"paired tablet, token {REDACTED}"
    assert rejected["msg"] == f"rejected request with Authorization: Bearer {REDACTED}"
    assert updated["token"] == updated["participants"] == updated["code"] == REDACTED
    assert updated["headers"] == {"Authorization": REDACTED, "Accept": "application/json"}
    assert '"device_name": "tablet 1"' in body["msg"]


def test_hashes_uuids_and_identifiers_are_not_mistaken_for_tokens() -> None:
    digest = hashlib.sha256(b"sheet").hexdigest()
    sheet_id = str(uuid.uuid4())
    name = "venuebox_http_request_duration_seconds_bucket"
    text = f"head {digest} sheet {sheet_id} metric {name} hex {uuid.uuid4().hex} status_code=404"
    assert redact_text(text) == text


def test_token_shaped_strings_are_redacted_wherever_they_appear() -> None:
    for _ in range(200):
        token = secrets.token_urlsafe(32)
        assert token not in redact_text(f"GET /x?t={token}&next=1 ({token}) '{token}'")


def test_request_id_from_the_context_is_on_every_line(output: io.StringIO) -> None:
    log.info("before")
    token = bind_request_id("req-42")
    try:
        log.info("during")
    finally:
        reset_request_id(token)
    log.info("after")

    before, during, after = lines(output)
    assert "request_id" not in before
    assert during["request_id"] == "req-42"
    assert "request_id" not in after


def test_middleware_binds_the_request_id_for_the_whole_request(output: io.StringIO) -> None:
    seen: list[str | None] = []

    async def endpoint(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(current_request_id())
        log.info("handling %s", scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = RequestIdMiddleware(LogContextMiddleware(endpoint))

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://box") as client:
            return await client.get("/api/v1/health", headers={"X-Request-ID": "tablet-7:0042"})

    response = asyncio.run(call())
    assert response.headers["x-request-id"] == "tablet-7:0042"
    assert seen == ["tablet-7:0042"]
    (line,) = [line for line in lines(output) if line["logger"] == "venuebox.test"]
    assert line["request_id"] == "tablet-7:0042"
    assert current_request_id() is None


def test_exception_traceback_is_one_redacted_json_line(output: io.StringIO) -> None:
    token = secrets.token_urlsafe(32)
    try:
        raise ValueError(f"device token {token} not accepted")
    except ValueError:
        log.exception("pairing failed")

    text = output.getvalue()
    assert text.count("\n") == 1
    (line,) = lines(output)
    assert line["level"] == "ERROR"
    assert line["msg"] == "pairing failed"
    assert line["exc"].startswith("Traceback (most recent call last):")
    assert "ValueError: device token [redacted] not accepted" in line["exc"]
    assert token not in text


def test_uvicorn_messages_go_through_the_same_handler(output: io.StringIO) -> None:
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 4242)

    (line,) = lines(output)
    assert line["logger"] == "uvicorn.error"
    assert line["msg"] == "Started server process [4242]"


def test_setting_up_twice_does_not_duplicate_lines(output: io.StringIO) -> None:
    stream = io.StringIO()
    handler = setup_logging("INFO", stream=stream)
    try:
        log.info("once")
        log.debug("below the level")
    finally:
        logging.getLogger().removeHandler(handler)

    assert output.getvalue() == ""
    assert [line["msg"] for line in lines(stream)] == ["once"]


def test_journal_priority_prefix_when_asked() -> None:
    stream = io.StringIO()
    handler = setup_logging("INFO", stream=stream, level_prefix=True)
    try:
        log.error("outbox stuck")
        log.info("outbox drained")
    finally:
        logging.getLogger().removeHandler(handler)

    error, info = stream.getvalue().splitlines()
    assert error.startswith("<3>{") and json.loads(error[3:])["msg"] == "outbox stuck"
    assert info.startswith("<6>{")


def test_redacting_filter_works_on_a_plain_handler() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s password=%(password)s"))
    handler.addFilter(RedactingFilter())
    plain = logging.getLogger("venuebox.test.plain")
    plain.addHandler(handler)
    plain.propagate = False
    try:
        plain.warning("header Authorization: Bearer %s", "abc.def.ghi", extra={"password": "hunter2"})
    finally:
        plain.removeHandler(handler)
        plain.propagate = True

    assert stream.getvalue() == f"header Authorization: Bearer {REDACTED} password={REDACTED}\n"
