"""The cheap load generator both benches use (``bench/ingest.py`` and ``bench/daemon.py``).

A bench and the box it measures share the machine's cores, so the generator stays small: a minimal
HTTP/1.1 keep-alive client over ``asyncio.open_connection`` that sends pre-encoded request heads and
parses only the status line and Content-Length (or a chunked body), run on uvloop when importable;
simulated tablets that keep correction chains of score sheets; and the setup and measuring helpers
both benches need (the test suite's box fixtures, CPU seconds from /proc, a watchdog over a phase's
tasks, percentiles, verdicts). httpx (through the test fixtures) is used only for setup.

bench/ is not a package: a bench imports this module as ``from loadgen import ...``, which works
because ``python bench/NAME.py`` puts bench/ first on ``sys.path``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import ssl
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
JUDGES = ("J1", "J2", "J3", "J4", "J5")
GRACE_S = 20.0  # a load phase that overruns its window by this much is cancelled
HIGH_LIMITS = {
    "device_rate_per_s": 1e6,
    "device_burst": 1_000_000,
    "pair_attempts_per_minute": 1_000_000,
    "address_rate_per_s": 1e6,
    "address_burst": 1_000_000,
    # Every simulated tablet connects from 127.0.0.1: the per-address cap (64, against one hostile
    # phone) would reset all but 64 of them.
    "max_connections_per_address": 100_000,
}
# make_box writes the settings to the data dir's venuebox.toml; the environment (VENUEBOX_<SETTING>,
# which wins over the file) says the same, so the server process gets the raised limits even with a
# fixture that does not persist them.
HIGH_LIMITS_ENV = {f"VENUEBOX_{k.upper()}": str(v) for k, v in HIGH_LIMITS.items()}

T = TypeVar("T")

try:  # msgspec is a dependency of the box; fall back to json if the bench runs elsewhere.
    import msgspec

    loads: Callable[[bytes], Any] = msgspec.json.decode
except ImportError:  # pragma: no cover
    loads = json.loads


# --------------------------------------------------------------------------------------------
# A minimal HTTP/1.1 keep-alive client
# --------------------------------------------------------------------------------------------


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 as this tiny client understands it."""


NET_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError)


class Conn:
    """One keep-alive connection; ``request`` sends pre-encoded bytes and returns (status, body).
    With ``ssl_context``, the connection speaks TLS (the context says which certificate to trust)."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.opens = 0  # TCP connections opened (the first, plus reconnects)

    async def open(self) -> Conn:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, limit=1 << 20, ssl=self.ssl_context
        )
        self.opens += 1
        return self

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, data: bytes) -> tuple[int, bytes]:
        """Send on the kept-alive connection; reconnect when the server has closed it while idle
        (uvicorn closes idle keep-alive connections after 5 s), and resend once on a fresh
        connection when it closed it just as the request went out, as HTTP clients do."""
        if self.reader is not None and self.reader.at_eof():
            self.close()
        reused = self.writer is not None
        try:
            return await self._exchange(data)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            if not reused or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                raise
            self.close()
            return await self._exchange(data)

    async def _exchange(self, data: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        reader, writer = self.reader, self.writer
        assert reader is not None and writer is not None
        writer.write(data)
        if len(data) > 65536:
            await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1."):
            raise ProtocolError(head[:40].decode("latin-1"))
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            end = lower.index(b"\r\n", at + 17)
            length = int(head[at + 17 : end])
            body = await reader.readexactly(length) if length else b""
        elif b"\r\ntransfer-encoding: chunked" in lower:
            body = await self._chunked(reader)
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            raise ProtocolError("answer without Content-Length")
        if b"\r\nconnection: close" in lower:
            self.close()
        return status, body

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)


async def open_connections(
    host: str, port: int, count: int, ssl_context: ssl.SSLContext | None = None
) -> list[Conn]:
    return list(await asyncio.gather(*(Conn(host, port, ssl_context).open() for _ in range(count))))


def close_all(conns: Iterable[Conn]) -> None:
    for c in conns:
        c.close()


def request_head(method: str, path: str, host: str, headers: dict[str, str]) -> bytes:
    """The request line and headers, up to and including ``Content-Length: `` when there is a body."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items())]
    text = "\r\n".join(lines) + "\r\n"
    return (text + ("Content-Length: " if method == "POST" else "\r\n")).encode("ascii")


