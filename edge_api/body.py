"""Decoding request bodies: 400 for what is not JSON, 422 with per-field messages for the rest."""

from __future__ import annotations

import re
from typing import TypeVar

import msgspec

from appliance.errors import InvalidInput, MalformedRequest
from appliance.times import parse_rfc3339

T = TypeVar("T")
_AT_PATH = re.compile(r"^(?P<message>.*?) - at `\$(?P<path>[^`]*)`$")
_NAMED_FIELD = re.compile(r"field `(?P<field>[^`]+)`")


def decode(raw: bytes, kind: type[T]) -> T:
    if not raw.strip():
        raise MalformedRequest("the request has no body; send a JSON object")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        field, message = field_error(str(exc))
        raise InvalidInput(f"{field or 'body'}: {message}", [{"field": field, "message": message}]) from None
    except msgspec.DecodeError as exc:
        raise MalformedRequest(f"the body is not valid JSON ({exc})") from None


def field_error(text: str) -> tuple[str, str]:
    """msgspec's 'Expected `int`, got `str` - at `$.battery`' -> ('battery', 'Expected `int`, got `str`')."""
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
    return path or "body", message


def check_time(field: str, value: str, errors: list[dict[str, str]]) -> None:
    try:
        parse_rfc3339(value)
    except ValueError as exc:
        errors.append({"field": field, "message": str(exc)})
