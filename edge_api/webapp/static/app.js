// The judge app: owns the state (pairing, the judge's event, freeze), wires the API client, the
// sheet queue and the heartbeat together, and shows one view at a time. Views never talk HTTP;
// they call the functions on `app`.

import { Api } from "./api.js";
import { kv, openDb } from "./db.js";
import { announce, focusHeading, h, sheets } from "./dom.js";
import { Heartbeat } from "./heartbeat.js";
import { closedBy, scheduleChanges, scheduleDetails, scheduleSummary } from "./judging.js";
import { Outbox } from "./outbox.js";
import { APP_VERSION } from "./version.js";
import { entryView } from "./view-entry.js";
import { finishView } from "./view-finish.js";
import { pairingView } from "./view-pairing.js";
import { sessionsView } from "./view-sessions.js";

const EVENT_REFRESH_MS = 60000;

const api = new Api();
const outbox = new Outbox(api);
const heartbeat = new Heartbeat(api, outbox);

export const app = {
  api,
  outbox,
  pairing: null, // the pairing answer kept on the tablet: device_id, token, judge, event
  event: null, // GET /event for this judge (kept for working offline)
  eventEtag: null,
  health: null, // GET /health: the box's name, its event, frozen
  freeze: { frozen: false, reason: "" },
  repair: null, // why the judge must pair again (a 401), or null
  pairCode: null, // a code from the QR code's URL (?pair=...)
  // One line for the next view: a text, or the sheet just submitted ({sheetId, entryId,
  // correction}), whose line follows where the sheet is ("saved on the box").
  notice: "",
  keepTyping: false, // the next view opens with its first score field focused (after a submit)
  onlyToScore: false, // the entry list shows only the entries still to score
  drafts: new Set(), // entries this judge has an unsent draft for (kv "draft:<judge>:<entry>")
  offlineReload: null, // why the page cannot reopen offline (no service worker), or null
  // A new schedule version downloaded and not dismissed yet: {base, changes}, `base` the event held
  // before the first such version (later ones are counted from it too), or null.
  scheduleNews: null,
  view: null,

  judgeId() {
    return app.pairing?.judge?.id ?? null;
  },

  navigate(hash) {
    if (location.hash === hash) render();
    else location.hash = hash;
  },

  /** Build the view again where it is (what it shows changed shape), keeping the line shown above it. */
  rebuild() {
    if (shownNotice) app.notice = shownNotice.notice;
    render();
  },

  /** A new sheet: kept on the tablet (IndexedDB) before anything else, then sent. */
  async submitSheet(body) {
    const record = await outbox.add({ judgeId: app.judgeId(), eventId: app.pairing.event.id, body });
    return record;
  },

  async discardSheet(sheetId) {
    await outbox.discard(sheetId);
  },

  /** The draft of a sheet typed for an entry but not submitted yet (null when there is none). */
  async loadDraft(entryId) {
    return (await kv.get(draftKey(app.judgeId(), entryId))) ?? null;
  },

  /** Keep what is typed for an entry on the tablet (the latest wins); null drops the draft. */
  keepDraft(entryId, draft) {
    if (draft) app.drafts.add(entryId);
    else app.drafts.delete(entryId);
    return queueDraft(draftKey(app.judgeId(), entryId), draft);
  },

  /**
   * Sign off a session ("I have finished scoring it"). It needs the box: the answer as the API
   * gives it (status 0 when the box cannot be reached: nothing is signed off then). On success the
   * session shows as signed off at once, and the event download confirms it.
   */
  async signOff(sessionId) {
    const answer = await api.signOff(app.pairing.token, sessionId);
    if (answer.ok) {
      const at = answer.body?.signed_off_at ?? new Date().toISOString();
      const session = app.event?.sessions?.find((s) => s.id === sessionId);
      if (session) session.signed_off_at = at;
      update();
      refreshEvent();
    } else if (answer.status === 401) {
      needsPairing(answer.problem);
    }
    return answer;
  },

  async pair(code, deviceName) {
    const answer = await api.pair(code, deviceName);
    if (answer.status === 201) await paired(answer.body, deviceName);
    return answer;
  },

  async refreshHealth() {
    const answer = await api.health();
    if (answer.ok) {
      app.health = answer.body;
      if (answer.body.frozen && !app.freeze.frozen) app.freeze = { frozen: true, reason: app.freeze.reason };
      if (!answer.body.frozen && !app.pairing) app.freeze = { frozen: false, reason: "" };
      update();
    }
    return answer;
  },
};

