"""LAN-side bench: what the tablet port's hardening (guarded parser, ClientGuard, TLS) costs.

The daemon (appliance/shell/daemon.py) serves the tablet API on the venue LAN with uvicorn's httptools
protocol subclassed with a request-head deadline and byte cap (``edge_api.guard.guarded_protocol``
through ``appliance.shell.daemon.lan_server_options``, with ``timeout_keep_alive``), the ``ClientGuard``
ASGI layer inside ``edge_api.app.create_app`` (per-address token bucket, header cap, body read
with a deadline) and, by default (``tls = true``), TLS with the box's self-signed certificate.
Before, it served the same app with uvicorn's plain httptools protocol, plain HTTP, no guard. This
script measures, in one run:

* one fresh, temporary data dir with the shipped sample event, ``--concurrency`` tablets paired
  through the library and the box's TLS identity (``appliance.core.tls.write_identity``, loopback
  addresses only), built once (``server_choice.build_template``, rate limits raised as in the other
  benches, so neither the device nor the per-address bucket ever throttles the bench);
* for each variant, a copy of that data dir, served by this script as a subprocess
  (``--serve VARIANT``): ``create_app`` (no metrics) on one ``uvicorn.Server`` on uvloop, on a
  pre-bound socket (bound as the daemon binds), with uvicorn's signal capture off:

  - ``baseline``: ``http="httptools"``, plain HTTP, ``ClientGuard`` taken out of create_app's layers
    (the old LAN side);
  - ``guard`` (not run by default): httptools, plain HTTP, with ``ClientGuard``: the guard's own
    cost, to tell it from the parser's;
  - ``h11`` (not run by default): uvicorn's h11 parser (which bounds a head by itself,
    ``h11_max_incomplete_event_size``) and ClientGuard, plain HTTP: the alternative to the guarded
    httptools protocol, measured at about twice its CPU per request, hence not chosen;
  - ``lan``: the guarded httptools protocol and ClientGuard, plain HTTP (what ``tls = false`` boxes
    run);
  - ``tls``: the same over TLS (the default production setup), the client trusting the box's
    certificate (an ssl context with cafile ``<data dir>/tls/box.crt``) and checking its address;

  the uvicorn options of lan/tls are the daemon's own (``appliance.shell.daemon.lan_server_options``);
  the baseline runs first and again last (unless ``--no-rerun``): the mean of its two runs is the
  reference, and how far they differ is the run's noise (at least 10%), which the conclusion uses
  to call a difference noise;
* three phases per variant with the shared load generator (``bench/loadgen.py``): ``GET
  /api/v1/health`` req/s with p50/p99 over ``--concurrency`` keep-alive connections; new
  connections/s, ``--concurrency`` clients each opening a connection (TCP, plus a full TLS handshake
  for ``tls``: the client does not resume sessions) for one ``GET /api/v1/health`` with
  ``Connection: close``, latency counted from the connect; durable ``POST /api/v1/sheets``
  sheets/s with p50/p99, one keep-alive connection per tablet, every sheet new (correction chains
  as in bench/ingest.py), anything but 201 an error;
* the server process's CPU per request in each phase (less sensitive than req/s to other work on a
  shared machine, though not immune to it);
* after stopping each server: rows in ``sheets`` == 201 answers, and the layers, parser and TLS
  the server reported it served (its first log line);
* a table, the ratios against the baseline, and a one-line conclusion computed from the figures:
  server CPU per request first (steadier than req/s when other work shares the machine), then
  throughput, a new connection's cost, and bench/ingest.py's single-sheet target.

Each phase runs ``--warmup`` seconds (default 1, not measured), then ``--seconds`` (default 4;
``--connect-seconds``, default 2, for the new-connection phase). Every loop is bounded: a server
must answer within ``server_choice.START_TIMEOUT_S``, a phase by ``--max-requests`` and by a
watchdog ``loadgen.GRACE_S`` after its window, and each server is stopped (SIGTERM, then SIGKILL to
its process group) before the next starts. All traffic goes to 127.0.0.1; the load generator shares
the machine's cores with the server, and for ``tls`` it does its side of the cryptography too.

Run from the repo root (never run as a test); the default run takes about a minute::

    .venv/bin/python bench/lan_side.py
    .venv/bin/python bench/lan_side.py --variants baseline,guard,h11,lan,tls --seconds 5 --keep

Exit status: 0 when every variant served and its checks passed, 1 when a check failed, 2 when the
box or a server could not be set up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import importlib.metadata
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import loadgen
import server_choice
from ingest import TARGET_SINGLE_P99_MS, TARGET_SINGLE_PER_S
from server_choice import Phase, health_worker, run_phase, sheet_worker


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    guard: bool  # ClientGuard among the app's layers
    parser: str  # "httptools" (uvicorn's default), "h11" (uvicorn's h11), "guarded" (the daemon's)
    tls: bool


VARIANTS = {
    v.name: v
    for v in (
        Variant("baseline", "httptools, HTTP, no guard", guard=False, parser="httptools", tls=False),
        Variant("guard", "httptools + guard, HTTP", guard=True, parser="httptools", tls=False),
        Variant("h11", "h11 + guard, HTTP", guard=True, parser="h11", tls=False),
        Variant("lan", "guarded httptools + guard, HTTP", guard=True, parser="guarded", tls=False),
        Variant("tls", "guarded httptools + guard, TLS", guard=True, parser="guarded", tls=True),
    )
}
DEFAULT_VARIANTS = ("baseline", "lan", "tls")
SERVED_PREFIX = "served: "  # the server's first log line: what it really serves
NOISE = 0.10  # the least change not called noise; the baseline's two runs can show more (Baseline.of)


# --------------------------------------------------------------------------------------------
# The server (run in a subprocess: this script with --serve VARIANT)
# --------------------------------------------------------------------------------------------


def without_client_guard(app: Any) -> Any:
    """``app`` (create_app's layers) with its ClientGuard layer taken out, as before the guard."""
    from edge_api.guard import ClientGuard

    layer = app
    for _ in range(10):  # create_app nests a few plain ASGI layers, each holding the next as .app
        inner = getattr(layer, "app", None)
        if inner is None:
            break
        if isinstance(inner, ClientGuard):
            layer.app = inner.app
            return app
        layer = inner
    raise RuntimeError("create_app's layers hold no ClientGuard any more: update bench/lan_side.py")


def layer_names(app: Any) -> str:
    names: list[str] = []
    layer = app
    while layer is not None and len(names) < 10:
        names.append(type(layer).__name__)
        layer = getattr(layer, "app", None)
    return " > ".join(names)


def lan_options(variant: Variant, config: Any, data_dir: Path) -> dict[str, Any]:
    """The uvicorn options of the tablet listener: the daemon's own (``lan_server_options``) for
    lan/tls; uvicorn's h11 with its head bound for h11; httptools with uvicorn's defaults (the
    daemon's LAN side before the hardening) for the baseline and guard."""
    from appliance.core import tls
    from appliance.shell.daemon import lan_server_options

    if variant.parser == "httptools":
        return {"http": "httptools"}
    options: dict[str, Any]
    if variant.parser == "h11":
        options = {"http": "h11", "h11_max_incomplete_event_size": config.max_header_bytes}
    else:
        options = lan_server_options(config)
    if variant.tls:
        options["ssl_certfile"] = str(tls.load_identity(data_dir).pem_path)
    return options


async def _serve(variant: Variant, data_dir: Path, port: int) -> None:
    from appliance.core.box import get_box
    from appliance.core.config import load_config
    from appliance.core.storage import Store
    from appliance.web.server import EmbeddedServer, bind, server_config
    from edge_api.app import create_app

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    config = load_config(data_dir)  # the environment carries the raised limits too
    store = Store(config.db_path)
    app = create_app(store, config, store.query(get_box)["box_id"])
    if not variant.guard:
        app = without_client_guard(app)
    options = lan_options(variant, config, data_dir)
    protocol = options["http"] if isinstance(options["http"], str) else options["http"].__name__
    tls_file = Path(options["ssl_certfile"]).name if "ssl_certfile" in options else "off"
    print(f"{SERVED_PREFIX}{layer_names(app)}; http={protocol}; tls={tls_file}", flush=True)
    sock = bind("127.0.0.1", port)  # as the daemon's listeners
    server = EmbeddedServer(server_config(app, **options))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    stopping = asyncio.create_task(stop.wait())
    try:
        # Until SIGTERM, or until the server ends by itself (it failed: its error is raised below).
        await asyncio.wait([stopping, serving], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        server.should_exit = True
        await asyncio.wait([serving], timeout=server_choice.STOP_TIMEOUT_S)
        if not serving.done():
            serving.cancel()
            await asyncio.wait([serving], timeout=1.0)
        store.close()
        sock.close()
    if serving.done() and not serving.cancelled() and serving.exception() is not None:
        raise serving.exception()  # type: ignore[misc]


def serve(name: str, data_dir: str, port: int) -> int:
    import uvloop

    sys.path.insert(0, str(loadgen.ROOT))
    uvloop.run(_serve(VARIANTS[name], Path(data_dir), port))
    return 0


# --------------------------------------------------------------------------------------------
# The box and the server processes
# --------------------------------------------------------------------------------------------


def build_template(data_dir: Path, count: int) -> list[loadgen.BenchTablet]:
    """server_choice's box (sample event, ``count`` paired tablets) plus the box's TLS identity,
    made for loopback only (no interface scan); every variant's copy has the same certificate."""
    tablets, _ = server_choice.build_template(data_dir, count)
    from appliance.core import tls

    tls.write_identity(data_dir, "bench-box", addresses=[])
    return tablets


def client_context(data_dir: Path) -> ssl.SSLContext:
    """What a client that trusts the box's certificate uses (as tests/conftest.py's ``verify``)."""
    return ssl.create_default_context(cafile=str(data_dir / "tls" / "box.crt"))


def health_status(port: int, context: ssl.SSLContext | None) -> int:
    if context is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=2.0, context=context)
    try:
        conn.request("GET", "/api/v1/health")
        return conn.getresponse().status
    except OSError:  # ssl.SSLError too
        return 0
    finally:
        conn.close()


@dataclass
class LanServer(server_choice.ServerProcess):
    """server_choice's server process (stop, log tail), started as this script's ``--serve``."""

    context: ssl.SSLContext | None = None

    def start(self) -> LanServer:
        self.port = server_choice.free_port()
        env = {**os.environ, **loadgen.HIGH_LIMITS_ENV}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(loadgen.ROOT), env.get("PYTHONPATH", "")) if p)
        command = [sys.executable, str(Path(__file__).resolve()), "--serve", self.kind]
        command += ["--data-dir", str(self.data_dir), "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + server_choice.START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.process.returncode}: {self.log_tail()}")
            if health_status(self.port, self.context) == 200:
                return self
            time.sleep(0.1)
        timeout = server_choice.START_TIMEOUT_S
        raise RuntimeError(f"{self.kind} did not answer within {timeout:g} s: {self.log_tail()}")

    def served(self) -> str:
        """The server's own account of what it served (its first log line)."""
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith(SERVED_PREFIX):
                    return line.removeprefix(SERVED_PREFIX)
        return "(not reported)"


