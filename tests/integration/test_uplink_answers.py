"""The box's uplink against receivers that answer as docs/protocol.md allows, or not quite: a real
HTTP server on loopback stands in for the cloud (a receiver whose clock is an hour ahead, one that
answers 201 Created, one that replays an answer the box cannot read), in front of a real receiver
process where records must really be stored. The box is the real CLI and the real daemon."""

from __future__ import annotations

import email.utils
import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from appliance.core.config import Config
from tests.conftest import RunningBox, box_id_of, make_box, venuebox, wait_for
from tests.integration.test_uplink import uplink
from tests.receiver_process import RunningReceiver, add_box
from uplink.protocol import (
    BATCH_KEY_PATTERN,
    CHECK_KEY_PATTERN,
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    BadSignature,
    StaleSignature,
    verify_signature,
)
from uplink.worker import BAD_ANSWER_TRIES

AHEAD_S = 3600  # the cloud's clock, an hour ahead of the box's

Answer = tuple[int, dict[str, str], bytes]


@dataclass(frozen=True)
class Seen:
    """One request as the stand-in cloud got it."""

    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes

    @property
    def key(self) -> str:
        return self.headers[IDEMPOTENCY_HEADER.lower()]

    @property
    def signed_at(self) -> int:
        return int(self.headers[SIGNATURE_HEADER.lower()].split(",")[0].removeprefix("t="))

    def record_ids(self) -> list[str]:
        return [r["id"] for r in json.loads(self.body)["records"]]


