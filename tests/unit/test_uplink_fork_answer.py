"""What the box makes of a 409 ``chain-fork``: which of its chains forked, in words that name it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from uplink.answers import classify


def fork_answer(**fields: Any) -> httpx.Response:
    body = {"type": "/problems/chain-fork", "title": "t", "status": 409, "detail": "d"} | fields
    return httpx.Response(409, json=body, headers={"content-type": "application/problem+json"})


def test_an_audit_log_fork_is_named_as_such_and_never_as_a_sheet() -> None:
    outcome = classify(fork_answer(chain="audit", seq=7), "http://cloud.test", "vb-1", 0.0)
    assert (outcome.kind, outcome.fork_chain, outcome.fork_seq) == ("fork", "audit", 7)
    assert outcome.error is not None
    assert "different audit-log entry at audit-log position 7 of this box" in outcome.error
    assert "this box's audit log and the cloud's copy disagree" in outcome.error
    assert "sheet" not in outcome.error and "ledger" not in outcome.error


@pytest.mark.parametrize("chain", ["sheets", None, "something-newer"])
def test_a_ledger_fork_or_one_that_names_no_chain_is_the_sheets(chain: str | None) -> None:
    fields = {"seq": 3} | ({"chain": chain} if chain else {})
    outcome = classify(fork_answer(**fields), "http://cloud.test", "vb-1", 0.0)
    assert (outcome.kind, outcome.fork_chain, outcome.fork_seq) == ("fork", "sheets", 3)
    assert outcome.error is not None
    assert "different sheet at ledger position 3 of this box" in outcome.error
    assert '"The cloud holds a different sheet"' in outcome.error


def test_a_fork_without_its_seq_still_says_which_chain() -> None:
    audit = classify(fork_answer(chain="audit"), "http://cloud.test", "vb-1", 0.0)
    assert audit.error is not None and "at an audit-log position of this box" in audit.error
    sheets = classify(fork_answer(seq="x"), "http://cloud.test", "vb-1", 0.0)
    assert sheets.error is not None and "at a ledger position of this box" in sheets.error
