"""Two real hosts: the box in one network namespace, judges' tablets in another, joined by a veth
pair with real multicast. The tablets find the box by mDNS, pair and score over the "LAN"."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_box

# Addresses from TEST-NET-2 (RFC 5737): documentation space, never routed anywhere, and here only
# inside namespaces this test creates and removes.
BOX_ADDRESS, TABLET_ADDRESS = "198.51.100.1", "198.51.100.2"


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)


@pytest.fixture
def two_hosts() -> Iterator[tuple[str, str, str]]:
    """(box namespace, tablets' namespace, the box's LAN interface)."""
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (`ip`) is not installed")
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root")
    tag = uuid.uuid4().hex[:6]
    box_ns, tablet_ns = f"vb-box-{tag}", f"vb-tab-{tag}"
    made = _ip("netns", "add", box_ns)
    if made.returncode != 0:
        pytest.skip(f"network namespaces cannot be made here: {made.stderr.strip()}")
    try:
        steps = [
            ("netns", "add", tablet_ns),
            ("link", "add", f"vbb{tag}", "type", "veth", "peer", "name", f"vbt{tag}"),
            ("link", "set", f"vbb{tag}", "netns", box_ns),
            ("link", "set", f"vbt{tag}", "netns", tablet_ns),
            ("-n", box_ns, "addr", "add", f"{BOX_ADDRESS}/24", "dev", f"vbb{tag}"),
            ("-n", tablet_ns, "addr", "add", f"{TABLET_ADDRESS}/24", "dev", f"vbt{tag}"),
            ("-n", box_ns, "link", "set", "lo", "up"),
            ("-n", tablet_ns, "link", "set", "lo", "up"),
            ("-n", box_ns, "link", "set", f"vbb{tag}", "up", "multicast", "on"),
            ("-n", tablet_ns, "link", "set", f"vbt{tag}", "up", "multicast", "on"),
            ("-n", box_ns, "route", "add", "224.0.0.0/4", "dev", f"vbb{tag}"),
            ("-n", tablet_ns, "route", "add", "224.0.0.0/4", "dev", f"vbt{tag}"),
        ]
        for step in steps:
            result = _ip(*step)
            if result.returncode != 0:
                pytest.skip(f"cannot set up the test network ({' '.join(step)}): {result.stderr.strip()}")
        yield box_ns, tablet_ns, f"vbb{tag}"
    finally:
        _ip("netns", "del", box_ns)
        _ip("netns", "del", tablet_ns)


TABLETS = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from appliance.tablet_client.client import TabletClient
    from appliance.tablet_client.discovery import async_discover
    from appliance.tablet_client.sheet_queue import make_sheet

    async def main(codes, state):
        found = []
        for _ in range(10):
            found = await async_discover(timeout_s=3.0, max_boxes=1)
            if found:
                break
        box = found[0]
        results = {"discovered": box.name, "box_id": box.box_id, "url": box.base_url, "stored": []}
        for index, code in enumerate(codes):
            async with TabletClient(box.base_url, Path(state) / f"tablet{index}") as client:
                await client.pair(code, f"netns tablet {index}")
                event = await client.event()
                entries = [e["entry_id"] for s in event["sessions"] if s["on_panel"] for e in s["entries"]]
                values = {c["key"]: c["max"] for c in event["criteria"]}
                for entry_id in entries[:3]:
                    result = await client.submit(make_sheet(entry_id, values))
                    if result.state == "stored":
                        results["stored"].append(result.sheet_id)
                results["stored"].extend((await client.flush(force=True)).acknowledged)
        print(json.dumps(results))

    asyncio.run(main(json.loads(sys.argv[1]), sys.argv[2]))
    """
)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def _start_daemon(namespace: str, config, tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = (tmp_path / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            namespace,
            sys.executable,
            "-m",
            "appliance",
            "--data-dir",
            str(config.data_dir),
            "run",
            "--host",
            "0.0.0.0",
            "--port",
            "8080",
            "--admin-port",
            "8081",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    deadline = time.monotonic() + 20
    while not (config.data_dir / "daemon.json").exists():
        if daemon.poll() is not None or time.monotonic() > deadline:
            daemon.kill()
            raise AssertionError((tmp_path / "daemon.log").read_text())
        time.sleep(0.1)
    return daemon


def test_tablets_on_another_host_discover_pair_and_score(two_hosts, tmp_path: Path) -> None:
    box_ns, tablet_ns, _ = two_hosts
    config = make_box(tmp_path / "box", mdns_enabled=True)
    env = _env()
    daemon = _start_daemon(box_ns, config, tmp_path, env)
    try:
        codes = []
        for judge in ("J1", "J2"):
            made = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    box_ns,
                    sys.executable,
                    "-m",
                    "appliance",
                    "--data-dir",
                    str(config.data_dir),
                    "pair",
                    "new",
                    "--judge",
                    judge,
                    "--json",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
            )
            assert made.returncode == 0, made.stderr
            codes.append(json.loads(made.stdout)["code"])

        tablets = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                tablet_ns,
                sys.executable,
                "-c",
                TABLETS,
                json.dumps(codes),
                str(tmp_path / "tablets"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert tablets.returncode == 0, tablets.stderr
        result = json.loads(tablets.stdout.strip().splitlines()[-1])
        assert result["url"].startswith(f"http://{BOX_ADDRESS}:8080")
        assert len(result["stored"]) == 6

        # The admin API is not on the LAN: the tablets' host cannot even connect to it.
        admin = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                tablet_ns,
                sys.executable,
                "-c",
                f"import httpx; httpx.get('http://{BOX_ADDRESS}:8081/admin/v1/status', timeout=3)",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        assert admin.returncode != 0 and "ConnectError" in admin.stderr
    finally:
        daemon.terminate()
        assert daemon.wait(15) == 0
    stored = {r[0] for r in sqlite3.connect(config.db_path).execute("SELECT sheet_id FROM sheets")}
    assert set(result["stored"]) == stored


FIND_BOX = textwrap.dedent(
    """
    import asyncio, json, sys
    from appliance.tablet_client.discovery import async_discover

    async def main(wanted):
        found = []
        for _ in range(20):  # the box looks at its addresses every 5 s
            found = await async_discover(timeout_s=2.0, max_boxes=1)
            if found and wanted in found[0].addresses:
                break
            await asyncio.sleep(1)
        print(json.dumps(found[0].addresses if found else []))

    asyncio.run(main(sys.argv[1]))
    """
)


def test_the_advertisement_follows_an_address_change_without_a_restart(two_hosts, tmp_path: Path) -> None:
    box_ns, tablet_ns, box_if = two_hosts
    config = make_box(tmp_path / "box", mdns_enabled=True)
    env = _env()
    daemon = _start_daemon(box_ns, config, tmp_path, env)
    try:

        def addresses_seen(wanted: str) -> list[str]:
            found = subprocess.run(
                ["ip", "netns", "exec", tablet_ns, sys.executable, "-c", FIND_BOX, wanted],
                capture_output=True,
                text=True,
                timeout=90,
                env=env,
            )
            assert found.returncode == 0, found.stderr
            return json.loads(found.stdout.strip().splitlines()[-1])

        assert BOX_ADDRESS in addresses_seen(BOX_ADDRESS)
        # The venue's AP restarted and its DHCP hands the box another address: the old one goes
        # away, the new one comes.
        new_address = "198.51.100.7"
        assert _ip("-n", box_ns, "addr", "del", f"{BOX_ADDRESS}/24", "dev", box_if).returncode == 0
        time.sleep(1)
        assert _ip("-n", box_ns, "addr", "add", f"{new_address}/24", "dev", box_if).returncode == 0
        seen = addresses_seen(new_address)
        assert new_address in seen and BOX_ADDRESS not in seen, seen
    finally:
        daemon.terminate()
        assert daemon.wait(15) == 0


ASK_ADMIN = textwrap.dedent(
    """
    import httpx, json, sys
    headers = {"Authorization": "Bearer " + sys.argv[2]}
    answer = httpx.get(sys.argv[1] + "/admin/v1/status", headers=headers, timeout=5)
    print(json.dumps({"status": answer.status_code, "type": answer.headers.get("content-type"),
                      "body": answer.json()}))
    """
)


def test_an_admin_api_opened_to_the_lan_by_mistake_still_refuses_the_lan(two_hosts, tmp_path: Path) -> None:
    """A tech set admin_host = 0.0.0.0 but not admin_allow_remote: a host on the LAN with the
    right admin token still gets 403; the box itself (loopback) gets its status."""
    box_ns, tablet_ns, _ = two_hosts
    config = make_box(tmp_path / "box", admin_host="0.0.0.0")
    env = _env()
    token = config.admin_token_path.read_text().strip()
    daemon = _start_daemon(box_ns, config, tmp_path, env)
    try:

        def ask(namespace: str, url: str) -> dict:
            done = subprocess.run(
                ["ip", "netns", "exec", namespace, sys.executable, "-c", ASK_ADMIN, url, token],
                capture_output=True,
                text=True,
                timeout=30,
                env=env,
            )
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout.strip().splitlines()[-1])

        from_lan = ask(tablet_ns, f"http://{BOX_ADDRESS}:8081")
        assert from_lan["status"] == 403
        assert from_lan["type"].startswith("application/problem+json") and from_lan["body"]["request_id"]
        assert "loopback" in from_lan["body"]["detail"]
        on_the_box = ask(box_ns, "http://127.0.0.1:8081")
        assert on_the_box["status"] == 200 and on_the_box["body"]["box"]["id"]
    finally:
        daemon.terminate()
        assert daemon.wait(15) == 0


def _dig_from(namespace: str, server: str, *question: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            namespace,
            "dig",
            "-p",
            "5353",
            f"@{server}",
            *question,
            "+time=2",
            "+tries=1",
            "+short",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig (bind9-dnsutils) is not installed")
def test_the_runbooks_dig_check_from_another_host(two_hosts, tmp_path: Path) -> None:
    """docs/operations.md, "Run the box": `dig -p 5353 @<box address>` from a laptop on the LAN finds
    the box; `@224.0.0.251` never does (the answer comes from the box's own address)."""
    box_ns, tablet_ns, _ = two_hosts
    config = make_box(tmp_path / "box", mdns_enabled=True)
    daemon = _start_daemon(box_ns, config, tmp_path, _env())
    try:
        deadline = time.monotonic() + 30
        answer = ""
        while "_venuebox._tcp.local." not in answer and time.monotonic() < deadline:
            answer = _dig_from(tablet_ns, BOX_ADDRESS, "_venuebox._tcp.local", "PTR").stdout
            time.sleep(0.5)
        assert answer.strip().endswith("._venuebox._tcp.local."), answer
        instance = answer.strip().splitlines()[0]
        details = _dig_from(tablet_ns, BOX_ADDRESS, instance, "SRV").stdout.split()
        assert details and details[2] == "8080", details

        group = _dig_from(tablet_ns, "224.0.0.251", "_venuebox._tcp.local", "PTR")
        assert "_venuebox._tcp.local." not in group.stdout, group.stdout
    finally:
        daemon.terminate()
        assert daemon.wait(15) == 0
