"""Text a tablet sends: what the API refuses in it (the patterns its schemas use) and how the CLI
and the console print what is stored."""

from __future__ import annotations

import json
import re

import pytest

from appliance.shared.tablet_text import FREE_TEXT_PATTERN, ONE_LINE_PATTERN, printable

WHAT_A_JUDGE_TYPES = ["Judge 1 iPad", "Zoë’s tablet", "حكم ١", "שופט 2", "👩‍⚖️ panel 👨‍👩‍👧", ""]
STEERING = [
    "\x1b[2J",
    "\x1b]0;x\x07",
    "\x9b31m",
    "\x7f",
    "\x00",
    "\r",
    "\u202e",
    "\u202a",
    "\u2066",
    "\u2069",
]


@pytest.mark.parametrize("text", WHAT_A_JUDGE_TYPES)
def test_what_a_judge_types_is_accepted_and_printed_as_is(text: str) -> None:
    assert re.search(ONE_LINE_PATTERN, text) and re.search(FREE_TEXT_PATTERN, text)
    assert printable(text) == text


@pytest.mark.parametrize("steering", STEERING)
def test_control_and_bidi_characters_are_refused_and_printed_escaped(steering: str) -> None:
    text = f"iPad{steering}1"
    assert not re.search(ONE_LINE_PATTERN, text) and not re.search(FREE_TEXT_PATTERN, text)
    shown = printable(text)
    assert shown.isprintable() and shown.startswith("iPad\\u") and shown.endswith("1")
    # The same escape inside a JSON string reads back as the character.
    assert json.loads(f'"{shown}"') == text


def test_a_comment_may_hold_new_lines_and_tabs_but_a_name_may_not() -> None:
    for text in ("first line\nsecond line", "score:\t9.4", "ends with a new line\n"):
        assert re.search(FREE_TEXT_PATTERN, text)
        assert not re.search(ONE_LINE_PATTERN, text)  # Python's $ would let the last one through
        assert "\n" not in printable(text) and "\t" not in printable(text)
