"""Uplink bench: how many outbox records per second the box drains to the receiver on loopback.

What it does, in one run:

* **Fill** (not measured): a fresh data dir with the shipped sample event (``tests.conftest.make_box``),
  one really paired device per judge (J1..J5, ``tests.conftest.paired_device``), and score sheets
  through the real ledger path (``appliance.core.ledger.submit_sheets`` in the writer's transaction, the
  call the tablet API makes), so every sheet is hash-chained and queued in the outbox in the same
  transaction, as at an event. The sample event has 200 (entry, judge) pairs, so each pair carries a
  correction chain (an original, then sheets that each supersede the previous one). Sheets are added
  until the outbox holds ``--records`` records (default 100,000; the box's own set-up and pairing
  audit records count too). The filled data dir is copied for each drain below.
* **(a) In-process drain**: a real receiver (``venuebox ingest-server run``, ``tests.receiver_process
  .RunningReceiver``) on 127.0.0.1 with the box's token issued (``add-box``), the box pointed at it
  by its config keys (``uplink_url`` in venuebox.toml, the token in ``uplink.token``), and the real
  ``uplink.worker.UplinkWorker`` run in this process: ``await worker.step()`` in a loop until the
  outbox has no pending record. Wall time from the first step to the empty queue; per-batch
  latency (a whole turn: read, open the batch, POST, apply the ack) and the POST alone; the time the
  worker spends in each kind of store call; CPU seconds of the receiver process (/proc) and of this
  process.
* **(b) Daemon drain**: the same on a second copy and a second, empty receiver, but the worker runs
  inside the real daemon (``python -m appliance --data-dir D run`` on ephemeral ports,
  ``tests.conftest.RunningBox``). The daemon starts with no uplink target, so nothing is sent
  during its start-up; the clock starts when the bench configures the target as
  ``venuebox uplink configure`` does (``uplink_state.configure_target``) and asks for a sync over the
  admin API (``POST /admin/v1/uplink/sync``, which wakes the worker), and stops when
  ``GET /admin/v1/uplink`` (polled every ``POLL_S``) shows a backlog of 0. Those two steps queue two
  audit records of their own, which are drained too.
* **Checks**, after each drain: the box has no pending or quarantined record, and the receiver's
  ``records`` table holds exactly the box's outbox record ids (same count, same set, no duplicate).
* **Baseline**: the receiver's own insert rate for the same records: the records the in-process
  drain stored, regrouped into the very batches the box sent (same ids, same records, same order),
  checked and stored (``receiver_store.check_batch`` + ``store_batch`` through
  ``Store(path, schema=receiver_store.migrate, create=True).write``, one batch at a time as the
  receiver does) into a fresh receiver database, in this process: no HTTP, no signature, no decoding.
* The ratio drain / baseline, and the target (>= 10,000 records/s drained) as "target met" /
  "target NOT met" for each drain.

``--profile`` runs the in-process drain under cProfile (every thread: the event loop, the store's
writer thread and its reader pool) and prints where the time goes; the rate is then not comparable.

Run from the repo root (never run as a test)::

    .venv/bin/python bench/uplink.py                     # 100,000 records, both drains
    .venv/bin/python bench/uplink.py --records 5000      # a quick run
    .venv/bin/python bench/uplink.py --profile --no-daemon

Exit status: 0 when every check passes (the target is reported, not enforced), 1 when a check
fails, 2 when the box or a receiver could not be set up.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import io
import itertools
import json
import os
import pstats
import shutil
import sqlite3
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import loadgen

# This file is bench/uplink.py and bench/ is first on sys.path, where `import uplink` would find this
# script instead of the uplink package: the repository root goes first.
sys.path.insert(0, str(loadgen.ROOT))

TARGET_RECORDS_PER_S = 10_000
FILL_CALL_SHEETS = 2000  # sheets per submit_sheets call while filling (one transaction each)
POLL_S = 0.1  # how often the daemon drain asks GET /admin/v1/uplink for the backlog
BOX_DIR = "box"


# --------------------------------------------------------------------------------------------
# The box: filled through the ledger
# --------------------------------------------------------------------------------------------


@dataclass
class FilledBox:
    data_dir: Path
    box_id: str
    records: int  # outbox records, all pending
    sheets: int
    seconds: float


def fill_box(data_dir: Path, records: int, batch_max_records: int) -> FilledBox:
    """A real box whose outbox holds ``records`` pending records, nearly all of them sheets stored
    through ``submit_sheets`` (correction chains over every (entry, judge) pair of the sample event)."""
    make_box, _ = loadgen.load_fixtures()
    from appliance.core.box import get_box
    from appliance.core.storage import Store

    started = time.perf_counter()
    config = make_box(data_dir, uplink_batch_max_records=batch_max_records)
    with Store(config.db_path) as store:
        devices = loadgen.pair_judges(store)
        box_id = store.query(get_box)["box_id"]
        queued = store.query(lambda conn: conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
        made = loadgen.submit_sheet_chains(store, devices, max(0, records - queued))
        total = store.query(lambda conn: conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
    return FilledBox(data_dir, box_id, total, made, time.perf_counter() - started)


def copy_box(filled: FilledBox, data_dir: Path) -> Path:
    """A copy of the filled data dir (the store was closed and checkpointed; modes are kept)."""
    shutil.copytree(filled.data_dir, data_dir, ignore=shutil.ignore_patterns("*.log", "daemon.json"))
    return data_dir


def start_receiver(rx_dir: Path, box_id: str, box_dir: Path) -> Any:
    """A real receiver process on 127.0.0.1 with ``box_id``'s token issued, the token written where
    the box reads it (``<data dir>/uplink.token``, 0600)."""
    from appliance.shared.secrets_files import write_secret
    from tests.receiver_process import RunningReceiver, add_box

    rx_dir.mkdir(parents=True)
    token = add_box(rx_dir, box_id)
    write_secret(box_dir / "uplink.token", token)
    return RunningReceiver(rx_dir).start()


# --------------------------------------------------------------------------------------------
# Drains
# --------------------------------------------------------------------------------------------


@dataclass
class Drain:
    name: str
    records: int = 0  # records the box had to send (all pending at the start)
    seconds: float = 0.0
    batches: int = 0
    interval_s: list[float] = field(default_factory=list)  # between batches stored by the receiver
    turn_s: list[float] = field(default_factory=list)  # whole worker turns that sent a batch
    post_s: list[float] = field(default_factory=list)  # the POST alone
    store_s: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    receiver_cpu: float = 0.0
    box_cpu: float = 0.0
    receiver_batch_ms: float = float("nan")  # the receiver's own mean time per POST (its /metrics)
    failures: list[str] = field(default_factory=list)
    finished: bool = False
    check_ok: bool = False

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds and self.finished else 0.0


class TimedStore:
    """The worker's store, timing each call (awaited wall time, so queueing for the writer and the
    commit count) by the function it ran."""

    def __init__(self, store: Any, times: dict[str, list[float]]) -> None:
        self._store = store
        self._times = times

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def read(self, fn: Callable[[Any], Any]) -> Any:
        started = time.perf_counter()
        try:
            return await self._store.read(fn)
        finally:
            self._times[_label("read", fn)].append(time.perf_counter() - started)

    async def write(self, fn: Callable[[Any], Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await self._store.write(fn, *args, **kwargs)
        finally:
            self._times[_label("write", fn)].append(time.perf_counter() - started)


STORE_CALLS = {  # the worker's store calls, by (read/write, function), as the report names them
    ("read", "UplinkWorker.step.<locals>.<lambda>"): "state read",
    ("write", "UplinkWorker._batch_to_send.<locals>.start"): "batch open write",
    ("write", "UplinkWorker._apply.<locals>.done"): "ack write",
    ("write", "UplinkWorker._housekeeping.<locals>.check"): "housekeeping write",
}


def _label(kind: str, fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", repr(fn))
    return STORE_CALLS.get((kind, name), f"{kind} {name}")


async def drain_in_process(data_dir: Path, box_id: str, receiver_pid: int, timeout: float) -> Drain:
    """The real UplinkWorker in this process, one turn after another until the queue is empty."""
    from appliance.core import outbox
    from appliance.core.config import load_config
    from appliance.core.storage import Store
    from uplink.worker import UplinkWorker

    config = load_config(data_dir, environ={})
    drain = Drain("in-process worker")
    store = Store(config.db_path)
    worker = UplinkWorker(TimedStore(store, drain.store_s), config, box_id)  # type: ignore[arg-type]
    send = worker._send

    async def timed_send(target: Any, batch: Any) -> Any:
        started = time.perf_counter()
        outcome = await send(target, batch)
        drain.post_s.append(time.perf_counter() - started)
        if outcome.kind != "acked":
            drain.failures.append(f"{outcome.kind}: {outcome.error}")
        return outcome

    worker._send = timed_send  # type: ignore[method-assign]
    try:
        drain.records = store.query(lambda conn: outbox.backlog(conn).records)
        cpu0, own0 = loadgen.cpu_seconds(receiver_pid), time.process_time()
        started = time.perf_counter()
        deadline = started + timeout
        while time.perf_counter() < deadline:
            posts = len(drain.post_s)
            turn = time.perf_counter()
            delay = await worker.step()
            if len(drain.post_s) > posts:
                drain.turn_s.append(time.perf_counter() - turn)
            if delay == 0:
                continue
            if not await store.read(outbox.has_pending):
                drain.finished = True
                break
            await asyncio.sleep(delay)  # a failed attempt: wait as the worker says, as run() would
        drain.seconds = time.perf_counter() - started
        drain.receiver_cpu = loadgen.cpu_seconds(receiver_pid) - cpu0
        drain.box_cpu = time.process_time() - own0
    finally:
        await worker.aclose()
        store.close()
    return drain


def drain_daemon(data_dir: Path, rx: Any, timeout: float) -> Drain:
    """The worker inside a real `venuebox run` daemon: configure the target, ask for a sync, and poll
    the admin API until the backlog is empty."""
    from appliance.core.config import load_config
    from appliance.core.uplink_state import configure_target
    from appliance.shared.times import utcnow
    from appliance.storage.db import connect

    _, running_box = loadgen.load_fixtures()
    config = load_config(data_dir, environ={})
    drain = Drain("daemon (venuebox run)")
    box = running_box(config).start()
    try:
        with box.admin() as admin:
            before = admin.get("/admin/v1/uplink").raise_for_status().json()
            if before["configured"]:
                raise RuntimeError("the daemon's uplink is configured before the bench configured it")
            conn = connect(config.db_path)  # a short write from this process, as the CLI makes one
            cpu0, rx0 = loadgen.cpu_seconds(box.process.pid), loadgen.cpu_seconds(rx.process.pid)
            started = time.perf_counter()
            try:
                conn.execute("BEGIN IMMEDIATE")
                configure_target(conn, rx.url, config.uplink_token_path, None, "bench", utcnow())
                conn.execute("COMMIT")
            finally:
                conn.close()
            admin.post("/admin/v1/uplink/sync").raise_for_status()
            deadline = started + timeout
            view = before
            while time.perf_counter() < deadline:
                view = admin.get("/admin/v1/uplink", params={"quarantined": 0}).raise_for_status().json()
                if view["backlog"] == 0:
                    drain.finished = True
                    break
                time.sleep(POLL_S)
            drain.seconds = time.perf_counter() - started
            drain.box_cpu = loadgen.cpu_seconds(box.process.pid) - cpu0
            drain.receiver_cpu = loadgen.cpu_seconds(rx.process.pid) - rx0
            if view["last_error"]:
                drain.failures.append(str(view["last_error"]))
    finally:
        box.stop()
    ro = sqlite3.connect(f"file:{config.db_path}?mode=ro", uri=True)
    try:
        drain.records = ro.execute("SELECT count(*) FROM outbox").fetchone()[0]
    finally:
        ro.close()
    return drain


def receiver_batches(rx_dir: Path) -> list[float]:
    """When the receiver stored each batch (unix seconds, in order), from its ``batches`` table."""
    from appliance.shared.times import parse_rfc3339

    conn = sqlite3.connect(f"file:{rx_dir / 'receiver.sqlite'}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT received_at FROM batches ORDER BY rowid").fetchall()
    finally:
        conn.close()
    return [parse_rfc3339(row[0]).timestamp() for row in rows]


def receiver_post_ms(rx: Any) -> float:
    """The receiver's own mean handling time per records POST, from its request histogram."""
    with rx.client() as client:
        text = client.get("/metrics").text
    total = count = 0.0
    for line in text.splitlines():
        if 'method="POST"' not in line or "/records" not in line:
            continue
        if line.startswith("venuebox_http_request_duration_seconds_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("venuebox_http_request_duration_seconds_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total / count * 1000.0 if count else float("nan")


def check(drain: Drain, box_dir: Path, rx: Any, box_id: str) -> bool:
    """The receiver holds exactly the box's outbox records, and the box has nothing left to send."""
    conn = sqlite3.connect(f"file:{box_dir / 'venuebox.sqlite'}?mode=ro", uri=True)
    try:
        box_ids = [row[0] for row in conn.execute("SELECT record_id FROM outbox ORDER BY seq")]
        left = conn.execute(
            "SELECT count(*) FILTER (WHERE acked_at IS NULL),"
            " count(*) FILTER (WHERE quarantined_at IS NOT NULL) FROM outbox"
        ).fetchone()
    finally:
        conn.close()
    stored = rx.stored_ids(box_id)
    stored_at = receiver_batches(rx.data_dir)
    drain.batches = len(stored_at)
    drain.interval_s = [b - a for a, b in itertools.pairwise(stored_at)]
    same = set(stored) == set(box_ids)
    unique = len(set(stored)) == len(stored)
    drain.check_ok = ok = same and unique and len(stored) == len(box_ids) and left == (0, 0)
    print(
        f"check ({drain.name}): receiver rows {len(stored):,} == box outbox records {len(box_ids):,}, "
        f"same id set: {same}, no duplicate: {unique}; box unacked {left[0]}, quarantined {left[1]}: "
        f"{'OK' if ok else 'FAILED'}"
    )
    return ok


# --------------------------------------------------------------------------------------------
# Baseline: the receiver's own insert rate for the same records
# --------------------------------------------------------------------------------------------


@dataclass
class Baseline:
    records: int
    batches: int
    seconds: float
    stored: int

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def sent_batches(rx_dir: Path, box_id: str) -> list[tuple[str, bytes]]:
    """The batches as the box sent them (the receiver keeps each record's batch id), as bodies."""
    import msgspec

    conn = sqlite3.connect(f"file:{rx_dir / 'receiver.sqlite'}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT batch_id, record_id, kind, created_at, payload FROM records"
            " WHERE box_id = ? ORDER BY seq",
            (box_id,),
        ).fetchall()
    finally:
        conn.close()
    grouped: dict[str, list[bytes]] = {}
    encode = msgspec.json.encode
    for batch_id, record_id, kind, created_at, payload in rows:
        head = encode({"id": record_id, "kind": kind, "created_at": created_at})
        grouped.setdefault(batch_id, []).append(head[:-1] + b',"payload":' + payload.encode() + b"}")
    return [(key, b'{"records":[' + b",".join(parts) + b"]}") for key, parts in grouped.items()]


async def baseline(batches: list[tuple[str, bytes]], db_path: Path, box_id: str) -> Baseline:
    """check_batch + store_batch of every batch into a fresh receiver database, one at a time."""
    import msgspec

    from appliance.storage import db
    from uplink import receiver_store
    from uplink.protocol import RecordsIn

    decoded = [
        (key, receiver_store.body_hash(body), msgspec.json.decode(body, type=RecordsIn).records)
        for key, body in batches
    ]
    store = db.Store(db_path, schema=receiver_store.migrate, create=True)
    stored = 0
    try:
        started = time.perf_counter()
        for key, digest, records in decoded:
            batch = receiver_store.check_batch(records)
            outcome = await store.write(
                functools.partial(
                    receiver_store.store_batch, box_id=box_id, key=key, digest=digest, batch=batch
                ),
                weight=max(1, len(batch.rows)),
            )
            stored += outcome.stored
        seconds = time.perf_counter() - started
    finally:
        store.close()
    return Baseline(sum(len(r) for _, _, r in decoded), len(decoded), seconds, stored)


# --------------------------------------------------------------------------------------------
# Profile (every thread)
# --------------------------------------------------------------------------------------------


class ThreadProfiles:
    """cProfile in the calling thread and in every thread started while it is on (the store's
    writer and reader threads), so time spent off the event loop shows up too."""

    def __init__(self) -> None:
        self.profiles: list[tuple[str, cProfile.Profile]] = []
        self._main = cProfile.Profile()

    def _start_in_thread(self, *_: Any) -> None:
        profile = cProfile.Profile()
        self.profiles.append((threading.current_thread().name, profile))
        profile.enable()  # replaces this hook for the rest of the thread's life

    def __enter__(self) -> ThreadProfiles:
        threading.setprofile(self._start_in_thread)
        self._main.enable()
        return self

    def __exit__(self, *exc: object) -> None:
        self._main.disable()
        threading.setprofile(None)

    def report(self, top: int) -> str:
        """Call after the profiled threads have ended (the store closed)."""
        out = io.StringIO()
        stats = pstats.Stats(self._main, stream=out)
        names = ["main"]
        for name, profile in self.profiles:
            profile.create_stats()
            stats.add(profile)
            names.append(name)
        # Threads waiting for work (the writer's queue, the reader pool's) would top every list.
        for key in [k for k in stats.stats if k[2] in IDLE_WAITS]:  # type: ignore[attr-defined]
            del stats.stats[key]  # type: ignore[attr-defined]
        stats.total_tt = sum(tt for _, _, tt, _, _ in stats.stats.values())  # type: ignore[attr-defined]
        out.write(f"cProfile over threads: {', '.join(sorted(set(names)))} (waits for work left out)\n")
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        return out.getvalue()


IDLE_WAITS = {
    "<method 'get' of '_queue.SimpleQueue' objects>",
    "<method 'acquire' of '_thread.lock' objects>",
    "<method 'acquire' of '_thread.RLock' objects>",
}


# --------------------------------------------------------------------------------------------
# The run and the report
# --------------------------------------------------------------------------------------------


def report(
    filled: FilledBox, drains: list[Drain], base: Baseline | None, args: argparse.Namespace, loop: str
) -> None:
    print()
    print(
        f"venuebox uplink bench: {filled.records:,} outbox records ({filled.sheets:,} sheets, "
        f"{filled.records - filled.sheets} audit), batches of <= {args.batch_max_records} records, "
        f"receiver and box on 127.0.0.1, {os.cpu_count()} CPUs shared (bench loop: {loop}; load average "
        f"{args.load_before:.2f} before the run)"
    )
    print(
        f"fill (not measured): {filled.sheets:,} sheets through submit_sheets in {filled.seconds:.1f} s "
        f"({filled.sheets / filled.seconds:,.0f} sheets/s)"
    )
    header = (
        f"{'drain':<23}{'records':>9}{'seconds':>9}{'records/s':>11}{'batches':>9}{'gap p50':>9}{'p99 ms':>8}"
        f"{'POST p50':>10}{'p99 ms':>8}{'rx ms':>7}{'rx CPU s':>10}{'box CPU s':>11}"
    )
    print(header)
    print("-" * len(header))
    for d in drains:
        rate = f"{d.rate:,.0f}" if d.finished else "unfinished"
        print(
            f"{d.name:<23}{d.records:>9,}{d.seconds:>9.2f}{rate:>11}{d.batches:>9}"
            f"{_ms(d.interval_s, 0.5):>9}{_ms(d.interval_s, 0.99):>8}{_ms(d.post_s, 0.5):>10}"
            f"{_ms(d.post_s, 0.99):>8}{d.receiver_batch_ms:>7.1f}{d.receiver_cpu:>10.2f}{d.box_cpu:>11.2f}"
        )
    print(
        "(gap = time between two batches stored by the receiver, i.e. one batch's whole cycle; POST = the\n"
        " worker's request alone (in-process only); rx ms = the receiver's own mean time per POST (its\n"
        " /metrics); CPU seconds over the drain, box = this process (in-process) or the daemon; the daemon\n"
        f" drain runs from configure + sync to a backlog of 0 seen by polling every {POLL_S:g} s)"
    )
    for d in drains:
        if d.store_s and d.turn_s:
            mean = {label: sum(times) / len(times) * 1000 for label, times in d.store_s.items()}
            calls = ", ".join(
                f"{label} {ms:.1f}" for label, ms in sorted(mean.items(), key=lambda item: -item[1])
            )
            turn = sum(d.turn_s) / len(d.turn_s) * 1000
            post = sum(d.post_s) / len(d.post_s) * 1000
            print(
                f"{d.name}, mean ms per call: turn {turn:.1f}, made of POST {post:.1f} (receiver's own "
                f"{d.receiver_batch_ms:.1f}) and store calls (awaited, so queueing and commit count): {calls}"
            )
        if d.failures:
            print(f"failed attempts ({d.name}): {len(d.failures)}, e.g. {d.failures[0]}")
    if base is not None:
        print(
            f"baseline: receiver check_batch + store_batch in-process, same {base.batches} batches: "
            f"{base.records:,} records ({base.stored:,} stored) in {base.seconds:.2f} s "
            f"= {base.rate:,.0f} records/s"
        )
    for d in drains:
        if base is not None and base.rate and d.finished:
            print(f"ratio {d.name} drain / baseline: {d.rate / base.rate:.2f}")
    for d in drains:
        print(
            f"target >= {TARGET_RECORDS_PER_S:,} records/s ({d.name}): {d.rate:,.0f}/s "
            f"-> {loadgen.verdict(d.finished and d.rate >= TARGET_RECORDS_PER_S)}"
        )


def _ms(values: list[float], q: float) -> str:
    return f"{loadgen.pct(values, q):.1f}" if values else "-"


def run(args: argparse.Namespace, workdir: Path) -> int:
    filled = fill_box(workdir / BOX_DIR, args.records, args.batch_max_records)
    print(
        f"bench: box with {filled.records:,} outbox records ({filled.sheets:,} sheets) "
        f"in {filled.seconds:.1f} s, data dir {filled.data_dir}",
        flush=True,
    )
    drains: list[Drain] = []
    base: Baseline | None = None
    ok = True
    loop_name = "asyncio"

    box_dir = copy_box(filled, workdir / "box-inproc")
    rx = start_receiver(workdir / "rx-inproc", filled.box_id, box_dir)
    with (box_dir / "venuebox.toml").open("a") as toml:  # the config key; JSON strings are TOML strings
        toml.write(f"uplink_url = {json.dumps(rx.url)}\n")
    try:
        print(f"bench: receiver {rx.url} (pid {rx.process.pid}); in-process drain ...", flush=True)
        profiles = ThreadProfiles() if args.profile else None
        coro = drain_in_process(box_dir, filled.box_id, rx.process.pid, args.timeout)
        if profiles is not None:
            with profiles:
                drain, loop_name = loadgen.run_loop(coro)
        else:
            drain, loop_name = loadgen.run_loop(coro)
        drain.receiver_batch_ms = receiver_post_ms(rx)
        drains.append(drain)
        print(f"  ... {drain.name}: {drain.rate:,.0f} records/s in {drain.seconds:.2f} s", flush=True)
    finally:
        rx.stop()
    ok &= check(drain, box_dir, rx, filled.box_id)
    if profiles is not None:
        print(profiles.report(args.profile_top))

    batches = sent_batches(rx.data_dir, filled.box_id)
    base, _ = loadgen.run_loop(baseline(batches, workdir / "rx-baseline" / "receiver.sqlite", filled.box_id))
    print(f"  ... baseline: {base.rate:,.0f} records/s", flush=True)
    if base.stored != filled.records:
        print(f"check (baseline): stored {base.stored:,} of {filled.records:,} records: FAILED")
        ok = False

    if args.daemon:
        box_dir = copy_box(filled, workdir / "box-daemon")
        rx = start_receiver(workdir / "rx-daemon", filled.box_id, box_dir)
        try:
            print(f"bench: receiver {rx.url} (pid {rx.process.pid}); daemon drain ...", flush=True)
            drain = drain_daemon(box_dir, rx, args.timeout)
            drain.receiver_batch_ms = receiver_post_ms(rx)
            drains.append(drain)
            print(f"  ... {drain.name}: {drain.rate:,.0f} records/s in {drain.seconds:.2f} s", flush=True)
        finally:
            rx.stop()
        ok &= check(drain, box_dir, rx, filled.box_id)

    report(filled, drains, base, args, loop_name)
    ok &= all(d.finished for d in drains)
    return 0 if ok else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="outbox records to drain (100000)")
    parser.add_argument(
        "--batch-max-records", type=int, default=1000, help="uplink_batch_max_records of the box (1000)"
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="give up a drain after this long (300 s)"
    )
    parser.add_argument("--no-daemon", dest="daemon", action="store_false", help="skip the daemon drain")
    parser.add_argument("--profile", action="store_true", help="cProfile the in-process drain")
    parser.add_argument("--profile-top", type=int, default=25, help="functions shown by --profile (25)")
    parser.add_argument("--keep", action="store_true", help="keep the data dirs (their path is printed)")
    args = parser.parse_args(argv)
    if args.records < 1 or args.timeout <= 0 or not 1 <= args.batch_max_records <= 1000:
        parser.error("--records and --timeout must be positive, --batch-max-records 1-1000")
    return args


def main(argv: list[str] | None = None) -> int:
    return loadgen.run_in_workdir("uplink", parse_args(argv), run, "data dirs")


if __name__ == "__main__":
    sys.exit(main())
