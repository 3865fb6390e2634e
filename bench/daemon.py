"""Daemon bench: how fast `venuebox run` becomes ready, how much memory it holds with a venue's worth
of tablets, and how quickly it answers their heartbeats while score sheets flow.

What it measures, in one run:

1. **Start-to-READY** (target < 1 s) and **start-to-discoverable** (target < 3 s): ``--starts``
   times (default 5) on a fresh data dir each time (``tests.conftest.make_box``, not timed), from
   ``subprocess.Popen`` of ``python -m appliance --data-dir D run`` (ephemeral ports on 127.0.0.1)
   to: READY=1 on the bench's own ``$NOTIFY_SOCKET`` (what systemd waits for); ``daemon.json``
   naming the new process AND ``GET /api/v1/health`` answering 200; and, with mDNS, the first
   answer a real mDNS client (python-zeroconf, a QM question for the box's instance every 0.1 s,
   each from a fresh ephemeral port on 127.0.0.1, as dig asks) gets. Medians and maxima, plus
   the daemon's own ``ready_after_s`` and ``mdns_advertised_after_s`` from ``daemon.json``
   (advertised = announcements sent, after it became discoverable). Done twice: mDNS
   disabled, and mDNS enabled (restricted to the loopback interface, ``mdns_interfaces = ["lo"]``,
   so no packet leaves the machine; each box has a display name of its own). READY=1 does not wait
   for mDNS: the name check (0.6 s), probing (~1 s) and announcing go on in the background.
   Baseline for the ratio: ``python -c "import appliance.shell.daemon, edge_api.app"`` in a fresh
   subprocess (interpreter start + imports), timed the same number of times in the same run.
2. **Memory** (target < 150 MB): VmRSS and VmHWM of the daemon process from ``/proc/PID/status``:
   idle after start, after pairing ``--tablets`` tablets (default 200, judges J1..J5 round robin,
   through the real admin + pairing API), and sampled every second while every tablet heartbeats
   every ``--heartbeat-s`` (default 10) on its own keep-alive connection, starts staggered over one
   interval. Baseline: the RSS of a bare ``python -c "import appliance.shell.daemon, edge_api.app;
   import time; time.sleep(3)"`` process (imports only). MB here is 10^6 bytes.
3. **Heartbeat latency** p50/p99 at ``--tablets`` tablets: phase A, heartbeats only (the
   baseline), for ``--seconds`` (default 30); phase B, the same heartbeats while
   ``--sheet-tablets`` of the tablets (default 8) also submit sheets continuously on a second
   connection each (an original, then corrections chained with ``supersedes``, as bench/ingest.py
   does), for ``--seconds``; the sheet rate (201 answers/s) is reported too.

Every loop is bounded in count and in time, and the whole run stops by itself: each start waits at
most ``START_TIMEOUT_S``, a load phase is cancelled by a watchdog if it overruns its window by
``loadgen.GRACE_S``, and every daemon started is stopped (SIGTERM, then SIGKILL) before the script exits.
All traffic goes to 127.0.0.1. The load generator (``bench/loadgen.py``, shared with bench/ingest.py)
is a minimal asyncio HTTP/1.1 keep-alive client (uvloop when importable) sharing the machine's cores
with the daemon; httpx is used only for setup.

Run from the repo root (never run as a test)::

    .venv/bin/python bench/daemon.py                          # 5 starts, 200 tablets, 30 s phases
    .venv/bin/python bench/daemon.py --seconds 10 --starts 2 --keep
    .venv/bin/python bench/daemon.py --starts-only --starts 10     # start-to-READY/-discoverable only

Exit status: 0 when every heartbeat and sheet was answered as expected (the targets are reported,
not enforced), 1 when some were not, 2 when the box could not be set up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import math
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import loadgen

# mDNS on the loopback interface only: the advertisement runs its full protocol, nothing leaves the box.
MDNS_LOOPBACK = {"mdns_enabled": True, "mdns_interfaces": ["lo"]}
IMPORTS = "import appliance.shell.daemon, edge_api.app"
START_TIMEOUT_S = 20.0
POLL_S = 0.005  # how often a start is checked for readiness (its resolution)
MDNS_POLL_S = 0.1  # how often the mDNS client asks for the box (the resolution of discoverable)
MAX_SHEETS_PER_PHASE = 2_000_000
TARGET_READY_S = 1.0
TARGET_DISCOVERABLE_S = 3.0
TARGET_RSS_MB = 150.0


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def memory_kb(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of a process in kB, from /proc; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    if len(found) < 2:
        return None
    return found["VmRSS"], found["VmHWM"]


def mb(kb: float) -> float:
    return kb * 1024 / 1e6


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)


def child_env() -> dict[str, str]:
    """The environment for the subprocesses: the repo root first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(loadgen.ROOT), env.get("PYTHONPATH", "")) if p)
    return env


