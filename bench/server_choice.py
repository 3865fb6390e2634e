"""Server choice bench: uvicorn (uvloop + httptools) against granian, serving the same tablet app.

The design says "uvicorn with uvloop/httptools, or granian if the bench proves it better and it embeds
cleanly; record the comparison in bench/". This script is that record. In one run it:

* builds one fresh, temporary data dir with the shipped sample event (``tests.conftest.make_box``,
  rate limits raised as in bench/ingest.py, mDNS off) and pairs ``--concurrency`` tablets (judges
  J1..J5, round robin) directly through the library (``appliance.core.pairing.create_code`` +
  ``redeem`` inside ``Store.write_sync``), so no admin API is needed for setup;
* for each server, copies that data dir (every server starts from the same database) and starts
  this same script as a subprocess, ``--serve KIND``, serving
  ``edge_api.app.create_app(Store(config.db_path), config, box_id)``:

  - ``uvicorn``: the daemon's way (appliance/shell/daemon.py): on ``uvloop.run``, two ``uvicorn.Server``
    (tablet app + admin app) on pre-bound sockets, ``http="httptools"``, ``loop="none"``, uvicorn's
    signal capture disabled and our own SIGTERM/SIGINT handlers;
  - ``granian``: granian's own process manager, ``Granian(interface=asgi, loop=uvloop, workers=1,
    runtime_threads=1)``: a main process plus one worker process (tablet app only);
  - ``granian-embed``: the experimental ``granian.server.embed.Server``, two of them (tablet app +
    admin app) as tasks on our own uvloop, on pre-bound sockets, with our own signal handlers:
    what replacing uvicorn inside the daemon would look like;

* measures each with the shared load generator (``bench/loadgen.py``) at ``--concurrency``
  keep-alive connections: ``GET /api/v1/health`` requests/s with p50/p99, then durable single
  ``POST /api/v1/sheets`` sheets/s with p50/p99 (every sheet new; each tablet keeps correction chains
  on its share of its judge's panel, as bench/ingest.py does; anything but 201 is an error);
* after stopping each server, checks rows in ``sheets`` == 201 answers, and for the two-server modes
  that the second (admin) server answered too;
* prints a table, the ratios granian / uvicorn, what granian's installed source says about embedding
  it in our single asyncio process, and a one-line conclusion that follows from the figures.

Each phase runs ``--warmup`` seconds (default 1, not measured) and then ``--seconds`` (default 5).
Every loop is bounded in count and time: a server must answer within ``START_TIMEOUT_S``, a phase is
bounded by ``--max-requests`` and cancelled by a watchdog after ``loadgen.GRACE_S`` of overrun, and
each server is stopped (SIGTERM, then SIGKILL to its process group) before the next starts. All
traffic goes to 127.0.0.1. granian is a bench-only dependency (not in pyproject.toml).

Run from the repo root (never run as a test)::

    .venv/bin/pip install granian                     # bench only
    .venv/bin/python bench/server_choice.py           # 5 s per phase, 32 connections, 3 servers
    .venv/bin/python bench/server_choice.py --seconds 4 --servers uvicorn,granian-embed --keep

Exit status: 0 when every server ran and the checks passed, 1 when a check failed, 2 when granian
is not installed or a box / server could not be set up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import http.client
import importlib.metadata
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import loadgen

KINDS = ("uvicorn", "granian", "granian-embed")
LABELS = {
    "uvicorn": "uvicorn (uvloop, httptools)",
    "granian": "granian (1 worker process)",
    "granian-embed": "granian embedded (our loop)",
}
TWO_SERVERS = {"uvicorn", "granian-embed"}  # modes that serve tablet + admin in one loop, as the daemon
NOT_INSTALLED = "granian is not installed: .venv/bin/pip install granian"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
BACKLOG = 2048  # as appliance/web/server.py's bind
BETTER = 1.10  # granian must be >= 10% faster on durable sheets, with no worse p99, to count as better


# --------------------------------------------------------------------------------------------
# The servers (run in a subprocess: this script with --serve KIND)
# --------------------------------------------------------------------------------------------


def _apps(data_dir: str) -> tuple[Any, Any, Any]:
    """(store, tablet app, admin app) on the data dir, as the daemon builds them (no metrics)."""
    sys.path.insert(0, str(loadgen.ROOT))
    from appliance.core.box import get_box
    from appliance.core.config import load_config
    from appliance.core.storage import Store
    from appliance.shared.secrets_files import read_secret
    from edge_api.app import create_admin_app, create_app

    config = load_config(data_dir)  # the environment carries the raised limits too
    store = Store(config.db_path)
    box_id = store.query(get_box)["box_id"]
    admin_token = read_secret(config.admin_token_path)
    return store, create_app(store, config, box_id), create_admin_app(store, config, box_id, admin_token)


def _tablet_app(data_dir: str) -> Any:
    """granian's target loader: called in its worker process, so the Store starts there."""
    return _apps(data_dir)[1]


