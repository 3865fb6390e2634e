"""Fixtures that build real things: a real data dir and SQLite file, a real server process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.core import keys, personal
from appliance.core.config import Config, load_config
from appliance.core.devices import Device
from appliance.core.pairing import create_code, redeem
from appliance.core.storage import Store
from provisioning.event_import import import_package, load_package
from provisioning.first_boot import init_box

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_EVENT = ROOT / "provisioning" / "sample_event"
TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def venuebox(
    box: Config | Path | None, *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI as a tech runs it, in a process of its own, on ``box`` (a config or a data dir; None:
    no --data-dir); ``env`` is added to this process's environment."""
    data_dir = box.data_dir if isinstance(box, Config) else box
    where = ["--data-dir", str(data_dir)] if data_dir is not None else []
    return subprocess.run(
        [sys.executable, "-m", "appliance", *where, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def needs_tool(present: bool, reason: str) -> pytest.MarkDecorator:
    """Skip a test whose real peer tool is missing on a developer's machine, saying which and why.
    Under CI (which installs every tool, `.ci/run`) it never skips: the test runs and fails, since
    a skipped proof of a "done when" is no proof."""
    return pytest.mark.skipif(not present and not os.environ.get("CI"), reason=reason)


def box_id_of(config: Config) -> str:
    """The box id in a data dir's database, read with the plain sqlite3 module."""
    conn = sqlite3.connect(config.db_path)
    try:
        return conn.execute("SELECT box_id FROM box").fetchone()[0]
    finally:
        conn.close()


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 30.0) -> Any:
    """``probe()``'s first truthy answer, asked every 50 ms; fails naming ``what`` after ``timeout``
    seconds (a bound for a loaded machine, never a timing check)."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(0.05)


class NotifySocket:
    """systemd's side of sd_notify: the datagram socket a daemon given ``$NOTIFY_SOCKET`` (``path``)
    reports READY=1, STATUS=, WATCHDOG=1 and STOPPING=1 to."""

    def __init__(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)

    def messages(self, seconds: float) -> list[str]:
        """What the daemon told "systemd" during ``seconds`` (0: what is waiting now)."""
        deadline = time.monotonic() + seconds
        found: list[str] = []
        while True:
            try:
                found.extend(self.sock.recv(65536).decode(errors="replace").split("\n"))
            except TimeoutError:
                if time.monotonic() >= deadline:
                    return found

    def wait_ready(self, process: subprocess.Popen[Any], timeout: float) -> bool:
        """Whether READY=1 came before ``timeout`` seconds, or the process ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(TimeoutError):
                if "READY=1" in self.sock.recv(65536).decode(errors="replace").split("\n"):
                    return True
        return False

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A real file system of its own, ``size`` big, mounted at ``mount`` (a USB key, a second disk),
    unmounted afterwards. Mounting needs root and a kernel that allows it: without them the test is
    skipped saying which, except under CI (`.ci/run` runs as root), where it fails instead."""
    mount.mkdir(parents=True, exist_ok=True)
    refusal = "mounting a tmpfs needs root (.ci/run runs as root)" if os.geteuid() != 0 else None
    if refusal is None:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True
        )
        if done.returncode != 0:
            refusal = f"this machine does not allow mounting a tmpfs: {done.stderr.decode().strip()}"
    if refusal is not None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(refusal)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def served_certificate(url: str) -> bytes:
    """The DER certificate a TLS server at ``url`` presents (nothing else is sent)."""
    parsed = httpx.URL(url)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((parsed.host, parsed.port), timeout=5) as raw,
        context.wrap_socket(raw) as wrapped,
    ):
        der = wrapped.getpeercert(binary_form=True)
    assert der
    return der


def make_box(data_dir: Path, package: Path | None = SAMPLE_EVENT, **settings: Any) -> Config:
    """A real initialised data dir (database, tokens, keys) with the sample event imported.

    ``settings`` go into the data dir's venuebox.toml, so a server started on it uses them too."""
    data_dir.mkdir(parents=True, exist_ok=True)
    # Test boxes do not advertise on the LAN unless a test is about that (faster start, no noise),
    # and serve plain HTTP unless the test is about TLS (tests/integration/test_tls.py).
    # Every test request comes from 127.0.0.1, where a venue has many tablets: the per-address
    # limit is tested on its own (tests/integration/test_limits.py).
    defaults = {"mdns_enabled": False, "tls": False, "address_rate_per_s": 1e6, "address_burst": 1_000_000}
    settings = {**defaults, **settings}
    # JSON scalars (numbers, true/false, quoted strings) are valid TOML values.
    (data_dir / "venuebox.toml").write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
    config = load_config(data_dir, environ={})
    init_box(config, name="test-box")
    if package is not None:
        key = personal.load_key(config.data_key_path)
        loaded = load_package(package)
        with Store(config.db_path) as store:
            store.write_sync(lambda conn: import_package(conn, loaded, key, "test"))
    return config


def new_code(config: Config, judge_id: str, ttl_s: int = 600) -> str:
    key = keys.pairing_key(config)
    with Store(config.db_path) as store:
        return store.write_sync(lambda conn: create_code(conn, judge_id, ttl_s, "test", key=key))["code"]


@pytest.fixture
def box_config(tmp_path: Path) -> Config:
    return make_box(tmp_path / "box")


@pytest.fixture
def sample_store(tmp_path: Path) -> Iterator[Store]:
    """The writer of a real box with the sample event, for domain tests without a server."""
    with Store(make_box(tmp_path / "box").db_path) as store:
        yield store


def paired_device(store: Store, judge_id: str) -> Device:
    """A really paired device for ``judge_id`` (a code, redeemed), as the ledger needs one."""
    key = keys.pairing_key(Config(data_dir=store.path.parent))
    code = store.write_sync(lambda c: create_code(c, judge_id, 600, "test", key=key))["code"]
    paired = store.write_sync(lambda c: redeem(c, code, f"{judge_id} tablet", None, key=key))
    return Device(paired["device_id"], paired["event"]["id"], judge_id, f"{judge_id} tablet")


@dataclass
class RunningBox:
    """A `venuebox run` daemon process on ephemeral ports, driven over real HTTP."""

    config: Config
    process: subprocess.Popen[bytes] | None = None
    tablet_url: str = ""
    admin_url: str = ""
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    # 0: any free port (a new one on each start); a browser test that restarts the box keeps one.
    port: int = 0
    # The same for the admin API (simulated tablets pair through it: a recovery drill keeps it).
    admin_port: int = 0

    def start(self, timeout: float = 15.0) -> RunningBox:
        runtime = self.config.data_dir / "daemon.json"
        runtime.unlink(missing_ok=True)
        self.log_path = self.config.data_dir / "daemon.log"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "appliance",
                "--data-dir",
                str(self.config.data_dir),
                "run",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--admin-port",
                str(self.admin_port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
            if runtime.exists():
                info = json.loads(runtime.read_text())
                if info["pid"] == self.process.pid:
                    self.tablet_url, self.admin_url = info["tablet_url"], info["admin_url"]
                    return self
            time.sleep(0.05)
        self.kill()  # never leave a half-started daemon behind
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.log_path.read_text()}")

    def stop(self) -> int | None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode if self.process else None

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """How a test trusts the tablet port: with TLS, exactly the box's own certificate (which
        names 127.0.0.1, so the host name is checked too)."""
        if not self.tablet_url.startswith("https:"):
            return True
        return ssl.create_default_context(cafile=self.config.data_dir / "tls" / "box.crt")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.tablet_url, timeout=TIMEOUT, verify=self.verify)

    def admin(self) -> httpx.Client:
        token = self.config.admin_token_path.read_text().strip()
        return httpx.Client(
            base_url=self.admin_url, timeout=TIMEOUT, headers={"Authorization": f"Bearer {token}"}
        )

    def pair(self, judge_id: str, device_name: str = "test tablet") -> Tablet:
        with self.admin() as admin:
            code = (
                admin.post("/admin/v1/pairing-codes", json={"judge_id": judge_id}).raise_for_status().json()
            )
        with self.client() as client:
            paired = client.post("/api/v1/pair", json={"code": code["code"], "device_name": device_name})
        assert paired.status_code == 201, paired.text
        return Tablet(self, paired.json())


