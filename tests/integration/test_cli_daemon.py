"""The daemon-side CLI as a tech uses it: `venuebox demo` and `venuebox simulate`."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from appliance.core import tls
from appliance.shared.fingerprint import grouped
from tests.conftest import RunningBox, make_box


def _sheets(data_dir: Path) -> int:
    conn = sqlite3.connect(data_dir / "venuebox.sqlite")
    try:
        return conn.execute("SELECT count(*) FROM sheets").fetchone()[0]
    finally:
        conn.close()


def test_demo_scores_with_simulated_judges_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    env = {**os.environ, "VENUEBOX_ADMIN_PORT": "0", "VENUEBOX_MDNS_ENABLED": "false"}
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appliance",
            "--data-dir",
            str(tmp_path / "demo"),
            "demo",
            "--port",
            "0",
            "--tablets",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert demo.stdout is not None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            lines.append(line)
            if "Ctrl-C stops the box" in line or not line:
                break
        assert any("J1" in line for line in lines), "".join(lines)
        # As shipped: HTTPS, with the fingerprint to compare, and the judge app's address.
        fingerprint = tls.load_identity(tmp_path / "demo").fingerprint
        assert any(f"certificate {grouped(fingerprint)}" in line for line in lines), "".join(lines)
        app_url = next(line.split()[2] for line in lines if line.strip().startswith("judge app"))
        assert app_url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=tmp_path / "demo" / "tls" / "box.crt")
        page = httpx.get(app_url, verify=trust, timeout=10)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        # Let the simulated judges pair and score (a loaded machine takes longer than a quiet one).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _sheets(tmp_path / "demo") == 0:
            time.sleep(0.25)
        demo.send_signal(signal.SIGINT)
        out, _ = demo.communicate(timeout=20)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0, out
    assert "3/3 tablets paired" in out
    status = subprocess.run(
        [sys.executable, "-m", "appliance", "--data-dir", str(tmp_path / "demo"), "status", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    snap = json.loads(status.stdout)
    assert snap["daemon"] is None and snap["sheets"]["total"] > 0
    # The demo's cloud: a reference receiver it started and stopped, which got the box's records.
    assert any("uplink      to the reference receiver at http://127.0.0.1:" in line for line in lines)
    assert snap["uplink"]["target"]["source"] == "configure"
    receiver = sqlite3.connect(tmp_path / "demo" / "receiver" / "receiver.sqlite")
    try:
        sent = receiver.execute("SELECT count(*) FROM records").fetchone()[0]
    finally:
        receiver.close()
    assert sent > 0 and snap["uplink"]["records_acked"] > 0
    assert not (tmp_path / "demo" / "receiver" / "receiver.json").exists()  # stopped with the demo


def test_simulate_pairs_and_scores_against_a_running_box(tmp_path: Path) -> None:
    box = RunningBox(make_box(tmp_path / "box", pair_attempts_per_minute=1000)).start()
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "appliance",
                "--data-dir",
                str(box.config.data_dir),
                "simulate",
                "--tablets",
                "2",
                "--seconds",
                "3",
                "--pace",
                "0.3",
                "--url",
                box.tablet_url,
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["paired"] == 2 and report["acknowledged"] > 0
        with box.admin() as admin:
            assert admin.get("/admin/v1/status").json()["sheets"]["total"] >= report["acknowledged"]
    finally:
        box.stop()


def test_simulate_without_a_running_box_is_one_readable_line(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box", admin_port=1)  # nothing listens on port 1
    done = subprocess.run(
        [sys.executable, "-m", "appliance", "--data-dir", str(config.data_dir), "simulate", "--seconds", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("venuebox: error: cannot reach the box's admin API") and "venuebox run" in line
