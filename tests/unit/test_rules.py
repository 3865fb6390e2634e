"""Pure rules: score values on criteria, times, body errors, config precedence, rate limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.core.config import ConfigError, load_config, resolve_data_dir
from appliance.core.ledger import on_step, value_problem
from appliance.shared.errors import InvalidInput, MalformedRequest, TooManyRequests
from appliance.shared.times import parse_rfc3339
from appliance.web.body import decode, nests_within_limit
from edge_api.limits import TokenBuckets
from edge_api.schemas import HeartbeatIn, SheetIn
from edge_api.tablet.controllers import parse_sheet


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (9.4, True),
        (0.1 * 3, True),
        (10, True),
        (0, True),
        (10.0000000001, True),
        (9.45, False),
        (10.1, False),
        (-0.1, False),
        (True, False),
        ("9", False),
    ],
)
def test_value_must_be_in_range_and_on_step(value, ok) -> None:
    assert (value_problem(value, 0, 10, 0.1) is None) is ok


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (-5.1, "must be between -5 and 5"),  # off the range and off the step: the range is the news
        (5.25 + 0.25, "must be between -5 and 5"),
        (0.3, "must be on a step of 0.25 from -5"),
    ],
)
def test_a_value_off_the_range_is_told_its_range_first(value, problem) -> None:
    assert value_problem(value, -5, 5, 0.25) == problem


def test_float_noise_is_read_as_its_step_point() -> None:
    assert on_step(0.1 * 3, 0, 0.1) == 0.3
    assert on_step(7.5, 0, 0.5) == 7.5


@pytest.mark.parametrize(
    "text",
    [
        "2026-03-14T10:42:07-05:00",
        "2026-03-14T15:42:07Z",
        "2026-03-14T15:42:07.123456789Z",
        "2026-03-14 15:42:07+00:00",
    ],
)
def test_rfc3339_accepts_times_with_offsets(text) -> None:
    assert parse_rfc3339(text).utcoffset() is not None


@pytest.mark.parametrize("text", ["2026-03-14T10:42:07", "2026-03-14", "yesterday", "2026-13-14T10:42:07Z"])
def test_rfc3339_refuses_the_rest(text) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(text)


def test_body_errors_tell_400_from_422_and_name_the_field() -> None:
    with pytest.raises(MalformedRequest):
        decode(b"{nope", SheetIn)
    with pytest.raises(InvalidInput) as info:
        decode(b'{"sent_at": "2026-03-14T10:42:07Z", "battery": 140}', HeartbeatIn)
    assert info.value.errors[0]["field"] == "battery"
    with pytest.raises(InvalidInput) as info:
        parse_sheet(
            b'{"sheet_id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "entry_id": "1",'
            b' "values": {"a": 1, "t": "x"}, "submitted_at": "2026-03-14T10:42:07Z"}'
        )
    assert info.value.errors == [{"field": "values.t", "message": "must be a number"}]
    with pytest.raises(InvalidInput) as info:
        parse_sheet(
            b'{"sheet_id": "not-a-uuid", "entry_id": "1", "values": {},'
            b' "submitted_at": "2026-03-14T10:42:07Z"}'
        )
    assert info.value.errors[0]["field"] == "sheet_id"


def test_a_body_may_start_with_a_byte_order_mark() -> None:
    beat = decode(b'\xef\xbb\xbf{"sent_at": "2026-03-14T10:42:07Z", "battery": 40}', HeartbeatIn)
    assert beat.battery == 40
    with pytest.raises(MalformedRequest, match="no body"):
        decode(b"\xef\xbb\xbf  ", HeartbeatIn)


@pytest.mark.parametrize(
    ("body", "within"),
    [
        (b"[" * 32 + b"]" * 32, True),
        (b"[" * 33 + b"]" * 33, False),
        (b'{"a":[' * 16 + b"1" + b"]}" * 16, True),  # objects and arrays alike: 32 levels
        (b'{"a":[' * 17 + b"1" + b"]}" * 17, False),
        (b'{"a": "' + b"[{" * 500 + b'"}', True),  # brackets inside a string do not nest
        (b'{"a": "\\"' + b"[" * 40 + b'"}', True),  # nor after an escaped quote
        (b'{"a": "x\\\\", "b": ' + b"[" * 33 + b"]" * 33 + b"}", False),  # JSON "x\\" ends there
        (b'{"sheets": [' + b", ".join([b'{"values": {"a": 1}}'] * 500) + b"]}", True),  # a full batch
        (b"[" * 10_000, False),  # never closed
        (b'"' + b'\\"' * 1000 + b"[" * 40, True),  # an unterminated string: msgspec says what is wrong
    ],
)
def test_a_body_nests_at_most_32_levels(body: bytes, within: bool) -> None:
    assert nests_within_limit(body) is within


def test_a_body_nested_too_deep_is_malformed_whatever_its_type() -> None:
    for kind in (SheetIn, HeartbeatIn):
        with pytest.raises(MalformedRequest, match="32 levels"):
            decode(b'{"values": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", kind)


_SHEET = '"sheet_id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "submitted_at": "2026-03-14T10:42:07Z"'


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (
            f'{{{_SHEET}, "entry_id": 142, "values": {{}}}}',
            "entry_id",
            "must be a string, not a whole number",
        ),
        (f'{{{_SHEET}, "entry_id": "", "values": {{}}}}', "entry_id", "must not be empty"),
        (f'{{{_SHEET}, "entry_id": "1", "values": []}}', "values", "must be a JSON object, not a JSON array"),
        (f'{{{_SHEET}, "entry_id": "1", "values": {{"": 1}}}}', "values", "each key must not be empty"),
        (f'{{{_SHEET}, "entry_id": "1", "values": {{"a": true}}}}', "values.a", "must be a number"),
        (f'{{{_SHEET}, "entry_id": "1", "values": {{"a": 1, "b": 1e400}}}}', "values.b", "is out of range"),
        (f'{{{_SHEET}, "values": {{}}}}', "entry_id", "is required"),
        (
            f'{{{_SHEET}, "entry_id": "1", "values": {{}}, "score": 3}}',
            "score",
            "is not a field of this request",
        ),
        (
            f'{{{_SHEET}, "entry_id": "1", "values": {{}}, "comment": "{"x" * 2001}"}}',
            "comment",
            "must have at most 2000 characters",
        ),
        (
            '{"sheet_id": "142", "entry_id": "1", "values": {}, "submitted_at": "2026-03-14T10:42:07Z"}',
            "sheet_id",
            "must be a UUID, e.g. 1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        ),
        (
            '{"sheet_id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "entry_id": "1", "values": {},'
            ' "submitted_at": "2026-03-14T10:42:07"}',
            "submitted_at",
            "must be an RFC 3339 date-time with an offset, e.g. 2026-03-14T10:42:07-05:00",
        ),
        ("[]", "body", "must be a JSON object, not a JSON array"),
    ],
)
def test_a_bad_sheet_is_told_what_is_wrong_in_plain_words(body: str, field: str, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_sheet(body.encode())
    assert info.value.errors[0] == {"field": field, "message": message}
    assert info.value.detail == f"{field}: {message}"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"battery": 101}', "battery: must be at most 100"),
        ('{"battery": 1.5}', "battery: must be a whole number or null, not a number with a decimal point"),
        ('{"queue_depth": -1}', "queue_depth: must be at least 0"),
        ('{"battery": -1e400}', "battery: is out of range"),
    ],
)
def test_a_bad_heartbeat_is_told_the_bound_it_broke(body: str, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        decode(b'{"sent_at": "2026-03-14T10:42:07Z", ' + body[1:].encode(), HeartbeatIn)
    assert info.value.detail == message


def test_config_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    (tmp_path / "venuebox.toml").write_text("port = 9000\n[limits]\nbatch_max_sheets = 100\n")
    config = load_config(tmp_path, environ={"VENUEBOX_PORT": "9100", "VENUEBOX_ADMIN_PORT": "9101"})
    assert (config.port, config.admin_port, config.batch_max_sheets) == (9100, 9101, 100)
    assert load_config(tmp_path, overrides={"port": 9200}, environ={"VENUEBOX_PORT": "9100"}).port == 9200
    assert load_config(tmp_path / "empty", environ={}).port == 8080


def test_config_errors_are_readable(tmp_path: Path) -> None:
    (tmp_path / "venuebox.toml").write_text("prot = 9000\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(tmp_path, environ={})
    with pytest.raises(ConfigError, match="port"):
        load_config(tmp_path / "x", environ={"VENUEBOX_PORT": "http"})


def test_a_comment_limit_above_what_the_sheet_schema_takes_is_refused(tmp_path: Path) -> None:
    assert load_config(tmp_path, environ={"VENUEBOX_COMMENT_MAX_CHARS": "500"}).comment_max_chars == 500
    with pytest.raises(ConfigError, match="comment_max_chars must be between 0 and 2000"):
        load_config(tmp_path, environ={"VENUEBOX_COMMENT_MAX_CHARS": "2001"})


def test_data_dir_precedence() -> None:
    env = {"VENUEBOX_DATA_DIR": "/a", "STATE_DIRECTORY": "/b:/c"}
    assert resolve_data_dir("/cli", env) == Path("/cli")
    assert resolve_data_dir(None, env) == Path("/a")
    assert resolve_data_dir(None, {"STATE_DIRECTORY": "/b:/c"}) == Path("/b")
    assert resolve_data_dir(None, {}) == Path("venuebox-data")


def test_token_bucket_refuses_past_the_burst_and_says_when() -> None:
    buckets = TokenBuckets(rate=1.0, burst=2)
    buckets.take("a")
    buckets.take("a")
    with pytest.raises(TooManyRequests) as info:
        buckets.take("a")
    assert info.value.retry_after >= 1
    buckets.take("b")  # another key has its own bucket
