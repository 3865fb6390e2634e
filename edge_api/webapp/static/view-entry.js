// One entry at a time: what it is, the judge's sheet for it (with its history and anything set
// aside), and the scoring form: one control per criterion, an optional comment, submit. A
// correction is a new sheet that names the current one in `supersedes`.

import { announce, h } from "./dom.js";
import { rfc3339, uuid4 } from "./ids.js";
import { chainFor, eventTime, findEntry, nextOpenEntry } from "./judging.js";
import { formatValue, gridOf, readValue, stepValue } from "./scores.js";

const COMMENT_MAX = 2000;

const STATE_WORDS = {
  stored: "on the box",
  queued: "waiting on this tablet to be sent",
  aside: "not stored: needs your attention",
  discarded: "discarded by you",
};

function valuesList(criteria, sheet) {
  return h(
    "dl",
    { class: "values" },
    criteria.map((c) => [
      h("dt", {}, c.label),
      h("dd", {}, sheet.values?.[c.key] === undefined ? "—" : formatValue(c, sheet.values[c.key])),
    ]),
    sheet.comment && [h("dt", {}, "Comment"), h("dd", { class: "comment" }, sheet.comment)],
  );
}

function problemText(problem) {
  if (!problem) return "";
  const fields = (problem.errors ?? []).map((e) => `${e.field}: ${e.message}`).join("; ");
  return [problem.title, problem.detail, fields].filter(Boolean).join(" — ");
}

/** Why a sheet was set aside, in words for the judge, and what they can do. */
function asideExplanation(version) {
  const problem = version.problem ?? {};
  if (problem.status === 409) {
    return version.supersedes
      ? "Your correction was not stored: it corrects a sheet that is no longer your current sheet " +
          "for this entry on the box (it was corrected since, perhaps from another tablet). Nothing " +
          "was overwritten. Check the box's current sheet, then send your scores as a correction " +
          "of it, or discard them."
      : "Your sheet was not stored: the box already has a sheet from you for this entry (perhaps " +
          "sent from another tablet). Nothing was overwritten. Send your scores as a correction of " +
          "the box's sheet, or discard them.";
  }
  return (
    "The box refused this sheet and it will not be sent again as it is. Edit it and send it " +
    "again, or discard it."
  );
}

