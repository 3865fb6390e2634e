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
 * What the judge typed as a number, with a decimal point or a decimal comma (a French tablet's
 * keyboard gives "8,5"): {number} or {error} in words. Anything that could be read two ways
 * ("1.234,5", "1,234", "8,5,1", "1 234") is refused, never guessed.
 */
export function parseDecimal(text) {
  const trimmed = String(text ?? "").trim();
  if (trimmed === "") return { empty: true };
  const match = trimmed.match(/^([+-]?)(\d*)(?:[.,](\d*))?$/);
  if (!match || (match[2] === "" && (match[3] ?? "") === "")) {
    const separators = (trimmed.match(/[.,]/g) ?? []).length;
    return {
      error:
        separators > 1
          ? "has more than one decimal point or comma: type one, as in 8.5 or 8,5"
          : "is not a number: type digits with one decimal point or comma, as in 8.5 or 8,5",
    };
  }
  return { number: Number(`${match[1]}${match[2] || "0"}.${match[3] || "0"}`) };
}

/**
 * Read what the judge typed: {value} when it is a number in range on the step, else {error} in
 * words for the judge. A decimal comma reads as a decimal point (parseDecimal).
 */
export function readValue(criterion, text) {
  const range = `${formatValue(criterion, criterion.min)} to ${formatValue(criterion, criterion.max)}`;
  const parsed = parseDecimal(text);
  if (parsed.empty) return { error: `Give a score for ${criterion.label} (${range}).` };
  if (parsed.error) return { error: `${criterion.label}: “${String(text).trim()}” ${parsed.error}.` };
  const number = parsed.number;
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

/**
 * The running total of a sheet being filled in: the sum of the scores that read (exactly, in
 * whole units), how many of the criteria did, and the most the sheet can total.
 */
export function runningTotal(criteria, texts) {
  const places = Math.max(0, ...criteria.map((c) => gridOf(c).places));
  const scale = 10 ** places;
  let units = 0;
  let read = 0;
  let maxUnits = 0;
  for (const criterion of criteria) {
    maxUnits += Math.round(criterion.max * scale);
    const got = readValue(criterion, texts[criterion.key]);
    if (got.error) continue;
    units += Math.round(got.value * scale);
    read += 1;
  }
  return {
    total: (units / scale).toFixed(places),
    max: (maxUnits / scale).toFixed(places),
    read,
    count: criteria.length,
  };
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
  const parsed = parseDecimal(text);
  const number = parsed.number;
  let units;
  if (number === undefined || !Number.isFinite(number)) {
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
