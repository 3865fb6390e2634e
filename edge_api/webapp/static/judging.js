// What the judge sees of the event and of their sheets: entries in running order, and for an
// entry the chain of their sheets (originals and corrections), merging what the box said it holds
// (GET /event: the current sheet, the head of the chain) with what this tablet made and queued.

/** The sessions on this judge's panel, each with its entries in running order. */
export function panelSessions(event) {
  return (event?.sessions ?? [])
    .filter((session) => session.on_panel)
    .map((session) => ({ ...session, entries: [...session.entries].sort((a, b) => a.order - b.order) }));
}

/** Every entry the judge scores, in running order, with its session and neighbours. */
export function runningOrder(event) {
  const order = [];
  for (const session of panelSessions(event)) {
    session.entries.forEach((entry, index) => {
      order.push({ entry, session, index, count: session.entries.length });
    });
  }
  return order;
}

export function findEntry(event, entryId) {
  const order = runningOrder(event);
  const at = order.findIndex((place) => place.entry.entry_id === entryId);
  if (at < 0) return null;
  return { ...order[at], previous: order[at - 1]?.entry ?? null, next: order[at + 1]?.entry ?? null };
}

/**
 * The judge's sheets for one entry: `versions` newest first (each with its state: "stored",
 * "queued", "aside", "discarded"), `current` the head of the chain (null when unscored) and
 * `aside` the sheets set aside for the judge to look at.
 */
export function chainFor(event, outbox, judgeId, entryId) {
  const versions = new Map();
  for (const record of outbox.forEntry(judgeId, entryId)) {
    versions.set(record.sheet_id, {
      sheet_id: record.sheet_id,
      values: record.body.values,
      comment: record.body.comment ?? null,
      submitted_at: record.body.submitted_at,
      supersedes: record.body.supersedes ?? null,
      state: record.state,
      problem: record.problem,
      seq: record.seq,
    });
  }
  const head = (event?.sheets ?? []).find((sheet) => sheet.entry_id === entryId) ?? null;
  if (head) {
    const known = versions.get(head.sheet_id);
    // The box holds it, whatever this tablet last heard (an answer lost on the way counts).
    versions.set(head.sheet_id, known ? { ...known, state: "stored" } : { ...head, state: "stored", seq: 0 });
  }
  const live = [...versions.values()].filter((v) => v.state === "stored" || v.state === "queued");
  let current = head ? versions.get(head.sheet_id) : (live.find((v) => v.supersedes === null) ?? null);
  // Follow corrections this tablet made (sent or still queued) past what the box last said.
  for (let hops = 0; current && hops < 1000; hops += 1) {
    const correction = live.find((v) => v.supersedes === current.sheet_id);
    if (!correction) break;
    current = correction;
  }
  const sorted = [...versions.values()].sort(
    (a, b) => b.seq - a.seq || String(b.submitted_at).localeCompare(String(a.submitted_at)),
  );
  return {
    current,
    versions: sorted.map((v) => ({ ...v, current: current !== null && v.sheet_id === current.sheet_id })),
    aside: sorted.filter((v) => v.state === "aside"),
  };
}

/** "scored" (on the box), "waiting" (queued on the tablet), "attention" (set aside) or "open". */
export function entryStatus(chain) {
  if (chain.current) return chain.current.state === "queued" ? "waiting" : "scored";
  return chain.aside.length ? "attention" : "open";
}

/**
 * Whether the judge may still send sheets for a session, as the event download last said:
 * `signedOffAt` (RFC 3339) once this judge signed it off (null after the tech reopens it), `locked`
 * (with the tech's `reason`) while the tech has it locked. `closed`: either, so its entries are
 * read-only on this tablet.
 */
export function sessionState(session) {
  const signedOffAt = session?.signed_off_at ?? null;
  const locked = Boolean(session?.locked);
  return {
    signedOffAt,
    locked,
    reason: session?.locked_reason ?? null,
    closed: Boolean(signedOffAt) || locked,
  };
}

/** A refusal because the session is closed to this judge: 423 `signed-off` or `session-locked` (or null). */
export function closedBy(problem, status = problem?.status) {
  const type = String(problem?.type ?? "");
  if (status !== 423) return null;
  if (type.endsWith("/signed-off")) return "signed-off";
  if (type.endsWith("/session-locked")) return "session-locked";
  return null;
}

/**
 * The first entry after `entryId` in running order that the judge has not scored (or null), in the
 * sessions still open to them (not signed off, not locked).
 */
export function nextOpenEntry(event, outbox, judgeId, entryId = null) {
  const order = runningOrder(event);
  const start = entryId === null ? 0 : order.findIndex((place) => place.entry.entry_id === entryId) + 1;
  for (const place of [...order.slice(start), ...order.slice(0, start)]) {
    if (sessionState(place.session).closed) continue;
    const chain = chainFor(event, outbox, judgeId, place.entry.entry_id);
    if (entryStatus(chain) === "open") return place.entry;
  }
  return null;
}

/** A time from the event (RFC 3339) in the event's own timezone: "Sat 08:00". */
export function eventTime(event, iso, withDay = true) {
  if (!iso) return "";
  try {
    return new Intl.DateTimeFormat("en-CA", {
      timeZone: event?.event?.timezone || undefined,
      weekday: withDay ? "short" : undefined,
      hour: "2-digit",
      minute: "2-digit",
      hourCycle: "h23",
    }).format(new Date(iso));
  } catch {
    return iso;
  }
}
