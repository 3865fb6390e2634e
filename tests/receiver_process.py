"""The reference uplink receiver as a real process (`venuebox ingest-server run`), shared by the
receiver's own tests and the box's uplink tests."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from uplink.protocol import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, signature

TIMEOUT = httpx.Timeout(10.0, connect=5.0)
BOX = "vb-000000000001"


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", "ingest-server", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def add_box(data_dir: Path, box_id: str, *extra: str) -> str:
    done = cli(data_dir, "add-box", box_id, *extra)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def record(
    record_id: str, *, seq: int | None = None, sheet: str | None = None, **fields: Any
) -> dict[str, Any]:
    """A sheet record. Its ledger place (``seq``) and hash come from the record id unless given;
    ``sheet`` names the sheet the hash is made of (another sheet: another hash)."""
    digest = hashlib.sha256(record_id.encode()).hexdigest()
    return {
        "id": record_id,
        "kind": "sheet",
        "created_at": "2026-03-14T10:42:07.123456Z",
        "payload": {
            "sheet_id": sheet or record_id,
            "seq": seq if seq is not None else int(digest[:12], 16) + 1,
            "hash": hashlib.sha256((sheet or record_id).encode()).hexdigest(),
            "values": {"technique": 7.5},
        },
        **fields,
    }


def audit_record(record_id: str, seq: int, *, action: str = "box.freeze", **fields: Any) -> dict[str, Any]:
    """An audit record as the box sends it: its payload the audit-log row, with its place in the
    audit log (``seq``) and its hash, made of the row (another ``action``: another hash)."""
    row = {"seq": seq, "at": "2026-03-14T10:42:07.123456Z", "actor": "tech", "action": action}
    digest = hashlib.sha256(json.dumps(row, sort_keys=True).encode()).hexdigest()
    return {
        "id": record_id,
        "kind": "audit",
        "created_at": "2026-03-14T10:42:07.123456Z",
        "payload": row | {"detail": {}, "request_id": None, "prev_hash": "0" * 64, "hash": digest},
        **fields,
    }


@dataclass
class RunningReceiver:
    """An `ingest-server run` process on an ephemeral port."""

    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    url: str = ""

    def start(self, *extra: str, timeout: float = 15.0) -> RunningReceiver:
        """Start it (``extra`` arguments go to `ingest-server run`, e.g. --tls-cert/--tls-key)."""
        runtime = self.data_dir / "receiver.json"
        runtime.unlink(missing_ok=True)
        log_path = self.data_dir / "receiver.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        data = str(self.data_dir)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "appliance",
                "ingest-server",
                "run",
                "--port",
                "0",
                "--data-dir",
                data,
                *extra,
            ],
            stdout=log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"receiver exited early:\n{log_path.read_text()}")
            if runtime.exists():
                info = json.loads(runtime.read_text())
                if info["pid"] == self.process.pid:
                    self.url = info["url"]
                    return self
            time.sleep(0.05)
        self.process.kill()
        self.process.wait()
        raise RuntimeError(f"receiver not ready in {timeout}s:\n{log_path.read_text()}")

    def stop(self) -> int | None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=TIMEOUT)

    def post(
        self,
        token: str,
        records: list[dict[str, Any]] | None = None,
        *,
        box_id: str = BOX,
        key: str | None = None,
        body: bytes | None = None,
        signed_body: bytes | None = None,
        signed_at: int | None = None,
        sign_with: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """A batch as the box sends it; each keyword bends one part of it for a test."""
        if body is None:
            body = json.dumps({"records": records or []}).encode()
        sent_headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: key or str(uuid.uuid4()),
            SIGNATURE_HEADER: signature(
                sign_with or token,
                signed_at if signed_at is not None else int(time.time()),
                body if signed_body is None else signed_body,
            ),
        } | (headers or {})
        with self.client() as client:
            return client.post(f"/v1/boxes/{box_id}/records", content=body, headers=sent_headers)

    def records(self, token: str, box_id: str = BOX, **params: Any) -> httpx.Response:
        with self.client() as client:
            # No token: no Authorization header at all ("Bearer " alone is not a valid header value).
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return client.get(f"/v1/boxes/{box_id}/records", params=params, headers=headers)

    def ledger(self, token: str, box_id: str = BOX, **params: Any) -> httpx.Response:
        with self.client() as client:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return client.get(f"/v1/boxes/{box_id}/ledger", params=params, headers=headers)

    def chain(self, token: str, chain: str, box_id: str = BOX, **params: Any) -> httpx.Response:
        with self.client() as client:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return client.get(f"/v1/boxes/{box_id}/chains/{chain}", params=params, headers=headers)

    def stored_ids(self, box_id: str = BOX) -> list[str]:
        conn = sqlite3.connect(self.data_dir / "receiver.sqlite")
        try:
            rows = conn.execute("SELECT record_id FROM records WHERE box_id = ? ORDER BY seq", (box_id,))
            return [row[0] for row in rows]
        finally:
            conn.close()

    def metric(self, name: str) -> float:
        with self.client() as client:
            text = client.get("/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))
