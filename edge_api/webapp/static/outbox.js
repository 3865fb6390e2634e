// The tablet's queue of score sheets. Every sheet is written to IndexedDB first, then sent; it
// leaves the queue only on 200/201. What each answer does follows PROTOCOL.md's table:
//   200, 201                           stored: leaves the queue (kept until safe, below)
//   no answer, timeout, 408, 429, 5xx  stays; retried with exponential backoff and full jitter,
//                                      never sooner than Retry-After
//   423 frozen                         stays; the reason is shown; retried after Retry-After or
//                                      as soon as a heartbeat says the box is unfrozen
//   423 signed-off, session-locked     set aside and shown: the judge signed off the session, or
//                                      the tech locked it; sent again only by the judge's choice
//   401                                stays; the judge is asked to pair again; sent after that
//   409                                set aside and shown to the judge (correct or discard)
//   400, 403, 413, 422 (and 431)       set aside with the problem shown; never resent unchanged
// A sheet's state: "queued" -> "stored" | "aside"; "aside" -> "discarded" by the judge's choice.
//
// The box's safe watermark (docs/protocol.md, "The safe watermark"): every sheet answer and every
// heartbeat answer carries `ledger: {epoch, safe_seq}`. A sheet the box stored is `kept` (its
// ledger `seq` and the answer's `epoch`) until a mark of the same epoch has safe_seq >= seq: a
// box whose storage dies can take back from the tablet what neither a snapshot nor the cloud
// holds. A mark of another epoch (the box was rebuilt from its backups) puts every sheet kept from
// another epoch back in the queue: "stored" -> "queued", in its first order, ahead of newer
// sheets. An answer without `ledger` (an older box) keeps nothing: stored is done, as before.
// Stored sheets stay on the tablet either way, as the judge's history of their sheets.

import { kv, sheetStore } from "./db.js";
import { closedBy } from "./judging.js";

const BATCH_MAX = 50;
const BACKOFF_BASE_MS = 1000;
const BACKOFF_CAP_MS = 60000;
const NEVER_RESEND = new Set([400, 403, 413, 422, 431]); // 431: headers too large (docs/protocol.md)
const STORED = new Set([200, 201]);

/** A ledger mark as the box sends it ({epoch, safe_seq}), or null (an older box, or not a mark). */
function ledgerMark(value) {
  return value && typeof value.epoch === "string" && Number.isInteger(value.safe_seq)
    ? { epoch: value.epoch, safe_seq: value.safe_seq }
    : null;
}

/** This sheet will never be stored as it is: set it aside for the judge (a session closed to them too). */
function refusedForGood(status, problem) {
  return NEVER_RESEND.has(status) || closedBy(problem, status) !== null;
}

export class Outbox extends EventTarget {
  constructor(api) {
    super();
    this.api = api;
    this.records = new Map();
    this.session = null; // {token, judgeId}: whose sheets are sent, with which token
    this.lastSeq = 0;
    this.failures = 0; // failed rounds in a row
    this.lastStatus = null; // what the last failed round got (0: no answer), null after a success
    this.notBefore = 0; // backoff
    this.retryAfterUntil = 0; // the box's own Retry-After
    this.timer = null;
    this.flushing = false;
    this.again = false;
    this.needsPairing = false;
    this.ledger = null; // the last ledger mark the box sent ({epoch, safe_seq}), kept in kv
    this.marking = Promise.resolve(); // marks are applied one at a time, in the order they came
  }

  async load() {
    for (const record of await sheetStore.all()) {
      this.records.set(record.sheet_id, record);
      this.lastSeq = Math.max(this.lastSeq, record.seq);
    }
    this.ledger = (await kv.get("ledger")) ?? null;
    this.#changed();
  }

  /** Send as this paired judge from now on (after pairing, or a new pairing after a 401). */
  setSession(session) {
    this.session = session;
    this.needsPairing = false;
    this.failures = 0;
    this.notBefore = 0;
    this.#changed();
    this.flushSoon(0);
  }

  /** Sheets of one judge for one entry, oldest first (every state). */
  forEntry(judgeId, entryId) {
    return this.#sorted().filter((r) => r.judge_id === judgeId && r.entry_id === entryId);
  }

  /** Sheets waiting to be sent: all of them, or one judge's. */
  waiting(judgeId = null) {
    return this.#sorted().filter((r) => r.state === "queued" && (judgeId === null || r.judge_id === judgeId));
  }

  /** Sheets set aside for the judge to look at. */
  aside(judgeId) {
    return this.#sorted().filter((r) => r.state === "aside" && r.judge_id === judgeId);
  }

