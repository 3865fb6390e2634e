"""Results on the wire (docs/protocol.md, ``GET /admin/v1/results``): what the admin API encodes, what
the console (tui/) decodes, what ``venuebox results --format json`` prints and what the printed
results (appliance/core/print_results.py) are made from. Built by ``appliance.core.results
.results_out`` from the engine's ``Results`` and each session's sign-offs and lock
(``appliance.core.sessions.session_states``).

Numbers are text: a score is the exact decimal at the entry's precision ("8.90", never 8.9 or a
float), a judge's total the exact decimal sum. A result is ``final`` only when its session is
locked and every judge of its panel signed off; every other result is ``provisional``, on every
surface. Field order is wire order.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct, field


class SessionState(Struct, kw_only=True):
    """A session's lock and sign-offs: ``signed_off`` and ``panel`` are judge ids, sorted."""

    session_id: str
    locked: bool
    locked_reason: str | None
    locked_at: str | None
    signed_off: list[str]
    panel: list[str]


class ResultRow(Struct, kw_only=True):
    """One entry's result. ``group``: its rank_within fields' values (by field name, as the scoring
    block lists them; None for an empty cell); ``score``: None when nobody scored it; ``rank`` and
    ``award``: None unless it is complete; ``dropped``: the judges a trimmed mean left out;
    ``totals``: each judge's current sheet total (by judge id); ``explanation``: the result in
    words."""

    entry_id: str
    session_id: str
    order: int
    title: str
    studio: str | None
    category: str | None
    division: str | None
    level: str | None
    group: dict[str, str | None]
    score: str | None
    rank: int | None
    award: str | None
    complete: bool
    final: bool
    provisional: bool
    dropped: list[str]
    totals: dict[str, str]
    explanation: str
    session_name: str | None = None
    shared_with: list[str] = field(default_factory=list)


class ResultGroup(Struct, kw_only=True):
    """A rank_within group (``fields``: its values by field name, in rank_within order), its rules in
    words (``rule``: how scores are made, ties broken, ranks counted and awards given) and its
    entries by rank (unranked last)."""

    fields: dict[str, str | None]
    rule: str
    rows: list[ResultRow]


class ResultsOut(Struct, kw_only=True):
    """The current event's results, possibly filtered to a session or group: the ranks are always
    those of the event-wide group. ``rules``: the event's scoring block as JSON (its defaults when the
    event has none); ``sessions``: the state of each session the listing covers."""

    event_id: str
    event_name: str
    generated_at: str
    groups: list[ResultGroup]
    sessions: list[SessionState]
    rules: dict[str, Any]
