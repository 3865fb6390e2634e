"""Console bench: how fast `venuebox console` paints, what one refresh costs at a venue's size, and how
much memory the console holds.

The box it runs against is real and big: a generated event package (``--entries`` entries, default
1,000, over ``--sessions`` sessions, default 6, of uneven size, the middle one the biggest; judges
J1..J5, three of them on every session), imported by ``tests.conftest.make_box``; the daemon started
by ``tests.conftest.RunningBox`` with the rate limits raised; ``--tablets`` tablets (default 200)
paired through the real admin and pairing API (``bench/daemon.py``'s ``pair_tablets``, judges round
robin). One tablet per judge scores what a mid-event box has seen: every session before the biggest
and 60 % of the biggest, minus one (entry, judge) in 37, with corrections of about one sheet in ten,
a few thousand sheets in all. Every tablet heartbeats before each part, so presence is live.

What it measures, in one run:

1. **Time to first paint** (target < 1 s): ``--runs`` times (default 5) ``python -m appliance
   --data-dir D console`` is spawned on the slave side of a fresh pseudo-terminal (80x24,
   TERM=xterm-256color); the time from ``subprocess.Popen`` to the first byte written to the
   terminal, and to the moment the output holds the overview's banner ("scoring open", drawn once the
   first status has come back from the daemon). Then ``q`` quits it. Baseline, spawned the same way
   in turn with the console: a minimal Textual app that paints one Static, so the ratio is our cost
   over Textual's own start; and, to split that cost, the console's imports alone (``python -c``,
   printing when done).
2. **Cost of one refresh** (target < 50 ms): ``tui.app.ConsoleApp`` in this process, headless
   (``App.run_test(size=(120, 40))``, ``poll=False``), with an ``AdminClient`` on the daemon. Each
   step ``--reps`` times (default 20), in turn, from a settled app (``pilot.pause()``), median and
   p95: ``await app.poll_status()`` (status fetch + banner and overview redraw), the Tablets screen's
   ``refresh_data()`` (all tablets) and the Scores screen's ``refresh_data()`` on the biggest
   session, each alone and up to the end of the next frame it causes (``pilot.pause(0)``: pending
   messages, layout, the compositor's render of the 120x40 screen); the HTTP fetch alone through the
   console's client; the widget update alone on pre-fetched data (``app.status = ...``,
   ``TabletsScreen.show``, ``ScoresScreen.show_grid``), with unchanged data and with data that lays
   the table out again (tablet rows in another order: two snapshots a heartbeat round apart; another
   session's grid). Baseline: the admin API's own latency for the same endpoints,
   ``httpx.AsyncClient`` GETs in the same loop.
3. **A live console**: VmRSS/VmHWM (``/proc/PID/status``) of a pty console after its first paint,
   then through ``--live-s`` seconds (default 20) of heartbeats from every tablet every 10 s
   (``bench/daemon.py``'s load phase, sampling the console's memory every second), a third of them
   on each of the Overview, Tablets and Scores screens: for each, the time from its key to its text
   in the terminal, the console's CPU share, and its memory at the end. Baseline: the minimal Textual
   app's RSS after its paint.

Every wait is bounded, and every process started is stopped (``q``, then SIGTERM, then SIGKILL)
before the script exits. All traffic goes to 127.0.0.1. The default run takes about 2 minutes.

Run from the repo root (never run as a test)::

    .venv/bin/python bench/console.py                         # 5 paints, 20 reps, 20 s live
    .venv/bin/python bench/console.py --runs 10 --reps 200 --live-s 60 --keep

Exit status: 0 when every part ran and the console painted every time (the targets are reported,
not enforced), 1 when it did not, 2 when the box could not be set up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import fcntl
import inspect
import json
import os
import pty
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import daemon as daemon_bench
import loadgen

if TYPE_CHECKING:  # the console's modules are imported where the console is timed
    from appliance.shared.admin_wire import Device, SessionGrid
    from appliance.shared.status import ConsoleStatus

TARGET_PAINT_S = 1.0
TARGET_REFRESH_MS = 50.0
PAINT_TIMEOUT_S = 20.0
QUIT_TIMEOUT_S = 10.0
TERMINAL = (24, 80)  # rows, columns
HEADLESS_SIZE = (120, 40)  # columns, rows (Textual's order)
HEARTBEAT_S = 10.0
BANNER = b"scoring open"  # the overview banner of a box that is not frozen
BASELINE_TEXT = b"minimal app painted"
# What `python -m appliance console` imports before Textual starts; printed, not drawn.
IMPORTS_ONLY = "import appliance.shell.cli, tui.app, tui.client; print('imported')"
BASELINE_APP = f"""
from textual.app import App
from textual.widgets import Static

