"""TLS on the tablet port, end to end: the certificate made at first boot, a real daemon serving it,
the fingerprint in the TXT record (real zeroconf on loopback) and the pairing answer, the tablet
client pinning it and refusing a second certificate, rotation while the box runs, the plain-HTTP
landing page, and the CLI."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from appliance.core import tls
from appliance.shared.fingerprint import grouped
from appliance.tablet_client.client import TabletClient
from appliance.tablet_client.discovery import async_discover
from appliance.tablet_client.errors import BoxUnreachable, CertificateMismatch
from appliance.tablet_client.sheet_queue import make_sheet
from tests.conftest import RunningBox, make_box, new_code, served_certificate, venuebox

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]


def wait_until(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s}s: {what}")


def start_tls_box(data_dir: Path, **settings: Any) -> RunningBox:
    limits = {"device_rate_per_s": 1000.0, "device_burst": 1000, "pair_attempts_per_minute": 1000}
    return RunningBox(make_box(data_dir, tls=True, status_interval_s=0.3, **(limits | settings))).start()


@pytest.fixture
def tls_box(tmp_path: Path) -> Iterator[RunningBox]:
    box = start_tls_box(tmp_path / "box")
    yield box
    box.stop()


def test_first_boot_makes_a_self_signed_certificate_for_the_box_name_and_addresses(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box", package=None, tls=True)
    pem = config.data_dir / "tls" / "box.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert stat.S_IMODE((config.data_dir / "tls").stat().st_mode) == 0o700
    assert b"PRIVATE KEY" in pem.read_bytes()
    assert b"PRIVATE KEY" not in (config.data_dir / "tls" / "box.crt").read_bytes()

    cert = x509.load_pem_x509_certificate((config.data_dir / "tls" / "box.crt").read_bytes())
    assert cert.issuer == cert.subject  # self-signed
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "test-box.local" in san.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1", "::1"}
    identity = tls.load_identity(config.data_dir)
    assert identity.fingerprint == hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()

    # Addresses given explicitly (a box on a known LAN) are named too; a new key every time.
    again = tls.write_identity(config.data_dir, "Main stage", ["192.168.7.20", "fd00::20"])
    assert again.fingerprint != identity.fingerprint
    assert "main-stage.local" in again.names
    assert {"192.168.7.20", "fd00::20", "127.0.0.1"} <= set(again.addresses)


def test_daemon_serves_https_with_the_fingerprint_it_announces(tls_box: RunningBox) -> None:
    assert tls_box.tablet_url.startswith("https://127.0.0.1:")
    fingerprint = hashlib.sha256(served_certificate(tls_box.tablet_url)).hexdigest()
    assert fingerprint == tls.load_identity(tls_box.config.data_dir).fingerprint

    # Verified against the box's own certificate, host name included (127.0.0.1 is in it).
    with tls_box.client() as client:
        health = client.get("/api/v1/health")
    assert health.status_code == 200 and health.json()["box"]

    # The pairing answer carries the fingerprint a tablet pins.
    paired = tls_box.pair("J1")
    assert paired.pairing["tls_fingerprint"] == fingerprint

    # The CLI shows the same, and so does `status`.
    shown = venuebox(tls_box.config.data_dir, "tls", "show")
    assert shown.returncode == 0, shown.stderr
    assert grouped(fingerprint) in shown.stdout
    assert grouped(fingerprint) in venuebox(tls_box.config.data_dir, "status").stdout

    # Plain HTTP on the TLS port gets nothing useful: no API answer over an unencrypted channel.
    plain = tls_box.tablet_url.replace("https://", "http://")
    try:
        answer = httpx.get(plain + "/api/v1/health", timeout=5)
    except httpx.HTTPError:
        pass
    else:
        assert answer.status_code >= 400


def handshake(box: RunningBox, version: ssl.TLSVersion, ciphers: str | None = None) -> tuple[str, str]:
    """A real TLS handshake with the box's tablet port by a client that speaks only ``version`` and,
    given ``ciphers``, offers only those (TLS 1.2 and below); the (protocol, cipher) agreed, or
    ssl.SSLError when the box refuses. The client trusts the box's certificate, so a refusal is
    about the protocol and the suites, not about trust."""
    context = box.verify
    assert isinstance(context, ssl.SSLContext)
    context.minimum_version = context.maximum_version = version
    if ciphers is not None:
        context.set_ciphers(ciphers)
    url = httpx.URL(box.tablet_url)
    with (
        socket.create_connection((url.host, url.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=url.host) as wrapped,
    ):
        agreed = wrapped.cipher()
        assert agreed is not None and wrapped.version() is not None
        return wrapped.version() or "", agreed[0]


def test_tls_1_2_offers_only_aead_suites_and_tls_1_3_still_works(tls_box: RunningBox) -> None:
    # The box's key is ECDSA: these are the CBC suites a TLS 1.2 client could agree on with it.
    for cbc_suite in ("ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA"):
        with pytest.raises(ssl.SSLError):
            handshake(tls_box, ssl.TLSVersion.TLSv1_2, cbc_suite)

    for aead in (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ):
        assert handshake(tls_box, ssl.TLSVersion.TLSv1_2, aead) == ("TLSv1.2", aead)
    protocol, suite = handshake(tls_box, ssl.TLSVersion.TLSv1_3)
    assert protocol == "TLSv1.3" and suite.startswith("TLS_")

    # A client offering everything it has still gets an AEAD suite over TLS 1.2.
    protocol, suite = handshake(tls_box, ssl.TLSVersion.TLSv1_2, "ALL:@SECLEVEL=0")
    assert protocol == "TLSv1.2" and ("GCM" in suite or "CHACHA20" in suite), suite

    # The admin listener is untouched: plain HTTP on loopback.
    assert tls_box.admin_url.startswith("http://127.0.0.1:")
    with tls_box.admin() as admin:
        assert admin.get("/admin/v1/status").status_code == 200


def test_tablet_client_pins_the_certificate_and_refuses_a_second_one(
    tls_box: RunningBox, tmp_path: Path
) -> None:
    fingerprint = tls.load_identity(tls_box.config.data_dir).fingerprint
    # A second box: another data dir, its own certificate, the same kind of daemon.
    other = start_tls_box(tmp_path / "impostor")
    try:
        other_fp = tls.load_identity(other.config.data_dir).fingerprint
        assert other_fp != fingerprint

        async def scenario() -> None:
            # Pinned to the right box: pairs, scores.
            async with TabletClient(tls_box.tablet_url, tmp_path / "tablet", fingerprint=fingerprint) as good:
                await good.pair(new_code(tls_box.config, "J1"), "judge 1 tablet")
                event = await good.event()
                entry = next(e for s in event["sessions"] if s["on_panel"] for e in s["entries"])
                values = {c["key"]: c["min"] for c in event["criteria"]}
                stored = await good.submit(make_sheet(entry["entry_id"], values))
                assert stored.state == "stored"
                assert good.pinned_fingerprint == fingerprint

            # The same tablet (its pin saved) pointed at the impostor: refused before anything is sent.
            # The impostor holds a valid code for J1; were the client to send it, pairing would succeed.
            code = new_code(other.config, "J1")
            async with TabletClient(other.tablet_url, tmp_path / "tablet") as fooled:
                assert fooled.pinned_fingerprint == fingerprint
                with pytest.raises(CertificateMismatch) as refused:
                    await fooled.pair(code, "judge 1 tablet")
                assert refused.value.presented == other_fp and refused.value.pinned == fingerprint
                # Sheets stay queued, never sent to the wrong box.
                fooled.enqueue(make_sheet(entry["entry_id"], values))
                flushed = await fooled.flush(force=True)
                assert flushed.blocked == "unreachable" and flushed.still_queued == 1
            # The code was never sent: the impostor can still redeem it for someone else.
            with other.client() as client:
                reused = client.post("/api/v1/pair", json={"code": code, "device_name": "x"})
            assert reused.status_code == 201

            # A fresh tablet given the wrong fingerprint refuses the real box the same way.
            async with TabletClient(tls_box.tablet_url, tmp_path / "wrong", fingerprint=other_fp) as wrong:
                with pytest.raises(CertificateMismatch):
                    await wrong.pair(new_code(tls_box.config, "J2"), "judge 2 tablet")
            # Without any pin, the usual CA check applies, and a self-signed box fails it.
            async with TabletClient(tls_box.tablet_url, tmp_path / "nopin") as unpinned:
                with pytest.raises(BoxUnreachable, match=r"(?i)certificate"):
                    await unpinned.pair(new_code(tls_box.config, "J2"), "judge 2 tablet")

        asyncio.run(scenario())
    finally:
        other.stop()


def test_trust_on_first_use_pins_what_the_box_showed_first(tls_box: RunningBox, tmp_path: Path) -> None:
    served = hashlib.sha256(served_certificate(tls_box.tablet_url)).hexdigest()

    async def scenario() -> None:
        async with TabletClient(tls_box.tablet_url, tmp_path / "tablet", trust_on_first_use=True) as client:
            await client.pair(new_code(tls_box.config, "J1"), "judge 1 tablet")
            assert client.pinned_fingerprint == served
        # Saved: the next run of the tablet holds the same pin without being told.
        async with TabletClient(tls_box.tablet_url, tmp_path / "tablet") as again:
            assert again.pinned_fingerprint == served
            assert (await again.heartbeat()).frozen is False

    asyncio.run(scenario())
    assert (tmp_path / "tablet" / "tls-pin.txt").read_text().strip() == served


def test_rotation_on_a_running_box_is_served_and_pinned_tablets_refuse_it(
    tls_box: RunningBox, tmp_path: Path
) -> None:
    old = tls.load_identity(tls_box.config.data_dir).fingerprint

    async def pair_and_score() -> None:
        async with TabletClient(tls_box.tablet_url, tmp_path / "tablet", fingerprint=old) as client:
            await client.pair(new_code(tls_box.config, "J1"), "judge 1 tablet")
            beat = await client.heartbeat()
            assert beat.frozen is False

    asyncio.run(pair_and_score())

    rotated = venuebox(tls_box.config.data_dir, "tls", "rotate", "--address", "192.168.7.20")
    assert rotated.returncode == 0, rotated.stderr
    new = tls.load_identity(tls_box.config.data_dir).fingerprint
    assert new != old and grouped(new) in rotated.stdout

    # The running box switches within its status interval, without a restart.
    wait_until(
        lambda: hashlib.sha256(served_certificate(tls_box.tablet_url)).hexdigest() == new,
        10,
        "the box serves the rotated certificate",
    )
    assert tls_box.process is not None and tls_box.process.poll() is None

    async def after_rotation() -> None:
        async with TabletClient(tls_box.tablet_url, tmp_path / "tablet") as client:
            with pytest.raises(CertificateMismatch):
                await client.heartbeat()
        # Re-pinned to the new fingerprint (read off the console), the tablet pairs again.
        async with TabletClient(tls_box.tablet_url, tmp_path / "tablet", fingerprint=new) as client:
            paired = await client.pair(new_code(tls_box.config, "J1"), "judge 1 tablet")
            assert paired.judge_id == "J1"

    asyncio.run(after_rotation())

    with tls_box.client() as client:
        fresh = client.post(
            "/api/v1/pair", json={"code": new_code(tls_box.config, "J2"), "device_name": "judge 2 tablet"}
        )
    assert fresh.json()["tls_fingerprint"] == new

    # One audit record, fingerprints only.
    import sqlite3

    conn = sqlite3.connect(tls_box.config.db_path)
    try:
        rows = conn.execute("SELECT detail FROM audit_log WHERE action = 'tls.rotate'").fetchall()
    finally:
        conn.close()
    assert len(rows) == 1 and old in rows[0][0] and new in rows[0][0] and "PRIVATE" not in rows[0][0]


def test_txt_fingerprint_equals_the_served_certificate(tmp_path: Path) -> None:
    name = f"TLS box {uuid.uuid4().hex[:6]}"
    config = make_box(tmp_path / "box", tls=True, mdns_enabled=True, mdns_interfaces=["lo"])
    import sqlite3

    conn = sqlite3.connect(config.db_path)
    try:
        with conn:
            conn.execute("UPDATE box SET name = ? WHERE id = 1", (name,))
        box_id = conn.execute("SELECT box_id FROM box").fetchone()[0]
    finally:
        conn.close()
    box = RunningBox(config).start()
    try:
        served = hashlib.sha256(served_certificate(box.tablet_url)).hexdigest()

        async def find() -> Any:
            for _ in range(3):
                found = [b for b in await async_discover(4.0, interfaces=["127.0.0.1"]) if b.box_id == box_id]
                if found:
                    return found[0]
            return None

        advertised = asyncio.run(find())
        assert advertised is not None, "the box was not found by mDNS on loopback"
        assert advertised.tls is True
        assert advertised.fingerprint == served
        assert advertised.base_url.startswith("https://")

        # A client made from the discovery pins the TXT fingerprint and talks to the box.
        async def talk() -> None:
            async with TabletClient.for_box(advertised, tmp_path / "tablet") as client:
                assert client.pinned_fingerprint == served
                await client.pair(new_code(config, "J1"), "judge 1 tablet")

        asyncio.run(talk())
    finally:
        box.stop()


def test_landing_page_explains_how_to_trust_the_box_and_accepts_nothing(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        http_port = probe.getsockname()[1]
    box = start_tls_box(tmp_path / "box", http_port=http_port)
    try:
        identity = tls.load_identity(box.config.data_dir)
        landing = f"http://127.0.0.1:{http_port}"
        page = httpx.get(landing + "/", timeout=5)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert grouped(identity.fingerprint) in page.text
        assert "test-box" in page.text and box.tablet_url.split("//")[1] in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]

        cert = httpx.get(landing + "/box.crt", timeout=5)
        assert cert.status_code == 200 and cert.content == identity.cert_path.read_bytes()

        # A browser asking for any other page is sent to https; the API is refused outright.
        moved = httpx.get(landing + "/score?entry=142", timeout=5)
        assert moved.status_code == 308
        assert moved.headers["location"].startswith("https://") and moved.headers["location"].endswith(
            "/score?entry=142"
        )
        refused = httpx.post(
            landing + "/api/v1/pair", json={"code": new_code(box.config, "J1"), "device_name": "x"}, timeout=5
        )
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["request_id"] == refused.headers["x-request-id"]
        assert httpx.get(landing + "/api/v1/health", timeout=5).status_code == 403
    finally:
        box.stop()


def test_tls_off_serves_plain_http_and_says_so_in_txt_and_pairing(tmp_path: Path) -> None:
    box = RunningBox(make_box(tmp_path / "box", tls=False)).start()
    try:
        assert box.tablet_url.startswith("http://")
        assert box.pair("J1").pairing["tls_fingerprint"] is None
        shown = venuebox(box.config.data_dir, "tls", "show")
        assert shown.returncode == 0 and "TLS is off" in shown.stdout
    finally:
        box.stop()


def test_cli_refuses_a_bad_address_in_one_line_and_changes_nothing(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box", package=None, tls=True)
    before = (config.data_dir / "tls" / "box.pem").read_bytes()
    refused = venuebox(config.data_dir, "tls", "rotate", "--address", "not-an-ip")
    assert refused.returncode != 0
    assert len(refused.stderr.strip().splitlines()) == 1 and "not an IP address" in refused.stderr
    assert (config.data_dir / "tls" / "box.pem").read_bytes() == before


def test_a_crash_between_the_two_writes_is_repaired_on_load(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box", package=None, tls=True)
    identity = tls.load_identity(config.data_dir)
    # The public copy lost (a crash after the key+certificate rename, before box.crt's).
    os.unlink(identity.cert_path)
    again = tls.load_identity(config.data_dir)
    assert again.fingerprint == identity.fingerprint
    assert (
        hashlib.sha256(
            x509.load_pem_x509_certificate(identity.cert_path.read_bytes()).public_bytes(Encoding.DER)
        ).hexdigest()
        == identity.fingerprint
    )


def test_a_damaged_certificate_file_stops_the_daemon_in_one_line_saying_what_to_do(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box", package=None, tls=True)
    (config.data_dir / "tls" / "box.pem").write_text("not a certificate\n")
    done = subprocess.run(
        [sys.executable, "-m", "appliance", "--data-dir", str(config.data_dir), "run", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("venuebox: error:") and "venuebox tls rotate" in last
    # The advice works: a new certificate, and the box starts.
    assert venuebox(config.data_dir, "tls", "rotate").returncode == 0
    box = RunningBox(config).start()
    try:
        with box.client() as client:
            assert client.get("/api/v1/health").status_code == 200
    finally:
        box.stop()
