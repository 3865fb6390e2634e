// One entry at a time: what it is, the judge's sheet for it (with its history and anything set
// aside), and the scoring form: one control per criterion, an optional comment, submit. A
// correction is a new sheet that names the current one in `supersedes`. What is typed is kept as
// a draft on the tablet (app.keepDraft) until the sheet is submitted, so leaving the entry or a
// reload loses nothing. An entry in a session closed to the judge (signed off, locked) or scratched
// by the tech opens read-only: its sheets are shown, nothing is sent for it.

import { announce, h } from "./dom.js";
import { rfc3339, uuid4 } from "./ids.js";
import { chainFor, closedBy, eventTime, findEntry, nextOpenEntry, sessionState } from "./judging.js";
import { formatValue, readValue, runningTotal, stepValue } from "./scores.js";

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
  const closed = closedBy(problem);
  if (closed === "signed-off") {
    return (
      "The box refused this sheet: you signed off this session, so your sheets for it are " +
      "read-only. Your scores are kept here on this tablet: ask the tech to reopen the session, " +
      "then send them again."
    );
  }
  if (closed === "session-locked") {
    return (
      "The box refused this sheet: the venue tech locked this session. Your scores are kept here " +
      "on this tablet: ask the tech to unlock it, then send them again."
    );
  }
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
  // Signed off by this judge, or locked by the tech: the entry opens read-only, whatever the address.
  const closed = sessionState(session);
  // Scratched by the tech (a schedule change): its sheets stay, but it is not scored.
  const scratched = Boolean(entry.scratched);
  const readOnly = closed.closed || scratched;
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
  const editing = !readOnly && (mode === "correct" || (mode === "edit" && source) || !start.current);
  // A draft names the form it was typed in: a new sheet, a correction, or an edit of a sheet set aside.
  const draftMode = mode === "view" ? "new" : mode;
  let draft = null; // the draft kept on the tablet for this entry, once read
  const form = editing ? scoreForm() : null;

  const note = scratched
    ? h(
        "p",
        { class: "card read-only", role: "note" },
        "Scratched: the venue tech took this entry off the schedule, so it is not scored. Your sheets " +
          "for it are kept; if the tech restores it, you can score it again.",
      )
    : closed.closed
      ? h(
          "p",
          { class: "card read-only", role: "note" },
          closed.signedOffAt
            ? "You signed off this session; ask the tech to reopen it to change a score."
            : `The venue tech locked this session${closed.reason ? ` (${closed.reason})` : ""}; ask the tech ` +
                "to unlock it to change a score.",
        )
      : null;

  root.append(nav, header, ...(note ? [note] : []), status, ...(form ? [form.element] : []));

  /** Where the draft kept for this entry can be taken up when this view shows no form for it. */
  function draftLink() {
    if (!draft || form || readOnly) return null;
    if (draft.mode === "edit") {
      const kept = app.outbox.get(draft.source_id);
      return kept?.state === "aside" ? `${entryHash}/edit/${draft.source_id}` : null;
    }
    return `${entryHash}/correct`;
  }

  function update() {
    // Signed off, locked, scratched or taken off the list since this view was built (or opened
    // again): it is built again, read-only or with its form.
    const placeNow = findEntry(app.event, entryId);
    const state = sessionState(placeNow?.session);
    if (
      !placeNow ||
      Boolean(placeNow.entry.scratched) !== scratched ||
      state.closed !== closed.closed ||
      state.signedOffAt !== closed.signedOffAt
    ) {
      app.rebuild();
      return;
    }
    const now = chain();
    const parts = [];
    const resume = draftLink();
    if (resume) {
      parts.push(
        h(
          "section",
          { class: "card draft", "aria-labelledby": "draft-heading" },
          h("h2", { id: "draft-heading" }, "Scores you typed and did not submit"),
          h("p", {}, "They are kept on this tablet as a draft; nothing was sent."),
          h("a", { class: "button primary", href: resume }, "Continue with your draft"),
        ),
      );
    }
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
          !form &&
            !readOnly &&
            h("a", { class: "button primary", href: `${entryHash}/correct` }, "Correct this sheet"),
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
            readOnly
              ? null
              : problem.status === 409
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
    const initial = {}; // what the form opened with: a draft is only kept when it differs
    const fields = criteria.map((criterion, position) => {
      const id = `score-${criterion.key}`;
      const step = formatValue(criterion, criterion.step);
      const last = position === criteria.length - 1;
      // Text, not type="number": a number field drops a decimal comma before the app sees it
      // ("8,5" became 85 on a French tablet). readValue takes "8,5" and "8.5" alike.
      const input = h("input", {
        id,
        name: criterion.key,
        type: "text",
        inputmode: "decimal",
        enterkeyhint: last ? "done" : "next",
        required: true,
        autocomplete: "off",
        autocorrect: "off",
        autocapitalize: "off",
        spellcheck: "false",
        "aria-describedby": `${id}-hint ${id}-error`,
      });
      if (prefill?.values?.[criterion.key] !== undefined) {
        input.value = formatValue(criterion, prefill.values[criterion.key]);
      }
      initial[criterion.key] = input.value;
      inputs.set(criterion.key, input);
      const nudge = (direction) => () => {
        input.value = stepValue(criterion, input.value, direction);
        input.removeAttribute("aria-invalid");
        document.getElementById(`${id}-error`).textContent = "";
        changed();
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
    const order = [...inputs.values()];
    const comment = h("textarea", {
      id: "comment",
      name: "comment",
      rows: "2",
      maxlength: String(COMMENT_MAX),
      "aria-describedby": "comment-hint",
    });
    comment.value = prefill?.comment ?? "";
    initial.comment = comment.value;
    const error = h("p", { class: "form-error", role: "alert" });
    const total = h("p", { class: "total", id: "sheet-total" });
    const draftState = h("p", { class: "draft-state", id: "draft-state" });
    const submit = h(
      "button",
      { type: "submit", class: "primary submit" },
      mode === "correct" ? "Submit correction" : mode === "edit" ? "Send again" : "Submit sheet",
    );
    let touched = false; // typed in before the kept draft was read: what is typed wins
    let submitted = false;

    function typed() {
      const texts = { comment: comment.value };
      for (const [key, input] of inputs) texts[key] = input.value;
      return texts;
    }

    function showTotal() {
      const sum = runningTotal(criteria, typed());
      total.replaceChildren(
        h("span", { class: "total-label" }, "Total "),
        h("strong", { class: "total-value" }, sum.total),
        ` of ${sum.max}`,
        sum.read < sum.count
          ? h("span", { class: "total-missing" }, ` · ${sum.read} of ${sum.count} scores`)
          : "",
      );
    }

    /** Something was typed: the total follows, and the draft on the tablet too. */
    function changed() {
      touched = true;
      showTotal();
      if (submitted) return;
      const texts = typed();
      const same = Object.keys(texts).every((key) => texts[key] === initial[key]);
      const values = { ...texts };
      delete values.comment;
      draft = same
        ? null
        : { mode: draftMode, source_id: sourceId, values, comment: texts.comment, saved_at: rfc3339() };
      const kept = draft;
      app.keepDraft(entryId, kept).then(() => {
        if (kept !== draft) return;
        draftState.textContent = kept ? "Not submitted yet: kept on this tablet as a draft." : "";
      });
    }

    /** The draft kept for this entry, when it was typed in a form like this one and nothing is typed yet. */
    function restore(kept) {
      const fits =
        draftMode === "edit"
          ? kept.mode === "edit" && kept.source_id === sourceId
          : kept.mode === "new" || kept.mode === "correct";
      if (!fits || touched || submitted) return;
      draft = kept;
      for (const [key, input] of inputs) input.value = kept.values?.[key] ?? input.value;
      comment.value = kept.comment ?? comment.value;
      draftState.textContent = "Your unsent scores for this entry are back (a draft kept on this tablet).";
      showTotal();
    }

    /** Enter (a tablet keyboard's Go) moves to the next score; on the last one it submits. */
    function onKeydown(domEvent) {
      if (domEvent.key !== "Enter" || domEvent.isComposing) return;
      const at = order.indexOf(domEvent.target);
      if (at < 0 || at === order.length - 1) return; // the last score: the form submits
      domEvent.preventDefault();
      order[at + 1].focus();
      order[at + 1].select();
    }

    async function cancel(domEvent) {
      domEvent.preventDefault();
      submitted = true;
      await app.keepDraft(entryId, null);
      app.navigate(entryHash);
    }

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
      // The sheet is kept: its draft goes (after any write of it still under way).
      submitted = true;
      await app.keepDraft(entryId, null);
      // The notice follows the sheet: sending, then "on the box" or "on this tablet, waiting to send".
      app.notice = { sheetId: body.sheet_id, entryId, correction: Boolean(supersedes) };
      if (supersedes) {
        app.navigate(entryHash);
      } else {
        const upcoming = nextOpenEntry(app.event, app.outbox, judgeId, entryId);
        app.keepTyping = Boolean(upcoming);
        app.navigate(upcoming ? `#/entry/${encodeURIComponent(upcoming.entry_id)}` : "#/sessions");
      }
    }

    showTotal();
    const element = h(
      "form",
      {
        class: "score-form",
        novalidate: true,
        onsubmit: onSubmit,
        oninput: changed,
        onkeydown: onKeydown,
        "aria-labelledby": "form-heading",
      },
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
      // Stays at the bottom of the screen while the form is on it (banners push the form down).
      h(
        "div",
        { class: "form-footer" },
        h("div", { class: "form-footer-text" }, total, draftState, error),
        h(
          "div",
          { class: "actions" },
          submit,
          (mode === "correct" || mode === "edit") &&
            h("a", { class: "button", href: entryHash, onclick: cancel }, "Cancel"),
        ),
      ),
    );
    return { element, firstField: order[0], restore };
  }

  update();
  app.loadDraft(entryId).then((kept) => {
    if (!kept) return;
    if (form) form.restore(kept);
    else {
      draft = kept;
      update();
    }
  });
  return { root, update, firstField: form?.firstField ?? null };
}