class Minimal(App):
    BINDINGS = [("q", "quit", "Quit")]

    def compose(self):
        yield Static({BASELINE_TEXT.decode()!r})

Minimal().run()
"""
CRITERIA = [
    {"key": "technique", "label": "Technique", "min": 0, "max": 10, "step": 0.1},
    {"key": "performance", "label": "Performance", "min": 0, "max": 10, "step": 0.1},
    {"key": "choreography", "label": "Choreography", "min": 0, "max": 10, "step": 0.5},
]
TITLES = ("La Vie en Rose", "Clair de Lune", "Niña Bonita", "Éclat", "Hello, Goodbye", "Shine ✨", "Fire 🔥")
CATEGORIES = ("Solo", "Duet", "Trio", "Small Group", "Large Group")
STUDIOS = ("Northside Dance Collective", "Danse Étoile Montréal", "Lakeshore Performing Arts")
SCORED_SHARE_OF_CURRENT = 0.6  # how far the current session has got
SKIP_EVERY = 37  # every 37th (entry, judge) of the danced ones has no sheet: the grid shows gaps
CORRECT_EVERY = 10  # about one sheet in ten is corrected


# --------------------------------------------------------------------------------------------
# The event package
# --------------------------------------------------------------------------------------------


@dataclass
class Package:
    path: Path
    sessions: list[tuple[str, list[str]]]  # (session id, entry ids in running order)
    current: str  # the session being danced: the biggest
    scored: dict[str, list[str]]  # judge -> entries with a sheet, the current session's first

    @property
    def entries(self) -> int:
        return sum(len(ids) for _, ids in self.sessions)


def session_sizes(entries: int, sessions: int) -> list[int]:
    """Uneven sessions: the middle one the biggest, the first and last the smallest."""
    weights = [3] * sessions
    weights[sessions // 2] = 5
    if sessions > 2:
        weights[0] = weights[-1] = 2
    sizes = [entries * w // sum(weights) for w in weights]
    sizes[sessions // 2] += entries - sum(sizes)
    return sizes


def judge_panels(sessions: list[str]) -> dict[str, str]:
    """judges.csv's sessions column: J1..J3 on every session, J4 and J5 on alternate ones."""
    odd, even = sessions[1::2] or sessions, sessions[::2]
    return {"J1": "*", "J2": "*", "J3": "*", "J4": ";".join(odd), "J5": ";".join(even)}


