"""docs/protocol.md's uplink section says what the code does: each statement a receiver is built
from is checked here against the constants and types the box and the reference receiver use."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import msgspec

from appliance.core.outbox import prepare_batch
from appliance.core.storage import Store
from appliance.web.problems import PROBLEM_BASE
from tests.conftest import make_box
from uplink.protocol import (
    BATCH_KEY_PATTERN,
    CHECK_KEY_PATTERN,
    SIGNATURE_TOLERANCE_S,
    RecordsAck,
    Rejected,
)
from uplink.receiver import RECEIVER_TYPES
from uplink.receiver_store import MAX_IDEMPOTENCY_KEY_CHARS
from uplink.worker import BAD_ANSWER_TRIES

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def uplink_section() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("\n## Uplink (box → cloud)")
    end = text.find("\n## ", start + 1)
    # Lines joined, so a statement wrapped over two lines reads as one.
    return re.sub(r"\n(?!\||\n|```)", " ", text[start : end if end > 0 else None])


def test_the_idempotency_key_formats_are_the_codes_and_the_box_keys_by_them(tmp_path: Path) -> None:
    section = uplink_section()
    assert f"`{BATCH_KEY_PATTERN}`" in section
    assert f"`{CHECK_KEY_PATTERN}`" in section
    assert f"1–{MAX_IDEMPOTENCY_KEY_CHARS} characters" in section
    assert re.match(CHECK_KEY_PATTERN, f"check-{uuid.uuid4()}")
    with Store(make_box(tmp_path / "box").db_path) as store:
        batch = store.query(lambda conn: prepare_batch(conn, 10, 1_000_000))
    assert batch is not None and re.match(BATCH_KEY_PATTERN, batch.batch_id)


def _doc_type(annotation: Any) -> str:
    names = {str: "string", int: "integer"}
    if getattr(annotation, "__origin__", None) is list:
        (item,) = annotation.__args__
        return "array of strings" if item is str else "array of objects"
    return names[annotation]


def test_the_ack_and_rejected_schema_tables_match_the_types_the_box_decodes() -> None:
    section = uplink_section()
    for prefix, struct in (("", RecordsAck), ("rejected[].", Rejected)):
        for field in msgspec.structs.fields(struct):
            row = f"| `{prefix}{field.name}` | {_doc_type(field.type)}, "
            row += "required |" if field.required else "optional"
            assert row in section, row
    # The example in the doc decodes as an ack.
    example = '{"acked": ["a"], "rejected": [{"id": "b", "status": 422, "reason": "kind: no"}]}'
    assert msgspec.json.decode(example, type=RecordsAck).rejected == [
        Rejected(id="b", status=422, reason="kind: no")
    ]


def test_problem_types_tolerance_and_tries_are_stated_as_the_code_has_them() -> None:
    section = uplink_section()
    assert PROBLEM_BASE == "/problems/" and "`type` is the relative URI `/problems/<slug>`" in section
    for status, slug, *_ in RECEIVER_TYPES.values():
        assert f"| {status} | `{slug}` |" in section, slug
    assert f"**{SIGNATURE_TOLERANCE_S} s**" in section
    assert f"after {BAD_ANSWER_TRIES} such answers in a row (`BAD_ANSWER_TRIES`" in section
    assert "**integrity, not secrecy**" in section
    assert "its **2xx answer** (the ack)" in section and "No refusal is replayed" in section
    assert "The **clock-skew check** is the first part of the signature check" in section
