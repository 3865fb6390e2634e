"""The uplink worker: drains the outbox to the cloud, in order, exactly once in effect.

It runs inside the daemon, on its event loop, one request at a time:

1. Pick the batch: the open one again (``outbox.resume_batch``: same id, same body), or the oldest
   pending records bounded by count and bytes under a new id (``outbox.prepare_batch`` on a read
   snapshot), opened with the state "sending" in one small write (``outbox.assign_batch``).
2. POST it (``uplink/protocol.py``): bearer token, HMAC signature with a fresh timestamp,
   ``Idempotency-Key`` = the batch id; connect, read and total timeouts.
3. Apply the answer (one write): acked records leave the send queue, rejected ones go to
   quarantine, the state row records success or the error in plain words and the next attempt.

Nothing is deleted before the receiver acked it, and a resent record is acked again, not stored
twice (the receiver keeps record ids unique), so a lost answer, a crash or a kill -9 mid-batch
costs a resend, never a loss or a duplicate. Failures back off exponentially with full jitter up
to a cap, honour ``Retry-After``, and after ``uplink_breaker_failures`` in a row the circuit opens:
one trial request per backoff until one succeeds. A 2xx that is no ack (or settles none of the
batch) is retried under the same key ``BAD_ANSWER_TRIES`` times, then the records go out again under
a new key with the warning alert ``uplink-bad-answer``. Answers that will never succeed are not retried
forever: refused credentials or a wrong URL pause the uplink (critical alert) until it is
reconfigured or a tech asks for a sync, and so does a batch the receiver refuses as a fork of its
copy of the box's ledger or audit log (409 ``chain-fork``: critical alert ``uplink-fork``; resending
can never make the two chains agree); a record the receiver rejects is quarantined alone; a
batch refused as a whole is split until the one bad record is found. Freeze does not stop it:
freeze halts writes of competition data, not their delivery.

Beside it in this package: what an answer means (answers.py), the circuit breaker (breaker.py), the
HTTP client and the signed POST (client.py), the settings (settings.py), and what the CLI's uplink
commands call (commands.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx

from appliance.core import outbox
from appliance.core.config import Config
from appliance.core.outbox import Batch
from appliance.core.storage import Store
from appliance.core.uplink_state import (
    Target,
    check_alerts,
    clear_bad_answer,
    get_state,
    pause,
    raise_bad_answer,
    resolve_target,
    update_state,
)
from appliance.shared.secrets_files import InsecureSecretFile, read_secret
from appliance.shared.times import to_rfc3339, utcnow
from appliance.web.retry import full_jitter
from uplink.answers import Outcome
from uplink.breaker import BreakerState, CircuitBreaker
from uplink.client import new_client, post_batch
from uplink.settings import UplinkSettings

log = logging.getLogger("venuebox.uplink")

ALERT_CHECK_S = 10.0
PRUNE_EVERY_S = 60.0
# A 2xx that is no ack, or settles none of the records sent, gets the same batch (same key, same body)
# this many times in a row, after a backoff each; then the batch is released and its records go out
# again under a new Idempotency-Key (safe: the receiver stores each record id once), with the
# ``uplink-bad-answer`` alert. A receiver that stored a bad answer under the key would otherwise
# replay it for ever, and the queue would never move.
BAD_ANSWER_TRIES = 3


class UplinkWorker:
    """Drains the outbox of ``store`` to the configured target; ``run()`` until ``stop()``.

    ``transport`` replaces httpx's network transport (tests at the outer boundary only); ``rng``
    and ``clock`` make backoff and times reproducible."""

    def __init__(
        self,
        store: Store,
        config: Config,
        box_id: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.config = config
        self.box_id = box_id
        self.settings = UplinkSettings.from_config(config)
        self._transport = transport
        self._rng = rng or random.Random()
        self._clock = clock
        self._client: httpx.AsyncClient | None = None
        self._target: Target | None = None
        self._target_fp: str | None = None
        self._token = ""
        self._breaker: CircuitBreaker | None = None
        self._next_attempt = 0.0  # monotonic
        self._max_records = self.settings.batch_max_records
        self._clock_offset_s = 0.0
        self._sync_seen: str | None = None
        self._rekeyed = False
        self._resend_now = False  # the clock was corrected: the next turn resends, paused or not
        self._bad_answers = 0  # 2xx answers in a row that were no ack or left records unsettled
        self._opened: Batch | None = None  # opened by the last ack's write, ready to send
        self._client_problem: str | None = None
        self._last_alert_check = 0.0
        self._last_prune = 0.0
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()

    # -- lifecycle

    async def run(self) -> None:
        """Deliver until ``stop()``. Every failure is recorded and retried; only cancellation ends it."""
        try:
            while not self._stop.is_set():
                try:
                    delay = await self.step()
                except Exception as exc:  # never let one bad turn end delivery
                    log.exception("uplink: unexpected failure; retrying after the backoff")
                    delay = await self._record_unexpected(exc)
                if delay > 0:
                    # Never longer than a poll: a sync asked from another process (the CLI) is a
                    # database row, seen at the next turn; records queued there, too.
                    await self._sleep(min(delay, self.settings.poll_s))
        finally:
            await self.aclose()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Look again now: a sync was requested in this process, or records were queued in it (the
        daemon calls it on the store's ``outbox.QUEUED`` notice)."""
        self._wake.set()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _sleep(self, seconds: float) -> None:
        # Cleared after the wait, not before it: a wake that came during the turn just ended (a
        # sheet stored while a batch was in flight) ends this wait at once instead of being lost.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        self._wake.clear()

    # -- one turn

    async def step(self) -> float:
        """Look at the target, state and queue, send one batch if it is time; returns how long to
        wait before the next turn (0: go on at once)."""
        settings = self.settings
        target, state, pending = await self.store.read(
            lambda conn: (resolve_target(conn, self.config), get_state(conn), outbox.has_pending(conn))
        )
        now_m = time.monotonic()
        await self._housekeeping(now_m)
        if target is None:
            await self._show(state, "not configured")
            return settings.poll_s
        self._use_target(target, state)
        sync = bool(state["sync_requested_at"]) and state["sync_requested_at"] != self._sync_seen
        if sync:
            self._sync_seen = state["sync_requested_at"]
            self._next_attempt = 0.0
        # A resend with the receiver's clock belongs to the attempt before it: when that was a
        # sync's try of a paused uplink, the resend goes too.
        resend, self._resend_now = self._resend_now, False
        if state["paused_reason"] and state["paused_target"] == self._target_fp and not (sync or resend):
            await self._show(state, "paused")
            return settings.poll_s
        if now_m < self._next_attempt:
            return min(settings.poll_s, self._next_attempt - now_m)
        if not pending:
            # A sync with nothing to send still answers the request (last_attempt_at moves on).
            await self._show(state, "idle", answered_sync=sync)
            return settings.poll_s
        assert self._breaker is not None
        self._breaker.before_attempt()
        batch = await self._batch_to_send(state)
        if batch is None:
            return 0.0
        # While the receiver works on this batch, the next one is read and encoded (on the reader
        # pool): box and receiver work at the same time, and the ack write opens it.
        sending = asyncio.ensure_future(self._send(target, batch))
        try:
            following = await self.store.read(
                lambda conn: outbox.prepare_batch(
                    conn, self._max_records, self.settings.batch_max_bytes, after_seq=batch.seqs[-1]
                )
            )
        except Exception:
            log.exception("uplink: could not prepare the next batch; it is prepared after this one")
            following = None
        outcome = await sending
        return await self._apply(batch, outcome, following)

    async def _batch_to_send(self, state: dict[str, Any]) -> Batch | None:
        """The open batch (the one the previous ack opened, still in memory; or rebuilt from the
        database, e.g. after a restart), else a new one, prepared on a read snapshot and opened
        with the "sending" state in one small write."""
        ready, self._opened = self._opened, None
        if ready is not None and ready.batch_id == state["batch_id"]:
            return ready
        settings = self.settings

        def prepare(conn: Any) -> tuple[Batch | None, bool]:
            resumed = outbox.resume_batch(conn)
            if resumed is not None:
                return resumed, True
            return outbox.prepare_batch(conn, self._max_records, settings.batch_max_bytes), False

        batch, is_open = await self.store.read(prepare)
        if batch is None:
            return None
        now = self._clock()
        shown = (
            "circuit open" if self._breaker and self._breaker.state is BreakerState.HALF_OPEN else "sending"
        )
        breaker = self._breaker.state if self._breaker else BreakerState.CLOSED

        def start(conn: Any) -> bool:
            if not is_open and not outbox.assign_batch(conn, batch):
                return False  # the queue moved since the snapshot (a retry, another sender): look again
            update_state(
                conn, now, state=shown, breaker=breaker, last_attempt_at=to_rfc3339(now), next_attempt_at=None
            )
            return True

        return batch if await self.store.write(start) else None

    def _use_target(self, target: Target, state: dict[str, Any]) -> None:
        fingerprint = target.fingerprint()
        if fingerprint == self._target_fp and self._client is not None:
            return
        if self._client is not None:
            # Closed on the loop's next turn; requests in flight on it have finished (one at a time).
            asyncio.get_running_loop().create_task(self._client.aclose())
        self._target, self._target_fp = target, fingerprint
        self._token = ""
        self._client_problem = None
        try:
            self._client = new_client(target, self.settings, self._transport)
        except (OSError, ssl.SSLError) as exc:
            # Sent as a pause by _send: an unusable CA bundle never gets better by retrying.
            self._client = httpx.AsyncClient(transport=self._transport)
            self._client_problem = (
                f"cannot use the CA bundle {target.ca_file} ({exc}): "
                "fix the file or run `venuebox uplink configure --ca-file`"
            )
        if self._breaker is None:
            self._breaker = CircuitBreaker(
                self.settings.breaker_failures, state["consecutive_failures"], state["breaker"]
            )
        else:  # a new target starts afresh
            self._breaker.success()
        self._next_attempt = 0.0

    async def _send(self, target: Target, batch: Batch) -> Outcome:
        assert self._client is not None
        if self._client_problem:
            return Outcome("pause", self._client_problem)
        try:
            token = self._read_token(target)
        except (OSError, InsecureSecretFile) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return Outcome(
                "pause",
                f"cannot read the uplink token file {target.token_file} ({why}): "
                "run `venuebox uplink configure --token-file`",
            )
        return await post_batch(
            self._client,
            target,
            token,
            self.box_id,
            batch.batch_id,
            batch.body,
            self.settings,
            self._clock_offset_s,
        )

    def _read_token(self, target: Target) -> str:
        if not self._token:
            self._token = read_secret(target.token_file)
        return self._token

    # -- after an attempt

    async def _apply(self, batch: Batch, outcome: Outcome, following: Batch | None = None) -> float:
        breaker = self._breaker
        assert breaker is not None
        settings = self.settings
        now = self._clock()
        # A mismatch straight after a re-key is not re-keyed again (it backs off); any other answer
        # in between makes the next mismatch a first one.
        rekeyed, self._rekeyed = self._rekeyed, outcome.kind == "rekey"
        if outcome.kind == "acked" and not self._settles(batch, outcome):
            # A 2xx that acks and rejects none of what was sent: resending at once would loop.
            outcome = Outcome(
                "bad-ack",
                f"the receiver answered {outcome.status or 200} but settled none of the {len(batch)} "
                "records sent (its ack neither acked nor rejected any of them)",
                status=outcome.status,
            )
        if outcome.kind == "bad-ack":
            return await self._bad_answer(batch, outcome.error or "the receiver's answer is no ack", now)
        if outcome.kind == "acked":
            breaker.success()
            settled = set(outcome.acked) | {record_id for record_id, _ in outcome.rejected}
            unsettled = len(set(batch.record_ids) - settled)
            self._bad_answers = self._bad_answers + 1 if unsettled else 0
            bad_answer = (
                f"the receiver answered {outcome.status or 200} but left {unsettled} of the "
                f"{len(batch)} records sent unsettled (neither acked nor rejected; they go out again "
                "in the next batch)"
                if unsettled and self._bad_answers >= BAD_ANSWER_TRIES
                else None
            )
            if len(batch) == self._max_records:  # a split batch grows back after a success
                self._max_records = min(settings.batch_max_records, self._max_records * 2)

            def done(conn: Any) -> tuple[outbox.BatchResult, bool, bool]:
                result = outbox.close_batch(conn, batch, outcome.acked, outcome.rejected, now)
                # The next batch, prepared during the POST, opens in this same transaction.
                opened = following is not None and outbox.assign_batch(conn, following)
                more = opened or outbox.has_pending(conn)
                success = to_rfc3339(now)
                update_state(
                    conn,
                    now,
                    state="sending" if more else "idle",
                    breaker=BreakerState.CLOSED,
                    consecutive_failures=0,
                    last_success_at=success,
                    next_attempt_at=None,
                    paused_reason=None,
                    paused_target=None,
                    **({"last_attempt_at": success} if opened else {}),
                )
                if not unsettled:
                    clear_bad_answer(conn, now)
                elif bad_answer:
                    raise_bad_answer(conn, bad_answer, BAD_ANSWER_TRIES, now)
                if result.quarantined or not more:
                    check_alerts(conn, self.config, now)
                    if not more and outbox.has_pending(conn):  # an alert's change was audited: send it
                        more = True
                        update_state(conn, now, state="sending")
                return result, more, opened

            result, more, opened = await self.store.write(done, weight=10)
            self._opened = following if opened else None
            if result.quarantined:
                log.warning("uplink: the receiver rejected %d record(s); quarantined", result.quarantined)
            return 0.0 if more else settings.poll_s

        if outcome.kind == "refused" and len(batch) > 1:
            # Find the record the receiver will not take: halve until it is alone.
            self._max_records = max(1, len(batch) // 2)
            await self.store.write(outbox.release_batch)
            log.warning("uplink: batch of %d refused (%s); splitting", len(batch), outcome.error)
            return 0.0
        if outcome.kind == "refused":
            reason = outcome.error or "refused by the receiver"

            def quarantine_one(conn: Any) -> None:
                outbox.close_batch(conn, batch, [], [(batch.record_ids[0], reason)], now)
                check_alerts(conn, self.config, now)

            await self.store.write(quarantine_one)
            log.warning("uplink: a record was refused alone and quarantined (%s)", reason)
            return 0.0
        if outcome.kind == "rekey" and not rekeyed:
            await self.store.write(outbox.release_batch)
            return 0.0
        offset = outcome.clock_offset_s
        if outcome.kind == "clock" and offset is not None and abs(offset - self._clock_offset_s) > 1:
            self._clock_offset_s = offset
            self._resend_now = True
            log.warning("uplink: signing with the receiver's clock (the box's is off by %.0f s)", -offset)
            return 0.0
        if outcome.kind in ("pause", "fork"):
            fingerprint = self._target_fp
            self._token = ""
            reason = outcome.error or "paused"
            fork_seq = outcome.fork_seq if outcome.kind == "fork" else None
            chain = outcome.fork_chain
            # The batch stays open (same id, same body): a sync resends it as it was.
            await self.store.write(
                lambda conn: pause(conn, self.config, now, reason, fingerprint, fork_seq, fork_chain=chain)
            )
            log.error("uplink paused: %s", outcome.error)
            return settings.poll_s
        return await self._failed(outcome.error or "failed", outcome.retry_after_s, now)

    async def _bad_answer(self, batch: Batch, error: str, now: datetime) -> float:
        """A 2xx that is no ack (or settles none of the batch): the same batch again after a backoff,
        up to ``BAD_ANSWER_TRIES`` in a row; then its records go out under a new key, with an alert."""
        self._bad_answers += 1
        if self._bad_answers < BAD_ANSWER_TRIES:
            tried = f"{error} (try {self._bad_answers} of {BAD_ANSWER_TRIES} with this batch id)"
            return await self._failed(tried, None, now)
        self._bad_answers = 0

        def rekey(conn: Any) -> None:
            outbox.release_batch(conn)  # the next attempt makes a new batch, under a new id
            raise_bad_answer(conn, error, BAD_ANSWER_TRIES, now)

        await self.store.write(rekey)
        log.warning(
            "uplink: %d answers in a row were no ack; the %d records go out again under a new batch id",
            BAD_ANSWER_TRIES,
            len(batch),
        )
        return await self._failed(
            f"{error}; {BAD_ANSWER_TRIES} times in a row, so its records go out again under a new batch id",
            None,
            now,
        )

    @staticmethod
    def _settles(batch: Batch, outcome: Outcome) -> bool:
        sent = set(batch.record_ids)
        return any(i in sent for i in outcome.acked) or any(i in sent for i, _ in outcome.rejected)

    async def _failed(self, error: str, retry_after: float | None, now: datetime) -> float:
        breaker = self._breaker
        assert breaker is not None
        breaker.failure()
        delay = full_jitter(
            self.settings.backoff_base_s, self.settings.backoff_cap_s, breaker.failures, self._rng
        )
        if retry_after is not None:
            delay = max(delay, retry_after)
        self._next_attempt = time.monotonic() + delay
        state = "circuit open" if breaker.state is BreakerState.OPEN else "backing off"
        next_at = to_rfc3339(now + timedelta(seconds=delay))

        def record(conn: Any) -> None:
            update_state(
                conn,
                now,
                state=state,
                breaker=breaker.state,
                consecutive_failures=breaker.failures,
                last_error=error,
                last_error_at=to_rfc3339(now),
                next_attempt_at=next_at,
            )

        await self.store.write(record)
        log.warning("uplink: %s; next attempt in %.1f s (%s)", error, delay, state)
        return delay

    async def _record_unexpected(self, exc: Exception) -> float:
        if self._breaker is None:
            return self.settings.poll_s
        with contextlib.suppress(Exception):
            return await self._failed(f"internal error: {type(exc).__name__}: {exc}", None, self._clock())
        return self.settings.backoff_cap_s

    async def _show(self, state: dict[str, Any], shown: str, answered_sync: bool = False) -> None:
        """Record the state the worker is in when it differs from the stored one (or a sync was
        answered), so an idle box does not write every second."""
        if state["state"] == shown and not answered_sync:
            return
        now = self._clock()
        fields: dict[str, Any] = {"state": shown}
        if answered_sync:
            fields["last_attempt_at"] = to_rfc3339(now)
        await self.store.write(lambda conn: update_state(conn, now, **fields))

    async def _housekeeping(self, now_m: float) -> None:
        """Every few seconds: the uplink's alerts; every minute: prune acked records past retention."""
        if now_m - self._last_alert_check < ALERT_CHECK_S:
            return
        self._last_alert_check = now_m
        now = self._clock()
        prune = now_m - self._last_prune >= PRUNE_EVERY_S
        if prune:
            self._last_prune = now_m
        cutoff = now - timedelta(hours=self.settings.retention_h)

        def check(conn: Any) -> None:
            if prune:
                outbox.prune_acked(conn, cutoff)
            check_alerts(conn, self.config, now)

        try:
            await self.store.write(check, timeout=10.0)
        except Exception:
            log.exception("uplink: alert check failed")
