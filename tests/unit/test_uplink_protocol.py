"""The uplink's wire contract: signatures, and the receiver's record-by-record checks."""

from __future__ import annotations

import msgspec
import pytest

from uplink.protocol import (
    SIGNATURE_TOLERANCE_S,
    BadSignature,
    Record,
    RecordsAck,
    RecordsIn,
    Rejected,
    signature,
    verify_signature,
)
from uplink.receiver_store import check_batch, record_problem

TOKEN = "k3Yt0ken-for-tests_0123456789abcdefghijABCDEFG"
BODY = b'{"records":[{"id":"r1","kind":"sheet","created_at":"2026-03-14T10:42:07Z","payload":{}}]}'
NOW = 1_773_000_000


SHEET = {"sheet_id": "s1", "seq": 1, "hash": "ab" * 32}
AUDIT = {"seq": 7, "actor": "tech", "action": "box.unfreeze", "detail": {}, "hash": "cd" * 32}


def good_record(**fields: object) -> Record:
    return Record(
        **{"id": "r1", "kind": "sheet", "created_at": "2026-03-14T10:42:07-05:00", "payload": SHEET} | fields
    )


def test_signature_made_by_the_sender_verifies() -> None:
    verify_signature(TOKEN, signature(TOKEN, NOW, BODY), BODY, NOW + 1)


def test_signature_has_the_documented_shape() -> None:
    header = signature(TOKEN, NOW, BODY)
    t, v1 = header.split(",")
    assert t == f"t={NOW}"
    assert v1.startswith("v1=") and len(v1) == 3 + 64


def test_changed_body_is_refused() -> None:
    header = signature(TOKEN, NOW, BODY)
    with pytest.raises(BadSignature, match="does not match"):
        verify_signature(TOKEN, header, BODY.replace(b"r1", b"r2"), NOW)


def test_another_token_is_refused() -> None:
    with pytest.raises(BadSignature, match="does not match"):
        verify_signature(TOKEN + "x", signature(TOKEN, NOW, BODY), BODY, NOW)


@pytest.mark.parametrize("skew", [SIGNATURE_TOLERANCE_S + 1, -(SIGNATURE_TOLERANCE_S + 1)])
def test_signature_outside_the_tolerance_is_refused(skew: int) -> None:
    with pytest.raises(BadSignature, match="clock"):
        verify_signature(TOKEN, signature(TOKEN, NOW, BODY), BODY, NOW + skew)


def test_signature_at_the_edge_of_the_tolerance_verifies() -> None:
    verify_signature(TOKEN, signature(TOKEN, NOW, BODY), BODY, NOW + SIGNATURE_TOLERANCE_S)


@pytest.mark.parametrize("header", [None, "", "v1=abc", "t=soon,v1=abc", "garbage"])
def test_missing_or_malformed_header_is_refused(header: str | None) -> None:
    with pytest.raises(BadSignature):
        verify_signature(TOKEN, header, BODY, NOW)


def test_records_in_decodes_any_field_values_so_each_record_is_judged_alone() -> None:
    body = b'{"records":[{"id":5,"kind":"nope"},{"id":"r2","kind":"sheet","created_at":"x","payload":[]}]}'
    records = msgspec.json.decode(body, type=RecordsIn).records
    assert [r.id for r in records] == [5, "r2"]
    assert records[0].payload is None


def test_records_in_refuses_unknown_top_level_fields() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"records":[],"extra":1}', type=RecordsIn)


def test_ack_encodes_rejected_records_with_their_reason() -> None:
    ack = RecordsAck(acked=["a"], rejected=[Rejected(id="b", status=422, reason="kind: bad")])
    assert msgspec.json.decode(msgspec.json.encode(ack)) == {
        "acked": ["a"],
        "rejected": [{"id": "b", "status": 422, "reason": "kind: bad"}],
    }


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"id": None}, "id:"),
        ({"id": ""}, "id:"),
        ({"id": "x" * 201}, "id: at most 200"),
        ({"kind": "score"}, "kind: must be one of"),
        ({"created_at": "2026-03-14 10:42"}, "created_at:"),
        ({"created_at": "2026-03-14T10:42:07"}, "created_at:"),  # no offset
        ({"payload": [1, 2]}, "payload: must be a JSON object"),
        ({"payload": None}, "payload:"),
        ({"payload": {"hash": "ab" * 32}}, "payload.seq: a sheet record carries its ledger seq"),
        ({"payload": SHEET | {"seq": "1"}}, "payload.seq:"),
        ({"payload": SHEET | {"seq": True}}, "payload.seq:"),
        ({"payload": SHEET | {"seq": 0}}, "payload.seq:"),
        ({"payload": SHEET | {"hash": None}}, "payload.hash: a sheet record carries its ledger hash"),
        ({"payload": SHEET | {"hash": "AB" * 32}}, "payload.hash:"),
        ({"kind": "audit", "payload": {}}, "payload.seq: an audit record carries its audit-log seq"),
        ({"kind": "audit", "payload": AUDIT | {"seq": 0}}, "payload.seq:"),
        ({"kind": "audit", "payload": AUDIT | {"hash": "x"}}, "payload.hash: an audit record carries its"),
    ],
)
def test_record_problem_names_the_bad_field(fields: dict[str, object], reason: str) -> None:
    problem = record_problem(good_record(**fields))
    assert problem is not None and problem.startswith(reason)


def test_good_record_has_no_problem() -> None:
    assert record_problem(good_record(id="x" * 200)) is None
    assert record_problem(good_record(kind="audit", payload=AUDIT)) is None
    # Only sheets and audit records have a chain place.
    assert record_problem(good_record(kind="heartbeat", payload={})) is None


def test_check_batch_notes_each_records_chain_place() -> None:
    batch = check_batch(
        [
            good_record(id="a"),
            good_record(id="b", kind="audit", payload=AUDIT),
            good_record(id="c", kind="event", payload={"seq": "x"}),
            good_record(id="d", kind="audit", payload={"seq": "x"}),
        ]
    )
    assert batch.positions == [("sheets", 1, "ab" * 32), ("audit", 7, "cd" * 32), None]
    assert [r.id for r in batch.rejected] == ["d"]


def test_check_batch_keeps_request_order_and_rejects_bad_records_alone() -> None:
    batch = check_batch([good_record(id="a"), good_record(id="b", kind="bogus"), good_record(id="c")])
    assert batch.acked == ["a", "c"]
    assert [(r.id, r.status) for r in batch.rejected] == [("b", 422)]
    assert [row[0] for row in batch.rows] == ["a", "c"]