# --------------------------------------------------------------------------------------------
# Load phases
# --------------------------------------------------------------------------------------------


async def connect_worker(ph: Phase, port: int, context: ssl.SSLContext | None, request: bytes) -> None:
    """A client that opens a new connection (and TLS session) for every request."""
    while ph.more():
        ph.sent += 1
        conn = loadgen.Conn("127.0.0.1", port, context)
        t0 = time.perf_counter()
        try:
            status, _ = await conn.request(request)  # opens the connection, then sends
        except loadgen.NET_ERRORS as exc:
            ph.errors[type(exc).__name__] += 1
            continue
        finally:
            conn.close()
        if status != 200:
            ph.errors[str(status)] += 1
        ph.done(t0, time.perf_counter(), status == 200)


@dataclass
class Measured:
    health: Phase
    connect: Phase
    sheets: Phase
    tls: str  # protocol and cipher the client negotiated, "" for plain HTTP


async def measure(
    server: LanServer, tablets: list[loadgen.BenchTablet], args: argparse.Namespace
) -> Measured:
    assert server.process is not None
    pid, port, context = server.process.pid, server.port, server.context
    host = f"127.0.0.1:{port}"
    common = {"User-Agent": "venuebox-bench", "Accept": "application/json"}
    for t in tablets:
        t.heads, t.turn = {}, 0  # every variant starts from the same database: fresh chains
        auth = {**common, "Authorization": f"Bearer {t.token}", "Content-Type": "application/json"}
        t.sheet_head = loadgen.request_head("POST", "/api/v1/sheets", host, auth)
    health = loadgen.request_head("GET", "/api/v1/health", host, common)
    once = loadgen.request_head("GET", "/api/v1/health", host, {**common, "Connection": "close"})

    conns = await loadgen.open_connections("127.0.0.1", port, args.concurrency, context)
    assert conns[0].writer is not None
    tls_object = conns[0].writer.get_extra_info("ssl_object")
    negotiated = f"{tls_object.version()} {tls_object.cipher()[0]}" if tls_object is not None else ""
    h = Phase("health GET", args.warmup, args.seconds, args.max_requests)
    await run_phase(h, pid, [health_worker(h, c, health) for c in conns])
    loadgen.close_all(conns)
    print(f"  ... {server.kind}: health {h.rate:,.0f} req/s, p99 {h.p(0.99):.1f} ms", flush=True)

    c = Phase("new connection GET", args.warmup, args.connect_seconds, args.max_requests)
    await run_phase(c, pid, [connect_worker(c, port, context, once) for _ in range(args.concurrency)])
    print(f"  ... {server.kind}: new connections {c.rate:,.0f}/s, p99 {c.p(0.99):.1f} ms", flush=True)

    conns = await loadgen.open_connections("127.0.0.1", port, len(tablets), context)
    s = Phase("single sheet POST", args.warmup, args.seconds, args.max_requests)
    await run_phase(s, pid, [sheet_worker(s, conn, t) for conn, t in zip(conns, tablets, strict=True)])
    loadgen.close_all(conns)
    print(f"  ... {server.kind}: sheets {s.rate:,.0f}/s, p99 {s.p(0.99):.1f} ms", flush=True)
    return Measured(h, c, s, negotiated)


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


