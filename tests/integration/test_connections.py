"""Connection exhaustion against a real daemon, with real sockets on loopback: one client address
holds at most max_connections_per_address connections (the extra ones are closed at once, counted
and, if it goes on, alerted) while a tablet on another address is served; a connection that never
starts its TLS handshake is closed after tls_handshake_timeout_s; the daemon runs with its open-file
soft limit raised to the hard one. (The flood from another host: tests/e2e/test_connection_flood.py.)"""

from __future__ import annotations

import re
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningBox, make_box

pytestmark = pytest.mark.timeout(120)

CAP = 8
FLOOD = 65


def tablet_port(box: RunningBox) -> int:
    port = httpx.URL(box.tablet_url).port
    assert port
    return port


def connect_from(source: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the box closes ``sock`` (EOF or reset) within ``seconds``; nothing is sent on it."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def refused_count(box: RunningBox) -> float:
    with box.admin() as admin:
        text = admin.get("/metrics").text
    found = re.search(r"^venuebox_connections_refused_total (\S+)$", text, re.MULTILINE)
    assert found, text
    return float(found.group(1))


def flood_active(box: RunningBox, address: str) -> bool:
    alert = flood_alert(box, address)
    assert alert is not None, f"no connection-flood alert for {address}"
    return bool(alert["active"])


def flood_alert(box: RunningBox, address: str) -> dict | None:
    with box.admin() as admin:
        listed = admin.get("/admin/v1/alerts", params={"include_cleared": True}).json()
    return next((a for a in listed if a["fingerprint"] == f"connection-flood:{address}"), None)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[RunningBox]:
    config = make_box(
        tmp_path / "box",
        tls=True,
        max_connections_per_address=CAP,
        tls_handshake_timeout_s=1.0,
        connection_flood_alert_s=1.0,
    )
    running = RunningBox(config).start()
    yield running
    running.stop()


def test_one_address_holds_at_most_its_cap_and_another_address_is_served(box: RunningBox) -> None:
    port = tablet_port(box)
    held: list[socket.socket] = []
    try:
        for _ in range(FLOOD):
            held.append(connect_from("127.0.0.1", port))
        started = time.monotonic()
        extras_closed = [closed_within(sock, 2.0) for sock in held[CAP:]]
        assert all(extras_closed)
        assert time.monotonic() - started < 2.0  # at once, not after a timeout
        assert refused_count(box) == FLOOD - CAP

        # A tablet on another address is served while 127.0.0.1 holds its cap.
        transport = httpx.HTTPTransport(local_address="127.0.0.2", verify=box.verify)
        with httpx.Client(base_url=box.tablet_url, transport=transport, timeout=5) as tablet:
            started = time.monotonic()
            assert tablet.get("/api/v1/health").status_code == 200
            assert time.monotonic() - started < 2.0

        # 127.0.0.1 keeps trying for a while: its alert is raised, naming it (checked every 5 s).
        # Connections that never start TLS are closed after the 1 s handshake timeout, so each round
        # opens more than the cap: the address stays at its cap and refused, however slow the round.
        deadline = time.monotonic() + 15
        alert = None
        while time.monotonic() < deadline:
            held.extend(connect_from("127.0.0.1", port) for _ in range(CAP + 4))
            alert = flood_alert(box, "127.0.0.1")
            if alert and alert["active"]:
                break
            time.sleep(0.2)
        assert alert and alert["active"] and alert["severity"] == "warning", alert
        assert "127.0.0.1" in alert["title"] and "max_connections_per_address" in alert["detail"]
        assert flood_alert(box, "127.0.0.2") is None
    finally:
        for sock in held:
            sock.close()

    # The flood stops: 127.0.0.1 is served again, and the alert clears.
    with box.client() as client:
        assert client.get("/api/v1/health").status_code == 200
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and flood_active(box, "127.0.0.1"):
        time.sleep(0.5)
    assert not flood_active(box, "127.0.0.1")


def test_a_connection_that_never_starts_tls_is_closed_after_the_handshake_timeout(box: RunningBox) -> None:
    port = tablet_port(box)
    idle = connect_from("127.0.0.1", port)
    try:
        started = time.monotonic()
        assert not closed_within(idle, 0.5)  # admitted: open, waiting for its ClientHello
        assert closed_within(idle, 3.0)
        assert 0.9 < time.monotonic() - started < 3.0
    finally:
        idle.close()
    # A client that does its handshake is served as usual, and its connection is counted out.
    for _ in range(CAP + 2):
        with box.client() as client:
            assert client.get("/api/v1/health").status_code == 200
    assert refused_count(box) == 0


def test_the_daemon_raises_its_open_file_soft_limit_to_the_hard_one(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1024:
        pytest.skip(
            f"this machine's hard open-file limit is {hard}, below the default soft limit of 1024: "
            "raising the soft limit to it cannot be told apart from not raising it"
        )
    config = make_box(tmp_path / "box")
    # The daemon inherits a low soft limit, as from a shell; the hard one stays.
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        running = RunningBox(config).start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert running.process is not None
        limits = Path(f"/proc/{running.process.pid}/limits").read_text()
        found = re.search(r"^Max open files\s+(\d+)\s+(\d+)", limits, re.MULTILINE)
        assert found, limits
        assert int(found.group(1)) == int(found.group(2)) == hard
        with running.client() as client:
            assert client.get("/api/v1/health").status_code == 200
    finally:
        running.stop()