async function paired(body, deviceName) {
  const pairing = {
    device_id: body.device_id,
    token: body.token,
    token_expires_at: body.token_expires_at ?? null,
    judge: body.judge,
    event: body.event,
    device_name: deviceName,
    paired_at: new Date().toISOString(),
  };
  await kv.set("pairing", pairing);
  await kv.set("device_name", deviceName);
  const sameJudge = app.pairing?.judge?.id === pairing.judge.id;
  app.pairing = pairing;
  app.repair = null;
  if (!sameJudge) {
    app.event = null;
    app.eventEtag = null;
    app.scheduleNews = null;
  }
  app.notice = `Paired as ${pairing.judge.name} for ${pairing.event.name}.`;
  startSession();
  loadDraftList();
  await refreshEvent();
  app.navigate("#/sessions");
}

function draftKey(judgeId, entryId) {
  return `draft:${judgeId}:${entryId}`;
}

// Draft writes, one at a time and only the latest per entry: typing writes often, and a drop
// queued after a write lands after it. The promise resolves once everything queued is written.
const draftPending = new Map();
let draftWriting = null;

function queueDraft(key, draft) {
  draftPending.set(key, draft);
  draftWriting ??= writeDrafts();
  return draftWriting;
}

async function writeDrafts() {
  while (draftPending.size) {
    const [key, draft] = draftPending.entries().next().value;
    draftPending.delete(key);
    try {
      if (draft) await kv.set(key, draft);
      else await kv.delete(key);
    } catch {
      // A draft is a convenience: the next keystroke writes it again.
    }
  }
  draftWriting = null;
}

/** Which entries the paired judge left a draft for (the entry list marks them). */
async function loadDraftList() {
  const prefix = draftKey(app.judgeId(), "");
  try {
    app.drafts = new Set((await kv.keys(prefix)).map((key) => key.slice(prefix.length)));
  } catch {
    app.drafts = new Set(); // the list only loses its "Draft" marks; each entry still reads its own
  }
  update();
}

function startSession() {
  outbox.setSession({ token: app.pairing.token, judgeId: app.pairing.judge.id });
  heartbeat.start(app.pairing.token);
}

let refreshing = null;
async function refreshEvent() {
  if (!app.pairing) return;
  refreshing ??= (async () => {
    const answer = await api.event(app.pairing.token, app.event ? app.eventEtag : null);
    if (answer.ok && answer.body) {
      const first = app.event === null;
      noteSchedule(app.event, answer.body);
      app.event = answer.body;
      app.eventEtag = answer.etag;
      await kv.set("event", { judge_id: app.pairing.judge.id, etag: answer.etag, body: answer.body });
      if (first) render();
      else update();
    } else if (answer.status === 401) {
      needsPairing(answer.problem);
    }
  })().finally(() => {
    refreshing = null;
  });
  return refreshing;
}

/**
 * A download with another schedule version than the event held (a publish or a rollback on the box):
 * what changed on the judge's list is counted for the banner, from the event held before the first
 * version not yet dismissed.
 */
function noteSchedule(before, after) {
  const version = (event) => (typeof event?.event_version === "number" ? event.event_version : null);
  if (version(before) === null || version(after) === null || version(before) === version(after)) return;
  const base = app.scheduleNews?.base ?? before;
  app.scheduleNews = { base, changes: scheduleChanges(base, after) };
}

/** A 401: the token is unknown, revoked or expired. Sheets stay queued; pair again to send them. */
function needsPairing(problem) {
  if (app.repair) return;
  app.repair = { detail: problem?.detail || "the box no longer knows this tablet" };
  heartbeat.stop();
  app.navigate("#/pair");
}

