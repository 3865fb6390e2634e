"""A small, typed client of the tablet protocol (PROTOCOL.md v1), written to be copied.

It finds a box by mDNS (`discover`), pairs, downloads the event with ETag caching, and submits
score sheets through an on-disk queue (`SheetQueue`) so that no sheet is ever dropped silently:
every sheet is written to the queue before it is sent, and leaves the queue only when the box
answers 200/201. What each answer means for a queued sheet follows the protocol's table
"What a client does with an answer":

* 200, 201 -> removed from the queue;
* 400, 403, 409, 413, 422 -> held aside with the box's problem (never resent unchanged);
* 401 -> kept queued; the client needs pairing again (`needs_pairing`);
* 423 -> kept queued; the freeze reason is kept; retried after `Retry-After`, or as soon as a
  heartbeat says the box is unfrozen;
* 408, 429, 5xx, network errors, timeouts -> kept queued; exponential backoff with full jitter,
  never sooner than `Retry-After`. A wait that began because the box could not be reached ends as
  soon as the box answers again (a heartbeat, or any other request), as the judge app's does: a
  box back after an outage gets the queue at once, not at the end of a backoff grown meanwhile.

Resending is always safe: the box treats the `sheet_id` as an idempotency key.

A box serves HTTPS with a self-signed certificate. The client pins it by fingerprint (hex SHA-256
of the certificate, from the mDNS TXT ``fp`` or read off the box's console): before the first
request it fetches the certificate the box presents, compares it, and from then on trusts exactly
that certificate in every TLS handshake. A box presenting another one raises CertificateMismatch
before anything (a pairing code, a token, a sheet) is sent, and sheets stay queued. The pin is kept
in the state dir; the pairing answer's ``tls_fingerprint`` must agree with it. A pairing URL
(``https://<box>:<port>/?pair=CODE#fp=<sha256 hex>``, the console's QR code) carries the pin itself:
`pair_with_url` checks the box against it before the code is sent.

    box = discover()[0]  # or TabletClient("https://192.168.1.20:8080", state, fingerprint="ab12…")
    # or, from the console's QR code: client, _ = await pair_with_url(url, state, "Judge 1 iPad")
    client = TabletClient.for_box(box, Path("~/.tablet").expanduser())  # pins the TXT fingerprint
    await client.pair("ABCD-EFGH", "Judge 1 iPad")
    event = await client.event()
    await client.submit(make_sheet("142", {"technique": 9.4, "performance": 9.1}))
    beat = await client.heartbeat(battery=81)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sqlite3
import ssl
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx

from appliance.shared.netloc import http_url
from appliance.shared.secrets_files import atomic_write
from appliance.web.retry import Backoff, retry_after_s

log = logging.getLogger("venuebox.tablet")
SERVICE_TYPE = "_venuebox._tcp.local."
DEFAULT_API = "/api/v1"
# A tablet is on Wi-Fi: connecting should be quick, but a busy box may take a while to commit.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
DEFAULT_BATCH_SIZE = 100  # the box accepts up to 500; smaller batches keep each answer quick
DEFAULT_FROZEN_RETRY_S = 30.0  # when a 423 comes without Retry-After (batch items carry none)
USER_AGENT = "venuebox-tablet-client/1"

# Answers that can never succeed unchanged: the sheet is held aside with the problem.
HOLD_STATUSES = frozenset({400, 403, 409, 413, 422})
STORED_STATUSES = frozenset({200, 201})


# ---------------------------------------------------------------------------------------------
# Errors


class TabletError(Exception):
    """Base of everything this client raises."""


class BoxUnreachable(TabletError):
    """No answer from the box: connection refused, timeout, network down."""


class BoxError(TabletError):
    """The box answered with a status the call cannot use; ``problem`` is its problem body."""

    def __init__(self, status: int, problem: dict[str, Any], retry_after_s: float | None = None) -> None:
        self.status = status
        self.problem = problem
        self.retry_after_s = retry_after_s
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}".strip())


class PairingRefused(BoxError):
    """403 on pairing: the code is wrong, used or expired. Ask the venue tech for a new one."""


class RateLimited(BoxError):
    """429: too many requests; try again after ``retry_after_s``."""


class NeedsPairing(TabletError):
    """The tablet has no valid token (never paired, or the box answered 401). Pair again."""


class CertificateMismatch(BoxUnreachable):
    """The box presented a TLS certificate other than the pinned one: an impostor, or a box whose
    certificate was rotated (then pin the new fingerprint, shown on its console, and pair again).
    Nothing was sent to it; queued sheets stay queued."""

    def __init__(self, pinned: str, presented: str) -> None:
        self.pinned = pinned
        self.presented = presented
        super().__init__(
            f"the box's TLS certificate {presented[:16]}… is not the pinned {pinned[:16]}…; "
            "refusing to talk to it"
        )


def normalise_fingerprint(value: str) -> str:
    """'AB:12:…' or 'ab12 …' -> 'ab12…' (64 lowercase hex digits); ValueError otherwise."""
    text = "".join(ch for ch in value if ch not in ": ").lower()
    if len(text) != 64 or any(ch not in "0123456789abcdef" for ch in text):
        raise ValueError(f"a certificate fingerprint is 64 hex digits (sha256), got {value!r}")
    return text


@dataclass(frozen=True)
class PairingLink:
    """A pairing URL as the box's console and `venuebox pair new` give it (its QR code):
    ``https://<box>:<port>/?pair=CODE#fp=<sha256 hex>``."""

    base_url: str  # scheme://host:port, where the tablet API lives
    code: str
    fingerprint: str | None  # the certificate the box must present (None: a plain-HTTP box)


