"""Limits on the tablet port against a real daemon: per-address rate limits set by environment,
oversized headers, a client that trickles its request head or body, idle connections. Each answer
is problem+json with a request id, and nothing is stored for a refused request."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningBox, make_box, panel_entries, venuebox

pytestmark = pytest.mark.timeout(90)


def sheet_count(box: RunningBox) -> int:
    conn = sqlite3.connect(box.config.db_path)
    try:
        return conn.execute("SELECT count(*) FROM sheets").fetchone()[0]
    finally:
        conn.close()


def host_port(box: RunningBox) -> tuple[str, int]:
    url = httpx.URL(box.tablet_url)
    assert url.host and url.port
    return url.host, url.port


@pytest.fixture
def box(tmp_path: Path) -> Iterator[RunningBox]:
    config = make_box(
        tmp_path / "box",
        device_rate_per_s=1000.0,
        device_burst=1000,
        header_timeout_s=1.0,
        body_timeout_s=1.0,
        keep_alive_s=1.0,
        max_header_bytes=4096,
    )
    # The per-address limit comes from the environment, as a venue tech would set it in the unit.
    running = RunningBox(
        config, env={"VENUEBOX_ADDRESS_RATE_PER_S": "2", "VENUEBOX_ADDRESS_BURST": "5"}
    ).start()
    yield running
    running.stop()


def test_one_address_flooding_gets_429_with_retry_after(box: RunningBox) -> None:
    with box.client() as client:
        answers = [client.get("/api/v1/health") for _ in range(12)]
    statuses = [a.status_code for a in answers]
    assert statuses[:5] == [200] * 5  # the burst
    limited = [a for a in answers if a.status_code == 429]
    assert len(limited) >= 6
    first = limited[0]
    assert first.headers["content-type"] == "application/problem+json"
    assert int(first.headers["retry-after"]) >= 1
    assert first.json()["request_id"] == first.headers["x-request-id"]
    assert "address" in first.json()["detail"]
    # The bucket refills at the configured rate.
    time.sleep(1.1)
    with box.client() as client:
        assert client.get("/api/v1/health").status_code == 200


def test_oversized_headers_get_431_or_are_cut_off_and_nothing_is_stored(box: RunningBox) -> None:
    # Headers a little over the cap: refused in words by the API.
    with box.client() as client:
        big = client.get("/api/v1/health", headers={"X-Padding": "a" * 4200})
    assert big.status_code == 431, big.text
    assert big.headers["content-type"] == "application/problem+json" and big.json()["request_id"]
    # Far over, in one go: refused the same way, whether the parser or the API sees it first (a
    # head trickled in pieces hits h11's own bound on what it buffers).
    host, port = host_port(box)
    with socket.create_connection((host, port), timeout=5) as raw:
        raw.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 64_000 + b"\r\n\r\n")
        head = raw.recv(200)
    assert head.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400")) or head == b"", head
    assert sheet_count(box) == 0


def test_a_client_trickling_its_request_head_is_cut_off(box: RunningBox) -> None:
    host, port = host_port(box)
    with socket.create_connection((host, port), timeout=10) as raw:
        started = time.monotonic()
        # One byte every 0.3 s: uvicorn's keep-alive timer would be reset by each of them.
        try:
            for byte in b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40:
                raw.sendall(bytes([byte]))
                time.sleep(0.3)
                if time.monotonic() - started > 6:
                    break
            closed_after = None
            raw.settimeout(3)
            data = raw.recv(100)
            if data == b"":
                closed_after = time.monotonic() - started
        except (BrokenPipeError, ConnectionResetError):
            closed_after = time.monotonic() - started
    assert closed_after is not None and closed_after < 4, closed_after


def test_a_client_trickling_its_body_gets_408_and_nothing_is_stored(box: RunningBox) -> None:
    tablet = box.pair("J1")
    entry = next(e["entry_id"] for s in tablet.event()["sessions"] if s["on_panel"] for e in s["entries"])
    sheet = json.dumps(tablet.sheet_for(entry)).encode()
    host, port = host_port(box)
    with socket.create_connection((host, port), timeout=10) as raw:
        head = (
            f"POST /api/v1/sheets HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {tablet.pairing['token']}\r\nContent-Length: {len(sheet)}\r\n\r\n"
        ).encode()
        raw.sendall(head + sheet[:10])
        raw.settimeout(5)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = raw.recv(4096)
            if not chunk:
                break
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 408"), answer[:300]
    body = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert body["status"] == 408 and body["request_id"] and "nothing was stored" in body["detail"]
    assert sheet_count(box) == 0
    # The same sheet sent at normal speed is stored.
    with tablet.client() as client:
        assert (
            client.post(
                "/api/v1/sheets", content=sheet, headers={"Content-Type": "application/json"}
            ).status_code
            == 201
        )


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(box: RunningBox) -> None:
    tablet = box.pair("J1")
    host, port = host_port(box)
    with socket.create_connection((host, port), timeout=10) as raw:
        raw.sendall(
            (
                f"POST /api/v1/sheets HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {tablet.pairing['token']}\r\nContent-Length: 50000000\r\n\r\n"
            ).encode()
        )
        raw.settimeout(5)
        answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sheet_count(box) == 0


def test_idle_keep_alive_connections_are_closed(box: RunningBox) -> None:
    host, port = host_port(box)
    with socket.create_connection((host, port), timeout=10) as raw:
        raw.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        raw.settimeout(5)
        first = b""
        while not first.endswith(b"}"):
            first += raw.recv(4096)
        assert first.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        rest = raw.recv(4096)  # nothing more is sent: the box closes the idle connection
        assert rest == b"" and time.monotonic() - started < 4


def test_limits_in_the_environment_are_checked(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box", package=None)
    done = venuebox(config, "status", env={"VENUEBOX_ADDRESS_BURST": "0"})
    assert done.returncode != 0
    assert "address_burst" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def nested(depth: int) -> str:
    """JSON with objects and arrays ``depth`` levels inside each other, alternately."""
    return '{"a": [' * (depth // 2) + "1" + "]}" * (depth // 2)


def with_json(body: dict, text: str) -> bytes:
    """``body`` encoded, its "HERE" string replaced by the JSON ``text``."""
    return json.dumps(body).replace('"HERE"', text).encode()


def test_deeply_nested_json_anywhere_is_a_400_never_a_500(running_box: RunningBox) -> None:
    tablet = running_box.pair("J1")
    sheet = tablet.sheet_for(panel_entries(tablet.event())[0])
    deep = nested(10_000)
    tablet_bodies = {
        "sheet, as values": ("/api/v1/sheets", with_json({**sheet, "values": "HERE"}, deep)),
        "sheet, as a score": ("/api/v1/sheets", with_json({**sheet, "values": {"technique": "HERE"}}, deep)),
        "sheet, an unknown field": ("/api/v1/sheets", with_json({**sheet, "extra": "HERE"}, deep)),
        "batch, as an item": ("/api/v1/sheets/batch", with_json({"sheets": [sheet, "HERE"]}, deep)),
        "batch, in an item's values": (
            "/api/v1/sheets/batch",
            with_json({"sheets": [sheet, {**sheet, "values": "HERE"}]}, deep),
        ),
        "batch, in an item's unknown field": (
            "/api/v1/sheets/batch",
            with_json({"sheets": [{**sheet, "extra": "HERE"}]}, deep),
        ),
        "heartbeat": ("/api/v1/heartbeat", with_json({"sent_at": "HERE"}, deep)),
        "pairing": ("/api/v1/pair", with_json({"code": "ABCD-EFGH", "device_name": "HERE"}, deep)),
    }
    admin_bodies = {
        "freeze": ("/admin/v1/freeze", with_json({"reason": "HERE"}, deep)),
        "pairing code": ("/admin/v1/pairing-codes", with_json({"judge_id": "J1", "ttl_s": "HERE"}, deep)),
        "reveal": ("/admin/v1/entries/101/personal/reveal", with_json({"field": "HERE"}, deep)),
    }
    answers = {}
    with tablet.client() as client:
        for what, (path, body) in tablet_bodies.items():
            answers[what] = client.post(path, content=body, headers={"Content-Type": "application/json"})
    with running_box.admin() as admin:
        for what, (path, body) in admin_bodies.items():
            answers[what] = admin.post(path, content=body, headers={"Content-Type": "application/json"})
    for what, answer in answers.items():
        assert answer.status_code == 400, (what, answer.status_code, answer.text[:300])
        assert answer.headers["content-type"] == "application/problem+json", what
        problem = answer.json()
        assert problem["type"] == "/problems/malformed-request", what
        assert problem["request_id"] == answer.headers["x-request-id"] and "32 levels" in problem["detail"]
    assert sheet_count(running_box) == 0
    with running_box.admin() as admin:
        assert admin.get("/admin/v1/status").json()["freeze"]["frozen"] is False
    # The box answered each of them as a refusal: no traceback, no recursion in its log.
    log = running_box.log_path.read_text() if running_box.log_path else ""
    assert "RecursionError" not in log and "unhandled error" not in log
    # It goes on taking sheets.
    with tablet.client() as client:
        stored = client.post("/api/v1/sheets/batch", json={"sheets": [sheet]}).json()["results"]
    assert [r["status"] for r in stored] == [201]


def test_nesting_up_to_the_limit_is_read_as_usual(running_box: RunningBox) -> None:
    """32 levels is the limit (docs/protocol.md): a sheet (1 level) whose unknown field nests 31
    more is refused for what it says, 422; one level more is 400, before it is read."""
    tablet = running_box.pair("J1")
    sheet = tablet.sheet_for(panel_entries(tablet.event())[0])
    with tablet.client() as client:
        at_limit, past_it = (
            client.post(
                "/api/v1/sheets",
                content=with_json({**sheet, "extra": "HERE"}, "[" * depth + "]" * depth),
                headers={"Content-Type": "application/json"},
            )
            for depth in (31, 32)
        )
    assert at_limit.status_code == 422 and at_limit.json()["errors"][0]["field"] == "extra", at_limit.text
    assert past_it.status_code == 400 and past_it.json()["type"] == "/problems/malformed-request"