class StandInCloud:
    """A real HTTP/1.1 server on 127.0.0.1 whose every POST is answered by ``answer`` (status,
    headers, body: exactly what goes on the wire, no header added but Content-Length)."""

    def __init__(self, answer: Callable[[Seen], Answer]) -> None:
        self.answer = answer
        self.seen: list[Seen] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen = Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                owner.seen.append(seen)
                status, headers, content = owner.answer(seen)
                self.send_response_only(status)
                for name, value in (headers | {"Content-Length": str(len(content))}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> StandInCloud:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def http_date(at: float) -> str:
    return email.utils.formatdate(at, usegmt=True)


def problem(status: int, slug: str, detail: str, at: float) -> Answer:
    body = {"type": f"/problems/{slug}", "title": slug, "status": status, "detail": detail}
    headers = {"Content-Type": "application/problem+json", "Date": http_date(at)}
    return status, headers, json.dumps(body).encode()


def forward(receiver: RunningReceiver, seen: Seen) -> Answer:
    """The request, as the box sent it, to the real receiver process; its answer."""
    names = ("authorization", "content-type", IDEMPOTENCY_HEADER.lower(), SIGNATURE_HEADER.lower())
    with receiver.client() as client:
        got = client.post(seen.path, content=seen.body, headers={n: seen.headers[n] for n in names})
    headers = {"Content-Type": got.headers["content-type"], "Date": got.headers["date"]}
    return got.status_code, headers, got.content


def uplinked_to(tmp_path: Path, url: str, token: str | None = None, **settings: Any) -> Config:
    """A box (never started) whose uplink goes to ``url`` (config keys), with quick retries; its
    token is ``token``, or one the test's receiver issues when the caller writes it later."""
    token_file = tmp_path / "uplink.token"
    quick = {
        "uplink_poll_s": 0.1,
        "uplink_backoff_base_s": 0.2,
        "uplink_backoff_cap_s": 1.0,
        "uplink_breaker_failures": 3,
        "uplink_read_timeout_s": 3.0,
        "status_interval_s": 0.5,
    }
    config = make_box(
        tmp_path / "box", uplink_url=url, uplink_token_file=str(token_file), **(quick | settings)
    )
    token_file.write_text((token or "a-token-for-the-stand-in-cloud") + "\n")
    token_file.chmod(0o600)
    return config


def outbox_ids(config: Config) -> list[str]:
    conn = sqlite3.connect(config.db_path)
    try:
        return [r[0] for r in conn.execute("SELECT record_id FROM outbox ORDER BY seq")]
    finally:
        conn.close()


def status_json(config: Config) -> dict[str, Any]:
    shown = venuebox(config, "uplink", "status", "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


# -- a receiver whose clock is an hour ahead (item: sync from a paused uplink) ----------------------


class SkewedCloud:
    """A receiver that checks the box's token and signature as the protocol says, against its own
    clock, an hour ahead; it answers 401 ``signature-clock-skew`` with its time in ``Date``, as
    the reference receiver does. ``knows_box`` False: it refuses the token (the receiver side is
    not set up yet). It keeps what it acks."""

    def __init__(self, token: str, detail: str = "the signature time is an hour off") -> None:
        self.token = token
        self.detail = detail
        self.knows_box = True
        self.send_date = True
        self.stored: dict[str, bytes] = {}
        self.cloud = StandInCloud(self.answer)

    def answer(self, seen: Seen) -> Answer:
        now = time.time() + AHEAD_S
        if not self.knows_box:
            return problem(401, "uplink-unauthenticated", "no such box", now)
        try:
            verify_signature(self.token, seen.headers.get(SIGNATURE_HEADER.lower()), seen.body, now)
        except StaleSignature:
            status, headers, body = problem(401, "signature-clock-skew", self.detail, now)
            return status, (headers if self.send_date else {"Content-Type": headers["Content-Type"]}), body
        except BadSignature as exc:
            return problem(401, "uplink-unauthenticated", str(exc), now)
        for record in json.loads(seen.body)["records"]:
            self.stored.setdefault(record["id"], json.dumps(record).encode())
        ack = {"acked": seen.record_ids(), "rejected": []}
        return 200, {"Content-Type": "application/json", "Date": http_date(now)}, json.dumps(ack).encode()


@pytest.fixture
def skewed() -> Iterator[SkewedCloud]:
    cloud = SkewedCloud("the-token-this-cloud-issued")
    cloud.cloud.start()
    yield cloud
    cloud.cloud.stop()


def test_sync_from_a_paused_uplink_resends_at_once_with_the_receivers_clock(
    tmp_path: Path, skewed: SkewedCloud
) -> None:
    config = uplinked_to(tmp_path, skewed.cloud.url, skewed.token)
    skewed.knows_box = False
    refused = venuebox(config, "uplink", "sync")
    assert refused.returncode == 1
    assert "refused the uplink credentials (401)" in refused.stderr
    assert status_json(config)["state"] == "paused"

    # The cloud team adds the box; the box's clock is an hour behind the cloud's.
    skewed.knows_box = True
    tried = len(skewed.cloud.seen)
    synced = venuebox(config, "uplink", "sync")
    assert synced.returncode == 0, synced.stderr
    assert "backlog   0 records" in synced.stdout
    skew, resent = skewed.cloud.seen[tried : tried + 2]
    assert abs(skew.signed_at - time.time()) < 60  # the box's own clock: refused
    assert abs(resent.signed_at - (time.time() + AHEAD_S)) < 60  # the cloud's: taken
    assert (resent.key, resent.body) == (skew.key, skew.body)  # the same batch, at once
    assert set(skewed.stored) == set(outbox_ids(config))
    view = status_json(config)
    assert view["state"] != "paused" and view["backlog"] == 0 and not view["paused_reason"]


def test_sync_through_a_running_daemon_resends_a_paused_uplink_with_the_receivers_clock(
    tmp_path: Path, skewed: SkewedCloud
) -> None:
    config = uplinked_to(tmp_path, skewed.cloud.url, skewed.token)
    skewed.knows_box = False
    box = RunningBox(config).start()
    try:
        wait_for("paused", lambda: uplink(box)["state"] == "paused")
        skewed.knows_box = True
        queued = outbox_ids(config)
        started = time.monotonic()
        synced = venuebox(config, "uplink", "sync", "--wait", "20")
        assert synced.returncode == 0, synced.stderr
        assert time.monotonic() - started < 15  # it did not wait for --wait to run out
        assert set(queued) <= set(skewed.stored)  # exit 0: what was queued got through
        view = uplink(box)
        assert view["state"] != "paused" and not view["paused_reason"]
        wait_for("all delivered", lambda: uplink(box)["backlog"] == 0)
        assert set(skewed.stored) == set(outbox_ids(config))
    finally:
        box.stop()


def test_sync_that_cannot_get_through_exits_1_with_one_escaped_line_saying_what_to_do(
    tmp_path: Path,
) -> None:
    # A receiver that refuses the time and gives none to sign with (no Date), and whose words
    # would clear the terminal and start a second line if printed as sent.
    cloud = SkewedCloud("the-token-this-cloud-issued", detail="clock\x1b[2J\x1b]0;owned\x07\nsecond line")
    cloud.send_date = False
    cloud.cloud.start()
    try:
        config = uplinked_to(tmp_path, cloud.cloud.url, cloud.token)
        synced = venuebox(config, "uplink", "sync")
    finally:
        cloud.cloud.stop()
    assert synced.returncode == 1
    [line] = synced.stderr.splitlines()
    assert line.startswith(
        "venuebox: error: uplink sync did not get through: the receiver refused the signature time: "
        "the box's clock is off: clock\\u001b[2J\\u001b]0;owned\\u0007\\u000asecond line. "
        "Set the box's clock (`timedatectl`)"
    )
    assert "records stay queued on the box" in line
    assert "\x1b" not in synced.stdout + synced.stderr and "\x07" not in synced.stdout
    assert cloud.stored == {}


def test_sync_exits_1_when_the_receiver_refused_records_into_quarantine(tmp_path: Path) -> None:
    def refuse_one(seen: Seen) -> Answer:
        ids = seen.record_ids()
        ack = {"acked": ids[1:], "rejected": [{"id": ids[0], "status": 422, "reason": "kind: \x1b[31mno"}]}
        return 200, {"Content-Type": "application/json"}, json.dumps(ack).encode()

    cloud = StandInCloud(refuse_one).start()
    try:
        config = uplinked_to(tmp_path, cloud.url)
        synced = venuebox(config, "uplink", "sync")
    finally:
        cloud.stop()
    assert synced.returncode == 1
    assert synced.stderr.splitlines() == [
        "venuebox: error: uplink sync: the receiver refused 1 record(s), now set aside (quarantined; the "
        "rest got through): `venuebox uplink status` says why, `venuebox uplink retry` sends them again"
    ]
    shown = venuebox(config, "uplink", "status")
    assert "422: kind: \\u001b[31mno" in shown.stdout and "\x1b" not in shown.stdout


# -- a receiver answering 201 Created ---------------------------------------------------------------


def test_a_201_created_with_an_ack_is_an_ack_and_the_box_keys_as_documented(tmp_path: Path) -> None:
    receiver = RunningReceiver(tmp_path / "receiver").start()

    def created(seen: Seen) -> Answer:
        status, headers, body = forward(receiver, seen)
        return (201 if status == 200 else status), headers, body

    cloud = StandInCloud(created).start()
    try:
        config = uplinked_to(tmp_path, cloud.url)
        (tmp_path / "uplink.token").write_text(add_box(receiver.data_dir, box_id_of(config)) + "\n")
        synced = venuebox(config, "uplink", "sync")
        assert synced.returncode == 0, synced.stderr
        checked = venuebox(config, "uplink", "check")
        assert checked.returncode == 0, checked.stderr
        stored = receiver.stored_ids(box_id_of(config))
    finally:
        cloud.stop()
        receiver.stop()
    view = status_json(config)
    assert view["backlog"] == 0 and view["quarantined"] == 0
    assert stored == outbox_ids(config)
    *batches, check = cloud.seen
    assert batches and all(re.match(BATCH_KEY_PATTERN, seen.key) for seen in batches)
    assert re.match(CHECK_KEY_PATTERN, check.key) and json.loads(check.body) == {"records": []}


# -- a receiver whose 200 is no ack -----------------------------------------------------------------

BAD_ANSWERS = {
    "unreadable": (b"<html>\x1b[2J\x1b]0;owned\x07 OK</html>", "answered 200 without a readable ack"),
    "settles none": (b'{"acked": [], "rejected": []}', "answered 200 but settled none of the"),
}


@pytest.mark.parametrize("bad", list(BAD_ANSWERS))
def test_a_2xx_that_is_no_ack_is_tried_n_times_then_the_records_go_out_under_a_new_key(
    tmp_path: Path, bad: str
) -> None:
    body, said = BAD_ANSWERS[bad]
    receiver = RunningReceiver(tmp_path / "receiver").start()
    spoilt: list[str] = []

    def replays_a_bad_answer(seen: Seen) -> Answer:
        # The first batch's answer was stored spoilt under its key, and is replayed for that key.
        if not spoilt or seen.key == spoilt[0]:
            spoilt.append(seen.key)
            return 200, {"Content-Type": "application/json"}, body
        return forward(receiver, seen)

    cloud = StandInCloud(replays_a_bad_answer).start()
    box: RunningBox | None = None
    try:
        config = uplinked_to(tmp_path, cloud.url)
        (tmp_path / "uplink.token").write_text(add_box(receiver.data_dir, box_id_of(config)) + "\n")
        first = outbox_ids(config)
        box = RunningBox(config).start()
        wait_for("the queue to drain", lambda: (v := uplink(box))["backlog"] == 0 and v["state"] == "idle")
        stored = receiver.stored_ids(box_id_of(config))
    finally:
        if box is not None:
            box.stop()
        cloud.stop()
        receiver.stop()
    assert len(spoilt) == BAD_ANSWER_TRIES  # the same key this many times, then never again
    keys = [seen.key for seen in cloud.seen]
    assert keys[BAD_ANSWER_TRIES] != spoilt[0]
    assert set(first) <= set(stored) and len(stored) == len(set(stored))
    assert status_json(config)["quarantined"] == 0
    # The alert named the receiver's answer (escaped), and cleared at the good ack that followed.
    conn = sqlite3.connect(config.db_path)
    try:
        [(detail, active, count)] = conn.execute(
            "SELECT detail, active, count FROM alerts WHERE fingerprint = 'uplink-bad-answer'"
        ).fetchall()
    finally:
        conn.close()
    assert said in detail and f"{BAD_ANSWER_TRIES} answers in a row" in detail
    assert "new batch id" in detail and (active, count) == (0, 1)
    assert "\x1b" not in detail and "\x07" not in detail
    if bad == "unreadable":
        assert "\\u001b[2J\\u001b]0;owned\\u0007 OK" in detail


def test_a_2xx_that_is_never_an_ack_keeps_the_alert_up_and_the_records_queued(tmp_path: Path) -> None:
    cloud = StandInCloud(lambda _: (202, {"Content-Type": "text/plain"}, b"Accepted")).start()
    box: RunningBox | None = None
    try:
        config = uplinked_to(tmp_path, cloud.url)
        box = RunningBox(config).start()
        alert = wait_for(
            "the alert",
            lambda: next(
                (a for a in _alerts(box) if a["fingerprint"] == "uplink-bad-answer" and a["active"]), None
            ),
        )
        wait_for("a second key", lambda: len({s.key for s in cloud.seen}) >= 2)
        view = uplink(box)
    finally:
        if box is not None:
            box.stop()
        cloud.stop()
    assert alert["severity"] == "warning" and "answered 202 without a readable ack" in alert["detail"]
    assert "its body was 'Accepted'" in alert["detail"]
    assert view["backlog"] > 0 and view["quarantined"] == 0  # nothing lost, nothing set aside
    keys = [s.key for s in cloud.seen]
    assert keys[:BAD_ANSWER_TRIES] == [keys[0]] * BAD_ANSWER_TRIES


def _alerts(box: RunningBox) -> list[dict[str, Any]]:
    with box.admin() as admin:
        got = admin.get("/admin/v1/alerts")
        return got.raise_for_status().json() if got.status_code == 200 else []