def parse_pairing_url(url: str) -> PairingLink:
    """Read a pairing URL; ValueError when it has no ``pair`` code or a malformed ``fp``. The
    fingerprint sits in the fragment, which a browser never sends anywhere."""
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"a pairing URL is http(s)://<box>:<port>/?pair=CODE#fp=…, got {url!r}")
    code = parsed.params.get("pair")
    if not code:
        raise ValueError(f"the pairing URL has no ?pair= code: {url!r}")
    fragment = httpx.QueryParams(parsed.fragment)
    fp = fragment.get("fp")
    fingerprint = normalise_fingerprint(fp) if fp else None
    if parsed.scheme == "https" and fingerprint is None:
        raise ValueError("the pairing URL names no certificate (#fp=…): ask the venue tech for its QR code")
    base = parsed.copy_with(path="/", query=None, fragment=None)
    return PairingLink(base_url=str(base).rstrip("/"), code=code, fingerprint=fingerprint)


# ---------------------------------------------------------------------------------------------
# Discovery


@dataclass(frozen=True)
class BoxAddress:
    """A box found by mDNS, with its TXT record read."""

    name: str  # the instance name (the box's display name)
    host: str  # its host name, e.g. "venuebox-a.local."
    addresses: tuple[str, ...]
    port: int
    protocol: str  # TXT v
    box_id: str
    event_id: str | None
    api: str
    tls: bool
    fingerprint: str | None  # sha256 of the TLS certificate, hex, when tls

    @property
    def base_url(self) -> str:
        """``http(s)://<address>:<port>``, preferring an IPv4 address (no API path)."""
        scheme = "https" if self.tls else "http"
        ordered = sorted(self.addresses, key=lambda a: ":" in a)
        return http_url(scheme, ordered[0] if ordered else self.host.rstrip("."), self.port)


def discover(
    timeout_s: float = 5.0, *, max_boxes: int | None = None, interfaces: Sequence[str] | None = None
) -> list[BoxAddress]:
    """Boxes advertising ``_venuebox._tcp.local.``, browsing for up to ``timeout_s`` seconds (less
    once ``max_boxes`` are found). ``interfaces`` limits mDNS to those addresses (default: all).

    Blocking; from async code use `async_discover`."""
    return asyncio.run(async_discover(timeout_s, max_boxes=max_boxes, interfaces=interfaces))


async def async_discover(
    timeout_s: float = 5.0, *, max_boxes: int | None = None, interfaces: Sequence[str] | None = None
) -> list[BoxAddress]:
    """`discover` for async code."""
    from zeroconf import InterfaceChoice, ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    aiozc = AsyncZeroconf(interfaces=list(interfaces) if interfaces else InterfaceChoice.All)
    found: dict[str, BoxAddress] = {}
    resolving: set[asyncio.Task[None]] = set()
    enough = asyncio.Event()
    resolve_ms = int(min(3.0, max(timeout_s, 0.5)) * 1000)

    async def resolve(name: str) -> None:
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if await info.async_request(aiozc.zeroconf, resolve_ms):
            found[name] = _box_address(name, info)
            if max_boxes is not None and len(found) >= max_boxes:
                enough.set()

    def on_change(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated):
            task = asyncio.ensure_future(resolve(name))
            resolving.add(task)
            task.add_done_callback(resolving.discard)
        elif state_change is ServiceStateChange.Removed:
            found.pop(name, None)

    browser = AsyncServiceBrowser(aiozc.zeroconf, SERVICE_TYPE, handlers=[on_change])
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(enough.wait(), timeout_s)
        if resolving and not enough.is_set():
            # Names seen near the end get a short grace to resolve.
            await asyncio.wait(set(resolving), timeout=resolve_ms / 1000)
    finally:
        for task in list(resolving):
            task.cancel()
        await browser.async_cancel()
        await aiozc.async_close()
    return sorted(found.values(), key=lambda b: b.name)


def _box_address(name: str, info: Any) -> BoxAddress:
    txt = {
        (k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)): (
            v.decode("utf-8", "replace") if isinstance(v, bytes) else (v or "")
        )
        for k, v in (info.properties or {}).items()
    }
    suffix = "." + SERVICE_TYPE
    return BoxAddress(
        name=name[: -len(suffix)] if name.endswith(suffix) else name,
        host=info.server or "",
        addresses=tuple(info.parsed_addresses()),
        port=int(info.port or 0),
        protocol=txt.get("v", ""),
        box_id=txt.get("box", ""),
        event_id=txt.get("event") or None,
        api=txt.get("api") or DEFAULT_API,
        tls=txt.get("tls") == "1",
        fingerprint=txt.get("fp") or None,
    )


# ---------------------------------------------------------------------------------------------
# Sheets and the on-disk queue


def make_sheet(
    entry_id: str, values: dict[str, float], comment: str | None = None, supersedes: str | None = None
) -> dict[str, Any]:
    """A score sheet as the protocol wants it: a new uuid4 ``sheet_id``, ``submitted_at`` now in
    RFC 3339 with the tablet's UTC offset; ``comment`` and ``supersedes`` only when given."""
    sheet: dict[str, Any] = {
        "sheet_id": str(uuid.uuid4()),
        "entry_id": str(entry_id),
        "values": dict(values),
        "submitted_at": datetime.now().astimezone().isoformat(timespec="milliseconds"),
    }
    if comment is not None:
        sheet["comment"] = comment
    if supersedes is not None:
        sheet["supersedes"] = supersedes
    return sheet


SheetState = Literal["queued", "held", "discarded"]


@dataclass(frozen=True)
class QueuedSheet:
    """One sheet in the queue, as stored."""

    sheet_id: str
    entry_id: str
    sheet: dict[str, Any]
    state: SheetState
    judge_id: str | None
    event_id: str | None
    queued_at: str
    attempts: int
    last_status: int | None
    last_error: str | None
    problem: dict[str, Any] | None