PHASES = ("health", "connect", "sheets")
PHASE_NAMES = {"health": "health req/s", "connect": "new conn/s", "sheets": "sheets/s"}


@dataclass(frozen=True)
class Figures:
    """One phase's figures: successes per second, latency percentiles (ms), server CPU per success (µs)."""

    rate: float
    p50: float
    p99: float
    cpu_us: float

    @classmethod
    def of(cls, ph: Phase) -> Figures:
        # CPU per request: the server's share of a core over the phase / successes per second.
        cpu = ph.server_cpu / ph.rate * 1e6 if ph.rate else float("nan")
        return cls(ph.rate, ph.p(0.5), ph.p(0.99), cpu)

    @classmethod
    def mean(cls, many: list[Figures]) -> Figures:
        n = len(many)
        return cls(*(sum(getattr(f, k) for f in many) / n for k in ("rate", "p50", "p99", "cpu_us")))


@dataclass
class Result:
    variant: Variant
    run: str  # the variant's name, or "baseline-again" for the baseline's second run
    measured: Measured
    served: str
    rows: int
    rows_ok: bool

    @property
    def phases(self) -> tuple[Phase, Phase, Phase]:
        m = self.measured
        return m.health, m.connect, m.sheets

    @property
    def figures(self) -> dict[str, Figures]:
        return {name: Figures.of(ph) for name, ph in zip(PHASES, self.phases, strict=True)}

    @property
    def ok(self) -> bool:
        return self.rows_ok and all(ph.ok_in_window > 0 for ph in self.phases)


