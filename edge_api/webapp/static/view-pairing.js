// Pairing: the judge types the code the venue tech gives them (or opens the QR code's link, which
// fills it in). Shows which box and event this is, so a judge never pairs with the wrong stage.

import { kv } from "./db.js";
import { h, sheets } from "./dom.js";

const DEFAULT_DEVICE_NAME = "Judge tablet";

function pairingError(answer) {
  if (answer.status === 0) return `${answer.problem.title}. Check that this tablet is on the venue Wi-Fi.`;
  if (answer.status === 403) {
    return "That code is not valid: it may be mistyped, used already or expired. Ask the venue tech for a new one.";
  }
  if (answer.status === 429) {
    const wait = answer.retryAfter ? ` Wait ${Math.ceil(answer.retryAfter / 1000)} s, then try again.` : "";
    return `Too many tries from this tablet.${wait}`;
  }
  const detail = answer.problem?.detail ? `: ${answer.problem.detail}` : "";
  return `${answer.problem?.title ?? "Pairing failed"}${detail}`;
}

export function pairingView(app) {
  const boxInfo = h("dl", { class: "facts" });
  const codeInput = h("input", {
    id: "pair-code",
    name: "code",
    type: "text",
    autocomplete: "off",
    autocapitalize: "characters",
    spellcheck: "false",
    maxlength: "32",
    required: true,
    "aria-describedby": "pair-code-hint",
  });
  codeInput.value = app.pairCode ?? "";
  const nameInput = h("input", {
    id: "device-name",
    name: "device_name",
    type: "text",
    autocomplete: "off",
    maxlength: "100",
    required: true,
    "aria-describedby": "device-name-hint",
  });
  nameInput.value = app.pairing?.device_name ?? DEFAULT_DEVICE_NAME;
  kv.get("device_name").then((name) => {
    if (name && nameInput.value === DEFAULT_DEVICE_NAME) nameInput.value = name;
  });
  const error = h("p", { id: "pair-error", class: "form-error", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary" }, "Pair");

  async function onSubmit(event) {
    event.preventDefault();
    const code = codeInput.value.trim();
    const name = nameInput.value.trim();
    if (!code || !name) {
      error.textContent = !code ? "Type the pairing code from the venue tech." : "Give this tablet a name.";
      (!code ? codeInput : nameInput).focus();
      return;
    }
    submit.disabled = true;
    error.textContent = "";
    try {
      const answer = await app.pair(code, name);
      if (answer.status !== 201) {
        error.textContent = pairingError(answer);
        codeInput.setAttribute("aria-invalid", answer.status === 403 ? "true" : "false");
        codeInput.focus();
      }
    } finally {
      submit.disabled = false;
    }
  }

  const waiting = app.outbox.waiting().length;
  const root = h(
    "section",
    { class: "view view-pairing", "aria-labelledby": "pair-heading" },
    h("h1", { id: "pair-heading" }, app.repair ? "Pair this tablet again" : "Pair this tablet"),
    boxInfo,
    app.repair &&
      h(
        "p",
        { class: "warning" },
        `The box no longer accepts this tablet's pairing (${app.repair.detail}). `,
        waiting
          ? `The ${sheets(waiting)} waiting here stay on this tablet and are sent once it is paired. `
          : "",
        "Ask the venue tech for a new pairing code.",
      ),
    app.pairing &&
      !app.repair &&
      h(
        "p",
        {},
        `This tablet is paired as ${app.pairing.judge.name}. A new code replaces that pairing; sheets waiting on this tablet are kept. `,
        h("a", { href: "#/sessions" }, "Back to the entries"),
      ),
    h(
      "form",
      { class: "pair-form", novalidate: true, onsubmit: onSubmit },
      h("label", { for: "pair-code" }, "Pairing code"),
      h(
        "p",
        { id: "pair-code-hint", class: "hint" },
        "8 letters and digits from the venue tech, like ABCD-EFGH.",
      ),
      codeInput,
      h("label", { for: "device-name" }, "Name of this tablet"),
      h("p", { id: "device-name-hint", class: "hint" }, "Shown to the venue tech, e.g. “Judge 1 iPad”."),
      nameInput,
      submit,
      error,
    ),
  );

  function update() {
    const health = app.health;
    const facts = [
      h("dt", {}, "Box"),
      h("dd", {}, health ? health.name || health.box : "looking for the box…"),
      h("dt", {}, "Event"),
      h("dd", {}, health ? (health.event ?? "no event loaded yet") : "—"),
    ];
    if (health?.frozen) facts.push(h("dt", {}, "Scoring"), h("dd", {}, "paused by the venue tech"));
    boxInfo.replaceChildren(...facts);
  }
  update();
  if (!app.health) app.refreshHealth();
  return { root, update };
}