class SheetQueue:
    """The tablet's outbox: a SQLite file (``sheets.sqlite3``) in a directory the caller gives.

    Rows are written with ``synchronous=FULL`` before anything is sent, so a sheet survives a crash
    or a restart. A sheet is ``queued`` (to send), ``held`` (the box refused it for good; kept with
    the problem for the judge to see) or ``discarded`` (the judge chose to drop a held sheet; the row
    stays as a record). Sent sheets the box stored are deleted."""

    FILENAME = "sheets.sqlite3"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / self.FILENAME
        self._conn = sqlite3.connect(self.path, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.execute(
            """
            CREATE TABLE IF NOT EXISTS sheets (
                position INTEGER PRIMARY KEY AUTOINCREMENT,
                sheet_id TEXT NOT NULL UNIQUE,
                entry_id TEXT NOT NULL,
                body TEXT NOT NULL,
                state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'held', 'discarded')),
                judge_id TEXT,
                event_id TEXT,
                queued_at TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                last_status INTEGER,
                last_error TEXT,
                problem TEXT,
                settled_at TEXT
            )
            """
        )
        # Sheets the box stored but could still lose (seq above its safe watermark): kept with the
        # seq and ledger epoch of the answer until safe, and queued again if the epoch changes.
        self._conn.execute(
            """
            CREATE TABLE IF NOT EXISTS kept (
                position INTEGER PRIMARY KEY,
                sheet_id TEXT NOT NULL UNIQUE,
                entry_id TEXT NOT NULL,
                body TEXT NOT NULL,
                judge_id TEXT,
                event_id TEXT,
                queued_at TEXT NOT NULL,
                seq INTEGER,
                epoch TEXT,
                kept_at TEXT NOT NULL
            )
            """
        )
        self._conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SheetQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, sheet: dict[str, Any], judge_id: str | None = None, event_id: str | None = None) -> bool:
        """Store ``sheet`` durably as queued. Returns False when the same sheet is already there;
        a different sheet under a known ``sheet_id`` is a ValueError (it would be refused anyway)."""
        body = _canonical(sheet)
        row = self._conn.execute(
            "SELECT body FROM sheets WHERE sheet_id = ?", (sheet["sheet_id"],)
        ).fetchone()
        if row is not None:
            if row["body"] != body:
                raise ValueError(f"sheet {sheet['sheet_id']} is already queued with other content")
            return False
        self._conn.execute(
            "INSERT INTO sheets (sheet_id, entry_id, body, judge_id, event_id, queued_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (sheet["sheet_id"], str(sheet["entry_id"]), body, judge_id, event_id, _now()),
        )
        return True

    def pending(
        self, limit: int | None = None, *, judge_id: str | None = None, event_id: str | None = None
    ) -> list[QueuedSheet]:
        """Queued sheets in the order they were queued; with ``judge_id``/``event_id``, only those
        queued under that pairing (a sheet must never be sent as another judge)."""
        sql = "SELECT * FROM sheets WHERE state = 'queued'"
        args: list[str | int] = []
        if judge_id is not None:
            sql += " AND (judge_id IS NULL OR judge_id = ?)"
            args.append(judge_id)
        if event_id is not None:
            sql += " AND (event_id IS NULL OR event_id = ?)"
            args.append(event_id)
        sql += " ORDER BY position"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [_queued(row) for row in self._conn.execute(sql, args)]

    def held(self) -> list[QueuedSheet]:
        """Sheets the box refused for good, with the problem it gave, oldest first."""
        return [
            _queued(r)
            for r in self._conn.execute("SELECT * FROM sheets WHERE state = 'held' ORDER BY position")
        ]

    def get(self, sheet_id: str) -> QueuedSheet | None:
        row = self._conn.execute("SELECT * FROM sheets WHERE sheet_id = ?", (sheet_id,)).fetchone()
        return _queued(row) if row else None

    def depth(self) -> int:
        """How many sheets are waiting to be sent."""
        return self._conn.execute("SELECT count(*) FROM sheets WHERE state = 'queued'").fetchone()[0]

    def __len__(self) -> int:
        return self.depth()

    def remove(self, sheet_id: str) -> None:
        """The box stored it (200/201) and it is safe: forget it."""
        self._conn.execute("DELETE FROM sheets WHERE sheet_id = ? AND state = 'queued'", (sheet_id,))

    def keep(self, sheet_id: str, seq: int | None, epoch: str | None) -> None:
        """The box stored it (200/201) as ledger ``seq`` of ``epoch``: no longer to send, kept until
        the box's safe watermark passes it (``settle``)."""
        with self._transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO kept (position, sheet_id, entry_id, body, judge_id, event_id,"
                " queued_at, seq, epoch, kept_at) SELECT position, sheet_id, entry_id, body, judge_id,"
                " event_id, queued_at, ?, ?, ? FROM sheets WHERE sheet_id = ? AND state = 'queued'",
                (seq, epoch, _now(), sheet_id),
            )
            self._conn.execute("DELETE FROM sheets WHERE sheet_id = ? AND state = 'queued'", (sheet_id,))

    def settle(self, epoch: str | None, safe_seq: int) -> int:
        """Apply a box's ledger mark: forget kept sheets at or below ``safe_seq`` of ``epoch``; on a
        new epoch, queue every sheet kept from another one again, in their first order, ahead of
        newer sheets (a correction must follow what it corrects). ``epoch`` None (a box that does
        not say) forgets what it kept without a mark, as before marks existed. Returns how many were
        queued again."""
        with self._transaction():
            if epoch is None:
                self._conn.execute("DELETE FROM kept WHERE epoch IS NULL")
                return 0
            known = self.epoch()
            again = 0
            if known is not None and known != epoch:
                again = self._conn.execute(
                    "INSERT INTO sheets (position, sheet_id, entry_id, body, judge_id, event_id, queued_at)"
                    " SELECT position, sheet_id, entry_id, body, judge_id, event_id, queued_at FROM kept"
                    " WHERE epoch IS NOT ?",
                    (epoch,),
                ).rowcount
                self._conn.execute("DELETE FROM kept WHERE epoch IS NOT ?", (epoch,))
            if known != epoch:
                self._conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('ledger_epoch', ?)", (epoch,)
                )
            self._conn.execute("DELETE FROM kept WHERE epoch = ? AND seq <= ?", (epoch, safe_seq))
            return again

    def epoch(self) -> str | None:
        """The ledger epoch of the box's last answer that carried one."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'ledger_epoch'").fetchone()
        return row[0] if row else None

    def kept(self) -> list[tuple[str, int | None]]:
        """(sheet_id, seq) of the stored sheets kept until safe, in ledger order."""
        return [(r[0], r[1]) for r in self._conn.execute("SELECT sheet_id, seq FROM kept ORDER BY position")]

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def hold(self, sheet_id: str, status: int, problem: dict[str, Any]) -> None:
        """Move a sheet aside with the box's problem; it is never picked for sending again."""
        self._conn.execute(
            "UPDATE sheets SET state = 'held', attempts = attempts + 1, last_status = ?, problem = ?,"
            " settled_at = ? WHERE sheet_id = ?",
            (status, json.dumps(problem), _now(), sheet_id),
        )

    def note_attempt(self, sheet_id: str, status: int | None, error: str | None = None) -> None:
        """An attempt that left the sheet queued (network error, 423, 401, 429, 5xx)."""
        self._conn.execute(
            "UPDATE sheets SET attempts = attempts + 1, last_status = ?, last_error = ? WHERE sheet_id = ?",
            (status, error, sheet_id),
        )

    def discard(self, sheet_id: str) -> None:
        """The judge chose to drop a held sheet. The row stays, marked, as a record."""
        self._conn.execute(
            "UPDATE sheets SET state = 'discarded', settled_at = ? WHERE sheet_id = ? AND state = 'held'",
            (_now(), sheet_id),
        )