def _bind(port: int) -> socket.socket:
    # Not appliance/web/server.py's bind: this bench's figures were measured on a plain socket (no
    # IPPROTO_TCP, so no TCP_NODELAY on accepted connections), for granian and uvicorn alike.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(BACKLOG)
    return sock


def _serve_granian(data_dir: str, port: int) -> int:
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels

    server = Granian(
        "venuebox-tablet-app",  # a label: the loader below builds the app
        address="127.0.0.1",
        port=port,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        workers=1,
        runtime_threads=1,
        backlog=BACKLOG,
        log_level=LogLevels.warning,
        workers_kill_timeout=10,
    )
    server.serve(target_loader=functools.partial(_tablet_app, data_dir), wrap_loader=False)
    return 0


async def _serve_in_loop(kind: str, data_dir: str, port: int, admin_port: int) -> None:
    """Two servers (tablet, admin) as tasks on this loop, on pre-bound sockets, our own signals."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    store, tablet, admin = _apps(data_dir)
    socks = [_bind(port), _bind(admin_port)]
    servers: list[Any]
    if kind == "uvicorn":
        from appliance.web.server import EmbeddedServer, server_config

        # The daemon's uvicorn settings, with the parser this bench compared (httptools).
        servers = [EmbeddedServer(server_config(app, http="httptools")) for app in (tablet, admin)]
        tasks = [asyncio.create_task(s.serve(sockets=[sock])) for s, sock in zip(servers, socks, strict=True)]

        def stop_servers() -> None:
            for s in servers:
                s.should_exit = True

    else:
        from granian._granian import SocketHolder
        from granian.constants import Interfaces
        from granian.log import LogLevels
        from granian.server.embed import Server

        class PreBound(Server):
            """embed.Server binds address:port itself; taking our socket needs its private hook.
            SocketHolder owns (and closes) the fd it gets, so it gets a duplicate."""

            def __init__(self, app: Any, sock: socket.socket) -> None:
                super().__init__(
                    app,
                    interface=Interfaces.ASGI,
                    runtime_threads=1,
                    backlog=BACKLOG,
                    log_level=LogLevels.warning,
                )
                self.listen_fd = os.dup(sock.fileno())

            def _init_shared_socket(self) -> None:
                self._ssp, self._shd = None, SocketHolder(self.listen_fd, False, BACKLOG)

        servers = [PreBound(app, sock) for app, sock in zip((tablet, admin), socks, strict=True)]
        tasks = [asyncio.create_task(s.serve()) for s in servers]

        def stop_servers() -> None:
            for s in servers:
                s.stop()

    stopping = asyncio.create_task(stop.wait())
    try:
        # Until SIGTERM, or until a server task ends by itself (it failed: its error is raised below).
        await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        stop_servers()
        done, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        store.close()
        for sock in socks:
            sock.close()
    for task in done:
        if task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def serve(kind: str, data_dir: str, port: int, admin_port: int) -> int:
    if kind.startswith("granian") and not granian_version():
        print(NOT_INSTALLED, file=sys.stderr)
        return 2
    if kind == "granian":
        return _serve_granian(data_dir, port)
    import uvloop

    uvloop.run(_serve_in_loop(kind, data_dir, port, admin_port))
    return 0


# --------------------------------------------------------------------------------------------
# The box, the tablets, the server processes
# --------------------------------------------------------------------------------------------


def granian_version() -> str | None:
    try:
        import granian
    except ImportError:
        return None
    return str(granian.__version__)


def build_template(data_dir: Path, count: int) -> tuple[list[loadgen.BenchTablet], str]:
    """The box every server starts from: sample event, ``count`` tablets paired through the library.
    Returns the tablets (tokens, chains) and the admin token."""
    make_box, _ = loadgen.load_fixtures()  # also puts the repo root on sys.path
    from appliance.core.devices import authenticate
    from appliance.core.event import judge_event
    from appliance.core.keys import pairing_key
    from appliance.core.pairing import create_code, redeem
    from appliance.core.storage import Store
    from appliance.shared.secrets_files import read_secret

    config = make_box(data_dir, mdns_enabled=False, **loadgen.HIGH_LIMITS)
    paired: list[tuple[str, str]] = []
    key = pairing_key(config)
    with Store(config.db_path) as store:
        for i in range(count):
            judge = loadgen.JUDGES[i % len(loadgen.JUDGES)]
            made = functools.partial(create_code, judge_id=judge, ttl_s=600, actor="bench", key=key)
            code = store.write_sync(made)["code"]
            name = f"bench tablet {i + 1}"
            redeemed = functools.partial(redeem, code=code, device_name=name, address="127.0.0.1", key=key)
            token = store.write_sync(redeemed)["token"]
            paired.append((judge, token))

        def event_for(conn: sqlite3.Connection, token: str) -> dict[str, Any]:
            return judge_event(conn, authenticate(conn, token))

        events = {
            judge: store.query(functools.partial(event_for, token=token)) for judge, token in reversed(paired)
        }
    by_judge: dict[str, list[int]] = {}
    for i, (judge, _) in enumerate(paired):
        by_judge.setdefault(judge, []).append(i)
    submitted_at = datetime.now(UTC).isoformat(timespec="seconds")
    tablets: list[loadgen.BenchTablet | None] = [None] * count
    for judge, indexes in by_judge.items():
        event = events[judge]
        shares = loadgen.panel_shares(event, judge, len(indexes))
        for i, share in zip(indexes, shares, strict=True):
            tablets[i] = loadgen.BenchTablet(
                index=i,
                judge_id=judge,
                token=paired[i][1],
                entries=share,
                values_json=loadgen.valid_values(event["criteria"], i),
                submitted_at=submitted_at,
            )
    return [t for t in tablets if t is not None], read_secret(config.admin_token_path)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_status(port: int, path: str, token: str | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


@dataclass
class ServerProcess:
    kind: str
    data_dir: Path
    log_path: Path
    port: int = 0
    admin_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        self.port, self.admin_port = free_port(), free_port()
        env = {**os.environ, **loadgen.HIGH_LIMITS_ENV}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(loadgen.ROOT), env.get("PYTHONPATH", "")) if p)
        command = [sys.executable, str(Path(__file__).resolve()), "--serve", self.kind]
        command += ["--data-dir", str(self.data_dir), "--port", str(self.port)]
        command += ["--admin-port", str(self.admin_port)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.process.returncode}: {self.log_tail()}")
            if http_status(self.port, "/api/v1/health") == 200:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind} did not answer within {START_TIMEOUT_S:g} s: {self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the server, then SIGKILL to its own process group (granian's worker too)."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # a worker left behind by its main process
        self.process = None

    def log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " / ".join(lines[-5:]) or "(empty log)"


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and all its descendants (granian's worker is a child process)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(loadgen.cpu_seconds(p) for p in tree)


def sheet_rows(data_dir: Path) -> int:
    conn = sqlite3.connect(data_dir / "venuebox.sqlite", timeout=10)
    try:
        return int(conn.execute("SELECT count(*) FROM sheets").fetchone()[0])
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# Load phases
# --------------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    warmup: float
    seconds: float
    max_requests: int
    start: float = 0.0
    win_start: float = 0.0
    win_end: float = 0.0
    ok_in_window: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, successes in the window
    sent: int = 0
    created: int = 0  # 201 answers over the whole phase (warm-up and tail included)
    errors: Counter[str] = field(default_factory=Counter)
    cancelled: int = 0
    server_cpu: float = 0.0  # share of one core, over the phase

    def begin(self) -> None:
        self.start = time.perf_counter()
        self.win_start = self.start + self.warmup
        self.win_end = self.win_start + self.seconds

    def more(self) -> bool:
        return self.sent < self.max_requests and time.perf_counter() < self.win_end

    def done(self, t0: float, t1: float, ok: bool) -> None:
        if ok and self.win_start <= t1 < self.win_end:
            self.ok_in_window += 1
            self.latencies.append(t1 - t0)

    @property
    def rate(self) -> float:
        return self.ok_in_window / self.seconds

    def p(self, q: float) -> float:
        return loadgen.pct(self.latencies, q)


async def run_phase(phase: Phase, pid: int, workers: list[Awaitable[None]]) -> Phase:
    cpu0 = tree_cpu_seconds(pid)
    phase.begin()
    phase.cancelled = await loadgen.run_watched(workers, phase.warmup + phase.seconds + loadgen.GRACE_S)
    if phase.cancelled:
        phase.errors["cancelled by watchdog"] += phase.cancelled
    phase.server_cpu = (tree_cpu_seconds(pid) - cpu0) / (time.perf_counter() - phase.start)
    return phase


async def health_worker(ph: Phase, conn: loadgen.Conn, request: bytes) -> None:
    while ph.more():
        ph.sent += 1
        t0 = time.perf_counter()
        try:
            status, _ = await conn.request(request)
        except loadgen.NET_ERRORS as exc:
            ph.errors[type(exc).__name__] += 1
            conn.close()
            continue
        if status != 200:
            ph.errors[str(status)] += 1
        ph.done(t0, time.perf_counter(), status == 200)


async def sheet_worker(ph: Phase, conn: loadgen.Conn, tablet: loadgen.BenchTablet) -> None:
    while ph.more():
        ph.sent += 1
        try:
            status, t0, t1 = await loadgen.post_next_sheet(conn, tablet)
        except loadgen.NET_ERRORS as exc:
            ph.errors[type(exc).__name__] += 1
            conn.close()
            continue
        if status == 201:
            ph.created += 1
        else:
            ph.errors[str(status)] += 1
        ph.done(t0, t1, status == 201)


async def measure(
    server: ServerProcess, tablets: list[loadgen.BenchTablet], args: argparse.Namespace
) -> tuple[Phase, Phase]:
    assert server.process is not None
    pid, host = server.process.pid, f"127.0.0.1:{server.port}"
    common = {"User-Agent": "venuebox-bench", "Accept": "application/json"}
    for t in tablets:
        t.heads, t.turn = {}, 0  # every server starts from the same database: fresh chains
        auth = {**common, "Authorization": f"Bearer {t.token}", "Content-Type": "application/json"}
        t.sheet_head = loadgen.request_head("POST", "/api/v1/sheets", host, auth)

    health = loadgen.request_head("GET", "/api/v1/health", host, common)
    conns = await loadgen.open_connections("127.0.0.1", server.port, args.concurrency)
    h = Phase("health GET", args.warmup, args.seconds, args.max_requests)
    await run_phase(h, pid, [health_worker(h, c, health) for c in conns])
    loadgen.close_all(conns)
    print(f"  ... {server.kind}: health {h.rate:,.0f} req/s, p99 {h.p(0.99):.1f} ms", flush=True)

    conns = await loadgen.open_connections("127.0.0.1", server.port, len(tablets))
    s = Phase("single sheet POST", args.warmup, args.seconds, args.max_requests)
    await run_phase(s, pid, [sheet_worker(s, c, t) for c, t in zip(conns, tablets, strict=True)])
    loadgen.close_all(conns)
    print(f"  ... {server.kind}: sheets {s.rate:,.0f}/s, p99 {s.p(0.99):.1f} ms", flush=True)
    return h, s


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    kind: str
    health: Phase
    sheets: Phase
    second_server: int | None  # the admin server's status for GET /admin/v1/status (two-server modes)
    rows_ok: bool
    experimental_warning: bool


def _versions() -> str:
    names = ("uvicorn", "httptools", "uvloop", "granian", "litestar")
    found = []
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{name} {importlib.metadata.version(name)}")
    return ", ".join(found)


def _change(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.0f}%"


def report(results: list[Result], args: argparse.Namespace, loop_name: str) -> None:
    print()
    print(
        f"server choice bench: {args.seconds:g} s per phase after {args.warmup:g} s warm-up, "
        f"{args.concurrency} connections, {os.cpu_count()} CPUs shared by server and client ({loop_name})"
    )
    print(f"versions: {_versions()}")
    header = (
        f"{'server':<30}{'health/s':>10}{'p50 ms':>8}{'p99 ms':>8}{'CPU':>6}"
        f"{'sheets/s':>10}{'p50 ms':>8}{'p99 ms':>8}{'CPU':>6}{'errors':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        h, s = r.health, r.sheets
        print(
            f"{LABELS[r.kind]:<30}{h.rate:>10,.0f}{h.p(0.5):>8.1f}{h.p(0.99):>8.1f}{h.server_cpu:>6.0%}"
            f"{s.rate:>10,.0f}{s.p(0.5):>8.1f}{s.p(0.99):>8.1f}{s.server_cpu:>6.0%}"
            f"{sum(h.errors.values()) + sum(s.errors.values()):>8}"
        )
    print("(sheets: durable single POST /api/v1/sheets, 201 only; CPU: the server's process tree, share of")
    print(" one core over the phase; granian runs the app in its worker process)")
    for r in results:
        for ph in (r.health, r.sheets):
            if ph.errors:
                detail = ", ".join(f"{k}: {v}" for k, v in ph.errors.most_common())
                print(f"errors in {r.kind} {ph.name}: {detail}")

    by_kind = {r.kind: r for r in results}
    base = by_kind.get("uvicorn")
    if base is not None:
        for other in ("granian", "granian-embed"):
            rival = by_kind.get(other)
            if rival is None:
                continue
            print(
                f"ratio {other}/uvicorn: health req/s x{_ratio(rival.health.rate, base.health.rate):.2f} "
                f"(p99 x{_ratio(rival.health.p(0.99), base.health.p(0.99)):.2f}), "
                f"sheets/s x{_ratio(rival.sheets.rate, base.sheets.rate):.2f} "
                f"(p99 x{_ratio(rival.sheets.p(0.99), base.sheets.p(0.99)):.2f})"
            )
    for line in embedding_facts(by_kind.get("granian-embed")):
        print(line)
    print(conclusion(by_kind))


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def embedding_facts(embed: Result | None) -> list[str]:
    """What granian's installed source says about running it inside our one asyncio process, plus
    what this run saw (the granian-embed mode)."""
    facts = [
        "embed.Server.serve() (granian/server/embed.py) is a coroutine on the running loop: one worker, "
        "an AsyncWorker task, no worker process; HTTP is parsed on runtime_threads Rust threads and each "
        "request handed to the loop with call_soon_threadsafe (_futures._cbsched_aioschedule). The "
        "README (the wheel's METADATA) calls it experimental, serve() logs 'Embedded server is "
        "experimental!', and refuses WSGI, reload, workers_max_rss and metrics.",
        "Signals: embed.Server.startup() does not call _signals.set_main_signals (the process "
        "managers' common.AbstractServer.startup() does), so our handlers stay; stop() sets "
        "main_loop_interrupt, in-flight requests finish, then the ASGI lifespan shutdown runs; "
        "embed.Server takes no workers_kill_timeout, so AsyncWorker.join() waits without a limit.",
        "Sockets: it binds address:port itself (common._init_shared_socket builds a "
        "_granian.ListenerSpec); no public parameter takes a pre-bound socket, and with port 0 the "
        "bound port is not reported (ListenerSpec has only build()/is_uds()). Serving our pre-bound "
        "sockets took overriding the private _init_shared_socket with _granian.SocketHolder(fd, uds, "
        "backlog), which closes the fd it is given (so it gets a dup).",
        "Side effect: every Server() runs log.configure_logging, i.e. logging.config.dictConfig, on "
        "the whole process (disable_existing_loggers=False).",
    ]
    if embed is None:
        facts.append("This run: granian-embed not measured.")
    else:
        two = "both answered" if embed.second_server == 200 else f"admin answered {embed.second_server}"
        warned = "logged" if embed.experimental_warning else "did not log"
        facts.append(
            f"This run: two embedded servers (tablet + admin) on one uvloop, on pre-bound sockets: "
            f"{two}; granian {warned} its experimental warning."
        )
    lines = ["embedding granian in our single asyncio process (from granian's installed source):"]
    for fact in facts:
        lines.append(textwrap.fill(fact, 108, initial_indent="  - ", subsequent_indent="    "))
    return lines


def conclusion(by_kind: dict[str, Result]) -> str:
    """One line that follows from the figures: granian must be better on durable sheets (what a
    venue needs) AND embed cleanly; the embedding needs a private hook, so it does not."""
    base = by_kind.get("uvicorn")
    embed = by_kind.get("granian-embed") or by_kind.get("granian")
    if base is None or embed is None:
        return "conclusion: none (run with uvicorn and granian or granian-embed to compare)"
    h = _ratio(embed.health.rate, base.health.rate)
    s = _ratio(embed.sheets.rate, base.sheets.rate)
    p99 = _ratio(embed.sheets.p(0.99), base.sheets.p(0.99))
    which = "embedded granian" if embed.kind == "granian-embed" else "granian"
    figures = f"{which} {_change(h)} on health req/s, {_change(s)} on durable sheets/s (p99 x{p99:.2f})"
    hook = "embedding it needs an experimental module plus a private socket hook"
    if embed.kind == "granian-embed" and embed.second_server != 200:
        return f"conclusion: uvicorn kept: {figures}, and two embedded granian servers did not both answer"
    if s >= BETTER and p99 <= 1.0:
        return (
            f"conclusion: uvicorn kept for now: {figures}, better, but {hook}; "
            "revisit when granian.server.embed takes a socket"
        )
    gain = "no gain" if s <= 1.0 else f"less than the {_change(BETTER)} asked"
    return f"conclusion: uvicorn kept: {figures}: {gain} on durable sheets, and {hook}"


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per phase (5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured warm-up per phase (1)")
    parser.add_argument("--concurrency", type=int, default=32, help="connections / tablets (32)")
    parser.add_argument(
        "--servers", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)} (all)"
    )
    parser.add_argument(
        "--max-requests", type=int, default=2_000_000, help="per-phase bound on requests sent"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data dirs and server logs")
    # The subprocess modes (this script serving one box):
    parser.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--admin-port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        if not args.data_dir or not args.port or not args.admin_port:
            parser.error("--serve needs --data-dir, --port and --admin-port")
        return args
    args.kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    if not args.kinds or any(k not in KINDS for k in args.kinds) or len(set(args.kinds)) != len(args.kinds):
        parser.error(f"--servers: a comma-separated list of distinct names from {', '.join(KINDS)}")
    if args.concurrency < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--concurrency and --seconds must be positive, --warmup >= 0")
    return args


def run_server(
    kind: str,
    template: Path,
    workdir: Path,
    tablets: list[loadgen.BenchTablet],
    admin_token: str,
    args: argparse.Namespace,
) -> tuple[Result, str]:
    data_dir = workdir / kind
    shutil.copytree(template, data_dir)
    server = ServerProcess(kind, data_dir, workdir / f"{kind}.log")
    try:
        server.start()
        print(f"bench: {LABELS[kind]} on 127.0.0.1:{server.port}", flush=True)
        second = (
            http_status(server.admin_port, "/admin/v1/status", admin_token) if kind in TWO_SERVERS else None
        )
        (health, sheets), loop_name = loadgen.run_loop(measure(server, tablets, args))
    finally:
        server.stop()
    created = health.created + sheets.created
    rows = sheet_rows(data_dir)
    cancelled = health.cancelled + sheets.cancelled
    rows_ok = rows == created or (cancelled > 0 and rows >= created)
    print(f"check {kind}: sheets rows {rows:,} == 201 answers {created:,}: {'OK' if rows_ok else 'FAILED'}")
    warned = "experimental" in server.log_path.read_text(errors="replace")
    return Result(kind, health, sheets, second, rows_ok, warned), loop_name


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        return serve(args.serve, args.data_dir, args.port, args.admin_port)
    if any(k.startswith("granian") for k in args.kinds) and not granian_version():
        print(NOT_INSTALLED, file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="venuebox-bench-"))
    template = workdir / "template"
    results: list[Result] = []
    loop_name = ""
    try:
        print(f"bench: building the box and pairing {args.concurrency} tablets in {workdir}", flush=True)
        tablets, admin_token = build_template(template, args.concurrency)
        for kind in args.kinds:
            result, loop_name = run_server(kind, template, workdir, tablets, admin_token, args)
            results.append(result)
    except (RuntimeError, AssertionError, OSError) as exc:
        print(f"bench: setup failed: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"data dirs and server logs kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report(results, args, loop_name)
    ok = all(r.rows_ok and r.second_server in (None, 200) for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
