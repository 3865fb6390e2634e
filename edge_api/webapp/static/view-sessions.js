// The judge's sessions in running order, each entry with where its sheet is: on the box, waiting
// on the tablet, set aside for the judge, or not scored yet.

import { h } from "./dom.js";
import { chainFor, entryStatus, eventTime, nextOpenEntry, panelSessions } from "./judging.js";

const BADGES = {
  scored: "Scored",
  waiting: "Waiting to send",
  attention: "Needs attention",
  open: "Not scored",
};

export function sessionsView(app) {
  const list = h("div", { class: "sessions" });
  const next = h("p", { class: "next" });
  const root = h(
    "section",
    { class: "view view-sessions", "aria-labelledby": "sessions-heading" },
    h("h1", { id: "sessions-heading" }, "Your entries"),
    next,
    list,
  );

  function update() {
    const event = app.event;
    if (!event) {
      next.replaceChildren();
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
        : h("span", { class: "done" }, "Every entry on your panel is scored."),
    );
    const sessions = panelSessions(event);
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
            [session.stage, eventTime(event, session.starts_at)].filter(Boolean).join(" · "),
          ),
          h(
            "ol",
            { class: "entries" },
            session.entries.map((entry) => {
              const status = entryStatus(chainFor(event, app.outbox, judgeId, entry.entry_id));
              return h(
                "li",
                {},
                h(
                  "a",
                  {
                    class: `entry-link status-${status}`,
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
