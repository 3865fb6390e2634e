// The judge's sessions in running order, each entry with where its sheet is: on the box, waiting
// on the tablet, set aside for the judge, or not scored yet (with a draft typed, or not); how many
// are scored ("37 of 80 scored"), and a filter to show only the entries still to score. Each
// session has "Finish scoring <session>" under its heading (the sign-off, view-finish.js), or says it is
// finished ("Finished — signed off at 11:52") or locked by the tech. A scratched entry stays listed,
// greyed and marked "Scratched": it opens read-only and counts neither as scored nor as to score.

import { h } from "./dom.js";
import { chainFor, entryStatus, eventTime, nextOpenEntry, panelSessions, sessionState } from "./judging.js";

const BADGES = {
  scored: "Scored",
  waiting: "Waiting to send",
  attention: "Needs attention",
  open: "Not scored",
  draft: "Draft, not submitted",
  scratched: "Scratched",
};

/** Scored by this judge: on the box or waiting on the tablet to be sent. */
const DONE = new Set(["scored", "waiting"]);
/** Left out of "only the entries still to score": scored, or scratched. */
const DONE_OR_OUT = new Set([...DONE, "scratched"]);

function scoredText(done, count) {
  return `${done} of ${count} scored`;
}

/**
 * A session's sign-off: "Finished — signed off at 11:52", locked by the tech, or the action to
 * finish it.
 */
function closingOf(app, session) {
  const state = sessionState(session);
  const lines = [];
  if (state.signedOffAt) {
    lines.push(
      h(
        "p",
        { class: "session-final" },
        `Finished — signed off at ${eventTime(app.event, state.signedOffAt, false)}`,
      ),
    );
  }
  if (state.locked) {
    lines.push(
      h(
        "p",
        { class: "session-locked" },
        `Locked by the venue tech${state.reason ? `: ${state.reason}` : ""}`,
      ),
    );
  }
  if (!state.signedOffAt) {
    lines.push(
      h(
        "a",
        {
          class: "button finish",
          href: `#/finish/${encodeURIComponent(session.id)}`,
          "data-key": `finish-${session.id}`,
        },
        `Finish scoring ${session.name}`,
      ),
    );
  }
  return h("div", { class: "session-closing" }, lines);
}

export function sessionsView(app) {
  const closing = (session) => closingOf(app, session);
  const list = h("div", { class: "sessions" });
  const next = h("p", { class: "next" });
  const progress = h("p", { class: "progress", id: "progress" });
  const filter = h("button", {
    type: "button",
    class: "filter",
    "aria-pressed": String(app.onlyToScore),
    "data-key": "filter",
    onclick: () => {
      app.onlyToScore = !app.onlyToScore;
      filter.setAttribute("aria-pressed", String(app.onlyToScore));
      update();
    },
  });
  const root = h(
    "section",
    { class: "view view-sessions", "aria-labelledby": "sessions-heading" },
    h("h1", { id: "sessions-heading" }, "Your entries"),
    next,
    h("div", { class: "list-tools" }, progress, filter),
    list,
  );

  function update() {
    const event = app.event;
    if (!event) {
      next.replaceChildren();
      progress.replaceChildren();
      filter.hidden = true;
      list.replaceChildren(
        h(
          "p",
          {},
          app.api.reachable === false
            ? "The box cannot be reached yet: the entries appear once it answers."
            : "Loading the entries…",
        ),
      );
      return;
    }
    const judgeId = app.judgeId();
    const focusedKey = document.activeElement?.dataset?.key;
    const sessions = panelSessions(event).map((session) => {
      const statuses = new Map(
        session.entries.map((entry) => [
          entry.entry_id,
          entry.scratched ? "scratched" : entryStatus(chainFor(event, app.outbox, judgeId, entry.entry_id)),
        ]),
      );
      const done = [...statuses.values()].filter((status) => DONE.has(status)).length;
      const count = session.entries.filter((entry) => !entry.scratched).length;
      return { ...session, statuses, done, count };
    });
    const count = sessions.reduce((sum, session) => sum + session.count, 0);
    const done = sessions.reduce((sum, session) => sum + session.done, 0);
    const upcoming = nextOpenEntry(event, app.outbox, judgeId);
    next.replaceChildren(
      upcoming
        ? h(
            "a",
            {
              class: "button primary",
              href: `#/entry/${encodeURIComponent(upcoming.entry_id)}`,
              "data-key": "next",
            },
            `Score next: entry ${upcoming.entry_id} · ${upcoming.title}`,
          )
        : h(
            "span",
            { class: "done" },
            done === count
              ? "Every entry on your panel is scored."
              : "Nothing left to score in the sessions still open to you.",
          ),
    );
    progress.textContent = scoredText(done, count);
    filter.hidden = false;
    filter.textContent = `Only the ${count - done} still to score`;
    const others = (event.sessions ?? []).filter((s) => !s.on_panel);
    list.replaceChildren(
      ...sessions.map((session) =>
        h(
          "section",
          { class: "session", "aria-labelledby": `session-${session.id}` },
          h("h2", { id: `session-${session.id}` }, session.name),
          h(
            "p",
            { class: "session-meta" },
            [
              session.stage,
              eventTime(event, session.starts_at),
              scoredText(session.done, session.count),
            ]
              .filter(Boolean)
              .join(" · "),
          ),
          closing(session),
          app.onlyToScore &&
            session.done === session.count &&
            h("p", { class: "hint" }, "Every entry of this session is scored."),
          h(
            "ol",
            { class: "entries" },
            session.entries
              .filter((entry) => !app.onlyToScore || !DONE_OR_OUT.has(session.statuses.get(entry.entry_id)))
              .map((entry) => {
                const scored = session.statuses.get(entry.entry_id);
                const status = scored === "open" && app.drafts.has(entry.entry_id) ? "draft" : scored;
                return h(
                  "li",
                  {},
                  h(
                    "a",
                    {
                      class: `entry-link status-${status}${entry.scratched ? " is-scratched" : ""}`,
                      href: `#/entry/${encodeURIComponent(entry.entry_id)}`,
                      "data-key": entry.entry_id,
                    },
                    h("span", { class: "entry-order", "aria-hidden": "true" }, String(entry.order)),
                    h(
                      "span",
                      { class: "entry-main" },
                      h("span", { class: "entry-title" }, `${entry.entry_id} · ${entry.title}`),
                      h(
                        "span",
                        { class: "entry-meta" },
                        [entry.category, entry.division, entry.studio].filter(Boolean).join(" · "),
                      ),
                    ),
                    h("span", { class: `badge badge-${status}` }, BADGES[status]),
                  ),
                );
              }),
          ),
        ),
      ),
      h(
        "p",
        { class: "hint" },
        others.length ? `Not on your panel: ${others.map((s) => s.name).join(", ")}.` : "",
      ),
    );
    if (focusedKey) root.querySelector(`[data-key="${CSS.escape(focusedKey)}"]`)?.focus();
  }

  update();
  return { root, update };
}