@dataclass
class Baseline:
    """The reference: the mean of the baseline's runs, and how far its runs differ (the noise of
    this run, at least ``NOISE``), per phase and figure."""

    figures: dict[str, Figures]
    noise: dict[tuple[str, str], float]
    runs: int

    @classmethod
    def of(cls, runs: list[Result]) -> Baseline:
        figures = {p: Figures.mean([r.figures[p] for r in runs]) for p in PHASES}
        noise = {}
        for p in PHASES:
            for k in ("rate", "cpu_us"):
                values = [getattr(r.figures[p], k) for r in runs]
                spread = _ratio(max(values), min(values)) - 1 if len(values) > 1 else 0.0
                noise[(p, k)] = max(NOISE, spread)
        return cls(figures, noise, len(runs))

    def vs(self, figures: dict[str, Figures], phase: str, key: str) -> str:
        """``figures`` against the reference: a change in %, or "within noise"."""
        ratio = _ratio(getattr(figures[phase], key), getattr(self.figures[phase], key))
        noise = self.noise[(phase, key)]
        within = f" (within the ±{noise:.0%} noise)" if abs(ratio - 1) < noise else ""
        return f"x{ratio:.2f}{within}" if key == "cpu_us" else f"{_change(ratio)}{within}"


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _change(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.0f}%"


