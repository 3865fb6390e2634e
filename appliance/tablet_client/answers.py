"""What the box's answer to a sheet says, read from a single call or a batch item, and the protocol's
table "What a client does with an answer" as sets of statuses:

* 200, 201 (`STORED_STATUSES`) -> the box has it: out of the send queue, kept until safe;
* 400, 403, 409, 413, 422 (`HOLD_STATUSES`) -> held aside with the box's problem (never resent unchanged);
* anything else, or no answer at all (`must_wait`) -> the sheet stays queued and sending stops for now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from appliance.tablet_client.errors import problem_of
from appliance.tablet_client.sheet_queue import QueuedSheet
from appliance.web.retry import retry_after_s

# Answers that can never succeed unchanged: the sheet is held aside with the problem.
HOLD_STATUSES = frozenset({400, 403, 409, 413, 422})
STORED_STATUSES = frozenset({200, 201})


class LedgerMark(msgspec.Struct, frozen=True):
    """The box's ledger mark (an answer's ``ledger``): its history's ``epoch`` and the highest seq
    that is safe from a rebuild (``safe_seq``)."""

    epoch: str
    safe_seq: int


@dataclass
class SheetAnswer:
    """One sheet's answer, from a single call or a batch item; status None = no answer."""

    status: int | None
    problem: dict[str, Any] | None = None
    receipt: dict[str, Any] | None = None
    retry_after_s: float | None = None
    error: str | None = None
    sent: bool = True  # False: not sent because an earlier sheet had to wait
    ledger: LedgerMark | None = None  # the answer's ledger mark, if it has one


def ledger_mark(value: Any) -> LedgerMark | None:
    """A ledger mark as the box sent it, or None (an older box, or something else)."""
    if (
        isinstance(value, dict)
        and isinstance(value.get("epoch"), str)
        and isinstance(value.get("safe_seq"), int)
    ):
        return LedgerMark(epoch=value["epoch"], safe_seq=value["safe_seq"])
    return None


def answer_of(response: httpx.Response) -> SheetAnswer:
    """The answer of a single sheet's call (or a whole batch call that was not answered item by item)."""
    if response.status_code in STORED_STATUSES:
        body = response.json()
        ledger = body.pop("ledger", None) if isinstance(body, dict) else None
        return SheetAnswer(response.status_code, receipt=body, ledger=ledger_mark(ledger))
    return SheetAnswer(
        response.status_code, problem=problem_of(response), retry_after_s=retry_after_s(response)
    )


def batch_answers(chunk: list[QueuedSheet], body: dict[str, Any]) -> list[SheetAnswer]:
    """Each sheet's answer from a batch call's 200 body, in the order of ``chunk``; an item that does
    not match its sheet counts as no answer. Every answer carries the body's ledger mark."""
    results = body.get("results") or []
    mark = ledger_mark(body.get("ledger"))
    answers = []
    for index, queued in enumerate(chunk):
        item = results[index] if index < len(results) else None
        if not isinstance(item, dict) or item.get("sheet_id") not in (queued.sheet_id, None):
            answers.append(SheetAnswer(None, error="the batch answer does not match the batch", ledger=mark))
            continue
        status = int(item.get("status", 0)) or None
        answers.append(
            SheetAnswer(status, problem=item.get("problem"), receipt=item.get("sheet"), ledger=mark)
        )
    return answers


def must_wait(answer: SheetAnswer) -> bool:
    """Whether the answer leaves the sheet queued (neither stored nor held)."""
    return answer.status not in STORED_STATUSES | HOLD_STATUSES
