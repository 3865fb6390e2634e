"""First contact pinned: the pairing URL (the console's QR code, `venuebox pair new`) carries the
certificate fingerprint, and the tablet client refuses to send the code to a box presenting another
certificate, however the URL's address was made to lead there."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from appliance.core import tls
from appliance.shared.fingerprint import short_fingerprint
from appliance.tablet_client.client import pair_with_url
from appliance.tablet_client.errors import CertificateMismatch
from tests.conftest import RunningBox, make_box, venuebox

pytestmark = pytest.mark.timeout(90)


class Impostor:
    """An HTTPS server with its own self-signed certificate that answers a pairing as a box would,
    and records every request it gets (method, path, body)."""

    def __init__(self, directory: Path) -> None:
        key_pem, cert_pem = tls.make_certificate("impostor", [])
        directory.mkdir(parents=True)
        (directory / "impostor.pem").write_bytes(key_pem + cert_pem)
        self.fingerprint = tls.pem_fingerprint(cert_pem)
        self.requests: list[tuple[str, str, bytes]] = []
        impostor = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(b"")

            def do_POST(self) -> None:
                self._answer(self.rfile.read(int(self.headers.get("content-length") or 0)))

            def _answer(self, body: bytes) -> None:
                impostor.requests.append((self.command, self.path, body))
                reply = json.dumps(
                    {
                        "device_id": "x",
                        "token": "x",
                        "judge": {"id": "J1", "name": "x"},
                        "event": {"id": "x", "name": "x"},
                    }
                ).encode()
                self.send_response(201)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory / "impostor.pem")
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tls_box(tmp_path: Path) -> Iterator[RunningBox]:
    box = RunningBox(make_box(tmp_path / "box", tls=True, pair_attempts_per_minute=1000)).start()
    yield box
    box.stop()


@pytest.fixture
def impostor(tmp_path: Path) -> Iterator[Impostor]:
    server = Impostor(tmp_path / "impostor")
    yield server
    server.close()


def test_an_impostor_reached_through_the_pairing_url_never_gets_the_code(
    tls_box: RunningBox, impostor: Impostor, tmp_path: Path
) -> None:
    fingerprint = tls.load_identity(tls_box.config.data_dir).fingerprint
    made = venuebox(tls_box.config, "pair", "new", "--judge", "J1", "--json")
    assert made.returncode == 0, made.stderr
    code = json.loads(made.stdout)
    assert code["tls_fingerprint"] == fingerprint
    assert code["url"] == f"{tls_box.tablet_url}/?pair={code['code']}#fp={fingerprint}"

    # The same URL, its address leading to the impostor (a spoofed name, a rogue access point).
    forged = code["url"].replace(tls_box.tablet_url, impostor.url)
    assert f"?pair={code['code']}#fp={fingerprint}" in forged

    async def scenario() -> None:
        with pytest.raises(CertificateMismatch) as refused:
            await pair_with_url(forged, tmp_path / "tablet", "judge 1 tablet")
        assert (refused.value.pinned, refused.value.presented) == (fingerprint, impostor.fingerprint)
        assert "pinned" in str(refused.value)
        assert not (tmp_path / "tablet" / "pairing.json").exists()

        # The real box still takes the code: it was never spent.
        client, pairing = await pair_with_url(code["url"], tmp_path / "tablet", "judge 1 tablet")
        async with client:
            assert pairing.judge_id == "J1"
            assert client.pinned_fingerprint == fingerprint
            assert (await client.event())["event"]["id"] == pairing.event_id

    asyncio.run(scenario())
    assert impostor.requests == []  # not one request: no code, no device name


def test_pair_new_prints_the_url_with_the_fingerprint_and_the_words_to_compare(tls_box: RunningBox) -> None:
    fingerprint = tls.load_identity(tls_box.config.data_dir).fingerprint
    made = venuebox(tls_box.config, "pair", "new", "--judge", "J2")
    assert made.returncode == 0, made.stderr
    lines = made.stdout.strip().splitlines()
    code = lines[-1]  # still the last line, for scripts
    assert f"{tls_box.tablet_url}/?pair={code}#fp={fingerprint}" in made.stdout
    assert short_fingerprint(fingerprint) in made.stdout
    # The console's QR code (the admin API) carries the same.
    with tls_box.admin() as admin:
        answer = admin.post("/admin/v1/pairing-codes", json={"judge_id": "J2"}).raise_for_status().json()
    assert answer["url"] == f"{tls_box.tablet_url}/?pair={answer['code']}#fp={fingerprint}"


def test_pair_new_without_a_running_box_names_the_certificate_on_disk(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box", tls=True, port=8443)
    fingerprint = tls.load_identity(config.data_dir).fingerprint
    made = venuebox(config, "pair", "new", "--judge", "J1", "--json")
    assert made.returncode == 0, made.stderr
    code = json.loads(made.stdout)
    assert code["url"].endswith(f":8443/?pair={code['code']}#fp={fingerprint}")
    plain = make_box(tmp_path / "plain")
    made = json.loads(venuebox(plain, "pair", "new", "--judge", "J1", "--json").stdout)
    assert "#fp=" not in made["url"] and made["tls_fingerprint"] is None