def _versions() -> str:
    found = []
    for name in ("uvicorn", "httptools", "h11", "uvloop", "litestar"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{name} {importlib.metadata.version(name)}")
    return ", ".join([*found, ssl.OPENSSL_VERSION])


def report(results: list[Result], args: argparse.Namespace, loop_name: str) -> None:
    print()
    print(
        f"LAN-side bench: {args.seconds:g} s per keep-alive phase, {args.connect_seconds:g} s for new "
        f"connections, after {args.warmup:g} s warm-up each; {args.concurrency} connections; "
        f"{os.cpu_count()} CPUs shared by server and client ({loop_name}); load average before "
        f"{args.load_before:.1f}"
    )
    print(f"versions: {_versions()}")
    header = (
        f"{'variant':<32}{'health/s':>9}{'p50':>6}{'p99':>6}{'µs':>6}"
        f"{'conn/s':>8}{'p50':>6}{'p99':>6}{'µs':>6}"
        f"{'sheets/s':>9}{'p50':>6}{'p99':>6}{'µs':>6}{'err':>5}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        label = r.variant.label + (" (again)" if r.run != r.variant.name else "")
        cells = [f"{label:<32}"]
        for f, width in zip(r.figures.values(), (9, 8, 9), strict=True):
            cells.append(f"{f.rate:>{width},.0f}{f.p50:>6.1f}{f.p99:>6.1f}{f.cpu_us:>6.0f}")
        cells.append(f"{sum(sum(ph.errors.values()) for ph in r.phases):>5}")
        print("".join(cells))
    print(
        "(p50/p99 in ms; µs: the server process's CPU per request; conn/s: a new connection per GET,\n"
        " TCP + TLS handshake + request, latency from the connect; sheets: durable single POST, 201 only)"
    )
    for r in results:
        negotiated = f"; client negotiated {r.measured.tls}" if r.measured.tls else ""
        print(f"served by {r.run}: {r.served}{negotiated}")
        for ph in r.phases:
            if ph.errors:
                detail = ", ".join(f"{k}: {v}" for k, v in ph.errors.most_common())
                print(f"errors in {r.run} {ph.name}: {detail}")
    baselines = [r for r in results if r.variant.name == "baseline"]
    if baselines:
        base = Baseline.of(baselines)
        if base.runs > 1:
            first, last = baselines[0].figures, baselines[-1].figures
            moved = ", ".join(
                f"{PHASE_NAMES[p]} {_change(_ratio(last[p].rate, first[p].rate))}" for p in PHASES
            )
            print(
                f"baseline: the mean of its {base.runs} runs (first and last); its second run moved {moved}"
            )
        for r in results:
            if r.variant.name == "baseline":
                continue
            parts = []
            for p in PHASES:
                f, b = r.figures[p], base.figures[p]
                parts.append(
                    f"{PHASE_NAMES[p]} x{_ratio(f.rate, b.rate):.2f} (p99 x{_ratio(f.p99, b.p99):.2f}, "
                    f"CPU/req x{_ratio(f.cpu_us, b.cpu_us):.2f})"
                )
            print(f"ratio {r.run}/baseline: " + ", ".join(parts))
    print(conclusion(results))


def _meets_target(f: Figures) -> bool:
    return f.rate >= TARGET_SINGLE_PER_S and f.p99 < TARGET_SINGLE_P99_MS


def conclusion(results: list[Result]) -> str:
    """One line that follows from the figures: what the production LAN side (``tls``, else ``lan``)
    costs the server per request against the baseline (the steadier figure on a shared machine) and
    how much of it TLS adds, what that does to throughput, told apart from the run's noise (how far
    the baseline moved between its runs), what a new connection costs the server, and whether
    bench/ingest.py's single-sheet target is met (by the baseline too: when neither meets it, the
    machine is the limit)."""
    baselines = [r for r in results if r.variant.name == "baseline"]
    others = {r.variant.name: r for r in results if r.variant.name != "baseline"}
    prod = others.get("tls") or others.get("lan")
    if not baselines or prod is None:
        return "conclusion: none (run baseline with lan and/or tls to compare)"
    base = Baseline.of(baselines)
    f = prod.figures
    line = (
        f"conclusion: {prod.variant.label} costs the server {base.vs(f, 'health', 'cpu_us')} CPU per "
        f"health request and {base.vs(f, 'sheets', 'cpu_us')} per durable sheet against the baseline"
    )
    plain = others.get("lan")
    if prod.variant.tls and plain is not None:
        g = plain.figures
        line += f" (without TLS: {base.vs(g, 'health', 'cpu_us')}, {base.vs(g, 'sheets', 'cpu_us')})"
    line += (
        f"; throughput: durable sheets/s {base.vs(f, 'sheets', 'rate')}, health req/s "
        f"{base.vs(f, 'health', 'rate')}"
    )
    what = "a new TLS connection" if prod.variant.tls else "a new connection"
    line += (
        f"; {what} costs the server {f['connect'].cpu_us / 1000:.1f} ms CPU against "
        f"{base.figures['connect'].cpu_us / 1000:.1f} ms, once per keep-alive connection"
    )
    target = (
        f"bench/ingest.py's target (>= {TARGET_SINGLE_PER_S:,} sheets/s, p99 < {TARGET_SINGLE_P99_MS:g} ms)"
    )
    prod_met, base_met = _meets_target(f["sheets"]), _meets_target(base.figures["sheets"])
    if prod_met and base_met:
        line += f"; {target} met, as by the baseline"
    elif not prod_met and not base_met:
        line += f"; {target} NOT met, nor by the baseline (this machine's limit, not the LAN side's)"
    else:
        line += f"; {target} {'met' if prod_met else 'NOT met'}, "
        line += f"{'met' if base_met else 'NOT met'} by the baseline"
    return line


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=4.0, help="measured seconds per keep-alive phase (4)"
    )
    parser.add_argument(
        "--connect-seconds", type=float, default=2.0, help="measured seconds of the new-connection phase (2)"
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured warm-up per phase (1)")
    parser.add_argument("--concurrency", type=int, default=16, help="connections / tablets (16)")
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated, of {', '.join(VARIANTS)} ({','.join(DEFAULT_VARIANTS)})",
    )
    parser.add_argument(
        "--max-requests", type=int, default=2_000_000, help="per-phase bound on requests sent"
    )
    parser.add_argument(
        "--no-rerun", action="store_true", help="measure the baseline once (default: first and last)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data dirs and server logs")
    # The subprocess mode (this script serving one box):
    parser.add_argument("--serve", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        if not args.data_dir or not args.port:
            parser.error("--serve needs --data-dir and --port")
        return args
    args.names = [n.strip() for n in args.variants.split(",") if n.strip()]
    if (
        not args.names
        or any(n not in VARIANTS for n in args.names)
        or len(set(args.names)) != len(args.names)
    ):
        parser.error(f"--variants: a comma-separated list of distinct names from {', '.join(VARIANTS)}")
    if args.concurrency < 1 or args.seconds <= 0 or args.connect_seconds <= 0 or args.warmup < 0:
        parser.error("--concurrency, --seconds and --connect-seconds must be positive, --warmup >= 0")
    return args


def run_variant(
    variant: Variant,
    run: str,
    template: Path,
    workdir: Path,
    tablets: list[loadgen.BenchTablet],
    args: argparse.Namespace,
) -> tuple[Result, str]:
    data_dir = workdir / run
    shutil.copytree(template, data_dir)
    context = client_context(data_dir) if variant.tls else None
    server = LanServer(variant.name, data_dir, workdir / f"{run}.log", context=context)
    try:
        server.start()
        print(f"bench: {variant.label} on 127.0.0.1:{server.port}", flush=True)
        measured, loop_name = loadgen.run_loop(measure(server, tablets, args))
    finally:
        server.stop()
    created = measured.sheets.created
    rows = server_choice.sheet_rows(data_dir)
    cancelled = sum(ph.cancelled for ph in (measured.health, measured.connect, measured.sheets))
    rows_ok = rows == created or (cancelled > 0 and rows >= created)
    verdict = "OK" if rows_ok else "FAILED"
    print(f"check {run}: sheets rows {rows:,} == 201 answers {created:,}: {verdict}", flush=True)
    return Result(variant, run, measured, server.served(), rows, rows_ok), loop_name


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        return serve(args.serve, args.data_dir, args.port)
    args.load_before = os.getloadavg()[0]  # the machine may be busy with other work: say so
    workdir = Path(tempfile.mkdtemp(prefix="venuebox-bench-lan-"))
    template = workdir / "template"
    results: list[Result] = []
    loop_name = ""
    try:
        print(f"bench: building the box and pairing {args.concurrency} tablets", flush=True)
        tablets = build_template(template, args.concurrency)
        runs = list(args.names)
        if "baseline" in runs and len(runs) > 1 and not args.no_rerun:
            # The baseline first and last: their mean is the reference, their difference the noise.
            runs = ["baseline", *(n for n in runs if n != "baseline"), "baseline-again"]
        for run in runs:
            variant = VARIANTS[run.removesuffix("-again")]
            result, loop_name = run_variant(variant, run, template, workdir, tablets, args)
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
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