export function entryView(app, { entryId, mode, sourceId }) {
  const event = app.event;
  const root = h("section", { class: "view view-entry", "aria-labelledby": "entry-heading" });
  if (!event) {
    root.append(
      h("h1", { id: "entry-heading" }, "Loading the entries…"),
      h("p", {}, h("a", { href: "#/sessions" }, "Back to all entries")),
    );
    return { root, update: () => app.event && app.navigate(location.hash) };
  }
  const place = findEntry(event, entryId);
  if (!place) {
    root.append(
      h("h1", { id: "entry-heading" }, `Entry ${entryId} is not on your panel`),
      h("p", {}, h("a", { href: "#/sessions" }, "Back to all entries")),
    );
    return { root };
  }
  const { entry, session, index, count, previous, next } = place;
  const judgeId = app.judgeId();
  const criteria = event.criteria;
  const chain = () => chainFor(app.event, app.outbox, judgeId, entryId);
  const entryHash = `#/entry/${encodeURIComponent(entryId)}`;

  const nav = h(
    "nav",
    { class: "entry-nav", "aria-label": "Entries" },
    h("a", { class: "button", href: "#/sessions" }, "All entries"),
    previous &&
      h(
        "a",
        { class: "button", href: `#/entry/${encodeURIComponent(previous.entry_id)}` },
        `← ${previous.entry_id}`,
      ),
    next &&
      h("a", { class: "button", href: `#/entry/${encodeURIComponent(next.entry_id)}` }, `${next.entry_id} →`),
  );
  const header = h(
    "header",
    { class: "entry-header" },
    h("p", { class: "entry-place" }, `${session.name} · ${index + 1} of ${count}`),
    h(
      "h1",
      { id: "entry-heading" },
      h("span", { class: "entry-number" }, `Entry ${entry.entry_id}`),
      " ",
      h("span", { class: "entry-name" }, entry.title),
    ),
    h(
      "dl",
      { class: "facts" },
      h(
        "div",
        { class: "fact" },
        h("dt", {}, "Category"),
        h("dd", {}, [entry.category, entry.division, entry.level].filter(Boolean).join(" · ") || "—"),
      ),
      h("div", { class: "fact" }, h("dt", {}, "Studio"), h("dd", {}, entry.studio || "—")),
      // Only when the event lets tablets see who is on stage (tablets_see_participants).
      Array.isArray(entry.participants) &&
        entry.participants.length > 0 &&
        h("div", { class: "fact" }, h("dt", {}, "Participants"), h("dd", {}, entry.participants.join(", "))),
      entry.scheduled_at &&
        h(
          "div",
          { class: "fact" },
          h("dt", {}, "On stage"),
          h("dd", {}, eventTime(event, entry.scheduled_at)),
        ),
    ),
  );
  const status = h("div", { class: "sheet-status" });

  const start = chain();
  const source = sourceId ? app.outbox.get(sourceId) : null;
  const editing = mode === "correct" || (mode === "edit" && source) || !start.current;
  const form = editing ? scoreForm() : null;

  root.append(nav, header, status, ...(form ? [form] : []));

  function update() {
    const now = chain();
    const parts = [];
    if (now.current) {
      parts.push(
        h(
          "section",
          { class: "card current-sheet", "aria-labelledby": "current-heading" },
          h("h2", { id: "current-heading" }, "Your sheet"),
          h(
            "p",
            { class: `sheet-state state-${now.current.state}` },
            `Submitted ${eventTime(event, now.current.submitted_at)} · ${STATE_WORDS[now.current.state]}`,
          ),
          valuesList(criteria, now.current),
          !form && h("a", { class: "button primary", href: `${entryHash}/correct` }, "Correct this sheet"),
        ),
      );
    }
    for (const version of now.aside) {
      const problem = version.problem ?? {};
      const headId = problem.status === 409 ? (problem.current_sheet_id ?? null) : null;
      parts.push(
        h(
          "section",
          { class: "card attention", "aria-labelledby": `aside-${version.sheet_id}` },
          h("h2", { id: `aside-${version.sheet_id}` }, "Needs your attention"),
          h("p", {}, asideExplanation(version)),
          h("p", { class: "problem" }, `The box said: ${problemText(problem)}`),
          valuesList(criteria, version),
          h(
            "div",
            { class: "actions" },
            problem.status === 409
              ? h(
                  "button",
                  { type: "button", class: "primary", onclick: () => resendAsCorrection(version, headId) },
                  headId ? "Send my scores as a correction of the box's sheet" : "Send my scores again",
                )
              : h(
                  "a",
                  { class: "button primary", href: `${entryHash}/edit/${version.sheet_id}` },
                  "Edit and send again",
                ),
            h("button", { type: "button", onclick: () => discard(version) }, "Discard my sheet"),
          ),
        ),
      );
    }
    if (now.versions.length > 1) {
      parts.push(
        h(
          "section",
          { class: "card history", "aria-labelledby": "history-heading" },
          h("h2", { id: "history-heading" }, "History of your sheets for this entry"),
          h(
            "ol",
            { class: "history-list", reversed: true },
            now.versions.map((version) =>
              h(
                "li",
                { class: version.current ? "is-current" : "" },
                h(
                  "p",
                  { class: "history-head" },
                  h(
                    "strong",
                    {},
                    version.current ? "Current" : version.state === "stored" ? "Replaced" : "Version",
                  ),
                  ` · ${eventTime(event, version.submitted_at)} · ${STATE_WORDS[version.state]}`,
                  version.supersedes ? " · a correction" : " · the original",
                ),
                h(
                  "p",
                  { class: "history-values" },
                  criteria
                    .map(
                      (c) =>
                        `${c.label} ${version.values?.[c.key] === undefined ? "—" : formatValue(c, version.values[c.key])}`,
                    )
                    .join(" · "),
                ),
              ),
            ),
          ),
        ),
      );
    }
    status.replaceChildren(...parts);
  }

  async function resendAsCorrection(version, headId) {
    const body = {
      sheet_id: uuid4(),
      entry_id: entryId,
      values: { ...version.values },
      submitted_at: rfc3339(),
    };
    if (version.comment) body.comment = version.comment;
    if (headId) body.supersedes = headId;
    await app.submitSheet(body);
    await app.discardSheet(version.sheet_id);
    announce(`Your scores for entry ${entryId} are sent as a correction.`);
  }

  async function discard(version) {
    await app.discardSheet(version.sheet_id);
    announce(`Your set-aside sheet for entry ${entryId} is discarded.`);
    root.querySelector("h1")?.focus();
  }

  function scoreForm() {
    const prefill = mode === "edit" && source ? source.body : mode === "correct" ? start.current : null;
    const inputs = new Map();
    const fields = criteria.map((criterion) => {
      const id = `score-${criterion.key}`;
      const grid = gridOf(criterion);
      const step = formatValue(criterion, criterion.step);
      const input = h("input", {
        id,
        name: criterion.key,
        type: "number",
        inputmode: "decimal",
        min: formatValue(criterion, criterion.min),
        max: formatValue(criterion, grid.max / grid.scale),
        step,
        required: true,
        autocomplete: "off",
        "aria-describedby": `${id}-hint ${id}-error`,
      });
      if (prefill?.values?.[criterion.key] !== undefined) {
        input.value = formatValue(criterion, prefill.values[criterion.key]);
      }
      inputs.set(criterion.key, input);
      const nudge = (direction) => () => {
        input.value = stepValue(criterion, input.value, direction);
        input.removeAttribute("aria-invalid");
        document.getElementById(`${id}-error`).textContent = "";
      };
      return h(
        "div",
        { class: "criterion" },
        h(
          "div",
          { class: "criterion-head" },
          h("label", { for: id }, criterion.label),
          h(
            "span",
            { id: `${id}-hint`, class: "hint" },
            `${formatValue(criterion, criterion.min)} to ${formatValue(criterion, criterion.max)}, steps of ${step}`,
          ),
        ),
        h(
          "div",
          { class: "stepper" },
          h(
            "button",
            {
              type: "button",
              class: "step",
              "aria-label": `Lower ${criterion.label} by ${step}`,
              "aria-controls": id,
              onclick: nudge(-1),
            },
            "−",
          ),
          input,
          h(
            "button",
            {
              type: "button",
              class: "step",
              "aria-label": `Raise ${criterion.label} by ${step}`,
              "aria-controls": id,
              onclick: nudge(1),
            },
            "+",
          ),
        ),
        h("p", { id: `${id}-error`, class: "field-error" }),
      );
    });
    const comment = h("textarea", {
      id: "comment",
      name: "comment",
      rows: "2",
      maxlength: String(COMMENT_MAX),
      "aria-describedby": "comment-hint",
    });
    comment.value = prefill?.comment ?? "";
    const error = h("p", { class: "form-error", role: "alert" });
    const submit = h(
      "button",
      { type: "submit", class: "primary submit" },
      mode === "correct" ? "Submit correction" : mode === "edit" ? "Send again" : "Submit sheet",
    );

    async function onSubmit(domEvent) {
      domEvent.preventDefault();
      const values = {};
      let firstInvalid = null;
      for (const criterion of criteria) {
        const input = inputs.get(criterion.key);
        const read = readValue(criterion, input.value);
        const message = document.getElementById(`score-${criterion.key}-error`);
        if (read.error) {
          message.textContent = read.error;
          input.setAttribute("aria-invalid", "true");
          firstInvalid ??= input;
        } else {
          message.textContent = "";
          input.removeAttribute("aria-invalid");
          values[criterion.key] = read.value;
        }
      }
      if (firstInvalid) {
        error.textContent = "Some scores need another look.";
        firstInvalid.focus();
        return;
      }
      error.textContent = "";
      submit.disabled = true;
      const supersedes = mode === "correct" || mode === "edit" ? (chain().current?.sheet_id ?? null) : null;
      const body = { sheet_id: uuid4(), entry_id: entryId, values, submitted_at: rfc3339() };
      const text = comment.value.trim();
      if (text) body.comment = text;
      if (supersedes) body.supersedes = supersedes;
      try {
        await app.submitSheet(body);
        if (mode === "edit" && source) await app.discardSheet(source.sheet_id);
      } catch (failure) {
        error.textContent = `This sheet could not be kept on the tablet: ${failure.message}. Try again.`;
        submit.disabled = false;
        return;
      }
      const kept = app.api.reachable === false ? " on this tablet; it is sent when the box is back" : "";
      if (supersedes) {
        app.notice = `Correction for entry ${entryId} saved${kept}.`;
        app.navigate(entryHash);
      } else {
        app.notice = `Sheet for entry ${entryId} saved${kept}.`;
        const upcoming = nextOpenEntry(app.event, app.outbox, judgeId, entryId);
        app.navigate(upcoming ? `#/entry/${encodeURIComponent(upcoming.entry_id)}` : "#/sessions");
      }
    }

    return h(
      "form",
      { class: "score-form", novalidate: true, onsubmit: onSubmit, "aria-labelledby": "form-heading" },
      h(
        "h2",
        { id: "form-heading" },
        mode === "correct"
          ? "Correct your sheet"
          : mode === "edit"
            ? "Edit and send again"
            : "Score this entry",
      ),
      fields,
      h(
        "div",
        { class: "criterion comment-field" },
        h(
          "div",
          { class: "criterion-head" },
          h("label", { for: "comment" }, "Comment (optional)"),
          h(
            "span",
            { id: "comment-hint", class: "hint" },
            `up to ${COMMENT_MAX} characters, seen by the organisers`,
          ),
        ),
        comment,
      ),
      h(
        "div",
        { class: "actions" },
        submit,
        (mode === "correct" || mode === "edit") && h("a", { class: "button", href: entryHash }, "Cancel"),
      ),
      error,
    );
  }

  update();
  return { root, update };
}