def with_body(head: bytes, body: bytes) -> bytes:
    return b"".join((head, str(len(body)).encode("ascii"), b"\r\n\r\n", body))


def decode_problem(answer: bytes) -> Any:
    """The decoded body of a refusal (a problem document), or None when it is not JSON."""
    try:
        return loads(answer)
    except Exception:
        return None


# --------------------------------------------------------------------------------------------
# Tablets and their correction chains
# --------------------------------------------------------------------------------------------


@dataclass
class BenchTablet:
    """A paired tablet: its token, pre-encoded request heads, and the correction chains it keeps on
    ``entries`` (a judge has one original per entry; every further sheet supersedes the head)."""

    index: int
    judge_id: str
    token: str
    entries: list[str] = field(default_factory=list)
    values_json: str = "{}"
    submitted_at: str = ""
    heads: dict[str, str | None] = field(default_factory=dict)
    turn: int = 0
    sheet_head: bytes = b""
    batch_head: bytes = b""
    heartbeat_head: bytes = b""

    def next_entry(self) -> str:
        entry = self.entries[self.turn % len(self.entries)]
        self.turn += 1
        return entry

    def sheet(self, entry: str, supersedes: str | None) -> tuple[str, bytes]:
        """A new sheet for ``entry`` correcting ``supersedes`` (or an original): (sheet_id, JSON)."""
        sheet_id = str(uuid.uuid4())
        tail = f',"supersedes":"{supersedes}"}}' if supersedes else "}"
        body = (
            f'{{"sheet_id":"{sheet_id}","entry_id":{json.dumps(entry)},"values":{self.values_json},'
            f'"submitted_at":"{self.submitted_at}"{tail}'
        )
        return sheet_id, body.encode()

    def settle(self, entry: str, sheet_id: str, status: int, problem: Any) -> None:
        """Move the chain head after an answer: to the stored sheet, or to the head the box names."""
        if status in (200, 201):
            self.heads[entry] = sheet_id
        elif isinstance(problem, dict) and problem.get("current_sheet_id"):
            self.heads[entry] = problem["current_sheet_id"]
        # Anything else (network error, 503, ...) leaves the head; a stale head answers 409 with the
        # real head next time, which resyncs the chain.


async def post_next_sheet(conn: Conn, tablet: BenchTablet) -> tuple[int, float, float]:
    """Send ``tablet``'s next sheet (an original, then corrections of its chain head) and move the
    head by the answer; returns (status, start, end) in perf_counter seconds. Network errors
    (NET_ERRORS) propagate, with the connection left for the caller to close."""
    entry = tablet.next_entry()
    sheet_id, body = tablet.sheet(entry, tablet.heads.get(entry))
    t0 = time.perf_counter()
    status, answer = await conn.request(with_body(tablet.sheet_head, body))
    t1 = time.perf_counter()
    tablet.settle(entry, sheet_id, status, None if status in (200, 201) else decode_problem(answer))
    return status, t0, t1


def valid_values(criteria: list[dict[str, Any]], index: int) -> str:
    values = {}
    for c in criteria:
        steps = max(0, round((c["max"] - c["min"]) / c["step"]))
        k = steps - (index % max(1, min(steps, 10)))
        values[c["key"]] = round(c["min"] + c["step"] * k, 6)
    return json.dumps(values, separators=(",", ":"))


def panel_shares(event: dict[str, Any], judge_id: str, count: int, who: str = "tablets") -> list[list[str]]:
    """The entries on the judge's panel in ``event``, split into ``count`` disjoint shares (one per
    tablet of that judge), so no two tablets ever race on one (entry, judge) chain."""
    entries = [e["entry_id"] for s in event["sessions"] if s["on_panel"] for e in s["entries"]]
    if len(entries) < count:
        raise RuntimeError(f"judge {judge_id} has {len(entries)} entries for {count} {who}")
    return [entries[k::count] for k in range(count)]


# --------------------------------------------------------------------------------------------
# Running and measuring
# --------------------------------------------------------------------------------------------


async def run_watched(coros: Iterable[Awaitable[None]], timeout: float) -> int:
    """Run the coroutines together; the watchdog cancels those still running after ``timeout``
    seconds. Returns how many it cancelled; an exception raised by one is raised here."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return len(pending)


def run_loop(coro: Coroutine[Any, Any, T]) -> tuple[T, str]:
    """Run ``coro`` on uvloop when importable, else on asyncio: (its result, the loop's name)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro), "asyncio"
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro), "uvloop"