  /** Sheets the box stored but could still lose, kept until its safe watermark passes them. */
  kept() {
    return this.#sorted().filter((r) => r.state === "stored" && r.kept);
  }

  get(sheetId) {
    return this.records.get(sheetId) ?? null;
  }

  /** Keep a new sheet on the tablet (resolves once it is on disk), then send it. */
  async add({ judgeId, eventId, body }) {
    this.lastSeq = Math.max(this.lastSeq + 1, Date.now());
    const record = {
      sheet_id: body.sheet_id,
      seq: this.lastSeq,
      judge_id: judgeId,
      event_id: eventId,
      entry_id: body.entry_id,
      body,
      state: "queued",
      kept_at: new Date().toISOString(),
      problem: null,
      receipt: null,
    };
    await this.#save(record);
    this.flushSoon(0);
    return record;
  }

  /** The judge's choice for a sheet set aside: it stays in the tablet's history, marked so. */
  async discard(sheetId) {
    const record = this.records.get(sheetId);
    if (record && record.state === "aside") await this.#save({ ...record, state: "discarded" });
  }

  /** Try again soon, never sooner than the backoff or Retry-After allow. */
  flushSoon(delayMs = 0) {
    clearTimeout(this.timer);
    const wait = Math.max(delayMs, this.notBefore - Date.now(), this.retryAfterUntil - Date.now(), 0);
    this.timer = setTimeout(() => this.flush(), wait);
  }

  /**
   * The box answered (a heartbeat): if sending failed because it could not be reached, stop
   * backing off and send now. A heartbeat saying the box is not `frozen` after a 423 ends that
   * 423's Retry-After too (PROTOCOL.md: "retry ... when a heartbeat says unfrozen").
   */
  nudge({ frozen = false } = {}) {
    const unfrozen = !frozen && this.lastStatus === 423;
    if (unfrozen) this.retryAfterUntil = 0;
    if (this.lastStatus === 0 || unfrozen) {
      this.failures = 0;
      this.notBefore = 0;
      if (this.session && this.waiting(this.session.judgeId).length) this.flushSoon(0);
    }
  }

  /**
   * A ledger mark from the box (a heartbeat's or a sheet answer's `ledger`; anything else is
   * ignored): kept sheets it makes safe are kept no longer; every sheet kept from another epoch
   * goes back into the queue and is sent at once. Never rejects: a mark that could not be written
   * is as good as the next one (every heartbeat brings one).
   */
  applyMark(value) {
    const mark = ledgerMark(value);
    if (!mark) return this.marking;
    this.marking = this.marking.then(() => this.#applyMark(mark)).catch(() => {});
    return this.marking;
  }

  async #applyMark(mark) {
    const again = [];
    const safe = [];
    for (const record of this.kept()) {
      // Each sheet's own epoch decides, not only the last one seen: a sheet answer that crossed
      // the box's restart is sent again at the next mark (the box answers 200 if it has it).
      if (record.kept.epoch !== mark.epoch) {
        again.push({ ...record, state: "queued", kept: null, receipt: null });
      } else if (record.kept.seq !== null && record.kept.seq <= mark.safe_seq) {
        safe.push({ ...record, kept: null });
      }
    }
    if (again.length || safe.length) await this.#saveAll([...again, ...safe]);
    if (this.ledger?.epoch !== mark.epoch || this.ledger?.safe_seq !== mark.safe_seq) {
      await kv.set("ledger", mark);
      this.ledger = mark;
    }
    if (again.length) {
      // A rebuilt box: what it may have lost goes now, ahead of newer sheets (the queue is in
      // the order sheets were made, so a correction still follows what it corrects).
      this.failures = 0;
      this.notBefore = 0;
      this.flushSoon(0);
    }
  }

  async flush() {
    if (this.flushing) {
      this.again = true;
      return;
    }
    this.flushing = true;
    try {
      do {
        this.again = false;
        await this.#rounds();
      } while (this.again);
    } finally {
      this.flushing = false;
      this.#changed();
    }
  }