function onHeartbeat(answer) {
  const wasFrozen = app.freeze.frozen;
  app.freeze = answer.frozen
    ? { frozen: true, reason: answer.freeze_reason ?? "" }
    : { frozen: false, reason: "" };
  outbox.nudge({ frozen: answer.frozen });
  // The box's safe watermark: kept sheets it makes safe are let go; a new epoch sends them again.
  outbox.applyMark(answer.ledger);
  // A schedule version other than the event held: download the event again (If-None-Match).
  if (typeof answer.event_version === "number" && answer.event_version !== app.event?.event_version) {
    refreshEvent();
  }
  if (wasFrozen && !answer.frozen) announce("Scoring has resumed.");
  update();
}

/** The line about the sheet just submitted: where it is now, on the tablet or on the box. */
function noticeText(notice) {
  if (typeof notice === "string") return { text: notice, settled: true };
  const what = `${notice.correction ? "Correction" : "Sheet"} for entry ${notice.entryId}`;
  const record = outbox.get(notice.sheetId);
  if (record?.state === "stored") return { text: `${what} saved on the box.`, settled: true };
  if (record?.state === "aside") {
    const closed = closedBy(record.problem);
    if (closed === "signed-off") {
      return {
        text: `${what} was refused: you signed off this session. Your scores are kept here.`,
        settled: true,
      };
    }
    if (closed === "session-locked") {
      return {
        text: `${what} was refused: the venue tech locked this session. Your scores are kept here.`,
        settled: true,
      };
    }
    return { text: `${what} was not stored by the box: it needs your attention.`, settled: true };
  }
  const waiting = `${what} saved on this tablet, waiting to send`;
  if (app.repair) return { text: `${waiting}: pair this tablet again to send it.`, settled: true };
  if (app.freeze.frozen) return { text: `${waiting}: scoring is paused by the venue tech.`, settled: true };
  if (api.reachable === false) return { text: `${waiting}: the box cannot be reached.`, settled: true };
  if (outbox.failures > 0) return { text: `${waiting}: the box did not take it yet.`, settled: true };
  return { text: `${what} saved on this tablet; sending it to the box…`, settled: false };
}

let shownNotice = null; // {notice, element, text} while the view shows a notice

function updateNotice() {
  if (!shownNotice) return;
  const { text, settled } = noticeText(shownNotice.notice);
  if (text === shownNotice.text) return;
  shownNotice.text = text;
  shownNotice.element.textContent = text;
  if (settled) announce(text);
}

