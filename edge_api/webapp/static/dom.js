// Building the page: a tiny element helper (no framework, no build step) and focus handling.

/** An element: h("button", {class: "primary", onclick: fn}, "Submit"). Falsy attributes are left out. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") element.className = value;
    else if (name === "text") element.textContent = value;
    else if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

/** Move focus to a view's heading (on screen: views open at the top), so a screen reader starts there. */
export function focusHeading(root) {
  const heading = root.querySelector("h1");
  if (!heading) return;
  heading.setAttribute("tabindex", "-1");
  heading.focus({ preventScroll: true });
}

/** Say something to screen-reader users without moving focus (and show it to everyone briefly). */
export function announce(text) {
  const region = document.getElementById("announcer");
  region.textContent = "";
  // A new text node in a fresh task is announced even when the words repeat.
  setTimeout(() => {
    region.textContent = text;
  }, 50);
}

/** "1 sheet" / "3 sheets". */
export function sheets(count) {
  return `${count} ${count === 1 ? "sheet" : "sheets"}`;
}
