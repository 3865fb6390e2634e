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
 * sessions still open to them (not signed off, not locked); scratched entries are not scored.
 */
export function nextOpenEntry(event, outbox, judgeId, entryId = null) {
  const order = runningOrder(event);
  const start = entryId === null ? 0 : order.findIndex((place) => place.entry.entry_id === entryId) + 1;
  for (const place of [...order.slice(start), ...order.slice(0, start)]) {
    if (sessionState(place.session).closed || place.entry.scratched) continue;
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

/**
 * What a new schedule version changed on this judge's list, from the event held before to the one
 * just downloaded, as entry ids: `scratched` (newly), `restored` (scratched before, not now),
 * `walkedOn` (new on the list), `moved` (to another session, to another time, or out of its place
 * among the entries of its session that stayed there) and `gone` (off the list: to another panel's
 * session, or back to the unscheduled pool by a rollback).
 */
export function scheduleChanges(before, after) {
  const placesOf = (event) => new Map(runningOrder(event).map((place) => [place.entry.entry_id, place]));
  const was = placesOf(before);
  const now = placesOf(after);
  const changes = { scratched: [], restored: [], walkedOn: [], moved: [], gone: [] };
  for (const [entryId, place] of now) {
    const old = was.get(entryId);
    if (!old) {
      if (!place.entry.scratched) changes.walkedOn.push(entryId);
      continue;
    }
    if (place.entry.scratched && !old.entry.scratched) changes.scratched.push(entryId);
    else if (!place.entry.scratched && old.entry.scratched) changes.restored.push(entryId);
    if (
      place.session.id !== old.session.id ||
      (place.entry.scheduled_at ?? null) !== (old.entry.scheduled_at ?? null)
    ) {
      changes.moved.push(entryId);
    }
  }
  for (const entryId of was.keys()) if (!now.has(entryId)) changes.gone.push(entryId);
  // Within a session, a walk-on or a move renumbers the entries after it: only the entries out of
  // their order among those that stayed (the fewest, outside a longest run kept in order) moved.
  const moved = new Set(changes.moved);
  for (const session of panelSessions(after)) {
    const stayed = session.entries
      .map((entry) => was.get(entry.entry_id))
      .filter((old) => old && old.session.id === session.id);
    for (const old of outOfOrder(stayed, (place) => place.entry.order)) moved.add(old.entry.entry_id);
  }
  changes.moved = [...now.keys()].filter((entryId) => moved.has(entryId));
  return changes;
}

/** The items outside a longest run whose `key` increases (the fewest that must have moved). */
function outOfOrder(items, key) {
  const runs = items.map(() => 1);
  const from = items.map(() => -1);
  let best = -1;
  items.forEach((item, i) => {
    for (let j = 0; j < i; j += 1) {
      if (key(items[j]) < key(item) && runs[j] + 1 > runs[i]) {
        runs[i] = runs[j] + 1;
        from[i] = j;
      }
    }
    if (best < 0 || runs[i] > runs[best]) best = i;
  });
  const kept = new Set();
  for (let i = best; i >= 0; i = from[i]) kept.add(i);
  return items.filter((_, i) => !kept.has(i));
}

/** "Schedule updated: 142 scratched, 305 walked on" (what changed on the judge's list, counted). */
export function scheduleSummary(changes) {
  const parts = [
    [changes.scratched, "scratched"],
    [changes.restored, "restored"],
    [changes.walkedOn, "walked on"],
    [changes.moved, "moved"],
    [changes.gone, "no longer on your list"],
  ]
    .filter(([ids]) => ids.length)
    .map(([ids, words]) => `${ids.length} ${words}`);
  return parts.length
    ? `Schedule updated: ${parts.join(", ")}`
    : "Schedule updated: nothing changed on your list";
}

/** "Scratched: 104, 107 · Walked on: 501" (at most `most` entries of each kind named). */
export function scheduleDetails(changes, most = 8) {
  const named = (ids) =>
    ids.length > most ? `${ids.slice(0, most).join(", ")} and ${ids.length - most} more` : ids.join(", ");
  return [
    [changes.scratched, "Scratched"],
    [changes.restored, "Restored"],
    [changes.walkedOn, "Walked on"],
    [changes.moved, "Moved"],
    [changes.gone, "No longer on your list"],
  ]
    .filter(([ids]) => ids.length)
    .map(([ids, words]) => `${words}: ${named(ids)}`)
    .join(" · ");
}