def _queued(row: sqlite3.Row) -> QueuedSheet:
    return QueuedSheet(
        sheet_id=row["sheet_id"],
        entry_id=row["entry_id"],
        sheet=json.loads(row["body"]),
        state=row["state"],
        judge_id=row["judge_id"],
        event_id=row["event_id"],
        queued_at=row["queued_at"],
        attempts=row["attempts"],
        last_status=row["last_status"],
        last_error=row["last_error"],
        problem=json.loads(row["problem"]) if row["problem"] else None,
    )


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _now() -> str:
    return datetime.now(UTC).isoformat()


# ---------------------------------------------------------------------------------------------
# The client


@dataclass(frozen=True)
class Pairing:
    """What pairing gave this tablet; kept in ``pairing.json`` (mode 0600) in the state dir."""

    device_id: str
    token: str = field(repr=False)
    judge_id: str
    judge_name: str
    event_id: str
    event_name: str
    paired_at: str


@dataclass(frozen=True)
class HeartbeatAnswer:
    server_time: str
    frozen: bool
    freeze_reason: str | None
    next_heartbeat_s: int


@dataclass
class FlushResult:
    """What one `flush` did. ``blocked`` says why nothing (more) was sent: ``"waiting"`` (backoff or
    Retry-After not over), ``"frozen"``, ``"needs-pairing"``, ``"unreachable"``, ``"retry"`` (429,
    408, 5xx); None when everything that was queued got a final answer."""

    acknowledged: list[str] = field(default_factory=list)  # stored by the box (200/201), removed
    receipts: dict[str, dict[str, Any]] = field(default_factory=dict)  # sheet_id -> the box's answer
    held: list[str] = field(default_factory=list)  # refused for good, moved aside
    still_queued: int = 0
    blocked: str | None = None
    retry_in_s: float | None = None  # when the next attempt may go, if one was scheduled
    requests: int = 0


@dataclass(frozen=True)
class SubmitResult:
    """Where a submitted sheet is now: ``stored`` (the box has it), ``queued`` (on disk, to be sent
    by a later flush) or ``held`` (refused for good; ``problem`` says why)."""

    sheet_id: str
    state: Literal["stored", "queued", "held"]
    receipt: dict[str, Any] | None
    problem: dict[str, Any] | None
    flush: FlushResult


@dataclass
class _Answer:
    """One sheet's answer, from a single call or a batch item; status None = no answer."""

    status: int | None
    problem: dict[str, Any] | None = None
    receipt: dict[str, Any] | None = None
    retry_after_s: float | None = None
    error: str | None = None
    sent: bool = True  # False: not sent because an earlier sheet had to wait
    ledger: dict[str, Any] | None = None  # the answer's ledger mark (epoch, safe_seq), if it has one


