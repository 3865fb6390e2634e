// "Finish scoring <session>": the judge signs a session off. What they have not scored in it comes
// first (entries without a sheet, sheets set aside, drafts not submitted, sheets still waiting on
// this tablet), then the question; only a yes sends the sign-off (POST /sessions/{id}/final), and
// only the box can take it: offline, nothing is signed off and the page says so. Scratched entries
// are not to score: they are not listed as left (a sheet of theirs still waiting is).

import { h, sheets } from "./dom.js";
import { chainFor, entryStatus, eventTime, panelSessions, sessionState } from "./judging.js";

function problemText(problem) {
  return [problem?.title, problem?.detail].filter(Boolean).join(" — ");
}

function entryLink(entry, words) {
  return h(
    "li",
    {},
    h(
      "a",
      { href: `#/entry/${encodeURIComponent(entry.entry_id)}`, "data-key": entry.entry_id },
      `${entry.entry_id} · ${entry.title}`,
    ),
    ` — ${words}`,
  );
}

export function finishView(app, sessionId) {
  const root = h("section", { class: "view view-finish", "aria-labelledby": "finish-heading" });
  const back = h("p", {}, h("a", { class: "button", href: "#/sessions" }, "Back to your entries"));
  const body = h("div", { class: "finish-body" });
  const failure = h("p", { class: "form-error", role: "alert" });
  let sending = false;
  let shown = null; // what the page shows now: it is built again only when that changes (focus stays)

  function session() {
    return panelSessions(app.event).find((s) => s.id === sessionId) ?? null;
  }

  const first = session();
  root.append(
    h("h1", { id: "finish-heading" }, first ? `Finish scoring ${first.name}` : "Finish scoring"),
    body,
    failure,
    back,
  );

  /** What the judge has not finished in the session, as it stands on this tablet. */
  function whatIsLeft(current) {
    const judgeId = app.judgeId();
    const unscored = [];
    const drafts = [];
    const waiting = [];
    for (const entry of current.entries) {
      const chain = chainFor(app.event, app.outbox, judgeId, entry.entry_id);
      const status = entryStatus(chain);
      const draft = app.drafts.has(entry.entry_id);
      if (status === "waiting") waiting.push(entry);
      if (entry.scratched) continue;
      if (status === "open") {
        unscored.push({ entry, words: draft ? "not scored (a draft is typed)" : "not scored" });
      } else if (status === "attention") {
        unscored.push({ entry, words: "not stored: your sheet needs your attention" });
      } else if (draft) {
        drafts.push({ entry, words: "a correction typed and not submitted" });
      }
    }
    return { unscored, drafts, waiting };
  }

  function update() {
    if (sending) return;
    const current = session();
    const state = sessionState(current);
    if (!app.event || !current || state.signedOffAt) shown = null;
    if (!app.event) {
      body.replaceChildren(h("p", {}, "Loading the entries…"));
      return;
    }
    if (!current) {
      body.replaceChildren(h("p", { class: "problem" }, `Session ${sessionId} is not on your panel.`));
      return;
    }
    if (state.signedOffAt) {
      body.replaceChildren(
        h(
          "p",
          { class: "session-final" },
          `Finished — signed off at ${eventTime(app.event, state.signedOffAt, false)}.`,
        ),
        h(
          "p",
          {},
          "Your sheets for this session are read-only: ask the tech to reopen it to change a score.",
        ),
      );
      return;
    }
    const { unscored, drafts, waiting } = whatIsLeft(current);
    const count = current.entries.filter((entry) => !entry.scratched).length;
    const showing = JSON.stringify([
      state,
      count,
      unscored.map(({ entry, words }) => [entry.entry_id, words]),
      drafts.map(({ entry }) => entry.entry_id),
      waiting.map((entry) => entry.entry_id),
    ]);
    if (showing === shown) return;
    shown = showing;
    const parts = [];
    if (unscored.length) {
      parts.push(
        h(
          "section",
          { class: "card attention", "aria-labelledby": "unscored-heading" },
          h(
            "h2",
            { id: "unscored-heading" },
            `Not scored by you: ${unscored.length} of ${count} ${count === 1 ? "entry" : "entries"}`,
          ),
          h(
            "ul",
            { class: "left-list" },
            unscored.map(({ entry, words }) => entryLink(entry, words)),
          ),
        ),
      );
    }
    if (drafts.length) {
      parts.push(
        h(
          "section",
          { class: "card draft", "aria-labelledby": "drafts-heading" },
          h("h2", { id: "drafts-heading" }, "Drafts not submitted"),
          h("ul", { class: "left-list" }, drafts.map(({ entry, words }) => entryLink(entry, words))),
        ),
      );
    }
    if (waiting.length) {
      parts.push(
        h(
          "section",
          { class: "card attention", "aria-labelledby": "waiting-heading" },
          h("h2", { id: "waiting-heading" }, `${sheets(waiting.length)} still on this tablet`),
          h(
            "p",
            {},
            "They must reach the box before you sign off (after it, the box takes no sheet of yours " +
              "for this session). They are sent as soon as the box can be reached.",
          ),
          h("ul", { class: "left-list" }, waiting.map((entry) => entryLink(entry, "waiting to send"))),
        ),
      );
    }
    if (!unscored.length && !drafts.length && !waiting.length) {
      parts.push(h("p", { class: "done" }, `You scored every entry of ${current.name}.`));
    }
    const confirm = h(
      "button",
      {
        type: "button",
        class: "primary",
        disabled: waiting.length > 0,
        onclick: () => signOff(current),
      },
      `Yes, I have finished scoring ${current.name}`,
    );
    parts.push(
      h(
        "section",
        { class: "card confirm", "aria-labelledby": "confirm-heading" },
        h("h2", { id: "confirm-heading" }, "Sign off this session?"),
        h(
          "p",
          {},
          unscored.length
            ? `You have not scored ${unscored.length} ${unscored.length === 1 ? "entry" : "entries"} ` +
                "of this session. "
            : "",
          "Signing off tells the venue tech you have finished scoring this session. Your sheets for it " +
            "then become read-only: to change a score, the tech must reopen the session for you. It " +
            "needs the box: this tablet must be connected.",
        ),
        state.locked &&
          h(
            "p",
            { class: "hint" },
            `The venue tech has locked this session${state.reason ? `: ${state.reason}` : ""}.`,
          ),
        h("div", { class: "actions" }, confirm, h("a", { class: "button", href: "#/sessions" }, "Not yet")),
      ),
    );
    body.replaceChildren(...parts);
  }

  async function signOff(current) {
    sending = true;
    failure.textContent = "";
    const button = body.querySelector(".confirm .primary");
    if (button) {
      button.disabled = true;
      button.textContent = "Signing off…";
    }
    const answer = await app.signOff(current.id);
    sending = false;
    shown = null;
    if (answer.ok) {
      const at = answer.body?.signed_off_at ?? session()?.signed_off_at ?? null;
      app.notice = `You signed off ${current.name}${at ? ` at ${eventTime(app.event, at, false)}` : ""}.`;
      app.navigate("#/sessions");
      return;
    }
    update();
    failure.textContent =
      answer.status === 0
        ? `${answer.problem.title}: nothing was signed off. Signing off needs the box; try again once ` +
          "this tablet is connected."
        : `The box did not take the sign-off: ${problemText(answer.problem)}`;
  }

  update();
  return { root, update };
}