  async #rounds() {
    let size = BATCH_MAX;
    while (this.session && !this.needsPairing) {
      const wait = Math.max(this.notBefore, this.retryAfterUntil) - Date.now();
      if (wait > 0) {
        this.flushSoon(wait);
        return;
      }
      const batch = this.waiting(this.session.judgeId).slice(0, size);
      if (!batch.length) {
        this.failures = 0;
        this.lastStatus = null;
        return;
      }
      const answer = await this.api.sheets(
        this.session.token,
        batch.map((record) => record.body),
      );
      if (answer.status === 200 && Array.isArray(answer.body?.results)) {
        if (!(await this.#settle(batch, answer.body.results, ledgerMark(answer.body.ledger)))) return;
      } else if (answer.status === 413 && batch.length > 1) {
        size = Math.max(1, Math.floor(batch.length / 2)); // too big together: split, never resend unchanged
      } else if (refusedForGood(answer.status, answer.problem) && batch.length > 1) {
        size = 1; // the call as a whole was refused: send one by one to find which sheet it is
      } else if (refusedForGood(answer.status, answer.problem)) {
        await this.#save({ ...batch[0], state: "aside", problem: answer.problem });
        this.#emit("aside", { sheetId: batch[0].sheet_id });
      } else {
        this.#refused(answer);
        return;
      }
    }
  }

  /**
   * Per-sheet results of a batch, with the answer's ledger `mark` (null from an older box).
   * -> true to go on with the next batch, false when waiting.
   */
  async #settle(batch, results, mark) {
    const queued = new Set(); // sheets of this batch that stay queued
    const originals = []; // what the corrections kept queued wait for
    let retry = null;
    let stored = 0;
    for (const [index, record] of batch.entries()) {
      const result = results[index];
      const status = result?.status ?? 0;
      if (STORED.has(status)) {
        const seq = result.sheet?.seq;
        const kept = mark ? { seq: Number.isInteger(seq) ? seq : null, epoch: mark.epoch } : null;
        await this.#save({ ...record, state: "stored", receipt: result.sheet ?? null, problem: null, kept });
        stored += 1;
      } else if (status === 409 && this.#goesFirst(record.body.supersedes, queued, mark)) {
        queued.add(record.sheet_id); // it corrects a sheet that is sent again first: it goes after it
        originals.push(record.body.supersedes);
      } else if (status === 409 || refusedForGood(status, result.problem)) {
        await this.#save({ ...record, state: "aside", problem: result.problem ?? { status } });
        this.#emit("aside", { sheetId: record.sheet_id });
      } else if (status === 401) {
        queued.add(record.sheet_id);
        this.#refused({ status, problem: result.problem, retryAfter: null });
        retry = null;
        break;
      } else {
        queued.add(record.sheet_id);
        retry = { status, problem: result?.problem ?? null, retryAfter: null };
      }
    }
    if (stored) this.#emit("stored", { count: stored });
    if (mark) await this.applyMark(mark);
    // Never ask again at once for nothing: if no original is queued now (a mark that could not be
    // written), the corrections wait for the next round like any sheet the box did not take.
    if (originals.length && !originals.some((id) => this.records.get(id)?.state === "queued")) {
      retry ??= { status: 409, problem: null, retryAfter: null };
    }
    if (this.needsPairing) return false;
    if (retry) {
      this.#refused(retry);
      return false;
    }
    this.failures = 0;
    this.lastStatus = null;
    return true;
  }

  /**
   * Whether the sheet a 409'd correction supersedes is still to be sent before it: queued (in
   * this batch or not), or kept from another epoch than this answer's (the box was rebuilt and
   * lost it; the mark puts it back in the queue, ahead of the correction).
   */
  #goesFirst(supersedes, queued, mark) {
    if (!supersedes) return false;
    if (queued.has(supersedes)) return true;
    const original = this.records.get(supersedes);
    if (original?.state === "queued") return true;
    return Boolean(
      mark && original?.state === "stored" && original.kept && original.kept.epoch !== mark.epoch,
    );
  }

  /** The box did not store the sheets and they stay queued: why, and when to try again. */
  #refused(answer) {
    if (answer.status === 401) {
      this.needsPairing = true;
      this.#emit("unauthorized", { problem: answer.problem });
      return;
    }
    if (answer.status === 423) this.#emit("frozen", { reason: answer.problem?.detail ?? "" });
    this.failures += 1;
    this.lastStatus = answer.status;
    // Full jitter: uniform in [0, min(cap, base * 2^(n-1))].
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (this.failures - 1));
    this.notBefore = Date.now() + Math.random() * ceiling;
    if (answer.retryAfter !== null && answer.retryAfter !== undefined) {
      this.retryAfterUntil = Date.now() + answer.retryAfter;
    }
    this.flushSoon(0);
  }

  async #save(record) {
    await sheetStore.put(record);
    this.records.set(record.sheet_id, record);
    this.#changed();
  }

  async #saveAll(records) {
    await sheetStore.putAll(records);
    for (const record of records) this.records.set(record.sheet_id, record);
    this.#changed();
  }

  #sorted() {
    return [...this.records.values()].sort((a, b) => a.seq - b.seq);
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #changed() {
    this.#emit("change", {});
  }
}