@dataclass
class Tablet:
    """A paired judge tablet (the test's own minimal client of PROTOCOL.md)."""

    box: RunningBox
    pairing: dict[str, Any]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.pairing['token']}"}

    @property
    def judge_id(self) -> str:
        return self.pairing["judge"]["id"]

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.box.tablet_url, timeout=TIMEOUT, headers=self.headers, verify=self.box.verify
        )

    def event(self) -> dict[str, Any]:
        with self.client() as c:
            return c.get("/api/v1/event").raise_for_status().json()

    def sheet_for(self, entry_id: str, **fields: Any) -> dict[str, Any]:
        event = self.event()
        values = {c["key"]: c["min"] + c["step"] * 3 for c in event["criteria"]}
        return {
            "sheet_id": str(uuid.uuid4()),
            "entry_id": entry_id,
            "values": values,
            "submitted_at": datetime.now(UTC).isoformat(),
            **fields,
        }


def panel_entries(event: dict[str, Any]) -> list[str]:
    return [e["entry_id"] for s in event["sessions"] if s["on_panel"] for e in s["entries"]]


@pytest.fixture
def running_box(tmp_path: Path) -> Iterator[RunningBox]:
    box = RunningBox(make_box(tmp_path / "box", device_rate_per_s=1000.0, device_burst=1000)).start()
    yield box
    box.stop()