def load_fixtures() -> tuple[Any, Any]:
    """make_box and RunningBox from the test suite (the same real box the integration tests use)."""
    sys.path.insert(0, str(ROOT))
    try:
        from tests.conftest import RunningBox, make_box
    except ModuleNotFoundError as exc:
        sys.exit(f"bench: cannot import the test fixtures ({exc}); run from a complete checkout")
    return make_box, RunningBox


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all threads), from /proc; 0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile of seconds, in ms (nan when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000.0


def run_in_workdir(name: str, args: Any, run: Callable[[Any, Path], int], kept: str) -> int:
    """A bench's ``main``: ``run(args, workdir)`` in a fresh temporary folder, removed afterwards
    unless ``args.keep``; a failed set-up is one line and exit status 2."""
    import shutil
    import tempfile

    args.load_before = os.getloadavg()[0]  # the machine may be busy with other work: say so
    workdir = Path(tempfile.mkdtemp(prefix=f"venuebox-bench-{name}-"))
    try:
        return run(args, workdir)
    except (RuntimeError, AssertionError) as exc:
        print(f"bench: setup failed: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"{kept} kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def verdict(ok: bool) -> str:
    return "target met" if ok else "target NOT met"


# --------------------------------------------------------------------------------------------
# Filling a box through the ledger (no HTTP)
# --------------------------------------------------------------------------------------------

FILL_CALL_SHEETS = 2000  # sheets per submit_sheets call while filling (one transaction each)


def pair_judges(store: Any) -> dict[str, Any]:
    """One really paired device per judge of ``JUDGES`` (``tests.conftest.paired_device``)."""
    load_fixtures()
    from tests.conftest import paired_device

    return {judge: paired_device(store, judge) for judge in JUDGES}


def submit_sheet_chains(
    store: Any, devices: dict[str, Any], sheets: int, per_call: int = FILL_CALL_SHEETS
) -> int:
    """Store ``sheets`` score sheets through the real ledger path (``appliance.core.ledger.submit_sheets``
    in the writer's transaction, ``per_call`` sheets a transaction), as correction chains over every
    (entry, judge) pair of the event whose judge has a device in ``devices``: round after round, each
    pair gets an original, then sheets that each supersede the previous one. Returns the count;
    raises RuntimeError when the ledger refuses one. ``bench/uplink.py`` and ``bench/export.py`` fill
    their boxes with it."""
    from appliance.core.ledger import SheetReceipt, SheetSubmission, submit_sheets
    from appliance.shared.times import now_rfc3339

    def survey(conn: Any) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
        criteria = [dict(r) for r in conn.execute("SELECT key, min, max, step FROM criteria")]
        pairs = conn.execute(
            "SELECT p.judge_id, e.entry_id FROM panels p JOIN entries e ON e.session_id = p.session_id"
            " AND e.event_id = p.event_id ORDER BY p.judge_id, e.session_id, e.running_order"
        ).fetchall()
        return criteria, [(judge, entry) for judge, entry in pairs]

    criteria, pairs = store.query(survey)
    pairs = [(judge, entry) for judge, entry in pairs if judge in devices]
    if sheets and not pairs:
        raise RuntimeError("the event has no (entry, judge) pair for the devices given")
    values = [json.loads(valid_values(criteria, i)) for i in range(10)]
    submitted_at = now_rfc3339()
    heads: dict[tuple[str, str], str] = {}
    made = 0
    while made < sheets:
        items = []
        for n in range(made, min(sheets, made + per_call)):
            judge, entry = pair = pairs[n % len(pairs)]
            sheet_id = str(uuid.uuid4())
            sheet = SheetSubmission(
                sheet_id, entry, values[n % len(values)], submitted_at, None, heads.get(pair)
            )
            items.append((devices[judge], sheet))
            heads[pair] = sheet_id
        outcomes = store.write_sync(lambda conn, items=items: submit_sheets(conn, items), timeout=120)
        refused = [o for o in outcomes if not (isinstance(o, SheetReceipt) and o.status == 201)]
        if refused:
            raise RuntimeError(f"the ledger refused {len(refused)} bench sheets, e.g. {refused[0]!r}")
        made += len(items)
    return made
