// A criterion's scale: [min, max] on steps of `step` from min. Arithmetic is done in whole units of
// the smallest decimal place involved, so 0.1 + 0.2 is 0.3 here, never 0.30000000000000004.

function decimals(number) {
  const text = String(number);
  const [mantissa, exponent] = text.split("e");
  const fraction = (mantissa.split(".")[1] ?? "").length;
  return Math.max(0, fraction - (exponent ? Number(exponent) : 0));
}

/** The integer grid of a criterion: value = (units / scale). */
export function gridOf(criterion) {
  const places = Math.max(decimals(criterion.min), decimals(criterion.max), decimals(criterion.step));
  const scale = 10 ** places;
  const min = Math.round(criterion.min * scale);
  const step = Math.max(1, Math.round(criterion.step * scale));
  // The highest step point that does not pass max (max itself is not always on the grid).
  const max = min + Math.floor((Math.round(criterion.max * scale) - min) / step) * step;
  return { places, scale, min, max, step };
}

/** A number of units -> the value to send, formatted exactly (9.4, not 9.399999999999999). */
export function fromUnits(criterion, units) {
  const grid = gridOf(criterion);
  return Number((units / grid.scale).toFixed(grid.places));
}

/** The text shown for a value: always with the criterion's decimal places (9.0, 9.5). */
export function formatValue(criterion, value) {
  return Number(value).toFixed(gridOf(criterion).places);
}

/**
 * Read what the judge typed: {value} when it is a number in range on the step, else {error} in
 * words for the judge. Accepts a decimal comma too.
 */
export function readValue(criterion, text) {
  const trimmed = String(text ?? "")
    .trim()
    .replace(",", ".");
  const range = `${formatValue(criterion, criterion.min)} to ${formatValue(criterion, criterion.max)}`;
  if (trimmed === "") return { error: `Give a score for ${criterion.label} (${range}).` };
  const number = Number(trimmed);
  if (!Number.isFinite(number)) return { error: `${criterion.label}: “${text}” is not a number.` };
  const grid = gridOf(criterion);
  const exact = number * grid.scale;
  const units = Math.round(exact);
  if (units < grid.min || units > grid.max) {
    return { error: `${criterion.label} must be from ${range}.` };
  }
  if (Math.abs(exact - units) > 1e-6 || (units - grid.min) % grid.step !== 0) {
    const step = formatValue(criterion, criterion.step);
    return {
      error: `${criterion.label} goes in steps of ${step} (for example ${nearest(criterion, number)}).`,
    };
  }
  return { value: fromUnits(criterion, units) };
}

function nearest(criterion, number) {
  const grid = gridOf(criterion);
  const steps = Math.round((number * grid.scale - grid.min) / grid.step);
  const units = Math.min(grid.max, Math.max(grid.min, grid.min + steps * grid.step));
  return formatValue(criterion, fromUnits(criterion, units));
}

/**
 * One step up (+1) or down (-1) from what is typed, kept in range. From an empty or unreadable
 * field it starts at the middle of the scale, where most scores are.
 */
export function stepValue(criterion, text, direction) {
  const grid = gridOf(criterion);
  const number = Number(
    String(text ?? "")
      .trim()
      .replace(",", "."),
  );
  let units;
  if (String(text ?? "").trim() === "" || !Number.isFinite(number)) {
    const middle = grid.min + Math.round((grid.max - grid.min) / 2 / grid.step) * grid.step;
    units = middle;
  } else {
    // Snap onto the grid first, then move one step.
    const steps = Math.round((number * grid.scale - grid.min) / grid.step);
    units = grid.min + (steps + direction) * grid.step;
  }
  units = Math.min(grid.max, Math.max(grid.min, units));
  return formatValue(criterion, fromUnits(criterion, units));
}
