"""Where things are in a JSON document: the line of each key and item, by path, so a problem in
event.json can point at the line to fix (json.loads keeps no positions)."""

from __future__ import annotations

import contextlib
import json
import re
from bisect import bisect_right
from collections.abc import Callable
from typing import Any

# json.decoder's string scanner (C-accelerated) is there at run time but missing from typeshed.
_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


class JsonLines:
    """Line numbers of the keys and items of a JSON document, by path (``("criteria", 0, "min")``),
    so a problem can point at the line to fix. Also notes keys that appear twice in an object.
    ``text`` is a document json.loads has already parsed (``reading.read_event_json``)."""

    _WS = re.compile(r"[ \t\n\r]*")
    _SCALAR = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null|NaN|-?Infinity")

    def __init__(self, text: str) -> None:
        self.text = text
        self._starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.lines: dict[tuple[Any, ...], int] = {}
        self.duplicates: list[tuple[int, tuple[Any, ...]]] = []
        # The text is valid JSON already; a locator hiccup only costs precise lines.
        with contextlib.suppress(IndexError, ValueError):
            self._value(0, ())

    def line(self, path: tuple[Any, ...]) -> int:
        """The line of ``path``, or of its nearest ancestor that has one, else 1."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return 1

    def _line_at(self, pos: int) -> int:
        return bisect_right(self._starts, pos)

    def _skip(self, pos: int) -> int:
        return self._end_of(self._WS, pos)

    def _end_of(self, token: re.Pattern[str], pos: int) -> int:
        found = token.match(self.text, pos)
        if found is None:
            raise ValueError(f"no JSON token at {pos}")  # a locator hiccup (see __init__)
        return found.end()

    def _value(self, pos: int, path: tuple[Any, ...]) -> int:
        pos = self._skip(pos)
        char = self.text[pos]
        if char == "{":
            seen: set[str] = set()
            pos = self._skip(pos + 1)
            if self.text[pos] == "}":
                return pos + 1
            while True:
                pos = self._skip(pos)
                key, end = _scanstring(self.text, pos + 1)
                child = (*path, key)
                if key in seen:
                    self.duplicates.append((self._line_at(pos), child))
                seen.add(key)
                self.lines[child] = self._line_at(pos)  # json.loads keeps the last duplicate
                pos = self._skip(end) + 1  # past ':'
                pos = self._skip(self._value(pos, child))
                if self.text[pos] == "}":
                    return pos + 1
                pos += 1  # ','
        if char == "[":
            index = 0
            pos = self._skip(pos + 1)
            if self.text[pos] == "]":
                return pos + 1
            while True:
                pos = self._skip(pos)
                self.lines[(*path, index)] = self._line_at(pos)
                pos = self._skip(self._value(pos, (*path, index)))
                index += 1
                if self.text[pos] == "]":
                    return pos + 1
                pos += 1
        if char == '"':
            return _scanstring(self.text, pos + 1)[1]
        return self._end_of(self._SCALAR, pos)


def dotted(path: tuple[Any, ...]) -> str:
    """A JSON path as a person reads it: ``("criteria", 0, "min")`` -> ``criteria[0].min``."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
