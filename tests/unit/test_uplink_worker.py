"""The uplink worker on a real box database, against the real reference receiver app (in-process over
httpx's ASGI transport) or, for answers the receiver never gives on its own, a scripted cloud at the
transport boundary."""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.core import alerts, outbox
from appliance.core.box import freeze, get_box
from appliance.core.config import Config
from appliance.core.storage import Store
from appliance.core.uplink_state import get_state, request_sync, uplink_view
from appliance.shared.secrets_files import write_secret
from appliance.shared.status import UplinkView
from appliance.shared.times import utcnow
from appliance.storage import db
from appliance.web.retry import full_jitter, retry_after_s
from tests.conftest import make_box
from uplink import receiver_store
from uplink.answers import describe_network_error
from uplink.breaker import CircuitBreaker
from uplink.protocol import IDEMPOTENCY_HEADER, SIGNATURE_HEADER
from uplink.receiver import create_receiver_app
from uplink.settings import UplinkSettings
from uplink.worker import BAD_ANSWER_TRIES, UplinkWorker

# anyio's pytest plugin (installed with httpx) runs the async tests, on asyncio.
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


FAST = {
    "uplink_backoff_base_s": 0.001,
    "uplink_backoff_cap_s": 0.005,
    "uplink_breaker_failures": 3,
    "uplink_poll_s": 0.01,
    "uplink_batch_max_records": 7,
}


class Box:
    """A real box data dir whose uplink points at ``http://receiver.test`` (served by a transport)."""

    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.token_file = tmp_path / "uplink.token"
        write_secret(self.token_file, "a-token-the-scripted-cloud-takes")  # the receiver fixture replaces it
        self.config: Config = make_box(
            tmp_path / "box",
            uplink_url="http://receiver.test",
            uplink_insecure_http=True,  # no network: a transport answers for receiver.test
            uplink_token_file=str(self.token_file),
            **(FAST | settings),
        )
        self.store = Store(self.config.db_path)
        self.box_id: str = self.store.query(get_box)["box_id"]

    def worker(self, transport: httpx.AsyncBaseTransport) -> UplinkWorker:
        return UplinkWorker(self.store, self.config, self.box_id, transport=transport, rng=random.Random(7))

    def add(self, count: int, kind: str = "event") -> list[str]:
        # Not "audit" (nor "sheet"): the receiver keeps those chained, so they must carry a real
        # audit-log (ledger) seq and hash, which these stand-in payloads do not.
        return [
            self.store.write_sync(partial(outbox.enqueue, kind=kind, payload={"n": i})) for i in range(count)
        ]

    def view(self) -> UplinkView:
        return self.store.query(lambda c: uplink_view(c, self.config, utcnow()))

    def all_ids(self) -> list[str]:
        return self.store.query(
            lambda c: [r[0] for r in c.execute("SELECT record_id FROM outbox ORDER BY seq")]
        )

    def active_alerts(self) -> set[str]:
        return {a.fingerprint for a in self.store.query(alerts.list_alerts)}