# --------------------------------------------------------------------------------------------
# 1. Start-to-ready
# --------------------------------------------------------------------------------------------


@dataclass
class StartSeries:
    name: str
    wall: list[float] = field(default_factory=list)  # Popen -> daemon.json + health 200
    ready: list[float] = field(default_factory=list)  # Popen -> READY=1 on NOTIFY_SOCKET
    discoverable: list[float] = field(default_factory=list)  # Popen -> a real mDNS client's answer
    ready_after: list[float] = field(default_factory=list)  # the daemon's own figure
    advertised_after: list[float] = field(default_factory=list)  # the daemon's own figure
    error: str = ""


@dataclass
class StartTimes:
    wall: float
    ready: float
    ready_after: float
    discoverable: float | None = None
    advertised_after: float | None = None


def health_ok(tablet_url: str) -> bool:
    host, port = tablet_url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=2.0)
    try:
        conn.request("GET", "/api/v1/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


class MdnsWatch:
    """A real mDNS client in a thread of its own: asks for ``instance`` (SRV, TXT, addresses) every
    ``MDNS_POLL_S`` from an ephemeral port on loopback, and notes when it first gets an answer."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.found_at: float | None = None
        self.error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._watch()), daemon=True)

    def __enter__(self) -> MdnsWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    async def _watch(self) -> None:
        from zeroconf import DNSQuestionType
        from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

        from appliance.shared.protocol_names import SERVICE_TYPE

        deadline = time.perf_counter() + START_TIMEOUT_S
        timeout_ms = int(MDNS_POLL_S * 1000)
        try:
            while not self._stop.is_set() and time.perf_counter() < deadline:
                # A fresh client (a new source port) for each question, as dig would be: a client
                # asking the same question again and again gets its answer only from announcements.
                async with AsyncZeroconf(interfaces=["127.0.0.1"], unicast=True) as client:
                    info = AsyncServiceInfo(SERVICE_TYPE, f"{self.instance}.{SERVICE_TYPE}")
                    found = await info.async_request(
                        client.zeroconf, timeout_ms, question_type=DNSQuestionType.QM
                    )
                if found:
                    self.found_at = time.perf_counter()
                    return
        except Exception as exc:  # reported with the start, never raised in the thread
            self.error = f"{type(exc).__name__}: {exc}"


def start_once(data_dir: Path, instance: str | None) -> StartTimes:
    """Start the daemon on ``data_dir``; the wall seconds to READY=1, to daemon.json + health 200,
    and (with ``instance``, the box's mDNS name) to a real mDNS client's answer."""
    runtime = data_dir / "daemon.json"
    runtime.unlink(missing_ok=True)
    command = [sys.executable, "-m", "appliance", "--data-dir", str(data_dir), "run"]
    command += ["--host", "127.0.0.1", "--port", "0", "--admin-port", "0"]
    notify_path = data_dir / "notify.sock"
    notify_path.unlink(missing_ok=True)
    with contextlib.ExitStack() as stack:
        notify = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
        notify.bind(str(notify_path))
        notify.setblocking(False)
        watch = stack.enter_context(MdnsWatch(instance)) if instance else None
        env = {**child_env(), "NOTIFY_SOCKET": str(notify_path)}
        with (data_dir / "daemon.log").open("ab") as log:
            t0 = time.perf_counter()
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=loadgen.ROOT, env=env
            )
        try:
            return _time_start(process, t0, runtime, notify, watch)
        finally:
            stop_process(process)


def _time_start(
    process: subprocess.Popen[bytes], t0: float, runtime: Path, notify: socket.socket, watch: MdnsWatch | None
) -> StartTimes:
    info: dict[str, Any] | None = None
    ready = healthy = None
    for _ in range(int(START_TIMEOUT_S / POLL_S)):
        if time.perf_counter() - t0 > START_TIMEOUT_S:
            break
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited early:\n{(runtime.parent / 'daemon.log').read_text()[-2000:]}")
        with contextlib.suppress(BlockingIOError):
            while True:
                if "READY=1" in notify.recv(65536).decode(errors="replace").split("\n") and ready is None:
                    ready = time.perf_counter() - t0
        if info is None and runtime.exists():
            with contextlib.suppress(OSError, ValueError):
                candidate = json.loads(runtime.read_text())
                if candidate.get("pid") == process.pid:
                    info = candidate
        if healthy is None and info is not None and health_ok(info["tablet_url"]):
            healthy = time.perf_counter() - t0
        discovered = watch is None or watch.found_at is not None or bool(watch.error)
        if ready is not None and healthy is not None and discovered:
            break
        time.sleep(POLL_S)
    if ready is None or healthy is None or info is None:
        raise RuntimeError(f"daemon not ready in {START_TIMEOUT_S:g} s")
    times = StartTimes(healthy, ready, float(info["ready_after_s"]))
    if watch is not None:
        if watch.found_at is None:
            raise RuntimeError(
                f"no mDNS answer for {watch.instance!r} in {START_TIMEOUT_S:g} s {watch.error}"
            )
        times.discoverable = watch.found_at - t0
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            times.advertised_after = float(json.loads(runtime.read_text())["mdns_advertised_after_s"])
    return times


def own_name(db_path: Path) -> str:
    """Give the box of ``db_path`` a display name of its own (no clash with any other box on this
    host, whose rename would cost a name check); returns it, which is its mDNS instance name."""
    name = f"Bench box {uuid.uuid4().hex[:6]}"
    conn = sqlite3.connect(db_path)
    try:
        with conn:
            conn.execute("UPDATE box SET name = ? WHERE id = 1", (name,))
    finally:
        conn.close()
    return name


def start_series(name: str, make_box: Any, base: Path, count: int, settings: dict[str, Any]) -> StartSeries:
    series = StartSeries(name)
    for i in range(count):
        data_dir = base / f"{name.replace(' ', '-')}-{i + 1}"
        config = make_box(data_dir, **settings)
        instance = own_name(config.db_path) if settings.get("mdns_enabled") else None
        try:
            times = start_once(data_dir, instance)
        except RuntimeError as exc:
            series.error = str(exc).splitlines()[0]
            print(f"  ... {name}: start {i + 1} failed: {exc}", flush=True)
            break
        series.wall.append(times.wall)
        series.ready.append(times.ready)
        series.ready_after.append(times.ready_after)
        found = ""
        if times.discoverable is not None:
            series.discoverable.append(times.discoverable)
            found = f", discoverable {times.discoverable:.3f} s"
            if times.advertised_after is not None:
                series.advertised_after.append(times.advertised_after)
        print(
            f"  ... {name}: start {i + 1}: READY {times.ready:.3f} s, healthy {times.wall:.3f} s{found} "
            f"(daemon says ready {times.ready_after:.3f} s)",
            flush=True,
        )
    return series


def import_series(count: int) -> StartSeries:
    series = StartSeries("imports only")
    for _ in range(count):
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", IMPORTS], cwd=loadgen.ROOT, env=child_env(), timeout=60)
        if done.returncode != 0:
            series.error = f"exit {done.returncode}"
            break
        series.wall.append(time.perf_counter() - t0)
    return series


def bare_import_memory() -> tuple[int, int] | None:
    """VmRSS/VmHWM of a process that only imports the daemon's modules, read while it sleeps."""
    code = f"{IMPORTS}; import time; time.sleep(3)"
    process = subprocess.Popen([sys.executable, "-c", code], cwd=loadgen.ROOT, env=child_env())
    last = None
    try:
        for _ in range(100):  # 10 s at most; the process sleeps 3 s after its imports
            if process.poll() is not None:
                break
            last = memory_kb(process.pid) or last
            time.sleep(0.1)
    finally:
        process.kill()
        process.wait(15)
    return last


# --------------------------------------------------------------------------------------------
# 2 + 3. Tablets, heartbeats and sheets against one running daemon
# --------------------------------------------------------------------------------------------


def pair_tablets(box: Any, count: int, sheet_tablets: int) -> list[loadgen.BenchTablet]:
    """Pair ``count`` tablets (judges round robin) over one admin and one tablet connection; give the
    first ``sheet_tablets`` their own share of their judge's entries, so no two race on a chain."""
    import httpx

    token = box.config.admin_token_path.read_text().strip()
    tablets: list[loadgen.BenchTablet] = []
    timeout = httpx.Timeout(30.0, connect=5.0)
    auth = {"Authorization": f"Bearer {token}"}
    with (
        httpx.Client(base_url=box.admin_url, timeout=timeout, headers=auth) as admin,
        httpx.Client(base_url=box.tablet_url, timeout=timeout) as client,
    ):
        try:
            _pair_all(admin, client, tablets, count, sheet_tablets)
        except httpx.HTTPError as exc:
            raise RuntimeError(f"pairing failed: {exc}") from exc
    return tablets


def _pair_all(
    admin: Any, client: Any, tablets: list[loadgen.BenchTablet], count: int, sheet_tablets: int
) -> None:
    """Pair the tablets into ``tablets``; the writers get their chains' entries and valid values."""
    for i in range(count):
        judge = loadgen.JUDGES[i % len(loadgen.JUDGES)]
        code = admin.post("/admin/v1/pairing-codes", json={"judge_id": judge}).raise_for_status().json()
        paired = client.post("/api/v1/pair", json={"code": code["code"], "device_name": f"bench {i + 1}"})
        if paired.status_code != 201:
            raise RuntimeError(f"pairing tablet {i + 1} answered {paired.status_code}: {paired.text}")
        body = paired.json()
        tablets.append(loadgen.BenchTablet(i, body["judge"]["id"], body["token"]))
    writers = tablets[:sheet_tablets]
    by_judge: dict[str, list[loadgen.BenchTablet]] = {}
    for t in writers:
        by_judge.setdefault(t.judge_id, []).append(t)
    for judge_id, group in by_judge.items():
        headers = {"Authorization": f"Bearer {group[0].token}"}
        event = client.get("/api/v1/event", headers=headers).raise_for_status().json()
        shares = loadgen.panel_shares(event, judge_id, len(group), "writers")
        for t, share in zip(group, shares, strict=True):
            t.entries = share
            t.values_json = loadgen.valid_values(event["criteria"], t.index)


@dataclass
class LoadPhase:
    name: str
    seconds: float
    start: float = 0.0
    end: float = 0.0
    beats: int = 0
    hb_latencies: list[float] = field(default_factory=list)  # seconds, 200 answers
    hb_errors: Counter[str] = field(default_factory=Counter)
    hb_connects: int = 0  # heartbeat connections (re)opened during the phase
    sheets_sent: int = 0
    sheets_created: int = 0
    sheet_latencies: list[float] = field(default_factory=list)
    sheet_errors: Counter[str] = field(default_factory=Counter)
    rss_kb: list[int] = field(default_factory=list)  # one sample a second
    hwm_kb: int = 0
    server_cpu: float = 0.0
    cancelled: int = 0

    @property
    def sheet_rate(self) -> float:
        return self.sheets_created / self.seconds


def heartbeat_body(index: int) -> bytes:
    sent_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    battery = 100 - index % 60
    return (
        f'{{"sent_at":"{sent_at}","battery":{battery},"app_version":"bench-1.0","queue_depth":0}}'
    ).encode()


async def heartbeat_loop(
    ph: LoadPhase, conn: loadgen.Conn, tablet: loadgen.BenchTablet, offset: float, interval: float
) -> None:
    """Beat at start + offset + k * interval until the phase ends (a fixed schedule, no drift)."""
    for k in range(int(ph.seconds / interval) + 2):
        due = ph.start + offset + k * interval
        if due >= ph.end:
            return
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        ph.beats += 1
        request = loadgen.with_body(tablet.heartbeat_head, heartbeat_body(tablet.index))
        t0 = time.perf_counter()
        try:
            status, _ = await conn.request(request)
        except loadgen.NET_ERRORS as exc:
            ph.hb_errors[type(exc).__name__] += 1
            conn.close()
            continue
        if status == 200:
            ph.hb_latencies.append(time.perf_counter() - t0)
        else:
            ph.hb_errors[str(status)] += 1


async def sheet_loop(
    ph: LoadPhase, conn: loadgen.Conn, tablet: loadgen.BenchTablet, submitted_at: str
) -> None:
    """Submit sheets back to back until the phase ends: originals, then corrections of the head."""
    tablet.submitted_at = submitted_at
    for _ in range(MAX_SHEETS_PER_PHASE):
        if time.perf_counter() >= ph.end or ph.sheets_sent >= MAX_SHEETS_PER_PHASE:
            return
        ph.sheets_sent += 1
        try:
            status, t0, t1 = await loadgen.post_next_sheet(conn, tablet)
        except loadgen.NET_ERRORS as exc:
            ph.sheet_errors[type(exc).__name__] += 1
            conn.close()
            continue
        if status != 201:
            ph.sheet_errors[str(status)] += 1
        elif t1 < ph.end:
            ph.sheets_created += 1
            ph.sheet_latencies.append(t1 - t0)


async def sample_memory(ph: LoadPhase, pid: int) -> None:
    for _ in range(int(ph.seconds) + int(loadgen.GRACE_S) + 2):
        reading = memory_kb(pid)
        if reading is not None:
            ph.rss_kb.append(reading[0])
            ph.hwm_kb = max(ph.hwm_kb, reading[1])
        if time.perf_counter() >= ph.end:
            return
        await asyncio.sleep(min(1.0, max(0.0, ph.end - time.perf_counter())))


async def run_load_phase(
    ph: LoadPhase,
    pid: int,
    tablets: list[loadgen.BenchTablet],
    hb_conns: list[loadgen.Conn],
    writers: list[tuple[loadgen.BenchTablet, loadgen.Conn]],
    interval: float,
) -> LoadPhase:
    cpu0, opens0 = loadgen.cpu_seconds(pid), sum(c.opens for c in hb_conns)
    ph.start = time.perf_counter()
    ph.end = ph.start + ph.seconds
    submitted_at = datetime.now(UTC).isoformat(timespec="seconds")
    step = interval / len(tablets)
    beats = enumerate(zip(tablets, hb_conns, strict=True))
    coros = [heartbeat_loop(ph, c, t, i * step, interval) for i, (t, c) in beats]
    coros += [sheet_loop(ph, c, t, submitted_at) for t, c in writers]
    coros.append(sample_memory(ph, pid))
    ph.cancelled = await loadgen.run_watched(coros, ph.seconds + loadgen.GRACE_S)
    ph.server_cpu = (loadgen.cpu_seconds(pid) - cpu0) / (time.perf_counter() - ph.start)
    ph.hb_connects = sum(c.opens for c in hb_conns) - opens0
    return ph


async def load(box: Any, tablets: list[loadgen.BenchTablet], args: argparse.Namespace) -> list[LoadPhase]:
    url = box.tablet_url.removeprefix("http://")
    host, port = url.rsplit(":", 1)
    pid = box.process.pid
    for t in tablets:
        auth = {
            "User-Agent": "venuebox-bench",
            "Accept": "application/json",
            "Authorization": f"Bearer {t.token}",
            "Content-Type": "application/json",
        }
        t.heartbeat_head = loadgen.request_head("POST", "/api/v1/heartbeat", url, auth)
        t.sheet_head = loadgen.request_head("POST", "/api/v1/sheets", url, auth)
    hb_conns: list[loadgen.Conn] = []
    sheet_conns: list[loadgen.Conn] = []
    try:
        # Heartbeat connections open at each tablet's first beat (staggered, as tablets come online),
        # so every beat in both phases is measured the same way.
        hb_conns = [loadgen.Conn(host, int(port)) for _ in tablets]
        writers = [t for t in tablets if t.entries]
        sheet_conns = await loadgen.open_connections(host, int(port), len(writers))
        phases = []
        phase = LoadPhase(f"A: heartbeats only, {len(tablets)} tablets", args.seconds)
        phases.append(await run_load_phase(phase, pid, tablets, hb_conns, [], args.heartbeat_s))
        _progress(phase)
        phase = LoadPhase(f"B: heartbeats + {len(writers)} sheet writers", args.seconds)
        pairs = list(zip(writers, sheet_conns, strict=True))
        phases.append(await run_load_phase(phase, pid, tablets, hb_conns, pairs, args.heartbeat_s))
        _progress(phase)
        return phases
    finally:
        loadgen.close_all(hb_conns + sheet_conns)


def _progress(ph: LoadPhase) -> None:
    p99 = loadgen.pct(ph.hb_latencies, 0.99)
    print(
        f"  ... {ph.name}: {len(ph.hb_latencies)} heartbeats, p99 {p99:.1f} ms, "
        f"{ph.sheet_rate:,.0f} sheets/s, peak RSS {mb(max(ph.rss_kb, default=0)):.1f} MB",
        flush=True,
    )


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


@dataclass
class Memory:
    bare: tuple[int, int] | None = None
    idle: tuple[int, int] | None = None
    paired: tuple[int, int] | None = None
    end: tuple[int, int] | None = None


def report_starts(imports: StartSeries, series: list[StartSeries], args: argparse.Namespace) -> None:
    print(f"1. start-to-READY and start-to-discoverable: from Popen, {args.starts} starts each")
    header = (
        f"   {'what':<28}{'READY med':>10}{'max':>7}{'healthy med':>12}{'max':>7}"
        f"{'discoverable med':>17}{'max':>7}{'x imports':>10}"
    )
    print(header)
    print("   " + "-" * (len(header) - 3))
    base = statistics.median(imports.wall) if imports.wall else float("nan")
    for s in [imports, *series]:
        if not s.wall:
            print(f"   {s.name:<28}failed: {s.error}")
            continue
        if s is imports:
            med, top = statistics.median(s.wall), max(s.wall)
            print(f"   {s.name:<28}{med:>10.3f}{top:>7.3f}{'':>36}{'1.00':>10}")
            continue
        ready = f"{statistics.median(s.ready):>10.3f}{max(s.ready):>7.3f}"
        healthy = f"{statistics.median(s.wall):>12.3f}{max(s.wall):>7.3f}"
        found = (
            f"{statistics.median(s.discoverable):>17.3f}{max(s.discoverable):>7.3f}"
            if s.discoverable
            else f"{'-':>17}{'-':>7}"
        )
        print(f"   {s.name:<28}{ready}{healthy}{found}{statistics.median(s.ready) / base:>10.2f}")
    print(
        "   (seconds from Popen; READY = READY=1 on the bench's NOTIFY_SOCKET; healthy = daemon.json\n"
        "    + GET /api/v1/health 200; discoverable = a real mDNS client's first answer, asked every\n"
        f"    {MDNS_POLL_S:g} s; x imports = READY median / imports only, that is\n"
        "    python -c 'import appliance.shell.daemon, edge_api.app' in a fresh subprocess)"
    )
    for s in series:
        if s.ready_after:
            own = f"ready_after_s median {statistics.median(s.ready_after):.3f}"
            if s.advertised_after:
                own += f", mdns_advertised_after_s median {statistics.median(s.advertised_after):.3f}"
            print(f"   daemon's own figures ({s.name}, from Daemon.run(), no interpreter start): {own}")
    for s in series:
        if not s.ready:
            print(f"   target start-to-READY < {TARGET_READY_S:g} s ({s.name}): no successful start")
            continue
        ok = max(s.ready) < TARGET_READY_S
        print(
            f"   target start-to-READY < {TARGET_READY_S:g} s ({s.name}): median "
            f"{statistics.median(s.ready):.3f} s, max {max(s.ready):.3f} s -> {loadgen.verdict(ok)}"
        )
    for s in series:
        if s.discoverable:
            ok = max(s.discoverable) < TARGET_DISCOVERABLE_S
            print(
                f"   target start-to-discoverable < {TARGET_DISCOVERABLE_S:g} s ({s.name}): median "
                f"{statistics.median(s.discoverable):.3f} s, max {max(s.discoverable):.3f} s "
                f"-> {loadgen.verdict(ok)}"
            )
    print(
        "   (mDNS no longer delays READY=1: its name check (0.6 s), probing (~1 s, RFC 6762 section 8)\n"
        "    and announcing run in the background, started as soon as the tablet port is bound;\n"
        "    probing waits until the listeners serve)"
    )


def fmt_mem(reading: tuple[int, int] | None) -> str:
    if reading is None:
        return f"{'-':>10}{'-':>10}"
    return f"{mb(reading[0]):>10.1f}{mb(reading[1]):>10.1f}"


def report_memory(memory: Memory, phases: list[LoadPhase], tablets: int, heartbeat_s: float) -> bool:
    print(f"2. daemon memory (MB = 10^6 bytes), {tablets} tablets heartbeating every {heartbeat_s:g} s")
    header = f"   {'what':<52}{'VmRSS':>10}{'VmHWM':>10}"
    print(header)
    print("   " + "-" * (len(header) - 3))
    print(f"   {'bare imports (baseline, python -c ...; sleep)':<52}{fmt_mem(memory.bare)}")
    print(f"   {'daemon idle, 1 s after ready':<52}{fmt_mem(memory.idle)}")
    print(f"   {f'daemon after pairing {tablets} tablets':<52}{fmt_mem(memory.paired)}")
    for ph in phases:
        peak = (max(ph.rss_kb), ph.hwm_kb) if ph.rss_kb else None
        print(f"   {'peak during ' + ph.name:<52}{fmt_mem(peak)}")
    print(f"   {'daemon at the end of the run':<52}{fmt_mem(memory.end)}")
    peak_rss = max((max(ph.rss_kb) for ph in phases if ph.rss_kb), default=0)
    hwm = max([ph.hwm_kb for ph in phases] + [memory.end[1] if memory.end else 0])
    if memory.bare:
        print(f"   ratio peak VmRSS / bare imports VmRSS: {peak_rss / memory.bare[0]:.2f}")
    print(
        f"   target RSS < {TARGET_RSS_MB:g} MB: peak VmRSS {mb(peak_rss):.1f} MB (sampled every 1 s), "
        f"VmHWM {mb(hwm):.1f} MB -> {loadgen.verdict(0 < mb(hwm) < TARGET_RSS_MB)}"
    )
    return 0 < mb(hwm) < TARGET_RSS_MB


def report_latency(phases: list[LoadPhase], loop_name: str) -> None:
    print(f"3. heartbeat latency (client: {loop_name}, one keep-alive connection per tablet)")
    header = (
        f"   {'phase':<38}{'beats':>7}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'errors':>8}{'connects':>10}"
        f"{'sheets/s':>10}{'sheet p99':>10}{'srv CPU':>9}"
    )
    print(header)
    print("   " + "-" * (len(header) - 3))
    for ph in phases:
        errors = sum(ph.hb_errors.values())
        sheet_p99 = f"{loadgen.pct(ph.sheet_latencies, 0.99):.1f}" if ph.sheet_latencies else "-"
        print(
            f"   {ph.name:<38}{len(ph.hb_latencies):>7}{loadgen.pct(ph.hb_latencies, 0.5):>8.1f}"
            f"{loadgen.pct(ph.hb_latencies, 0.99):>8.1f}{loadgen.pct(ph.hb_latencies, 1.0):>8.1f}"
            f"{errors:>8}{ph.hb_connects:>10}"
            f"{ph.sheet_rate:>10,.0f}{sheet_p99:>10}{ph.server_cpu:>9.0%}"
        )
    print(
        "   (phase A is the baseline; srv CPU is the daemon's share of one core over the phase;\n"
        "    connects = heartbeat connections opened in the phase: the daemon's uvicorn closes a\n"
        "    keep-alive connection idle for 5 s, so with heartbeats further apart a tablet reconnects,\n"
        "    and the latency includes it)"
    )
    a, b = phases
    if a.hb_latencies and b.hb_latencies:
        print(
            f"   ratio heartbeat p50 / p99 with sheets vs without: "
            f"{loadgen.pct(b.hb_latencies, 0.5) / loadgen.pct(a.hb_latencies, 0.5):.1f}x / "
            f"{loadgen.pct(b.hb_latencies, 0.99) / loadgen.pct(a.hb_latencies, 0.99):.1f}x"
        )
    for ph in phases:
        for label, counted in (("heartbeat", ph.hb_errors), ("sheet", ph.sheet_errors)):
            if counted:
                detail = ", ".join(f"{k}: {v}" for k, v in counted.most_common())
                print(f"   {label} errors in {ph.name}: {detail}")
        if ph.cancelled:
            print(f"   {ph.cancelled} tasks of {ph.name} were cancelled by the watchdog")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per load phase (30)")
    parser.add_argument("--tablets", type=int, default=200, help="simulated tablets (200)")
    parser.add_argument("--heartbeat-s", type=float, default=10.0, help="heartbeat interval, seconds (10)")
    parser.add_argument("--starts", type=int, default=5, help="daemon starts per start series (5)")
    parser.add_argument(
        "--sheet-tablets", type=int, default=8, help="tablets that also submit sheets in phase B (8)"
    )
    parser.add_argument("--starts-only", action="store_true", help="measure the starts (1.) only")
    parser.add_argument("--keep", action="store_true", help="keep the data dirs (their path is printed)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.tablets < 1 or args.heartbeat_s <= 0 or not 1 <= args.starts <= 100:
        parser.error("--seconds, --tablets, --heartbeat-s must be positive, --starts within 1..100")
    if args.seconds > 3600 or args.tablets > 5000:
        parser.error("--seconds at most 3600, --tablets at most 5000")
    args.sheet_tablets = max(0, min(args.sheet_tablets, args.tablets))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    make_box, running_box = loadgen.load_fixtures()
    workdir = Path(tempfile.mkdtemp(prefix="venuebox-daemon-bench-"))
    box = None
    try:
        print(f"bench: data dirs under {workdir}; {os.cpu_count()} CPUs", flush=True)
        imports = import_series(args.starts)
        print(f"  ... imports only: median {statistics.median(imports.wall or [math.nan]):.3f} s", flush=True)
        series = [
            start_series("daemon, mDNS disabled", make_box, workdir, args.starts, {"mdns_enabled": False}),
            start_series("daemon, mDNS enabled (lo)", make_box, workdir, args.starts, MDNS_LOOPBACK),
        ]
        if args.starts_only:
            print()
            print(f"venuebox daemon bench: starts only, {os.cpu_count()} CPUs")
            report_starts(imports, series, args)
            return 1 if not imports.wall or any(not s.wall for s in series) else 0

        memory = Memory(bare=bare_import_memory())
        config = make_box(workdir / "load", **loadgen.HIGH_LIMITS)
        box = running_box(config, env=loadgen.HIGH_LIMITS_ENV).start(timeout=START_TIMEOUT_S)
        pid = box.process.pid
        print(f"bench: load box on {box.tablet_url} (pid {pid})", flush=True)
        time.sleep(1.0)
        memory.idle = memory_kb(pid)
        tablets = pair_tablets(box, args.tablets, args.sheet_tablets)
        memory.paired = memory_kb(pid)
        print(f"  ... paired {len(tablets)} tablets", flush=True)
        phases, loop_name = loadgen.run_loop(load(box, tablets, args))
        memory.end = memory_kb(pid)
        box.stop()

        print()
        print(
            f"venuebox daemon bench: {args.tablets} tablets, heartbeat every {args.heartbeat_s:g} s, "
            f"{args.seconds:g} s per load phase, {os.cpu_count()} CPUs shared by daemon and client"
        )
        report_starts(imports, series, args)
        report_memory(memory, phases, args.tablets, args.heartbeat_s)
        report_latency(phases, loop_name)
        failed = any(ph.hb_errors or ph.sheet_errors or ph.cancelled for ph in phases)
        failed = failed or not imports.wall or any(not s.wall for s in series)
        print(f"check: every heartbeat answered 200 and every sheet 201: {'FAILED' if failed else 'OK'}")
        return 1 if failed else 0
    except (RuntimeError, AssertionError, OSError) as exc:
        print(f"bench: setup failed: {exc}", file=sys.stderr)
        return 2
    finally:
        if box is not None:
            box.stop()
        if args.keep:
            print(f"data dirs kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
