"""Text a tablet sends that people read later (a device name, an app version, a sheet's comment):
which characters the API refuses in it, and how the CLI and the console print what is stored.

A control character (C0, DEL, C1) reaches a terminal as a command: ESC starts a sequence that
clears the screen, moves the cursor or retitles the window. A bidirectional embedding, override or
isolate (U+202A-U+202E, U+2066-U+2069) reorders what a reader sees, so one name reads as another;
the line and paragraph separators (U+2028, U+2029) break a line. Rows stored before the API
refused them are still printed safely: ``printable`` writes each such character as ``\\uXXXX``.
"""

from __future__ import annotations

import re

# Patterns for msgspec's ``Meta(pattern=...)``, so the OpenAPI document says them too; written with
# escapes that read the same in Python and in JSON Schema's (ECMA-262) dialect. They end with
# ``(?![\s\S])``, the end of the text in both: Python's ``$`` also matches before a final new line.
_BIDI = r"\u202a-\u202e\u2066-\u2069"
# A one-line name (device name, app version): no control character at all, tab and new line included.
ONE_LINE_PATTERN = rf"^[^\x00-\x1f\x7f-\x9f\u2028\u2029{_BIDI}]*(?![\s\S])"
# Free text a judge types (a comment): new lines and tabs are fine; no other control character.
FREE_TEXT_PATTERN = rf"^[^\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029{_BIDI}]*(?![\s\S])"

# What a refusal says, per pattern (body.py turns msgspec's "matching regex" into these words).
REFUSALS = {
    ONE_LINE_PATTERN: "must be one line without control characters (tab, new line, escape, …) "
    "or bidirectional overrides (U+202A–U+202E, U+2066–U+2069)",
    FREE_TEXT_PATTERN: "must not hold control characters other than new line and tab (escape, "
    "carriage return, …) or bidirectional overrides (U+202A–U+202E, U+2066–U+2069)",
}

# Everything ``printable`` escapes; lone surrogates too, which no terminal encoding can write.
_UNSAFE = re.compile(rf"[\x00-\x1f\x7f-\x9f\u2028\u2029{_BIDI}\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` with every control, bidirectional-override and line-separator character written as
    ``\\uXXXX`` (ESC as ``\\u001b``, U+202E as ``\\u202e``), so it prints on one line, as sent, and
    cannot steer a terminal. The same escape is valid inside a JSON string."""
    return _UNSAFE.sub(lambda m: f"\\u{ord(m[0]):04x}", text)