function render() {
  const main = document.getElementById("main");
  const hash = location.hash || "";
  const entry = hash.match(/^#\/entry\/([^/]+)(?:\/(correct|edit)(?:\/([^/]+))?)?$/);
  const finish = hash.match(/^#\/finish\/([^/]+)$/);
  if (!app.pairing || app.repair || hash === "#/pair") app.view = pairingView(app);
  else if (finish) app.view = finishView(app, decodeURIComponent(finish[1]));
  else if (entry) {
    const entryId = decodeURIComponent(entry[1]);
    app.view = entryView(app, { entryId, mode: entry[2] ?? "view", sourceId: entry[3] ?? null });
  } else app.view = sessionsView(app);
  // What just happened ("Sheet for entry 101 saved on the box"), shown above the new view and
  // announced; a sheet's line follows it until it is on the box or waits for a reason.
  shownNotice = null;
  let said = "";
  if (app.notice) {
    const { text } = noticeText(app.notice);
    shownNotice = { notice: app.notice, element: h("p", { class: "notice" }, text), text };
    said = text;
    app.notice = "";
  }
  main.replaceChildren(...(shownNotice ? [shownNotice.element] : []), app.view.root);
  // A new screen opens at its top; after a submit, on the next entry's first score with the
  // keyboard still up (the heading is then said with the notice).
  window.scrollTo(0, 0);
  const keepTyping = app.keepTyping && app.view.firstField;
  app.keepTyping = false;
  if (keepTyping) {
    app.view.firstField.focus({ preventScroll: true });
    const heading = main.querySelector("h1")?.textContent ?? "";
    said = [said, heading].filter(Boolean).join(" ");
  } else focusHeading(main);
  if (said) announce(said);
  updateChrome();
}

/** Something changed (the queue, the event, the freeze, the link): redraw what shows it. */
function update() {
  app.view?.update?.();
  updateNotice();
  updateChrome();
}

function setText(id, ...parts) {
  document.getElementById(id).replaceChildren(...parts.filter(Boolean));
}

function updateChrome() {
  const judgeId = app.judgeId();
  const waiting = outbox.waiting().length;
  const offline = api.reachable === false;

  setText(
    "who",
    app.pairing ? `${app.pairing.judge.name} · ${app.event?.event?.name ?? app.pairing.event.name}` : "",
  );
  setText("link-state", offline ? "Offline" : api.reachable ? "Connected" : "Connecting…");
  setText("reload-banner", app.offlineReload);
  updateScheduleBanner();
  document.body.classList.toggle("is-offline", offline);
  document.body.classList.toggle("is-frozen", app.freeze.frozen);

  setText(
    "freeze-banner",
    app.freeze.frozen &&
      h("strong", {}, `Scoring paused by the venue tech${app.freeze.reason ? `: ${app.freeze.reason}` : ""}`),
    app.freeze.frozen &&
      h(
        "span",
        {},
        waiting
          ? ` — ${sheets(waiting)} waiting on this tablet; they are sent when scoring resumes.`
          : " — you can keep scoring; sheets wait on this tablet until scoring resumes.",
      ),
  );

  setText(
    "pairing-banner",
    app.repair &&
      `This tablet must be paired again: ${app.repair.detail}.` +
        (waiting
          ? ` ${sheets(waiting)} ${waiting === 1 ? "is" : "are"} kept on this tablet, sent after pairing.`
          : ""),
  );

  let queueText = "";
  if (offline) {
    queueText = waiting
      ? `offline — ${sheets(waiting)} waiting`
      : "offline — the box cannot be reached; new sheets are kept on this tablet";
  } else if (waiting && outbox.failures > 0 && !app.freeze.frozen && !app.repair) {
    queueText = `${sheets(waiting)} waiting — the box did not store them yet; trying again`;
  }
  setText("queue-banner", queueText);

  const aside = judgeId ? outbox.aside(judgeId) : [];
  const otherJudges = judgeId ? outbox.waiting().filter((r) => r.judge_id !== judgeId).length : 0;
  setText(
    "attention-banner",
    aside.length > 0 &&
      h("span", {}, `${sheets(aside.length)} ${aside.length === 1 ? "needs" : "need"} your attention. `),
    aside.length > 0 &&
      h("a", { href: `#/entry/${encodeURIComponent(aside[0].entry_id)}` }, `Show entry ${aside[0].entry_id}`),
    otherJudges > 0 &&
      h(
        "span",
        {},
        ` ${sheets(otherJudges)} scored by another judge on this tablet wait here: pair it to that judge again to send them.`,
      ),
  );

  setText(
    "footer",
    h(
      "span",
      {},
      `Judge app ${APP_VERSION}${app.health ? ` · box ${app.health.name || app.health.box}` : ""}`,
    ),
    app.pairing && !app.repair && h("a", { href: "#/pair", class: "footer-link" }, "Pair this tablet again"),
  );
}

let shownSchedule = null; // the schedule banner's text, built again only when it changes (focus stays)

/** "Schedule updated: 1 scratched, 1 walked on", the entries named, until the judge dismisses it. */
function updateScheduleBanner() {
  const news = app.pairing && !app.repair ? app.scheduleNews : null;
  const summary = news ? scheduleSummary(news.changes) : null;
  const details = news ? scheduleDetails(news.changes) : "";
  const text = summary && `${summary}. ${details}`;
  if (text === shownSchedule) return;
  shownSchedule = text;
  setText(
    "schedule-banner",
    summary && h("strong", {}, `${summary}.`),
    details && h("span", { class: "schedule-details" }, ` ${details}.`),
    summary &&
      h(
        "button",
        {
          type: "button",
          class: "banner-dismiss",
          onclick: () => {
            app.scheduleNews = null;
            updateChrome();
            focusHeading(document.getElementById("main"));
          },
        },
        "OK",
      ),
  );
}

/** ?pair=CODE (the QR code on the console) fills the pairing form; the code leaves the address bar. */
function takePairCode() {
  const params = new URLSearchParams(location.search);
  const code = params.get("pair");
  if (code === null) return null;
  history.replaceState(null, "", location.pathname + location.hash);
  return code;
}

/**
 * Service workers need a secure context (HTTPS the tablet trusts, or localhost); the app works
 * without one, but a reload while the box is out of reach then shows the browser's error page.
 * Say so as soon as it is known, with what to do meanwhile and how to fix it.
 */
function registerServiceWorker() {
  const insecure = !window.isSecureContext;
  if (insecure || !("serviceWorker" in navigator)) {
    noOfflineReload(insecure);
    return;
  }
  navigator.serviceWorker
    .register("/sw.js", { scope: "/" })
    .then((registration) => {
      // A browser that blocks workers may answer with no registration; one that could not keep
      // the app's files drops the new worker ("redundant") and keeps none.
      if (!registration) return noOfflineReload(false);
      const worker = registration.installing ?? registration.waiting;
      worker?.addEventListener("statechange", () => {
        if (worker.state === "redundant" && !registration.active) noOfflineReload(false);
      });
    })
    .catch(() => noOfflineReload(false));
}

function noOfflineReload(insecure) {
  app.offlineReload =
    "Offline reload is not available on this tablet: keep this tab open, and don't reload it while " +
    "the Wi-Fi is down (your sheets stay on the tablet either way). " +
    (insecure
      ? "To fix it, the box must serve HTTPS with a certificate this tablet trusts: ask the venue tech."
      : "To fix it, ask the venue tech to install the box's certificate on this tablet, then open " +
        "the app again from the pairing link.");
  updateChrome();
}

async function boot() {
  const main = document.getElementById("main");
  try {
    await openDb();
    await outbox.load();
  } catch (error) {
    main.replaceChildren(
      h("h1", {}, "This tablet cannot keep sheets"),
      h(
        "p",
        { class: "problem" },
        `${error.message}. Open the app in a normal (not private) browser window.`,
      ),
    );
    return;
  }
  app.pairCode = takePairCode();
  if (app.pairCode) location.hash = "#/pair";
  app.pairing = (await kv.get("pairing")) ?? null;
  const kept = await kv.get("event");
  if (app.pairing && kept && kept.judge_id === app.pairing.judge.id) {
    app.event = kept.body;
    app.eventEtag = kept.etag;
  }

  outbox.addEventListener("change", update);
  outbox.addEventListener("stored", () => refreshEvent());
  outbox.addEventListener("aside", () => refreshEvent());
  outbox.addEventListener("frozen", (e) => {
    app.freeze = { frozen: true, reason: e.detail.reason || app.freeze.reason };
    update();
  });
  outbox.addEventListener("unauthorized", (e) => needsPairing(e.detail.problem));
  heartbeat.addEventListener("answer", (e) => onHeartbeat(e.detail));
  heartbeat.addEventListener("unauthorized", (e) => needsPairing(e.detail.problem));
  api.addEventListener("reachability", () => {
    if (api.reachable) outbox.nudge({ frozen: app.freeze.frozen });
    update();
  });
  window.addEventListener("hashchange", render);
  // Back from sleep or from another app: say hello, send what waits, see what changed.
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState !== "visible" || !app.pairing || app.repair) return;
    heartbeat.soon(0);
    outbox.flushSoon(0);
    refreshEvent();
  });
  window.addEventListener("online", () => {
    heartbeat.soon(0);
    outbox.nudge({ frozen: app.freeze.frozen });
  });
  setInterval(() => {
    if (app.pairing && !app.repair) refreshEvent();
  }, EVENT_REFRESH_MS);

  if (app.pairing) {
    startSession();
    refreshEvent();
    await loadDraftList();
  }
  render();
  app.refreshHealth();
  registerServiceWorker();
  // Ask the browser not to evict the queue under storage pressure (secure contexts only).
  navigator.storage?.persist?.().catch(() => {});
}

boot();
