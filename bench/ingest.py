"""Ingest bench: how many score sheets per second the real box stores durably.

What it does, in one run:

* builds a fresh, temporary data dir with the shipped sample event (``tests.conftest.make_box``),
  starts the real server as a subprocess (``python -m appliance ... run``, via
  ``tests.conftest.RunningBox``) with the rate limits raised so they never throttle the bench, and
  pairs ``--concurrency`` tablets (judges J1..J5, round robin) through the real admin + pairing API;
* phase 1, baseline: ``GET /api/v1/health`` requests/s over ``--concurrency`` keep-alive connections;
* phase 2, single sheets: ``POST /api/v1/sheets`` sheets/s with p50/p99 latency, one connection per
  tablet, each tablet sending sequentially. Every sheet is new; a judge has one original per entry,
  so each tablet keeps its own correction chain on a few entries of its panel (entries of a judge
  are split between that judge's tablets): an original first, then corrections that each supersede
  the previous sheet. Anything but 201 is an error and is counted. The sample event has only
  200 (entry, judge) pairs, so chains grow to hundreds or thousands of sheets, far longer than at
  a real event (the report prints the average): a cost that grows with chain length shows here;
* phase 3, batches: ``POST /api/v1/sheets/batch`` with ``--batch-size`` items (default 500) from
  ``--batch-clients`` tablets at once; the items continue each tablet's chains, in order inside the
  batch; every item must answer 201;
* the ratio single sheets/s / health requests/s, and the targets (>= 3,000 single sheets/s with
  p99 < 50 ms; >= 30,000 sheets/s through batches), each "target met" / "target NOT met";
* after stopping the server: rows in ``sheets`` == number of 201 answers, and
  ``python -m appliance --data-dir D verify`` exits 0.

Each phase runs ``--warmup`` seconds (default 1, not measured) and then ``--seconds`` (default 8)
measured; completions inside the measured window count. Every phase stops by itself: workers stop
at the end of the window, a phase is bounded by ``--max-requests``, and a watchdog cancels it if it
overruns the window by ``loadgen.GRACE_S``.

The load generator (``bench/loadgen.py``, shared with bench/daemon.py) is deliberately cheap (the box
and the generator share the machine's cores): a minimal HTTP/1.1 keep-alive client over
``asyncio.open_connection`` with pre-encoded request heads, parsing only the status line and
Content-Length; uvloop when importable. httpx (through the test fixtures) is used only for setup.

Run from the repo root (never run as a test)::

    .venv/bin/python bench/ingest.py                 # 8 s per phase, 32 tablets
    .venv/bin/python bench/ingest.py --seconds 5 --concurrency 16 --keep

Exit status: 0 when both integrity checks pass (the throughput targets are reported, not enforced),
1 when a check fails, 2 when the box could not be set up.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import loadgen

TARGET_SINGLE_PER_S = 3_000
TARGET_SINGLE_P99_MS = 50.0
TARGET_BATCH_PER_S = 30_000


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    clients: int
    warmup: float
    seconds: float
    max_requests: int
    unit: str = "req"
    start: float = 0.0
    win_start: float = 0.0
    win_end: float = 0.0
    ok_in_window: int = 0  # successes (requests, or sheets for batches) completed in the window
    latencies: list[float] = field(default_factory=list)  # seconds, successes in the window
    sent: int = 0
    created: int = 0  # 201 answers (sheets stored), whole phase incl. warm-up and tail
    errors: Counter[str] = field(default_factory=Counter)
    cancelled: int = 0
    server_cpu: float = 0.0
    client_cpu: float = 0.0

    def begin(self) -> None:
        self.start = time.perf_counter()
        self.win_start = self.start + self.warmup
        self.win_end = self.win_start + self.seconds

    def more(self) -> bool:
        return self.sent < self.max_requests and time.perf_counter() < self.win_end

    def done(self, t0: float, t1: float, ok: int) -> None:
        if ok and self.win_start <= t1 < self.win_end:
            self.ok_in_window += ok
            self.latencies.append(t1 - t0)

    @property
    def rate(self) -> float:
        return self.ok_in_window / self.seconds

    def pct_ms(self, q: float) -> float:
        return loadgen.pct(self.latencies, q)


async def run_phase(
    phase: Phase, server_pid: int, workers: list[Callable[[Phase], Awaitable[None]]]
) -> Phase:
    cpu0, own0 = loadgen.cpu_seconds(server_pid), time.process_time()
    phase.begin()
    cancelled = await loadgen.run_watched(
        [w(phase) for w in workers], phase.warmup + phase.seconds + loadgen.GRACE_S
    )
    if cancelled:
        phase.cancelled += cancelled
        phase.errors["cancelled by watchdog"] += cancelled
    wall = time.perf_counter() - phase.start
    phase.server_cpu = (loadgen.cpu_seconds(server_pid) - cpu0) / wall
    phase.client_cpu = (time.process_time() - own0) / wall
    return phase


def health_worker(conn: loadgen.Conn, request: bytes) -> Callable[[Phase], Awaitable[None]]:
    async def work(ph: Phase) -> None:
        while ph.more():
            ph.sent += 1
            t0 = time.perf_counter()
            try:
                status, _ = await conn.request(request)
            except loadgen.NET_ERRORS as exc:
                ph.errors[type(exc).__name__] += 1
                conn.close()
                continue
            t1 = time.perf_counter()
            if status != 200:
                ph.errors[str(status)] += 1
            ph.done(t0, t1, status == 200)

    return work


def sheet_worker(conn: loadgen.Conn, tablet: loadgen.BenchTablet) -> Callable[[Phase], Awaitable[None]]:
    async def work(ph: Phase) -> None:
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

    return work


def batch_worker(
    conn: loadgen.Conn, tablet: loadgen.BenchTablet, size: int
) -> Callable[[Phase], Awaitable[None]]:
    async def work(ph: Phase) -> None:
        while ph.more():
            ph.sent += 1
            planned = dict(tablet.heads)
            items: list[tuple[str, str]] = []
            bodies: list[bytes] = []
            for _ in range(size):
                entry = tablet.next_entry()
                sheet_id, body = tablet.sheet(entry, planned.get(entry))
                planned[entry] = sheet_id
                items.append((entry, sheet_id))
                bodies.append(body)
            request = loadgen.with_body(tablet.batch_head, b'{"sheets":[' + b",".join(bodies) + b"]}")
            t0 = time.perf_counter()
            try:
                status, answer = await conn.request(request)
            except loadgen.NET_ERRORS as exc:
                ph.errors[type(exc).__name__] += size
                conn.close()
                continue
            t1 = time.perf_counter()
            if status != 200:
                ph.errors[f"batch {status}"] += size
                ph.done(t0, t1, 0)
                continue
            results = loadgen.loads(answer)["results"]
            created = 0
            for (entry, sheet_id), result in zip(items, results, strict=True):
                item_status = result["status"]
                if item_status == 201:
                    created += 1
                else:
                    ph.errors[f"item {item_status}"] += 1
                tablet.settle(entry, sheet_id, item_status, result.get("problem"))
            ph.created += created
            ph.done(t0, t1, created)

    return work


# --------------------------------------------------------------------------------------------
# Setup, the run, the report
# --------------------------------------------------------------------------------------------


def pair_tablets(box: Any, count: int, entries_per_tablet: int) -> list[loadgen.BenchTablet]:
    """Pair ``count`` tablets round robin over the judges, and split each judge's entries among its
    tablets so no two tablets ever race on one (entry, judge) chain."""
    paired = [
        box.pair(loadgen.JUDGES[i % len(loadgen.JUDGES)], f"bench tablet {i + 1}") for i in range(count)
    ]
    by_judge: dict[str, list[int]] = {}
    for i, tablet in enumerate(paired):
        by_judge.setdefault(tablet.judge_id, []).append(i)
    submitted_at = datetime.now(UTC).isoformat(timespec="seconds")
    tablets: list[loadgen.BenchTablet | None] = [None] * count
    for judge_id, indexes in by_judge.items():
        event = paired[indexes[0]].event()
        shares = loadgen.panel_shares(event, judge_id, len(indexes))
        for i, share in zip(indexes, shares, strict=True):
            tablets[i] = loadgen.BenchTablet(
                index=i,
                judge_id=judge_id,
                token=paired[i].pairing["token"],
                entries=share[: entries_per_tablet or None],
                values_json=loadgen.valid_values(event["criteria"], i),
                submitted_at=submitted_at,
            )
    return [t for t in tablets if t is not None]


async def bench(box: Any, tablets: list[loadgen.BenchTablet], args: argparse.Namespace) -> list[Phase]:
    url = box.tablet_url.removeprefix("http://")
    host, port = url.rsplit(":", 1)
    pid = box.process.pid
    common = {"User-Agent": "venuebox-bench", "Accept": "application/json"}
    for t in tablets:
        auth = {**common, "Authorization": f"Bearer {t.token}", "Content-Type": "application/json"}
        t.sheet_head = loadgen.request_head("POST", "/api/v1/sheets", url, auth)
        t.batch_head = loadgen.request_head("POST", "/api/v1/sheets/batch", url, auth)

    phases: list[Phase] = []
    health = loadgen.request_head("GET", "/api/v1/health", url, common)
    conns = await loadgen.open_connections(host, int(port), args.concurrency)
    phase = Phase("health GET", len(conns), args.warmup, args.seconds, args.max_requests)
    phases.append(await run_phase(phase, pid, [health_worker(c, health) for c in conns]))
    loadgen.close_all(conns)
    _progress(phase)

    conns = await loadgen.open_connections(host, int(port), len(tablets))
    phase = Phase("single sheet POST", len(conns), args.warmup, args.seconds, args.max_requests, "sheet")
    workers = [sheet_worker(c, t) for c, t in zip(conns, tablets, strict=True)]
    phases.append(await run_phase(phase, pid, workers))
    loadgen.close_all(conns)
    _progress(phase)

    batchers = tablets[: args.batch_clients]
    conns = await loadgen.open_connections(host, int(port), len(batchers))
    name = f"batch POST x{args.batch_size}"
    phase = Phase(name, len(conns), args.warmup, args.seconds, args.max_requests, "sheet")
    workers = [batch_worker(c, t, args.batch_size) for c, t in zip(conns, batchers, strict=True)]
    phases.append(await run_phase(phase, pid, workers))
    loadgen.close_all(conns)
    _progress(phase)
    return phases


def _progress(phase: Phase) -> None:
    print(f"  ... {phase.name}: {phase.rate:,.0f} {phase.unit}/s", flush=True)


def report(phases: list[Phase], args: argparse.Namespace, loop_name: str, server_pid: int) -> None:
    health, single, batch = phases
    print()
    print(
        f"venuebox ingest bench: {args.seconds:g} s per phase after {args.warmup:g} s warm-up, "
        f"{os.cpu_count()} CPUs shared by server (pid {server_pid}) and client ({loop_name})"
    )
    header = (
        f"{'phase':<22}{'clients':>8}{'rate':>12}  {'unit':<9}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'errors':>8}{'srv CPU':>9}{'cli CPU':>9}"
    )
    print(header)
    print("-" * len(header))
    for ph in phases:
        print(
            f"{ph.name:<22}{ph.clients:>8}{ph.rate:>12,.0f}  {ph.unit + '/s':<9}{ph.pct_ms(0.5):>8.1f}"
            f"{ph.pct_ms(0.99):>8.1f}{sum(ph.errors.values()):>8}{ph.server_cpu:>9.0%}{ph.client_cpu:>9.0%}"
        )
    print("(batch p50/p99 are per batch of sheets; CPU is the share of one core, over the phase)")
    for ph in phases:
        if ph.errors:
            detail = ", ".join(f"{k}: {v}" for k, v in ph.errors.most_common())
            print(f"errors in {ph.name}: {detail}")
    ratio = single.rate / health.rate if health.rate else float("nan")
    print(f"ratio single sheets/s / health req/s: {ratio:.2f}")
    if single.rate:
        print(f"ratio batch sheets/s / single sheets/s: {batch.rate / single.rate:.1f}")
    single_ok = single.rate >= TARGET_SINGLE_PER_S and single.pct_ms(0.99) < TARGET_SINGLE_P99_MS
    print(
        f"target single >= {TARGET_SINGLE_PER_S:,}/s with p99 < {TARGET_SINGLE_P99_MS:g} ms: "
        f"{single.rate:,.0f}/s, p99 {single.pct_ms(0.99):.1f} ms -> {loadgen.verdict(single_ok)}"
    )
    print(
        f"target batch >= {TARGET_BATCH_PER_S:,} sheets/s: {batch.rate:,.0f}/s "
        f"-> {loadgen.verdict(batch.rate >= TARGET_BATCH_PER_S)}"
    )


def checks(data_dir: Path, created: int, chains: int) -> bool:
    conn = sqlite3.connect(f"file:{data_dir / 'venuebox.sqlite'}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT count(*) FROM sheets").fetchone()[0]
        outbox = conn.execute("SELECT count(*) FROM outbox WHERE kind = 'sheet'").fetchone()[0]
    finally:
        conn.close()
    rows_ok = rows == created
    print(f"check: sheets rows {rows:,} == 201 answers {created:,}: {'OK' if rows_ok else 'FAILED'}")
    print(f"       (outbox sheet records {outbox:,}; about {rows / max(chains, 1):,.0f} sheets per chain)")
    verify = subprocess.run(
        [sys.executable, "-m", "appliance", "--data-dir", str(data_dir), "verify"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    verify_ok = verify.returncode == 0
    out = " / ".join(line for line in (verify.stdout + verify.stderr).splitlines() if line.strip())
    print(f"check: `venuebox verify` exit {verify.returncode}: {'OK' if verify_ok else 'FAILED'} ({out})")
    return rows_ok and verify_ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per phase (8)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured warm-up per phase (1)")
    parser.add_argument("--concurrency", type=int, default=32, help="tablets / connections (32)")
    parser.add_argument("--batch-clients", type=int, default=4, help="concurrent batch senders (4)")
    parser.add_argument("--batch-size", type=int, default=500, help="sheets per batch (500)")
    parser.add_argument(
        "--entries-per-tablet",
        type=int,
        default=0,
        help="entries each tablet keeps a chain on (0 = all of its share of its judge's panel, 3-10)",
    )
    parser.add_argument(
        "--max-requests", type=int, default=2_000_000, help="per-phase bound on requests sent"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data dir (its path is printed)")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.seconds <= 0 or args.warmup < 0 or args.entries_per_tablet < 0:
        parser.error("--concurrency and --seconds must be positive, --entries-per-tablet >= 0")
    args.batch_clients = max(1, min(args.batch_clients, args.concurrency))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    make_box, running_box = loadgen.load_fixtures()
    workdir = Path(tempfile.mkdtemp(prefix="venuebox-bench-"))
    data_dir = workdir / "box"
    box = None
    try:
        config = make_box(data_dir, **loadgen.HIGH_LIMITS)
        box = running_box(config, env=loadgen.HIGH_LIMITS_ENV).start()
        print(f"bench: box on {box.tablet_url} (pid {box.process.pid}), data dir {data_dir}", flush=True)
        tablets = pair_tablets(box, args.concurrency, args.entries_per_tablet)
        phases, loop_name = loadgen.run_loop(bench(box, tablets, args))
        pid = box.process.pid
        box.stop()
        report(phases, args, loop_name, pid)
        created = sum(ph.created for ph in phases)
        cancelled = sum(ph.cancelled for ph in phases)
        if cancelled:
            print(f"note: {cancelled} workers were cancelled mid-request; rows may exceed the 201 count")
        chains = sum(len(t.entries) for t in tablets)
        ok = checks(data_dir, created, chains)
        return 0 if ok else 1
    except (RuntimeError, AssertionError) as exc:
        print(f"bench: setup failed: {exc}", file=sys.stderr)
        return 2
    finally:
        if box is not None:
            box.stop()
        if args.keep:
            print(f"data dir kept: {data_dir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
