"""Decoding request bodies into msgspec Structs, for the box's APIs and the receiver: ``MalformedRequest``
(400) for what is not JSON or nests too deep, ``InvalidInput`` (422) with per-field messages a tablet's
developer reads at once for the rest."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
import msgspec.inspect

from appliance.shared.errors import InvalidInput, MalformedRequest
from appliance.shared.tablet_text import REFUSALS
from appliance.shared.times import parse_rfc3339

T = TypeVar("T")
_AT_PATH = re.compile(r"^(?P<message>.*?) - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`$")
_NAMED_FIELD = re.compile(r"field `(?P<field>[^`]+)`")
# msgspec's JSON type names, as a tablet's developer would say them.
_KINDS = {
    "str": "a string",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "object": "a JSON object",
    "array": "a JSON array",
    "null": "null",
}
_COMPARED = {">=": "at least", "<=": "at most", ">": "more than", "<": "less than"}
_PATTERN_REFUSALS = {f"Expected `str` matching regex {pattern!r}": said for pattern, said in REFUSALS.items()}

# How deep objects and arrays may nest in a body. The deepest the tablet API reads is a batch, 4 levels
# ({"sheets": [{"values": {...}}]}), and an uplink batch carries such a sheet as a record's payload;
# msgspec recurses once per level, and past Python's recursion
# limit it raises RecursionError, a 500. Checked before decoding, so every body gets one answer.
MAX_DEPTH = 32
# A JSON string, unterminated ones included (to the end of the body: never rescanned, so linear).
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
# Outside its strings, a body's brackets alone, every one as [ or ].
_BRACKETS_ONLY = (bytes.maketrans(b"{}", b"[]"), bytes(b for b in range(256) if b not in b"[]{}"))


def _nested(depth: int) -> re.Pattern[bytes]:
    """Brackets that pair up, at most ``depth`` levels deep. Possessive: never backtracks, so linear."""
    group = rb"\[\]"
    for _ in range(depth - 1):
        group = rb"\[(?:" + group + rb")*+\]"
    return re.compile(rb"(?:" + group + rb")*+")


_PAIRED = _nested(MAX_DEPTH)


def decode(raw: bytes, kind: type[T]) -> T:
    # RFC 8259 lets a parser ignore a byte order mark; some tablet stacks send one.
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    if not raw.strip():
        raise MalformedRequest("the request has no body; send a JSON object")
    if not nests_within_limit(raw):
        raise MalformedRequest(
            f"the body is not valid JSON, or nests objects and arrays more than {MAX_DEPTH} levels deep "
            "(no request to the box needs more than 4)"
        )
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        field, message = field_error(str(exc), kind)
        raise InvalidInput(f"{field or 'body'}: {message}", [{"field": field, "message": message}]) from None
    except msgspec.DecodeError as exc:
        raise MalformedRequest(f"the body is not valid JSON ({exc})") from None


def nests_within_limit(raw: bytes) -> bool:
    """Whether a body's objects and arrays pair up at most ``MAX_DEPTH`` levels deep (brackets in
    its strings do not count). False for JSON too deep, and for some bodies that are not JSON at
    all (brackets that do not pair up); both are 400 malformed-request. One linear pass of C regex
    code, so a hostile 1 MiB body costs milliseconds, not a recursion per level."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return True  # the usual body, known without reading it through
    return _PAIRED.fullmatch(_STRING.sub(b"", raw).translate(*_BRACKETS_ONLY)) is not None


def field_error(text: str, kind: Any = None) -> tuple[str, str]:
    """msgspec's 'Expected `int` <= 100 - at `$.battery`' -> ('battery', 'must be at most 100')."""
    path = ""
    message = text
    match = _AT_PATH.match(text)
    if match:
        message, path = match.group("message"), match.group("path")
    path = path.lstrip(".")
    named = _NAMED_FIELD.search(message)
    if named and ("missing required" in message or "unknown field" in message):
        path = f"{path}.{named.group('field')}" if path else named.group("field")
    # '$.values["technique"]' -> 'values.technique', '$.sheets[3]' stays readable as 'sheets[3]'.
    path = re.sub(r'\["([^"]*)"\]', r".\1", path)
    said = plain(message, _allowed(kind, path))
    if match and match.group("key"):
        said = f"each key {said}" if said.startswith("must ") else f"a key: {said}"
    return path or "body", said


def plain(message: str, allowed: list[str] | None = None) -> str:
    """msgspec's wording -> what a tablet's developer reads at once; anything else unchanged."""
    if m := re.fullmatch(r"Expected `([^`]+)`, got `([^`]+)`", message):
        got = "a number with a decimal point" if m[2] == "float" else _kinds(m[2])
        return f"must be {_kinds(m[1])}, not {got}"
    if m := re.fullmatch(r"Expected `(str|array|object)` of length (>=|<=) (\d+)", message):
        unit = "characters" if m[1] == "str" else "items"
        if m[2] == ">=" and m[3] == "1":
            return "must not be empty"
        return f"must have {_COMPARED[m[2]]} {m[3]} {unit}"
    if m := re.fullmatch(r"Expected `(?:int|float)` (>=|<=|>|<) (\S+)", message):
        return f"must be {_COMPARED[m[1]]} {m[2]}"
    if message.startswith("Object missing required field"):
        return "is required"
    if message.startswith("Object contains unknown field"):
        return "is not a field of this request"
    if message == "Number out of range":
        return "is out of range"
    if message in _PATTERN_REFUSALS:
        return _PATTERN_REFUSALS[message]
    if message == "Invalid UUID":
        return "must be a UUID, e.g. 1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    if m := re.fullmatch(r"Invalid enum value (.+)", message):
        if allowed:
            return f"must be one of {', '.join(allowed)}, not {m[1]}"
        return f"{m[1]} is not one of the allowed values"
    return message


def _kinds(names: str) -> str:
    """'int | null' -> 'a whole number or null'."""
    return " or ".join(_KINDS.get(name, name) for name in names.split(" | "))


def _allowed(kind: Any, path: str) -> list[str] | None:
    """The values a top-level enum or literal field of ``kind`` takes, for naming them in a refusal."""
    if kind is None or not path or "." in path or "[" in path:
        return None
    info = msgspec.inspect.type_info(kind)
    if not isinstance(info, msgspec.inspect.StructType):
        return None
    for field in info.fields:
        if field.encode_name != path:
            continue
        types = field.type.types if isinstance(field.type, msgspec.inspect.UnionType) else (field.type,)
        for t in types:
            if isinstance(t, msgspec.inspect.LiteralType):
                return [str(v) for v in t.values]
            if isinstance(t, msgspec.inspect.EnumType):
                return [str(member.value) for member in t.cls]
    return None


def check_time(field: str, value: str, errors: list[dict[str, str]]) -> None:
    try:
        parse_rfc3339(value)
    except ValueError as exc:
        errors.append({"field": field, "message": str(exc)})