class Receiver:
    """The reference receiver's app on its own SQLite file, counting the requests it gets."""

    def __init__(self, data_dir: Path, box_id: str) -> None:
        self.data_dir = data_dir
        self.token = receiver_store.add_box(data_dir, box_id)
        self.store = db.Store(data_dir / receiver_store.DB_FILE, schema=receiver_store.migrate, create=True)
        self.asgi = httpx.ASGITransport(
            app=create_receiver_app(self.store, receiver_store.BoxTokens(data_dir))
        )
        self.requests: list[httpx.Request] = []
        self.cut_after_commit = 0  # this many next answers are lost after the receiver committed

    def transport(self) -> httpx.AsyncBaseTransport:
        receiver = self

        class Counting(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                receiver.requests.append(request)
                response = await receiver.asgi.handle_async_request(request)
                await response.aread()
                if receiver.cut_after_commit:
                    receiver.cut_after_commit -= 1
                    raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
                return response

        return Counting()

    def stored_ids(self) -> list[str]:
        return self.store.query(
            lambda c: [r[0] for r in c.execute("SELECT record_id FROM records ORDER BY seq")]
        )


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    b = Box(tmp_path)
    yield b
    b.store.close()


@pytest.fixture
def receiver(tmp_path: Path, box: Box) -> Iterator[Receiver]:
    rx = Receiver(tmp_path / "receiver", box.box_id)
    write_secret(box.token_file, rx.token)
    yield rx
    rx.store.close()


async def drain(worker: UplinkWorker, turns: int = 200) -> list[float]:
    """Turn the worker until it has nothing to do at once; the delays it asked for."""
    delays = []
    for _ in range(turns):
        delay = await worker.step()
        delays.append(delay)
        if delay > 0 and not worker.store.query(outbox.has_pending):
            break
        if delay > 0:
            await asyncio.sleep(min(delay, 0.02))
    await worker.aclose()
    return delays


def scripted(answers: Sequence[Callable[[httpx.Request], httpx.Response]], seen: list[httpx.Request]) -> Any:
    """A cloud that gives these answers in turn (the last one for ever after)."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[min(len(seen), len(answers)) - 1](request)

    return httpx.MockTransport(handle)


def ack_all(request: httpx.Request) -> httpx.Response:
    ids = [r["id"] for r in json.loads(request.content)["records"]]
    return httpx.Response(200, json={"acked": ids, "rejected": []})


def problem(
    status: int, slug: str, headers: dict[str, str] | None = None
) -> Callable[[httpx.Request], httpx.Response]:
    body = {"type": f"/problems/{slug}", "title": slug, "status": status, "detail": f"said {slug}"}
    return lambda _: httpx.Response(
        status, json=body, headers={"content-type": "application/problem+json", **(headers or {})}
    )


# -- against the real receiver --------------------------------------------------------------------


async def test_every_record_reaches_the_receiver_once_in_order(box: Box, receiver: Receiver) -> None:
    box.add(30)
    await drain(box.worker(receiver.transport()))
    assert receiver.stored_ids() == box.all_ids()
    view = box.view()
    assert view.backlog == 0 and view.state == "idle" and view.last_success_at
    assert view.records_acked == len(box.all_ids())
    # Batches of at most 7 records, in order, each signed and keyed.
    sizes = [len(json.loads(r.content)["records"]) for r in receiver.requests]
    assert max(sizes) == 7 and sum(sizes) == len(box.all_ids())
    assert all(r.headers[SIGNATURE_HEADER].startswith("t=") for r in receiver.requests)


async def test_an_answer_lost_after_the_receiver_committed_is_resent_and_stored_once(
    box: Box, receiver: Receiver
) -> None:
    box.add(10)
    receiver.cut_after_commit = 1
    worker = box.worker(receiver.transport())
    assert await worker.step() > 0  # the first answer is lost: backing off
    assert box.view().state == "backing off"
    lost = receiver.requests[0]
    await worker.aclose()
    # A restart: a new worker resends the open batch under the same id with the same body.
    await drain(box.worker(receiver.transport()))
    resent = receiver.requests[1]
    assert resent.headers[IDEMPOTENCY_HEADER] == lost.headers[IDEMPOTENCY_HEADER]
    assert resent.content == lost.content
    stored = receiver.stored_ids()
    assert stored == box.all_ids() and len(set(stored)) == len(stored)
    assert box.view().backlog == 0


async def test_delivery_goes_on_while_the_box_is_frozen(box: Box, receiver: Receiver) -> None:
    box.store.write_sync(lambda c: freeze(c, "dispute on entry 142", "test"))
    box.add(5)
    await drain(box.worker(receiver.transport()))
    assert box.view().backlog == 0
    assert receiver.stored_ids() == box.all_ids()


async def test_a_poison_record_is_quarantined_and_the_rest_keep_flowing(box: Box, receiver: Receiver) -> None:
    before = box.add(5)
    [poison] = box.add(1, kind="no-such-kind")
    after = box.add(5)
    await drain(box.worker(receiver.transport()))
    view = box.view()
    assert view.backlog == 0 and view.quarantined == 1
    stored = set(receiver.stored_ids())
    assert set(before + after) <= stored and poison not in stored
    [held] = box.store.query(outbox.quarantined)
    assert held.record_id == poison and "kind" in (held.quarantine_reason or "")
    assert "uplink-quarantine" in box.active_alerts()


async def test_refused_credentials_pause_until_the_token_is_replaced(box: Box, receiver: Receiver) -> None:
    box.add(3)
    write_secret(box.token_file, "not-the-token-the-receiver-issued")
    worker = box.worker(receiver.transport())
    await worker.step()
    view = box.view()
    assert view.state == "paused" and "refused the uplink credentials (401)" in (view.paused_reason or "")
    assert "uplink-refused" in box.active_alerts()
    [alert] = [a for a in box.store.query(alerts.list_alerts) if a.fingerprint == "uplink-refused"]
    assert alert.severity == "critical"
    for _ in range(5):  # paused: nothing is sent, however often it looks
        await worker.step()
    assert len(receiver.requests) == 1
    write_secret(box.token_file, receiver.token)  # reconfigured: the token file changed
    await drain(worker)
    assert box.view().state == "idle" and box.view().backlog == 0
    assert "uplink-refused" not in box.active_alerts()


async def test_a_sync_request_tries_a_paused_uplink_once(box: Box, receiver: Receiver) -> None:
    box.add(3)
    receiver_store.add_box(receiver.data_dir, box.box_id, rotate=True)  # the receiver's side changed
    worker = box.worker(receiver.transport())
    await worker.step()
    assert box.view().state == "paused"
    box.store.write_sync(lambda c: request_sync(c, "test", utcnow()))
    await worker.step()
    assert len(receiver.requests) == 2  # tried again because a tech asked
    assert box.view().state == "paused"
    await worker.aclose()


# -- answers only a scripted cloud gives ---------------------------------------------------------


async def test_retry_after_is_honoured(box: Box) -> None:
    seen: list[httpx.Request] = []
    worker = box.worker(scripted([problem(429, "rate-limited", {"Retry-After": "7"})], seen))
    delay = await worker.step()
    assert delay >= 7
    view = box.view()
    assert view.state == "backing off" and "429" in (view.last_error or "")
    assert view.next_attempt_in_s is not None and 6 <= view.next_attempt_in_s <= 7
    assert await worker.step() > 0 and len(seen) == 1  # nothing sent before Retry-After
    await worker.aclose()


async def test_failures_back_off_then_open_the_circuit_and_a_success_closes_it(box: Box) -> None:
    seen: list[httpx.Request] = []
    unavailable = problem(503, "unavailable")
    worker = box.worker(scripted([unavailable, unavailable, unavailable, unavailable, ack_all], seen))
    states = []
    for _ in range(5):
        delay = await worker.step()
        states.append((box.view().state, box.view().breaker))
        await asyncio.sleep(delay + 0.001)
    assert states[:4] == [
        ("backing off", "closed"),
        ("backing off", "closed"),
        ("circuit open", "open"),  # the third failure in a row opens it
        ("circuit open", "open"),  # the half-open trial failed: open again
    ]
    assert box.view().consecutive_failures == 0 and box.view().breaker == "closed"
    assert box.view().state in ("sending", "idle")
    await drain(worker)
    assert box.view().backlog == 0


async def test_a_batch_refused_whole_is_split_until_the_bad_record_is_alone(box: Box) -> None:
    [poison] = box.add(1)
    box.add(12)

    def refuse_poison(request: httpx.Request) -> httpx.Response:
        if poison.encode() in request.content:
            return problem(400, "malformed-request")(request)
        return ack_all(request)

    seen: list[httpx.Request] = []
    await drain(box.worker(scripted([refuse_poison], seen)))
    view = box.view()
    assert view.backlog == 0 and view.quarantined == 1
    [held] = box.store.query(outbox.quarantined)
    assert held.record_id == poison and "400" in (held.quarantine_reason or "")
    alone = [r for r in seen if poison.encode() in r.content]
    assert len(json.loads(alone[-1].content)["records"]) == 1


async def test_a_fork_pauses_with_its_own_alert_which_gives_way_when_the_pause_changes(box: Box) -> None:
    box.add(3)
    fork_body = {
        "type": "/problems/chain-fork",
        "title": "chain-fork",
        "status": 409,
        "detail": "said chain-fork",
        "seq": 42,
        "held_hash": "a" * 64,
        "offered_hash": "b" * 64,
    }

    def fork(_: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json=fork_body, headers={"content-type": "application/problem+json"})

    seen: list[httpx.Request] = []
    worker = box.worker(scripted([fork, fork, problem(401, "uplink-unauthenticated"), ack_all], seen))
    await worker.step()
    view = box.view()
    assert view.state == "paused" and "ledger position 42" in (view.paused_reason or "")
    [alert] = [a for a in box.store.query(alerts.list_alerts) if a.fingerprint == "uplink-fork"]
    assert alert.severity == "critical" and "ledger position 42" in alert.detail
    assert "uplink-refused" not in box.active_alerts()
    for _ in range(5):  # paused: nothing is sent, however often it looks
        await worker.step()
    assert len(seen) == 1 and box.view().batch is not None  # the batch stays open, as it was
    box.store.write_sync(lambda c: request_sync(c, "test", utcnow()))
    await worker.step()  # one try, refused again: paused again
    assert len(seen) == 2 and box.view().state == "paused"
    assert seen[0].content == seen[1].content
    assert seen[0].headers[IDEMPOTENCY_HEADER] == seen[1].headers[IDEMPOTENCY_HEADER]
    box.store.write_sync(lambda c: request_sync(c, "test", utcnow()))
    await worker.step()  # now the token is refused: the other pause, the other alert
    assert box.active_alerts() >= {"uplink-refused"} and "uplink-fork" not in box.active_alerts()
    box.store.write_sync(lambda c: request_sync(c, "test", utcnow()))
    await drain(worker)
    assert box.view().state == "idle"
    assert not box.active_alerts() & {"uplink-refused", "uplink-fork"}


async def test_a_refused_signature_time_is_signed_again_with_the_receivers_clock(box: Box) -> None:
    box.add(2)
    ahead = time.time() + 3600
    skew = problem(401, "signature-clock-skew", {"Date": email.utils.formatdate(ahead, usegmt=True)})
    seen: list[httpx.Request] = []
    await drain(box.worker(scripted([skew, ack_all], seen)))
    first, second = (int(r.headers[SIGNATURE_HEADER].split(",")[0][2:]) for r in seen[:2])
    assert abs(first - time.time()) < 60
    assert abs(second - ahead) < 60
    assert box.view().backlog == 0 and box.view().state == "idle"


async def test_a_batch_id_used_for_other_content_is_resent_under_a_new_id(box: Box) -> None:
    seen: list[httpx.Request] = []
    await drain(box.worker(scripted([problem(422, "idempotency-mismatch"), ack_all], seen)))
    assert seen[0].headers[IDEMPOTENCY_HEADER] != seen[1].headers[IDEMPOTENCY_HEADER]
    assert box.view().backlog == 0


async def test_a_wrong_url_pauses_instead_of_retrying_for_ever(box: Box) -> None:
    seen: list[httpx.Request] = []
    worker = box.worker(scripted([lambda _: httpx.Response(404, text="nothing here")], seen))
    await worker.step()
    await worker.step()
    assert len(seen) == 1
    assert "check the uplink URL" in (box.view().paused_reason or "")
    await worker.aclose()


async def test_not_configured_is_a_state_and_sends_nothing(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box")
    with Store(config.db_path) as store:
        worker = UplinkWorker(store, config, store.query(get_box)["box_id"])
        assert await worker.step() == config.uplink_poll_s
        assert store.query(get_state)["state"] == "not configured"
        assert store.query(lambda c: uplink_view(c, config, utcnow())).backlog > 0
        await worker.aclose()


# -- plain words and arithmetic ------------------------------------------------------------------


async def test_network_failures_are_told_in_plain_words() -> None:
    settings = UplinkSettings(connect_timeout_s=2.0)
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(timeout=2.0) as client:
        with pytest.raises(httpx.HTTPError) as refused:
            await client.post(url + "/v1/x", content=b"{}")
        with pytest.raises(httpx.HTTPError) as dns:
            await client.post("http://receiver.invalid/v1/x", content=b"{}")
    assert "connection refused" in describe_network_error(refused.value, url, settings)
    assert "DNS" in describe_network_error(dns.value, "http://receiver.invalid", settings)
    cut = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    assert "nothing is stored twice" in describe_network_error(cut, url, settings)
    assert "30 s" in describe_network_error(
        httpx.ReadTimeout("timed out"), url, UplinkSettings(read_timeout_s=30)
    )


def test_full_jitter_stays_between_zero_and_the_capped_exponential() -> None:
    rng = random.Random(1)
    for failures, ceiling in ((1, 1.0), (2, 2.0), (5, 16.0), (12, 300.0), (500, 300.0)):
        samples = [full_jitter(1.0, 300.0, failures, rng) for _ in range(200)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.8  # spread over the whole range, not a fixed delay


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = time.time()
    assert retry_after_s(httpx.Response(429, headers={"Retry-After": "12"}), now) == 12
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= (retry_after_s(httpx.Response(503, headers={"Retry-After": date}), now) or 0) <= 31
    assert retry_after_s(httpx.Response(503), now) is None
    assert retry_after_s(httpx.Response(503, headers={"Retry-After": "999999"}), now) == 3600


def test_circuit_breaker_opens_after_the_threshold_and_half_opens_for_one_trial() -> None:
    breaker = CircuitBreaker(threshold=2)
    breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open"
    breaker.before_attempt()
    assert breaker.state == "half-open"
    breaker.failure()
    assert breaker.state == "open"
    breaker.before_attempt()
    breaker.success()
    assert (breaker.state, breaker.failures) == ("closed", 0)


async def test_a_200_that_settles_nothing_backs_off_instead_of_looping(box: Box) -> None:
    seen: list[httpx.Request] = []
    empty = lambda _: httpx.Response(200, json={"acked": [], "rejected": []})  # noqa: E731
    worker = box.worker(scripted([empty], seen))
    assert await worker.step() > 0
    view = box.view()
    assert view.state == "backing off" and "settled none" in (view.last_error or "")
    assert view.backlog > 0 and len(seen) == 1
    await worker.aclose()


async def test_a_redirect_pauses_instead_of_quarantining_the_queue(box: Box) -> None:
    seen: list[httpx.Request] = []
    moved = lambda _: httpx.Response(301, headers={"Location": "https://receiver.test/"})  # noqa: E731
    worker = box.worker(scripted([moved], seen))
    await worker.step()
    await worker.step()
    view = box.view()
    assert len(seen) == 1 and view.state == "paused" and view.quarantined == 0
    assert "redirects (301) to https://receiver.test/" in (view.paused_reason or "")
    await worker.aclose()


async def test_every_mismatch_after_a_success_is_rekeyed_once(box: Box) -> None:
    box.add(20)
    mismatch = problem(422, "idempotency-mismatch")
    seen: list[httpx.Request] = []
    await drain(box.worker(scripted([mismatch, ack_all, mismatch, ack_all], seen)))
    keys = [r.headers[IDEMPOTENCY_HEADER] for r in seen]
    assert keys[0] != keys[1] and keys[2] != keys[3]
    assert box.view().backlog == 0 and box.view().consecutive_failures == 0


async def test_an_unusable_ca_bundle_or_an_open_token_file_pauses_in_plain_words(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    ca_box = Box(tmp_path / "a", uplink_ca_file=str(not_pem))
    worker = ca_box.worker(scripted([ack_all], []))
    await worker.step()
    ca_view = ca_box.view()
    assert ca_view.state == "paused" and "cannot use the CA bundle" in (ca_view.paused_reason or "")
    await worker.aclose()
    open_box = Box(tmp_path / "b")
    open_box.token_file.chmod(0o644)
    worker = open_box.worker(scripted([ack_all], []))
    await worker.step()
    reason = open_box.view().paused_reason or ""
    assert open_box.view().state == "paused" and "readable by other users" in reason
    await worker.aclose()
    ca_box.store.close()
    open_box.store.close()


async def test_acks_that_leave_records_unsettled_raise_the_bad_answer_alert_until_a_whole_ack(
    box: Box,
) -> None:
    box.add(30)

    def all_but_the_last(request: httpx.Request) -> httpx.Response:
        ids = [r["id"] for r in json.loads(request.content)["records"]]
        return httpx.Response(201, json={"acked": ids[:-1]})  # 201, and no "rejected": still an ack

    seen: list[httpx.Request] = []
    worker = box.worker(scripted([all_but_the_last] * BAD_ANSWER_TRIES + [ack_all], seen))
    for _ in range(BAD_ANSWER_TRIES - 1):
        await worker.step()
    assert "uplink-bad-answer" not in box.active_alerts()
    await worker.step()
    [alert] = [a for a in box.store.query(alerts.list_alerts) if a.fingerprint == "uplink-bad-answer"]
    assert alert.severity == "warning"
    assert "answered 201 but left 1 of the 7 records sent unsettled" in alert.detail
    assert box.view().quarantined == 0 and box.view().consecutive_failures == 0
    await drain(worker)
    assert "uplink-bad-answer" not in box.active_alerts()
    assert box.view().backlog == 0
    # Each record left out went again, in the next batch (under its new key).
    keys = [r.headers[IDEMPOTENCY_HEADER] for r in seen]
    assert len(set(keys)) == len(keys)


async def test_a_sync_of_a_paused_uplink_that_meets_a_clock_skew_resends_at_once(box: Box) -> None:
    box.add(2)
    ahead = time.time() + 3600
    skew = problem(401, "signature-clock-skew", {"Date": email.utils.formatdate(ahead, usegmt=True)})
    seen: list[httpx.Request] = []
    worker = box.worker(scripted([problem(401, "uplink-unauthenticated"), skew, ack_all], seen))
    await worker.step()
    assert box.view().state == "paused"
    box.store.write_sync(lambda c: request_sync(c, "test", utcnow()))
    assert await worker.step() == 0  # the sync's try: refused for its time, signed again at once
    await worker.step()
    assert len(seen) == 3 and seen[2].content == seen[1].content
    assert abs(int(seen[2].headers[SIGNATURE_HEADER].split(",")[0][2:]) - ahead) < 60
    view = box.view()
    assert view.state != "paused" and view.paused_reason is None and view.last_success_at
    await worker.aclose()
