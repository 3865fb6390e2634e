"""The fault proxy really does what each fault says, checked against a real receiver on a real socket."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.faultproxy import COUNTER_NAMES, FaultProxy, Faults

ACCEPTED = b'{"accepted": true}'
BATCH = {"batch_id": "b-1", "sheets": [{"entry": 7, "judge": "j-2", "score": 8.5}]}


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _ReceiverHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.record(Received(self.command, self.path, dict(self.headers.items()), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(ACCEPTED)))
        self.end_headers()
        self.wfile.write(ACCEPTED)

    # Fixed Server and Date headers make every answer byte-identical, so a cut can be compared exactly.
    def version_string(self) -> str:
        return "receiver"

    def date_time_string(self, timestamp: float | None = None) -> str:
        return "Thu, 01 Jan 2026 00:00:00 GMT"

    def log_message(self, format: str, *args: object) -> None:
        pass


class Receiver(ThreadingHTTPServer):
    """A stand-in receiver that records every request it read in full and accepts it with 200."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        self._lock = threading.Lock()
        self._received: list[Received] = []

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall on a machine without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    @property
    def port(self) -> int:
        return self.server_address[1]

    def record(self, request: Received) -> None:
        with self._lock:
            self._received.append(request)

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def wait_for(self, count: int, timeout_s: float = 3.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.received


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def client(proxy: FaultProxy, timeout_s: float = 5.0) -> httpx.Client:
    # trust_env=False: an HTTP_PROXY in the environment must not reroute loopback test traffic.
    return httpx.Client(base_url=proxy.url, timeout=httpx.Timeout(timeout_s), trust_env=False)


def raw_post(port: int, body: bytes = b'{"batch_id": "raw"}') -> bytes:
    """One POST with ``Connection: close`` on a plain socket: every byte that came back before EOF."""
    request = (
        b"POST /batches HTTP/1.1\r\nHost: receiver\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def wait_until(condition: Callable[[], bool], timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_clean_proxy_forwards_requests_unchanged_over_one_client_connection(receiver: Receiver) -> None:
    with FaultProxy("127.0.0.1", receiver.port, Faults()) as proxy, client(proxy) as http:
        bodies = [json.dumps({**BATCH, "n": n}, indent=1).encode() for n in range(3)]
        responses = [
            http.post("/batches?box=b1", content=body, headers={"Idempotency-Key": f"k-{n}"})
            for n, body in enumerate(bodies)
        ]
        counts = proxy.counts

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [r.content for r in responses] == [ACCEPTED] * 3
    assert all("close" not in r.headers.get("connection", "") for r in responses)
    received = receiver.received
    assert [(r.method, r.path) for r in received] == [("POST", "/batches?box=b1")] * 3
    assert [r.body for r in received] == bodies
    assert [r.headers["Idempotency-Key"] for r in received] == ["k-0", "k-1", "k-2"]
    assert all(r.headers["Connection"] == "close" for r in received)
    assert counts == {**dict.fromkeys(COUNTER_NAMES, 0), "connections": 1, "requests": 3, "forwarded": 3}


def test_drop_closes_with_fin_and_never_reaches_upstream(receiver: Receiver) -> None:
    with FaultProxy("127.0.0.1", receiver.port, Faults(drop=1)) as proxy:
        with client(proxy) as http, pytest.raises(httpx.RemoteProtocolError):
            http.post("/batches", json=BATCH)
        assert raw_post(proxy.port) == b""  # an orderly EOF, not a reset
        counts = proxy.counts

    assert receiver.received == []
    assert (counts["requests"], counts["drop"], counts["forwarded"]) == (2, 2, 0)


def test_reset_before_sends_rst_and_never_reaches_upstream(receiver: Receiver) -> None:
    with FaultProxy("127.0.0.1", receiver.port, Faults(reset_before=1)) as proxy:
        with client(proxy) as http, pytest.raises(httpx.ReadError):
            http.post("/batches", json=BATCH)
        with pytest.raises(ConnectionResetError):
            raw_post(proxy.port)
        counts = proxy.counts

    assert receiver.received == []
    assert (counts["reset_before"], counts["forwarded"]) == (2, 0)


def test_delay_trips_client_timeout_yet_request_still_reaches_upstream(receiver: Receiver) -> None:
    with FaultProxy("127.0.0.1", receiver.port, Faults(delay=1, delay_s=0.4)) as proxy:
        with client(proxy, timeout_s=0.1) as impatient, pytest.raises(httpx.ReadTimeout):
            impatient.post("/batches", json={**BATCH, "attempt": 1})
        assert json.loads(receiver.wait_for(1)[0].body) == {**BATCH, "attempt": 1}

        started = time.monotonic()
        with client(proxy) as patient:
            response = patient.post("/batches", json={**BATCH, "attempt": 2})
        assert time.monotonic() - started >= 0.4
        assert response.status_code == 200
        counts = proxy.counts

    assert (counts["delay"], counts["forwarded"]) == (2, 2)


@pytest.mark.parametrize(
    ("fault", "status", "retry_after"),
    [("status_500", 500, None), ("status_503", 503, "7"), ("status_429", 429, "7")],
)
def test_status_faults_answer_problem_json_without_forwarding(
    receiver: Receiver, fault: str, status: int, retry_after: str | None
) -> None:
    with FaultProxy("127.0.0.1", receiver.port, Faults(**{fault: 1}, retry_after_s=7)) as proxy:
        with client(proxy) as http:
            refused = http.post("/batches", json=BATCH)
            assert receiver.received == []
            proxy.set_faults(Faults())
            accepted = http.post("/batches", json=BATCH)
        counts = proxy.counts

    assert refused.status_code == status
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers.get("retry-after") == retry_after
    assert refused.json()["status"] == status
    # The injected error keeps the connection alive, as a real receiver's error answer would.
    assert accepted.status_code == 200
    assert len(receiver.received) == 1
    assert (counts["connections"], counts[fault], counts["forwarded"]) == (1, 1, 1)


def test_cut_after_commit_upstream_has_the_request_but_client_gets_no_byte(receiver: Receiver) -> None:
    with FaultProxy("127.0.0.1", receiver.port, Faults(cut_after_commit=1)) as proxy:
        with client(proxy) as http, pytest.raises(httpx.RemoteProtocolError):
            http.post("/batches", json={**BATCH, "batch_id": "committed"})
        assert raw_post(proxy.port, b'{"batch_id": "raw"}') == b""
        counts = proxy.counts

    assert [json.loads(r.body)["batch_id"] for r in receiver.received] == ["committed", "raw"]
    assert (counts["cut_after_commit"], counts["forwarded"]) == (2, 2)


def test_cut_mid_response_sends_exactly_the_first_half(receiver: Receiver) -> None:
    with FaultProxy("127.0.0.1", receiver.port, Faults()) as proxy:
        whole = raw_post(proxy.port)
        proxy.set_faults(Faults(cut_mid_response=1))
        half = raw_post(proxy.port)
        with client(proxy) as http, pytest.raises(httpx.RemoteProtocolError):
            http.post("/batches", json=BATCH)
        counts = proxy.counts

    assert whole.startswith(b"HTTP/1.1 200 ") and whole.endswith(ACCEPTED)
    assert half == whole[: len(whole) // 2]
    assert len(receiver.received) == 3
    assert (counts["cut_mid_response"], counts["forwarded"]) == (2, 3)


def test_same_seed_gives_same_faults(receiver: Receiver) -> None:
    def statuses(seed: int) -> list[int]:
        with (
            FaultProxy("127.0.0.1", receiver.port, Faults(status_503=0.5), seed=seed) as proxy,
            client(proxy) as http,
        ):
            return [http.post("/batches", json=BATCH).status_code for _ in range(20)]

    first = statuses(seed=11)
    assert statuses(seed=11) == first
    assert set(first) == {200, 503}


def test_refuse_gives_connection_refused_then_listens_on_the_same_port(receiver: Receiver) -> None:
    with FaultProxy("127.0.0.1", receiver.port, Faults()) as proxy, client(proxy) as http:
        assert http.post("/batches", json=BATCH).status_code == 200
        port = proxy.port

        proxy.refuse(True)
        # The pooled keep-alive connection went down with the listener, so this is a fresh connect.
        with pytest.raises(httpx.ConnectError):
            http.post("/batches", json=BATCH)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()

        proxy.refuse(False)
        assert proxy.port == port
        assert http.post("/batches", json=BATCH).status_code == 200

    assert len(receiver.received) == 2


def test_silent_upstream_gives_502_after_the_upstream_timeout() -> None:
    # Connections to it complete in the kernel's backlog but nothing ever reads or answers.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        upstream_port = silent.getsockname()[1]
        with (
            FaultProxy("127.0.0.1", upstream_port, Faults(), upstream_timeout_s=0.3) as proxy,
            client(proxy) as http,
        ):
            started = time.monotonic()
            response = http.post("/batches", json=BATCH)
            elapsed = time.monotonic() - started
            counts = proxy.counts

    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    assert 0.3 <= elapsed < 3
    assert counts["bad_gateway"] == 1


def test_stop_closes_idle_and_in_flight_connections_without_hanging(receiver: Receiver) -> None:
    proxy = FaultProxy("127.0.0.1", receiver.port, Faults(delay=1, delay_s=30)).start()
    with (
        socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as idle,
        socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as in_flight,
    ):
        in_flight.sendall(b"POST /batches HTTP/1.1\r\nHost: r\r\nContent-Length: 2\r\n\r\n{}")
        wait_until(lambda: proxy.counts["delay"] == 1)

        started = time.monotonic()
        proxy.stop()
        assert time.monotonic() - started < 2
        assert idle.recv(1) == b""
        assert in_flight.recv(1) == b""
    assert receiver.received == []


def test_faults_and_upstream_are_checked() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        Faults(drop=1.5)
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy("10.0.0.1", 80, Faults())