class TabletClient:
    """One judge tablet talking to one box.

    ``state_dir`` holds the sheet queue, the pairing (token) and the cached event, so a tablet
    that restarts picks up where it was. ``transport`` is the seam for tests or custom networking;
    ``clock`` (monotonic seconds) and ``backoff`` (with its RNG) make retry timing reproducible.

    The sheet queue is plain blocking SQLite: each write is one small row, which is fine for a
    tablet; a client that must never block its event loop can run the queue calls in a thread."""

    def __init__(
        self,
        base_url: str,
        state_dir: Path,
        *,
        api: str = DEFAULT_API,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: Any = True,
        fingerprint: str | None = None,
        trust_on_first_use: bool = False,
        backoff: Backoff | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.queue = SheetQueue(self.state_dir)
        self.backoff = backoff or Backoff()
        self.batch_size = max(1, batch_size)
        self._clock = clock
        self._api = api.rstrip("/")
        self._base_url = httpx.URL(base_url)
        self._timeout = timeout
        self._transport = transport
        self._verify = verify
        # The pin: given now (it wins, and is saved), or saved by an earlier run. With neither, an
        # https box is verified against the usual CAs, or pinned at first contact if asked to.
        self._pin = normalise_fingerprint(fingerprint) if fingerprint else self._load_pin()
        if fingerprint:
            self._save_pin(self._pin)
        self._trust_on_first_use = trust_on_first_use
        self._http: httpx.AsyncClient | None = None
        self._connect_lock = asyncio.Lock()
        self._flush_lock = asyncio.Lock()
        self.pairing: Pairing | None = self._load_pairing()
        self.needs_pairing = self.pairing is None
        self.frozen = False
        self.freeze_reason: str | None = None
        self.next_heartbeat_s = 10
        self.failures = 0  # consecutive failed flush attempts (backoff input)
        self._next_attempt_at = 0.0
        self._waiting_for_box = False  # the backoff is for a box that could not be reached
        self._event_etag, self._event_body = self._load_event_cache()

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return str(self._base_url)

    @property
    def pinned_fingerprint(self) -> str | None:
        """The certificate fingerprint this client trusts, once known."""
        return self._pin

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        self.queue.close()

    async def __aenter__(self) -> TabletClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- pairing --------------------------------------------------------------------------------

    async def pair(self, code: str, device_name: str) -> Pairing:
        """Trade a one-time code for a device token; saves it and clears ``needs_pairing``.
        Raises PairingRefused (403), RateLimited (429), BoxUnreachable or BoxError."""
        response = await self._call(
            "POST", "/pair", json={"code": code, "device_name": device_name}, auth=False
        )
        if response.status_code != 201:
            raise _error_for(response, refused=PairingRefused)
        body = response.json()
        announced = body.get("tls_fingerprint")
        if self._pin and announced and normalise_fingerprint(announced) != self._pin:
            raise CertificateMismatch(self._pin, normalise_fingerprint(announced))
        pairing = Pairing(
            device_id=body["device_id"],
            token=body["token"],
            judge_id=body["judge"]["id"],
            judge_name=body["judge"].get("name", ""),
            event_id=body["event"]["id"],
            event_name=body["event"].get("name", ""),
            paired_at=_now(),
        )
        previous = self.pairing
        self._save_pairing(pairing)
        self.pairing = pairing
        self.needs_pairing = False
        if previous is None or (previous.judge_id, previous.event_id) != (pairing.judge_id, pairing.event_id):
            self._save_event_cache(None, None)
        # A new token: what was waiting on the old one may go now.
        self.failures, self._next_attempt_at = 0, 0.0
        return pairing

    # -- event ----------------------------------------------------------------------------------

    @property
    def cached_event(self) -> dict[str, Any] | None:
        """The last event body downloaded (also across restarts), or None."""
        return self._event_body

    async def event(self) -> dict[str, Any]:
        """The event as this judge needs it. Sends ``If-None-Match`` with the cached ETag and
        returns the cached body on 304. Raises NeedsPairing (401), BoxUnreachable or BoxError."""
        headers = {}
        if self._event_etag and self._event_body is not None:
            headers["If-None-Match"] = self._event_etag
        response = await self._call("GET", "/event", headers=headers)
        if response.status_code == 304 and self._event_body is not None:
            return self._event_body
        if response.status_code != 200:
            raise _error_for(response)
        body = response.json()
        self._save_event_cache(response.headers.get("etag"), body)
        return body

    # -- sheets ---------------------------------------------------------------------------------

    def enqueue(self, sheet: dict[str, Any]) -> None:
        """Write ``sheet`` to the on-disk queue without sending it (a later `flush` sends it)."""
        if self.pairing is None:
            raise NeedsPairing("pair this tablet before scoring: sheets are signed by the judge's token")
        self.queue.add(sheet, self.pairing.judge_id, self.pairing.event_id)

    async def submit(self, sheet: dict[str, Any]) -> SubmitResult:
        """Queue ``sheet`` on disk, then `flush` (which respects backoff and freeze). The result
        says whether the box has it now, it waits in the queue, or it was held aside."""
        self.enqueue(sheet)
        result = await self.flush()
        sheet_id = sheet["sheet_id"]
        if sheet_id in result.receipts:
            return SubmitResult(sheet_id, "stored", result.receipts[sheet_id], None, result)
        queued = self.queue.get(sheet_id)
        if queued is not None and queued.state == "held":
            return SubmitResult(sheet_id, "held", None, queued.problem, result)
        return SubmitResult(sheet_id, "queued", None, None, result)

    def sendable(self) -> int:
        """How many queued sheets the next `flush` would send: those queued under the current
        pairing (sheets queued as another judge or event stay in the queue, never sent as this one)."""
        if self.pairing is None:
            return 0
        return len(self.queue.pending(judge_id=self.pairing.judge_id, event_id=self.pairing.event_id))

    def retry_in_s(self) -> float:
        """Seconds until the next automatic flush may send (0 = now)."""
        return max(0.0, self._next_attempt_at - self._clock())

    async def flush(self, *, force: bool = False) -> FlushResult:
        """Send what is queued for this pairing, oldest first: one sheet alone, several through the
        batch endpoint. Waits out backoff and Retry-After unless ``force`` (a person pressed
        "send now"). Never sends while the tablet needs pairing."""
        async with self._flush_lock:
            result = FlushResult()
            if self.pairing is None or self.needs_pairing:
                result.blocked = "needs-pairing"
            elif not force and self.retry_in_s() > 0:
                result.blocked = "frozen" if self.frozen else "waiting"
                result.retry_in_s = self.retry_in_s()
            else:
                await self._send_queue(result)
            result.still_queued = self.queue.depth()
            return result

    async def _send_queue(self, result: FlushResult) -> None:
        assert self.pairing is not None
        for attempt in range(2):
            pending = self.queue.pending(judge_id=self.pairing.judge_id, event_id=self.pairing.event_id)
            waits: list[_Answer] = []  # answers that leave a sheet queued: sending stops for now
            # 409 for a correction of a sheet this tablet keeps: the box may have been rebuilt and lost
            # that sheet. Decided after a heartbeat tells the box's epoch, not held at once.
            unsure: list[tuple[QueuedSheet, _Answer]] = []
            for start in range(0, len(pending), self.batch_size):
                chunk = pending[start : start + self.batch_size]
                answers = await self._send_chunk(chunk, result)
                for queued, answer in zip(chunk, answers, strict=True):
                    if answer.status == 409 and attempt == 0 and self._corrects_kept(queued):
                        unsure.append((queued, answer))
                    elif self._settle(queued, answer, result):
                        waits.append(answer)
                for answer in answers:
                    if answer.status in STORED_STATUSES:
                        self._apply_mark(answer.ledger)
                if waits or unsure:
                    break
            if unsure and await self._kept_sheets_went_back():
                continue  # the box was rebuilt: what it lost goes first, then the corrections
            for queued, answer in unsure:  # the same box: a true conflict, set aside as any 409
                self._settle(queued, answer, result)
            break
        if not waits:
            self.failures, self._next_attempt_at, self._waiting_for_box = 0, 0.0, False
            return
        self._schedule_after(waits, result)

    def _corrects_kept(self, queued: QueuedSheet) -> bool:
        supersedes = queued.sheet.get("supersedes")
        return bool(supersedes) and any(sheet_id == supersedes for sheet_id, _ in self.queue.kept())

    async def _kept_sheets_went_back(self) -> bool:
        """A heartbeat, for the box's ledger mark: whether a new epoch put kept sheets back in the queue."""
        before = self.queue.depth()
        try:
            await self.heartbeat()
        except TabletError:
            return False
        return self.queue.depth() > before

    async def _send_chunk(self, chunk: list[QueuedSheet], result: FlushResult) -> list[_Answer]:
        if len(chunk) == 1:
            result.requests += 1
            return [await self._send_one(chunk[0].sheet)]
        result.requests += 1
        try:
            response = await self._call("POST", "/sheets/batch", json={"sheets": [q.sheet for q in chunk]})
        except BoxUnreachable as exc:
            return [_Answer(None, error=str(exc))] * len(chunk)
        if response.status_code == 200:
            body = response.json()
            answers = self._batch_answers(chunk, body)
            mark = _mark(body.get("ledger")) if isinstance(body, dict) else None
            for answer in answers:
                answer.ledger = mark
            return answers
        if response.status_code in (400, 404, 405, 413, 422):
            # The batch call itself was refused (too big, an older box...): each sheet deserves its
            # own verdict, so send them one by one, stopping at the first one that must wait.
            answers = []
            for queued in chunk:
                if answers and _must_wait(answers[-1]):
                    answers.append(_Answer(None, sent=False))
                    continue
                result.requests += 1
                answers.append(await self._send_one(queued.sheet))
            return answers
        whole = _answer_of(response)
        return [whole] * len(chunk)

    async def _send_one(self, sheet: dict[str, Any]) -> _Answer:
        try:
            response = await self._call("POST", "/sheets", json=sheet)
        except BoxUnreachable as exc:
            return _Answer(None, error=str(exc))
        return _answer_of(response)

    @staticmethod
    def _batch_answers(chunk: list[QueuedSheet], body: dict[str, Any]) -> list[_Answer]:
        results = body.get("results") or []
        answers = []
        for index, queued in enumerate(chunk):
            item = results[index] if index < len(results) else None
            if not isinstance(item, dict) or item.get("sheet_id") not in (queued.sheet_id, None):
                answers.append(_Answer(None, error="the batch answer does not match the batch"))
                continue
            status = int(item.get("status", 0)) or None
            answers.append(_Answer(status, problem=item.get("problem"), receipt=item.get("sheet")))
        return answers

    def _settle(self, queued: QueuedSheet, answer: _Answer, result: FlushResult) -> bool:
        """Apply one answer to the queue; True when the sheet stays queued (sending stops)."""
        status = answer.status
        if status in STORED_STATUSES:
            seq = (answer.receipt or {}).get("seq")
            epoch = answer.ledger["epoch"] if answer.ledger else None
            self.queue.keep(queued.sheet_id, seq if isinstance(seq, int) else None, epoch)
            result.acknowledged.append(queued.sheet_id)
            result.receipts[queued.sheet_id] = answer.receipt or {}
            return False
        if status in HOLD_STATUSES:
            self.queue.hold(queued.sheet_id, status, answer.problem or {"status": status})
            result.held.append(queued.sheet_id)
            return False
        if answer.sent:
            self.queue.note_attempt(queued.sheet_id, status, answer.error or _detail(answer.problem))
        return True

    def _schedule_after(self, waits: list[_Answer], result: FlushResult) -> None:
        """Set when the next automatic attempt may go, from the answers that left sheets queued:
        401 waits for pairing, 423 for Retry-After or an unfreeze, the rest back off."""
        sent = [a for a in waits if a.sent]
        statuses = {a.status for a in sent}
        self._waiting_for_box = False
        if 401 in statuses:
            self.needs_pairing = True
            result.blocked = "needs-pairing"
            return
        retry_after = max((a.retry_after_s or 0.0 for a in sent), default=0.0)
        if 423 in statuses:
            frozen = next(a for a in sent if a.status == 423)
            self.frozen = True
            self.freeze_reason = _detail(frozen.problem) or self.freeze_reason
            wait = retry_after or DEFAULT_FROZEN_RETRY_S
            result.blocked = "frozen"
        else:
            # Full jitter, but never sooner than the box asked for.
            self.failures += 1
            wait = max(self.backoff.delay(self.failures), retry_after)
            result.blocked = "unreachable" if statuses <= {None} else "retry"
            # No answer at all: the wait ends when the box answers again (`_box_answered`). An answer
            # (5xx, 429, 408) keeps its backoff and Retry-After whatever a heartbeat says.
            self._waiting_for_box = result.blocked == "unreachable"
        self._next_attempt_at = self._clock() + wait
        result.retry_in_s = wait

    # -- heartbeat ------------------------------------------------------------------------------

    async def heartbeat(self, battery: int | None = None, app_version: str | None = None) -> HeartbeatAnswer:
        """Tell the box this tablet is alive; the answer carries the freeze state, which updates
        ``frozen``, ``freeze_reason`` and ``next_heartbeat_s``. An unfreeze lets queued sheets go at
        once, and so does an answer after sending failed for want of one (the box is back).
        Raises NeedsPairing (401), RateLimited, BoxUnreachable or BoxError."""
        body: dict[str, Any] = {"sent_at": _now(), "queue_depth": self.queue.depth()}
        if battery is not None:
            body["battery"] = battery
        if app_version is not None:
            body["app_version"] = app_version
        response = await self._call("POST", "/heartbeat", json=body)
        if response.status_code != 200:
            raise _error_for(response)
        data = response.json()
        if (mark := _mark(data.get("ledger"))) is not None:
            self._apply_mark(mark)
        answer = HeartbeatAnswer(
            server_time=data.get("server_time", ""),
            frozen=bool(data.get("frozen")),
            freeze_reason=data.get("freeze_reason"),
            next_heartbeat_s=int(data.get("next_heartbeat_s") or self.next_heartbeat_s),
        )
        was_frozen = self.frozen
        self.frozen, self.next_heartbeat_s = answer.frozen, answer.next_heartbeat_s
        if answer.frozen:
            self.freeze_reason = answer.freeze_reason
            if not was_frozen:
                # No point sending into a freeze; look again at the next heartbeat.
                self._next_attempt_at = max(self._next_attempt_at, self._clock() + answer.next_heartbeat_s)
        else:
            self.freeze_reason = None
            if was_frozen:
                self._next_attempt_at = 0.0
        return answer

    def _apply_mark(self, mark: dict[str, Any] | None) -> None:
        """A ledger mark from the box: forget the kept sheets it makes safe; after a new epoch (the
        box was rebuilt from its backups) queue every kept sheet again and send at once."""
        if mark is None:
            self.queue.settle(None, 0)
            return
        again = self.queue.settle(mark["epoch"], mark["safe_seq"])
        if again:
            log.info("the box's ledger has a new epoch: sending %d kept sheets again", again)
            self.failures, self._next_attempt_at = 0, 0.0

    # -- plumbing -------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> httpx.Response:
        """One request with the client's timeouts; network failures become BoxUnreachable, 401 on
        an authenticated call flags ``needs_pairing``."""
        headers = dict(headers or {})
        if auth:
            if self.pairing is None:
                raise NeedsPairing("this tablet is not paired")
            headers["Authorization"] = f"Bearer {self.pairing.token}"
        http = await self._client()
        try:
            response = await http.request(method, self._api + path, json=json, headers=headers)
        except httpx.TransportError as exc:
            if self._pin and _certificate_refused(exc):
                presented = await self._presented_fingerprint()
                raise CertificateMismatch(self._pin, presented or "unknown") from exc
            raise BoxUnreachable(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc
        if self._waiting_for_box:
            self._box_answered()
        if auth and response.status_code == 401:
            self.needs_pairing = True
        return response

    def _box_answered(self) -> None:
        """The box answers again after sending failed because it could not be reached: the backoff
        grown during the outage is over, queued sheets may go now (the judge app's `nudge`)."""
        self._waiting_for_box = False
        self.failures, self._next_attempt_at = 0, 0.0
        log.info("the box answers again: queued sheets go now, not after the backoff")

    async def _client(self) -> httpx.AsyncClient:
        """The HTTP client, made on first use: for an https box with a pin (or trust on first
        use), only after the certificate it presents was checked against the pin."""
        async with self._connect_lock:
            if self._http is not None:
                return self._http
            verify = self._verify
            pinning = self._pin is not None or self._trust_on_first_use
            if self._base_url.scheme == "https" and self._transport is None and pinning:
                der = await self._presented_certificate()
                presented = hashlib.sha256(der).hexdigest()
                if self._pin is None:
                    self._pin = presented
                    self._save_pin(presented)
                elif presented != self._pin:
                    raise CertificateMismatch(self._pin, presented)
                # From now on every handshake must show exactly this certificate; host names are
                # not checked (a box is reached by address as often as by name).
                verify = ssl.create_default_context(cadata=der)
                verify.check_hostname = False
            self._http = httpx.AsyncClient(
                base_url=self._base_url,
                timeout=self._timeout,
                transport=self._transport,
                verify=verify,
                headers={"User-Agent": USER_AGENT},
            )
            return self._http

    async def _presented_certificate(self) -> bytes:
        """The DER certificate the box shows in a TLS handshake (nothing is sent over it)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # read only, to compare with the pin
        host, port = self._base_url.host, self._base_url.port or 443
        connect_s = self._timeout.connect or 10.0
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=context), connect_s)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise BoxUnreachable(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc
        try:
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
        if not der:
            raise BoxUnreachable("the box did not present a TLS certificate")
        return der

    async def _presented_fingerprint(self) -> str | None:
        try:
            return hashlib.sha256(await self._presented_certificate()).hexdigest()
        except BoxUnreachable:
            return None

    def _load_pin(self) -> str | None:
        path = self.state_dir / "tls-pin.txt"
        return normalise_fingerprint(path.read_text().strip()) if path.exists() else None

    def _save_pin(self, fingerprint: str | None) -> None:
        if fingerprint:
            _write_private(self.state_dir / "tls-pin.txt", fingerprint + "\n")

    def _load_pairing(self) -> Pairing | None:
        path = self.state_dir / "pairing.json"
        if not path.exists():
            return None
        return Pairing(**json.loads(path.read_text()))

    def _save_pairing(self, pairing: Pairing) -> None:
        data = {**pairing.__dict__}
        _write_private(self.state_dir / "pairing.json", json.dumps(data, indent=2))

    def _load_event_cache(self) -> tuple[str | None, dict[str, Any] | None]:
        path = self.state_dir / "event.json"
        if not path.exists():
            return None, None
        cached = json.loads(path.read_text())
        return cached.get("etag"), cached.get("body")

    def _save_event_cache(self, etag: str | None, body: dict[str, Any] | None) -> None:
        self._event_etag, self._event_body = etag, body
        path = self.state_dir / "event.json"
        if body is None:
            path.unlink(missing_ok=True)
        else:
            _write_private(path, json.dumps({"etag": etag, "body": body}))

    @classmethod
    def for_box(cls, box: BoxAddress, state_dir: Path, **options: Any) -> TabletClient:
        """A client for a discovered box (its address, port and API path), pinned to the TXT
        record's fingerprint when the box serves TLS and no pin is given or saved."""
        if box.tls and box.fingerprint and "fingerprint" not in options:
            saved = (Path(state_dir) / "tls-pin.txt").exists()
            if not saved:
                options["fingerprint"] = box.fingerprint
        return cls(box.base_url, state_dir, api=box.api, **options)

    @classmethod
    def from_pairing_url(cls, url: str, state_dir: Path, **options: Any) -> TabletClient:
        """A client for the box a pairing URL names, pinned to its ``#fp`` (which replaces a pin saved
        earlier: the URL is the tech's word); pair it with the URL's code (`parse_pairing_url`), or
        use `pair_with_url`. ValueError for a URL without a code, or an https one without ``fp``."""
        link = parse_pairing_url(url)
        if link.fingerprint:
            options["fingerprint"] = link.fingerprint
        return cls(link.base_url, state_dir, **options)


async def pair_with_url(
    url: str, state_dir: Path, device_name: str, **options: Any
) -> tuple[TabletClient, Pairing]:
    """Pair through a pairing URL (the console's QR code): a client pinned to the URL's ``#fp``
    checks the certificate the box presents before anything is sent, so an impostor reached at that
    address raises CertificateMismatch and never sees the code. Returns the open client (close it,
    or use it as an async context manager) and the pairing; on any error the client is closed."""
    link = parse_pairing_url(url)
    client = TabletClient.from_pairing_url(url, state_dir, **options)
    try:
        return client, await client.pair(link.code, device_name)
    except BaseException:
        await client.aclose()
        raise


def _certificate_refused(exc: BaseException) -> bool:
    """Whether a transport error comes from a failed certificate check in the TLS handshake."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _must_wait(answer: _Answer) -> bool:
    return answer.status not in STORED_STATUSES | HOLD_STATUSES


def _answer_of(response: httpx.Response) -> _Answer:
    if response.status_code in STORED_STATUSES:
        body = response.json()
        ledger = body.pop("ledger", None) if isinstance(body, dict) else None
        return _Answer(response.status_code, receipt=body, ledger=_mark(ledger))
    return _Answer(response.status_code, problem=_problem(response), retry_after_s=retry_after_s(response))


def _mark(value: Any) -> dict[str, Any] | None:
    """A ledger mark as the box sent it, or None (an older box, or something else)."""
    if (
        isinstance(value, dict)
        and isinstance(value.get("epoch"), str)
        and isinstance(value.get("safe_seq"), int)
    ):
        return {"epoch": value["epoch"], "safe_seq": value["safe_seq"]}
    return None


def _error_for(response: httpx.Response, refused: type[BoxError] = BoxError) -> TabletError:
    problem = _problem(response)
    status = response.status_code
    if status == 401:
        return NeedsPairing(_detail(problem) or "the box does not accept this tablet's token: pair again")
    cls = {403: refused, 429: RateLimited}.get(status, BoxError)
    return cls(status, problem, retry_after_s(response))


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    return {"status": response.status_code, "title": response.reason_phrase, "detail": response.text[:500]}


def _detail(problem: dict[str, Any] | None) -> str | None:
    return str(problem["detail"]) if problem and problem.get("detail") else None


def _write_private(path: Path, text: str) -> None:
    """Write atomically, readable by this user only (the pairing holds the judge's token)."""
    atomic_write(path, text.encode("utf-8"), 0o600)


__all__ = [
    "SERVICE_TYPE",
    "Backoff",
    "BoxAddress",
    "BoxError",
    "BoxUnreachable",
    "CertificateMismatch",
    "FlushResult",
    "HeartbeatAnswer",
    "NeedsPairing",
    "Pairing",
    "PairingLink",
    "PairingRefused",
    "QueuedSheet",
    "RateLimited",
    "SheetQueue",
    "SubmitResult",
    "TabletClient",
    "TabletError",
    "async_discover",
    "discover",
    "make_sheet",
    "normalise_fingerprint",
    "pair_with_url",
    "parse_pairing_url",
]