def write_event_package(folder: Path, entries: int, sessions: int) -> Package:
    """A valid EVENT_PACKAGE.md folder of ``entries`` entries over ``sessions`` sessions, and which
    (entry, judge) pairs a mid-event box would hold sheets for."""
    folder.mkdir(parents=True, exist_ok=True)
    start = datetime(2026, 3, 13, 18, 0, tzinfo=UTC)
    ids = [f"S{k + 1}" for k in range(sessions)]
    event = {
        "id": f"bench-{entries}",
        "name": f"Console bench ({entries:,} entries)",
        "timezone": "America/Toronto",
        "criteria": CRITERIA,
        "sessions": [
            {
                "id": sid,
                "name": f"Session {k + 1}",
                "stage": "Main Stage",
                "starts_at": _rfc3339(start, k * 300),
            }
            for k, sid in enumerate(ids)
        ],
    }
    (folder / "event.json").write_text(json.dumps(event, ensure_ascii=False, indent=2), encoding="utf-8")
    layout: list[tuple[str, list[str]]] = []
    with (folder / "entries.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["entry_id", "session_id", "order", "scheduled_at", "title", "category", "studio"])
        number = 1000
        for k, (sid, size) in enumerate(zip(ids, session_sizes(entries, sessions), strict=True)):
            layout.append((sid, []))
            for order in range(1, size + 1):
                number += 1
                layout[-1][1].append(str(number))
                title = f"{TITLES[number % len(TITLES)]} {number}"
                category, studio = CATEGORIES[number % len(CATEGORIES)], STUDIOS[number % len(STUDIOS)]
                when = _rfc3339(start, k * 300 + order * 3)
                writer.writerow([number, sid, order, when, title, category, studio])
    panels = judge_panels(ids)
    with (folder / "judges.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["judge_id", "name", "sessions"])
        writer.writerows([judge, f"Judge {judge[1:]}", panel] for judge, panel in panels.items())
    current = max(layout, key=lambda s: len(s[1]))[0]
    return Package(folder, layout, current, scored_entries(layout, current, panels))


def scored_entries(
    layout: list[tuple[str, list[str]]], current: str, panels: dict[str, str]
) -> dict[str, list[str]]:
    """Per judge, the entries already danced on their panel, minus the skipped ones. The current
    session comes first, so its sheets are the first sent and their corrections the last: the
    newest sheet is in the current session, which makes it the box's current session."""
    position = [sid for sid, _ in layout].index(current)
    danced: list[tuple[str, list[str]]] = []
    for k, (sid, entry_ids) in enumerate(layout[: position + 1]):
        share = round(len(entry_ids) * SCORED_SHARE_OF_CURRENT) if k == position else len(entry_ids)
        danced.append((sid, entry_ids[:share]))
    danced.insert(0, danced.pop())
    scored: dict[str, list[str]] = {}
    for j, (judge, panel) in enumerate(panels.items()):
        on_panel = {sid for sid, _ in layout} if panel == "*" else set(panel.split(";"))
        scored[judge] = [
            entry
            for sid, entry_ids in danced
            if sid in on_panel
            for entry in entry_ids
            if (int(entry) + j) % SKIP_EVERY
        ]
    return scored


def _rfc3339(start: datetime, minutes: int) -> str:
    return (start + timedelta(minutes=minutes)).isoformat()


# --------------------------------------------------------------------------------------------
# The box: a daemon on the package, tablets paired, sheets and heartbeats sent
# --------------------------------------------------------------------------------------------


def set_request_heads(box: Any, tablets: list[loadgen.BenchTablet]) -> None:
    host = box.tablet_url.removeprefix("http://")
    for t in tablets:
        auth = {"Authorization": f"Bearer {t.token}", "Content-Type": "application/json"}
        t.heartbeat_head = loadgen.request_head("POST", "/api/v1/heartbeat", host, auth)
        t.sheet_head = loadgen.request_head("POST", "/api/v1/sheets", host, auth)


async def send_sheets(box: Any, writers: list[loadgen.BenchTablet], package: Package) -> int:
    """Each writer (one tablet per judge) sends an original for each of its judge's scored entries,
    then corrects the first tenth of them; returns how many were stored (201)."""
    host, port = box.tablet_url.removeprefix("http://").rsplit(":", 1)
    conns = await loadgen.open_connections(host, int(port), len(writers))
    submitted_at = datetime.now(UTC).isoformat(timespec="seconds")

    async def write(conn: loadgen.Conn, tablet: loadgen.BenchTablet) -> int:
        tablet.entries = package.scored[tablet.judge_id]
        tablet.values_json = loadgen.valid_values(CRITERIA, tablet.index)
        tablet.submitted_at = submitted_at
        stored = 0
        for _ in range(len(tablet.entries) + len(tablet.entries) // CORRECT_EVERY):
            status, _, _ = await loadgen.post_next_sheet(conn, tablet)
            stored += status == 201
        return stored

    try:
        return sum(await asyncio.gather(*(write(c, t) for c, t in zip(conns, writers, strict=True))))
    finally:
        loadgen.close_all(conns)


async def heartbeat_phase(
    name: str, seconds: float, pid: int, tablets: list[loadgen.BenchTablet], box: Any
) -> daemon_bench.LoadPhase:
    """Every tablet heartbeats every HEARTBEAT_S (staggered; once when ``seconds`` is shorter) on its
    own keep-alive connection; the phase samples the memory and CPU of process ``pid``."""
    host, port = box.tablet_url.removeprefix("http://").rsplit(":", 1)
    conns = [loadgen.Conn(host, int(port)) for _ in tablets]
    interval = min(HEARTBEAT_S, seconds)
    try:
        phase = daemon_bench.LoadPhase(name, seconds)
        return await daemon_bench.run_load_phase(phase, pid, tablets, conns, [], interval)
    finally:
        loadgen.close_all(conns)


def beat_once(box: Any, tablets: list[loadgen.BenchTablet]) -> None:
    phase, _ = loadgen.run_loop(heartbeat_phase("heartbeats", 1.0, box.process.pid, tablets, box))
    if phase.hb_errors or len(phase.hb_latencies) != len(tablets):
        raise RuntimeError(f"heartbeats failed: {dict(phase.hb_errors)}")


# --------------------------------------------------------------------------------------------
# 1. A process in a pseudo-terminal
# --------------------------------------------------------------------------------------------


class PtyProcess:
    """A command on the slave side of a fresh pseudo-terminal; a thread drains the master side (as a
    terminal would: a full pty would block the app) and notes when awaited text first shows."""

    def __init__(self, command: list[str]) -> None:
        master, slave = pty.openpty()
        rows, columns = TERMINAL
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        env = {k: v for k, v in daemon_bench.child_env().items() if k not in ("COLUMNS", "LINES")}
        env["TERM"] = "xterm-256color"
        self.master = master
        self.output = bytearray()
        self.first_byte: float | None = None
        self._changed = threading.Condition()
        self.started = time.perf_counter()
        try:
            self.process = subprocess.Popen(
                command,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=loadgen.ROOT,
                env=env,
                start_new_session=True,
            )
        except OSError:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the app exited and closed the terminal
                chunk = b""
            with self._changed:
                if chunk:
                    self.first_byte = self.first_byte or time.perf_counter()
                    self.output += chunk
                self._changed.notify_all()
            if not chunk:
                return

    def expect(self, text: bytes, timeout: float, since: int = 0) -> float | None:
        """Wait until ``text`` shows in the output after byte ``since``; the perf_counter time at
        which it was first seen, or None after ``timeout`` seconds or if the app exits first."""
        deadline = time.perf_counter() + timeout
        with self._changed:
            while text not in self.output[since:]:
                left = deadline - time.perf_counter()
                if left <= 0 or not self._reader.is_alive():
                    return None
                self._changed.wait(left)
            return time.perf_counter()

    def press(self, keys: str) -> int:
        """Type ``keys``; returns the output offset from which their effect shows."""
        with self._changed:
            mark = len(self.output)
        os.write(self.master, keys.encode())
        return mark

    def stop(self) -> int | None:
        """Quit with ``q`` like a tech, then SIGTERM, then SIGKILL; the exit status."""
        if self.process.poll() is None:
            try:
                self.press("q")
                self.process.wait(QUIT_TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired):
                daemon_bench.stop_process(self.process)
        self._reader.join(5)
        os.close(self.master)
        return self.process.returncode


@dataclass
class PaintSeries:
    name: str
    first_byte: list[float] = field(default_factory=list)
    painted: list[float] = field(default_factory=list)
    memory: tuple[int, int] | None = None  # of the last run, just after its paint
    failures: list[str] = field(default_factory=list)


def paint_once(series: PaintSeries, command: list[str], text: bytes) -> None:
    app = PtyProcess(command)
    try:
        seen = app.expect(text, PAINT_TIMEOUT_S)
        if seen is None:
            tail = bytes(app.output[-300:]).decode("utf-8", "replace")
            series.failures.append(
                f"no {text.decode()!r} in {PAINT_TIMEOUT_S:g} s (exit {app.process.poll()}): {tail!r}"
            )
            return
        series.painted.append(seen - app.started)
        series.first_byte.append((app.first_byte or seen) - app.started)
        series.memory = daemon_bench.memory_kb(app.pid)
    finally:
        status = app.stop()
    if status not in (0, None):
        series.failures.append(f"exit status {status} after q")


def paint_series(data_dir: Path, runs: int) -> tuple[PaintSeries, PaintSeries, PaintSeries]:
    console = PaintSeries("venuebox console (overview)")
    baseline = PaintSeries("minimal Textual app (baseline)")
    imports = PaintSeries("console's imports only")
    console_command = [sys.executable, "-m", "appliance", "--data-dir", str(data_dir), "console"]
    for i in range(runs):
        paint_once(baseline, [sys.executable, "-c", BASELINE_APP], BASELINE_TEXT)
        paint_once(imports, [sys.executable, "-c", IMPORTS_ONLY], b"imported")
        paint_once(console, console_command, BANNER)
        last = f"{console.painted[-1]:.3f} s" if len(console.painted) > i else "failed"
        print(f"  ... paint {i + 1}/{runs}: console {last}", flush=True)
    return console, baseline, imports


# --------------------------------------------------------------------------------------------
# 2. The cost of one refresh, headless
# --------------------------------------------------------------------------------------------


@dataclass
class Cost:
    what: str
    group: str
    seconds: list[float] = field(default_factory=list)
    api: str = ""  # the "admin API" row this one is compared with


class Timer:
    """Times one step at a time from a quiet app: before each step the app settles (Textual's
    ``pilot.pause()``: pending messages handled, the process idle, the screen drawn), so a step's
    time holds only its own work, not the tail of the previous one's."""

    def __init__(self, pilot: Any) -> None:
        self.pilot = pilot
        self.costs: dict[str, Cost] = {}

    async def time(
        self, what: str, group: str, call: Callable[[], Any], api: str = "", frame: bool = False
    ) -> None:
        """Time ``call()`` (awaited when it returns an awaitable); with ``frame``, up to the end of
        the next frame too (``pilot.pause(0)``: its messages, layout and compositor render)."""
        await self.pilot.pause()
        t0 = time.perf_counter()
        result = call()
        if inspect.isawaitable(result):
            await result
        if frame:
            await self.pilot.pause(0)
        self.costs.setdefault(what, Cost(what, group, api=api)).seconds.append(time.perf_counter() - t0)


@dataclass
class Fetched:
    """Admin API answers fetched once, for timing the widget updates without HTTP."""

    status: ConsoleStatus
    devices: list[Device]
    devices_reordered: list[Device]  # a heartbeat round earlier: the rows in another order
    grid: SessionGrid  # the biggest session
    other_grid: SessionGrid


API = "admin API (httpx)"
FETCH = "fetch only"
REFRESH = "refresh"
REFRESH_FRAME = "refresh + frame"
UPDATE = "update only"
UPDATE_FRAME = "update + frame"
STATUS_API = "GET /status"
DEVICES_API = "GET /devices"
SCORES_API = "GET /sessions + grid + sheets"
Get = Callable[[str], Awaitable[bytes]]
NEXT_FRAME = "next frame (pilot.pause(0))"


async def time_overview(app: Any, timer: Timer, get: Get, fetched: Fetched) -> None:
    await app.switch_mode("overview")
    await timer.time(STATUS_API, API, partial(get, "/admin/v1/status"))
    await timer.time("client.status()", FETCH, app.client.status, STATUS_API)
    await timer.time("Overview poll_status()", REFRESH, app.poll_status, STATUS_API)
    await timer.time("Overview poll_status() + frame", REFRESH_FRAME, app.poll_status, STATUS_API, frame=True)
    same_status = partial(setattr, app, "status", fetched.status)
    await timer.time("app.status = the same status", UPDATE, same_status)
    await timer.time("app.status = the same status + frame", UPDATE_FRAME, same_status, frame=True)


async def time_tablets(app: Any, timer: Timer, get: Get, fetched: Fetched) -> None:
    await app.switch_mode("tablets")
    screen = app.screen
    rows = len(fetched.devices)
    await timer.time(DEVICES_API, API, partial(get, "/admin/v1/devices"))
    await timer.time("client.devices()", FETCH, app.client.devices, DEVICES_API)
    # Live, some tablet has beaten since the last refresh, and the presence sort (most recent
    # heartbeat first) reorders the rows: each refresh below starts from the other order.
    for frame in (False, True):
        screen.show(fetched.devices_reordered)
        name = f"Tablets refresh_data(), {rows} rows reordered" + (" + frame" if frame else "")
        await timer.time(
            name, REFRESH_FRAME if frame else REFRESH, screen.refresh_data, DEVICES_API, frame=frame
        )
    name = f"Tablets refresh_data(), {rows} rows same order + frame"
    await timer.time(name, REFRESH_FRAME, screen.refresh_data, DEVICES_API, frame=True)
    screen.show(fetched.devices)
    await timer.time("Tablets show(), same rows", UPDATE, partial(screen.show, fetched.devices))
    reordered = partial(screen.show, fetched.devices_reordered)
    await timer.time("Tablets show(), rows reordered", UPDATE, reordered)
    back = partial(screen.show, fetched.devices)
    await timer.time("Tablets show(), rows reordered + frame", UPDATE_FRAME, back, frame=True)


async def time_scores(app: Any, timer: Timer, get: Get, fetched: Fetched) -> None:
    await app.switch_mode("scores")
    screen = app.screen
    screen.session_id, screen.chosen_by_tech = fetched.grid.session.id, True
    entries = len(fetched.grid.entries)

    async def scores_api() -> None:
        grid_path = f"/admin/v1/sessions/{screen.session_id}/grid"
        for path in ("/admin/v1/sessions", grid_path, "/admin/v1/sheets?limit=100"):
            await get(path)

    await timer.time(SCORES_API, API, scores_api)
    await timer.time(f"Scores refresh_data(), {entries} entries", REFRESH, screen.refresh_data, SCORES_API)
    name = f"Scores refresh_data(), {entries} entries + frame"
    await timer.time(name, REFRESH_FRAME, screen.refresh_data, SCORES_API, frame=True)
    await timer.time("Scores show_grid(), same grid", UPDATE, partial(screen.show_grid, fetched.grid))
    other = partial(screen.show_grid, fetched.other_grid)
    await timer.time("Scores show_grid(), other session", UPDATE, other)
    back = partial(screen.show_grid, fetched.grid)
    await timer.time(f"Scores show_grid(), back to {entries} entries + frame", UPDATE_FRAME, back, frame=True)


async def refresh_costs(box: Any, tablets: list[loadgen.BenchTablet], package: Package, reps: int) -> Timer:
    """Time the console's refreshes in this process (see the module docstring, part 2)."""
    import httpx

    from tui.app import ConsoleApp
    from tui.client import TIMEOUT, AdminClient, fixed

    token = box.config.admin_token_path.read_text().strip()
    client = AdminClient(fixed(box.admin_url, token))
    auth = {"Authorization": f"Bearer {token}"}
    api = httpx.AsyncClient(base_url=box.admin_url, timeout=TIMEOUT, headers=auth)
    app = ConsoleApp(client, poll=False)
    other_session = next(sid for sid, _ in package.sessions if sid != package.current)

    async def get(path: str) -> bytes:
        response = await api.get(path)
        return response.raise_for_status().content

    try:
        async with app.run_test(size=HEADLESS_SIZE) as pilot:
            timer = Timer(pilot)
            # The presence sort puts the tablet that beat last first; beating in reverse order
            # between the two snapshots reverses the rows.
            devices_before = await client.devices()
            await asyncio.to_thread(beat_once, box, tablets[::-1])
            fetched = Fetched(
                status=await client.status(),
                devices=await client.devices(),
                devices_reordered=devices_before,
                grid=await client.grid(package.current),
                other_grid=await client.grid(other_session),
            )
            for rep in range(1, reps + 1):
                await time_overview(app, timer, get, fetched)
                await time_tablets(app, timer, get, fetched)
                await time_scores(app, timer, get, fetched)
                await timer.time(NEXT_FRAME + ", nothing changed", "frame", partial(pilot.pause, 0))
                if rep % 5 == 0 or rep == reps:
                    print(f"  ... refresh timings: {rep}/{reps} reps", flush=True)
    finally:
        await api.aclose()
    return timer


# --------------------------------------------------------------------------------------------
# 3. Memory of a live console
# --------------------------------------------------------------------------------------------


LIVE_SCREENS = (("Overview", "", b""), ("Tablets", "2", b" tablets: "), ("Scores", "3", b"missing"))


@dataclass
class ScreenWindow:
    """One screen shown for a third of the live phase."""

    name: str
    shown_s: float | None = None  # key -> the screen's own text in the pty
    cpu: float = 0.0  # the console's share of one core over the window
    memory: tuple[int, int] | None = None  # at the end of the window


@dataclass
class LiveConsole:
    painted: tuple[int, int] | None = None
    windows: list[ScreenWindow] = field(default_factory=list)
    phase: daemon_bench.LoadPhase | None = None
    failure: str = ""


def live_console(box: Any, tablets: list[loadgen.BenchTablet], seconds: float) -> LiveConsole:
    """A pty console through ``seconds`` of heartbeats, a third of them on each of LIVE_SCREENS."""
    live = LiveConsole()
    app = PtyProcess([sys.executable, "-m", "appliance", "--data-dir", str(box.config.data_dir), "console"])
    try:
        if app.expect(BANNER, PAINT_TIMEOUT_S) is None:
            live.failure = "the console did not paint"
            return live
        live.painted = daemon_bench.memory_kb(app.pid)

        def switch(keys: str, text: bytes) -> float | None:
            t0 = time.perf_counter()
            seen = app.expect(text, PAINT_TIMEOUT_S, since=app.press(keys))
            return None if seen is None else seen - t0

        async def watch() -> daemon_bench.LoadPhase:
            beats = asyncio.ensure_future(heartbeat_phase("live", seconds, app.pid, tablets, box))
            for name, key, text in LIVE_SCREENS:
                window = ScreenWindow(name)
                t0, cpu0 = time.perf_counter(), loadgen.cpu_seconds(app.pid)
                if key:
                    window.shown_s = await asyncio.to_thread(switch, key, text)
                await asyncio.sleep(max(0.0, t0 + seconds / len(LIVE_SCREENS) - time.perf_counter()))
                window.cpu = (loadgen.cpu_seconds(app.pid) - cpu0) / (time.perf_counter() - t0)
                window.memory = daemon_bench.memory_kb(app.pid)
                live.windows.append(window)
            return await beats

        live.phase, _ = loadgen.run_loop(watch())
    finally:
        status = app.stop()
    if status not in (0, None):
        live.failure = f"exit status {status} after q"
    return live


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report_paint(console: PaintSeries, baseline: PaintSeries, imports: PaintSeries, runs: int) -> bool:
    print(f"1. time to first paint in an 80x24 pty (TERM=xterm-256color), {runs} runs each")
    header = (
        f"   {'what':<34}{'first byte s':>13}{'paint med s':>13}{'min s':>8}{'max s':>8}{'x baseline':>12}"
    )
    print(header)
    print("   " + "-" * (len(header) - 3))
    base = _median(baseline.painted)
    for s in (baseline, imports, console):
        if not s.painted:
            print(f"   {s.name:<34}failed: {s.failures[0] if s.failures else '-'}")
            continue
        med = _median(s.painted)
        print(
            f"   {s.name:<34}{_median(s.first_byte):>13.3f}{med:>13.3f}{min(s.painted):>8.3f}"
            f"{max(s.painted):>8.3f}{med / base:>12.2f}"
        )
    print(
        "   (first byte = Popen -> the first byte written to the terminal (for a Textual app: interpreter,\n"
        "    imports, the driver's set-up); paint = Popen -> the awaited text in the output: for the\n"
        "    console the banner, after reading daemon.json and admin.token, GET /admin/v1/status and\n"
        f'    drawing the overview; imports only = python -c "{IMPORTS_ONLY}")'
    )
    for s in (baseline, imports, console):
        for failure in s.failures:
            print(f"   {s.name}: {failure}")
    ok = bool(console.painted) and not console.failures
    if console.painted:
        met = max(console.painted) < TARGET_PAINT_S
        print(
            f"   target first paint < {TARGET_PAINT_S:g} s: median {_median(console.painted):.3f} s, "
            f"max {max(console.painted):.3f} s -> {loadgen.verdict(met)}"
        )
    return ok


def report_refresh(timer: Timer, reps: int) -> None:
    print(f"2. cost of one refresh, headless {HEADLESS_SIZE[0]}x{HEADLESS_SIZE[1]}, {reps} reps each (ms)")
    header = f"   {'what':<52}{'kind':<19}{'median':>8}{'p95':>8}{'max':>8}{'x API':>7}"
    print(header)
    print("   " + "-" * (len(header) - 3))
    for cost in timer.costs.values():
        api = timer.costs.get(cost.api)
        ratio = f"{_median(cost.seconds) / _median(api.seconds):.1f}" if api and api.seconds else ""
        print(
            f"   {cost.what:<52}{cost.group:<19}{loadgen.pct(cost.seconds, 0.5):>8.1f}"
            f"{loadgen.pct(cost.seconds, 0.95):>8.1f}{loadgen.pct(cost.seconds, 1.0):>8.1f}{ratio:>7}"
        )
    print(
        "   (every step starts from a settled app. admin API = httpx GETs of the same endpoints, body\n"
        "    read, not decoded: the baseline; fetch only = the console's AdminClient, JSON decoded;\n"
        "    refresh = the screen's own call (fetch + widget update), as the App's poll makes it;\n"
        "    + frame = and the next frame it causes (pilot.pause(0): pending messages, layout, the\n"
        "    compositor's render of the screen), the CPU the refresh really takes; update only = the\n"
        "    widgets on pre-fetched data, no HTTP; x API = median / the matching admin API median)"
    )
    for cost in timer.costs.values():
        if cost.group in (REFRESH, REFRESH_FRAME):
            p95 = loadgen.pct(cost.seconds, 0.95)
            print(
                f"   target refresh < {TARGET_REFRESH_MS:g} ms, {cost.what}: p95 {p95:.1f} ms "
                f"-> {loadgen.verdict(p95 < TARGET_REFRESH_MS)}"
            )


def report_memory(live: LiveConsole, baseline: PaintSeries, seconds: float, tablets: int) -> bool:
    beats = f"{tablets} tablets heartbeating every {HEARTBEAT_S:g} s"
    print(f"3. a live console in the pty: {seconds:g} s, {beats} (MB = 10^6 bytes)")
    header = f"   {'what':<48}{'drawn in s':>11}{'CPU':>7}{'VmRSS':>10}{'VmHWM':>10}"
    print(header)
    print("   " + "-" * (len(header) - 3))
    for what, memory in (
        ("minimal Textual app after its paint (baseline)", baseline.memory),
        ("console after its first paint", live.painted),
    ):
        print(f"   {what:<48}{'':>18}{daemon_bench.fmt_mem(memory)}")
    for w in live.windows:
        shown = "-" if not w.name or w.shown_s is None else f"{w.shown_s:.3f}"
        what = f"{w.name}, after {seconds / len(LIVE_SCREENS):.0f} s on it"
        print(f"   {what:<48}{shown:>11}{w.cpu:>7.0%}{daemon_bench.fmt_mem(w.memory)}")
    phase = live.phase
    if phase is not None and phase.rss_kb:
        peak = (max(phase.rss_kb), phase.hwm_kb)
        print(f"   {'peak over the live phase (sampled every 1 s)':<48}{'':>18}{daemon_bench.fmt_mem(peak)}")
    end = live.windows[-1].memory if live.windows else None
    if end and baseline.memory:
        print(f"   ratio console VmRSS at the end / minimal app VmRSS: {end[0] / baseline.memory[0]:.2f}")
    print(
        "   (drawn in = the screen's key typed -> its own text in the terminal output; CPU = the\n"
        "    console's share of one core while that screen was shown: status polled every 0.5 s, the\n"
        "    screen's own data every 1 s)"
    )
    if phase is not None and (phase.hb_errors or len(phase.hb_latencies) < tablets):
        print(f"   heartbeats: {len(phase.hb_latencies)} answered, errors {dict(phase.hb_errors)}")
    if live.failure:
        print(f"   live console: {live.failure}")
    return not live.failure and len(live.windows) == len(LIVE_SCREENS)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="console starts (and baseline starts) (5)")
    parser.add_argument("--reps", type=int, default=20, help="repetitions of each timed step (20)")
    parser.add_argument(
        "--live-s", type=float, default=20.0, help="seconds of a live console, a third on each screen (20)"
    )
    parser.add_argument("--tablets", type=int, default=200, help="paired tablets (200)")
    parser.add_argument("--entries", type=int, default=1000, help="entries in the event (1000)")
    parser.add_argument("--sessions", type=int, default=6, help="sessions in the event (6)")
    parser.add_argument("--keep", action="store_true", help="keep the data dir (its path is printed)")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 100 or not 1 <= args.reps <= 10_000 or not 2 <= args.live_s <= 3600:
        parser.error("--runs within 1..100, --reps within 1..10000, --live-s within 2..3600")
    if (
        not 5 <= args.tablets <= 5000
        or not 2 <= args.sessions <= 50
        or not 10 * args.sessions <= args.entries <= 100_000
    ):
        parser.error(
            "--tablets within 5..5000, --sessions within 2..50, --entries within 10 x sessions..100000"
        )
    return args


@dataclass
class Bench:
    box: Any
    package: Package
    tablets: list[loadgen.BenchTablet]
    sheets: int


def set_up(workdir: Path, args: argparse.Namespace, cleanup: contextlib.ExitStack) -> Bench:
    """The big box of the module docstring, running; ``cleanup`` stops it."""
    make_box, running_box = loadgen.load_fixtures()
    package = write_event_package(workdir / "package", args.entries, args.sessions)
    config = make_box(workdir / "box", package=package.path, **loadgen.HIGH_LIMITS)
    box = running_box(config, env=loadgen.HIGH_LIMITS_ENV)
    cleanup.callback(box.stop)
    box.start(timeout=daemon_bench.START_TIMEOUT_S)
    print(
        f"bench: box on {box.admin_url} (admin), {package.entries} entries, pid {box.process.pid}", flush=True
    )
    tablets = daemon_bench.pair_tablets(box, args.tablets, 0)
    set_request_heads(box, tablets)
    writers = list({t.judge_id: t for t in reversed(tablets)}.values())  # the first tablet of each judge
    sheets, _ = loadgen.run_loop(send_sheets(box, writers, package))
    print(f"  ... paired {len(tablets)} tablets, {sheets} sheets stored", flush=True)
    return Bench(box, package, tablets, sheets)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.ExitStack() as cleanup:
        workdir = Path(tempfile.mkdtemp(prefix="venuebox-console-bench-"))
        if args.keep:
            cleanup.callback(print, f"data dir kept: {workdir}")
        else:
            cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        print(f"bench: data dir under {workdir}; {os.cpu_count()} CPUs", flush=True)
        try:
            bench = set_up(workdir, args, cleanup)
        except (RuntimeError, AssertionError, OSError) as exc:
            print(f"bench: setup failed: {exc}", file=sys.stderr)
            return 2
        box, tablets = bench.box, bench.tablets

        beat_once(box, tablets)
        console, baseline, imports = paint_series(box.config.data_dir, args.runs)
        beat_once(box, tablets)
        timer, _ = loadgen.run_loop(refresh_costs(box, tablets, bench.package, args.reps))
        live = live_console(box, tablets, args.live_s)

        print()
        print(
            f"venuebox console bench: {bench.package.entries} entries in {len(bench.package.sessions)} "
            f"sessions, {len(tablets)} tablets, {bench.sheets} sheets, {os.cpu_count()} CPUs shared by "
            "daemon and console"
        )
        painted = report_paint(console, baseline, imports, args.runs)
        report_refresh(timer, args.reps)
        lived = report_memory(live, baseline, args.live_s, len(tablets))
        ok = painted and lived
        print(f"check: the console painted every time and quit on q: {'OK' if ok else 'FAILED'}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
