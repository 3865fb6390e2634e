"""A small, typed client of the tablet protocol (docs/protocol.md, v1), written to be copied.

It pairs with a box (found by mDNS, `discovery`, or named by a pairing URL), downloads the event
with ETag caching, and submits score sheets through an on-disk queue (`sheet_queue.SheetQueue`) so
that no sheet is ever dropped silently: every sheet is written to the queue before it is sent, and
leaves it only when the box answers 200/201 (then it is kept until the box's safe watermark passes
it). What each answer means for a queued sheet follows the protocol's table "What a client does
with an answer" (`answers`):

* 200, 201 -> out of the send queue;
* 400, 403, 409, 413, 422 -> held aside with the box's problem (never resent unchanged);
* 401 -> kept queued; the client needs pairing again (`needs_pairing`);
* 423 -> kept queued; the freeze reason is kept; retried after `Retry-After`, or as soon as a
  heartbeat says the box is unfrozen;
* 408, 429, 5xx, network errors, timeouts -> kept queued; exponential backoff with full jitter,
  never sooner than `Retry-After`. A wait that began because the box could not be reached ends as
  soon as the box answers again (a heartbeat, or any other request), as the judge app's does: a
  box back after an outage gets the queue at once, not at the end of a backoff grown meanwhile.

Resending is always safe: the box treats the `sheet_id` as an idempotency key.

A box serves HTTPS with a self-signed certificate, which the client pins by fingerprint
(`pinning`): a box presenting another one raises CertificateMismatch before anything (a pairing
code, a token, a sheet) is sent, and sheets stay queued. The pin is kept in the state dir
(`state`); the pairing answer's ``tls_fingerprint`` must agree with it. A pairing URL
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
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx

from appliance.shared.fingerprint import fingerprint_of_der, normalise_fingerprint
from appliance.shared.protocol_names import API_PATH
from appliance.shared.times import now_rfc3339
from appliance.tablet_client import state
from appliance.tablet_client.answers import (
    HOLD_STATUSES,
    STORED_STATUSES,
    LedgerMark,
    SheetAnswer,
    answer_of,
    batch_answers,
    ledger_mark,
    must_wait,
)
from appliance.tablet_client.discovery import BoxAddress
from appliance.tablet_client.errors import (
    BoxUnreachable,
    CertificateMismatch,
    NeedsPairing,
    PairingRefused,
    TabletError,
    detail,
    error_for,
)
from appliance.tablet_client.pinning import (
    certificate_refused,
    parse_pairing_url,
    pinned_context,
    presented_certificate,
    presented_fingerprint,
)
from appliance.tablet_client.sheet_queue import QueuedSheet, SheetQueue
from appliance.tablet_client.state import Pairing
from appliance.web.retry import Backoff

log = logging.getLogger("venuebox.tablet")
# A tablet is on Wi-Fi: connecting should be quick, but a busy box may take a while to commit.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
DEFAULT_BATCH_SIZE = 100  # the box accepts up to 500; smaller batches keep each answer quick
DEFAULT_FROZEN_RETRY_S = 30.0  # when a 423 comes without Retry-After (batch items carry none)
USER_AGENT = "venuebox-tablet-client/1"


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

    acknowledged: list[str] = field(default_factory=list)  # stored by the box (200/201): out of the queue
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


class TabletClient:
    """One judge tablet talking to one box.

    ``state_dir`` holds the sheet queue (`SheetQueue`), the pairing (token), the pin and the cached
    event (`state`), so a tablet that restarts picks up where it was. ``transport`` is the seam for
    tests or custom networking; ``clock`` (monotonic seconds) and ``backoff`` (with its RNG) make
    retry timing reproducible.

    The sheet queue is plain blocking SQLite: each write is one small row, which is fine for a
    tablet; a client that must never block its event loop can run the queue calls in a thread."""

    def __init__(
        self,
        base_url: str,
        state_dir: Path,
        *,
        api: str = API_PATH,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | str | bool = True,
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
        self._pin = normalise_fingerprint(fingerprint) if fingerprint else state.load_pin(self.state_dir)
        if self._pin and fingerprint:
            state.save_pin(self.state_dir, self._pin)
        self._trust_on_first_use = trust_on_first_use
        self._http: httpx.AsyncClient | None = None
        self._connect_lock = asyncio.Lock()
        self._flush_lock = asyncio.Lock()
        self.pairing: Pairing | None = state.load_pairing(self.state_dir)
        self.needs_pairing = self.pairing is None
        self.frozen = False
        self.freeze_reason: str | None = None
        self.next_heartbeat_s = 10
        self.failures = 0  # consecutive failed flush attempts (backoff input)
        self._next_attempt_at = 0.0
        self._waiting_for_box = False  # the backoff is for a box that could not be reached
        self._event_etag, self._event_body = state.load_event(self.state_dir)

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
            raise error_for(response, refused=PairingRefused)
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
            paired_at=now_rfc3339(),
        )
        previous = self.pairing
        state.save_pairing(self.state_dir, pairing)
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
            raise error_for(response)
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
            waits: list[SheetAnswer] = []  # answers that leave a sheet queued: sending stops for now
            # 409 for a correction of a sheet this tablet keeps: the box may have been rebuilt and lost
            # that sheet. Decided after a heartbeat tells the box's epoch, not held at once.
            unsure: list[tuple[QueuedSheet, SheetAnswer]] = []
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

    async def _send_chunk(self, chunk: list[QueuedSheet], result: FlushResult) -> list[SheetAnswer]:
        if len(chunk) == 1:
            result.requests += 1
            return [await self._send_one(chunk[0].sheet)]
        result.requests += 1
        try:
            response = await self._call("POST", "/sheets/batch", json={"sheets": [q.sheet for q in chunk]})
        except BoxUnreachable as exc:
            return [SheetAnswer(None, error=str(exc))] * len(chunk)
        if response.status_code == 200:
            return batch_answers(chunk, response.json())
        if response.status_code in (400, 404, 405, 413, 422):
            # The batch call itself was refused (too big, an older box...): each sheet deserves its
            # own verdict, so send them one by one, stopping at the first one that must wait.
            answers: list[SheetAnswer] = []
            for queued in chunk:
                if answers and must_wait(answers[-1]):
                    answers.append(SheetAnswer(None, sent=False))
                    continue
                result.requests += 1
                answers.append(await self._send_one(queued.sheet))
            return answers
        whole = answer_of(response)
        return [whole] * len(chunk)

    async def _send_one(self, sheet: dict[str, Any]) -> SheetAnswer:
        try:
            response = await self._call("POST", "/sheets", json=sheet)
        except BoxUnreachable as exc:
            return SheetAnswer(None, error=str(exc))
        return answer_of(response)

    def _settle(self, queued: QueuedSheet, answer: SheetAnswer, result: FlushResult) -> bool:
        """Apply one answer to the queue; True when the sheet stays queued (sending stops)."""
        status = answer.status
        if status in STORED_STATUSES:
            seq = (answer.receipt or {}).get("seq")
            epoch = answer.ledger.epoch if answer.ledger else None
            self.queue.keep(queued.sheet_id, seq if isinstance(seq, int) else None, epoch)
            result.acknowledged.append(queued.sheet_id)
            result.receipts[queued.sheet_id] = answer.receipt or {}
            return False
        if status in HOLD_STATUSES:
            self.queue.hold(queued.sheet_id, status, answer.problem or {"status": status})
            result.held.append(queued.sheet_id)
            return False
        if answer.sent:
            self.queue.note_attempt(queued.sheet_id, status, answer.error or detail(answer.problem))
        return True

    def _schedule_after(self, waits: list[SheetAnswer], result: FlushResult) -> None:
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
            self.freeze_reason = detail(frozen.problem) or self.freeze_reason
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
        body: dict[str, Any] = {"sent_at": now_rfc3339(), "queue_depth": self.queue.depth()}
        if battery is not None:
            body["battery"] = battery
        if app_version is not None:
            body["app_version"] = app_version
        response = await self._call("POST", "/heartbeat", json=body)
        if response.status_code != 200:
            raise error_for(response)
        data = response.json()
        if (mark := ledger_mark(data.get("ledger"))) is not None:
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

    def _apply_mark(self, mark: LedgerMark | None) -> None:
        """A ledger mark from the box: forget the kept sheets it makes safe; after a new epoch (the
        box was rebuilt from its backups) queue every kept sheet again and send at once."""
        if mark is None:
            self.queue.settle(None, 0)
            return
        again = self.queue.settle(mark.epoch, mark.safe_seq)
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
            if self._pin and certificate_refused(exc):
                presented = await presented_fingerprint(self._base_url, self._connect_s())
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
                der = await presented_certificate(self._base_url, self._connect_s())
                presented = fingerprint_of_der(der)
                if self._pin is None:
                    self._pin = presented
                    state.save_pin(self.state_dir, presented)
                elif presented != self._pin:
                    raise CertificateMismatch(self._pin, presented)
                # From now on every handshake must show exactly this certificate.
                verify = pinned_context(der)
            self._http = httpx.AsyncClient(
                base_url=self._base_url,
                timeout=self._timeout,
                transport=self._transport,
                verify=verify,
                headers={"User-Agent": USER_AGENT},
            )
            return self._http

    def _connect_s(self) -> float:
        return self._timeout.connect or 10.0

    def _save_event_cache(self, etag: str | None, body: dict[str, Any] | None) -> None:
        self._event_etag, self._event_body = etag, body
        state.save_event(self.state_dir, etag, body)

    @classmethod
    def for_box(cls, box: BoxAddress, state_dir: Path, **options: Any) -> TabletClient:
        """A client for a discovered box (its address, port and API path), pinned to the TXT
        record's fingerprint when the box serves TLS and no pin is given or saved."""
        if (
            box.tls
            and box.fingerprint
            and "fingerprint" not in options
            and not state.has_pin(Path(state_dir))
        ):
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
