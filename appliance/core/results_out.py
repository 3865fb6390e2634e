"""The results every surface shows (admin API, console, ``venuebox results``, the export's
results.csv and results.pdf): the engine's ``Results`` (appliance/core/results.py) with each
session's lock and sign-offs (appliance/core/sessions.py), as ``ResultsOut``
(appliance/shared/results_wire.py).

A result is final only when its session is final (locked, every panel judge signed off); every
other result is provisional. A listing filtered to a session or a group keeps the ranks of the
event-wide group: the whole event is computed, then rows are left out.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import msgspec

from appliance.core import results as engine
from appliance.core.event_package.format import TIE_CRITERION, AwardBand, Scoring, plain_number
from appliance.core.sessions import is_final, session_states
from appliance.shared.errors import InvalidInput, NotFound
from appliance.shared.results_wire import ResultGroup, ResultRow, ResultsOut, SessionState
from appliance.shared.times import now_rfc3339


def results_out(
    conn: sqlite3.Connection,
    session: str | None = None,
    group: Mapping[str, str] | None = None,
    *,
    generated_at: str | None = None,
) -> ResultsOut:
    """The current event's results in one read, filtered to the entries of ``session`` and to the
    groups whose rank_within fields equal ``group`` (field name in any case -> value), ranks those
    of the whole event. Raises ``NoEvent``, ``NotFound`` (an unknown session) and ``InvalidInput``
    (a group field that is not one of the event's rank_within fields)."""
    inputs = engine.load(conn)
    event_id, event_name = conn.execute(
        "SELECT e.event_id, e.name FROM events e JOIN box b ON b.event_id = e.event_id WHERE b.id = 1"
    ).fetchone()
    names = dict(
        conn.execute(
            "SELECT session_id, name FROM sessions WHERE event_id = ? ORDER BY position", (event_id,)
        ).fetchall()
    )
    if session is not None and session not in names:
        raise NotFound(f"no session {session!r} in this event (sessions: {', '.join(names) or 'none'})")
    wanted = _group_filter(inputs.scoring, group or {})
    states = session_states(conn)
    return to_wire(
        engine.compute(inputs),
        states,
        event_id=event_id,
        event_name=event_name,
        session_names=names,
        generated_at=generated_at or now_rfc3339(),
        session=session,
        group=wanted,
    )


def _group_filter(scoring: Scoring, group: Mapping[str, str]) -> dict[int, str]:
    """``group`` as (index in rank_within -> value); a field that is not a rank_within field is
    refused, naming the ones there are."""
    index = {name.casefold(): i for i, name in enumerate(scoring.rank_within)}
    unknown = [name for name in group if name.casefold() not in index]
    if unknown:
        fields = ", ".join(scoring.rank_within) or "none: the event ranks all entries together"
        raise InvalidInput(
            f"results are grouped by {fields}; not by {', '.join(unknown)}",
            [{"field": "group", "message": f"{name!r} is not a rank_within field"} for name in unknown],
        )
    return {index[name.casefold()]: value for name, value in group.items()}


def to_wire(
    results: engine.Results,
    states: Mapping[str, SessionState],
    *,
    event_id: str,
    event_name: str,
    session_names: Mapping[str, str],
    generated_at: str,
    session: str | None = None,
    group: Mapping[int, str] | None = None,
) -> ResultsOut:
    """``results`` as ``ResultsOut``: groups in the engine's order, rows by rank (unranked last),
    each final when its session is final; only the rows of ``session`` and the groups whose
    rank_within values (by index) equal ``group`` are kept."""
    final = {session_id: is_final(state) for session_id, state in states.items()}
    wanted = dict(group or {})
    grouped: dict[tuple[str | None, ...], list[engine.EntryResult]] = {}
    for result in results.entries:
        if session is not None and result.entry.session_id != session:
            continue
        if any(result.group[i] != value for i, value in wanted.items()):
            continue
        grouped.setdefault(result.group, []).append(result)
    rank_within = results.scoring.rank_within
    groups = [
        ResultGroup(
            fields=dict(zip(rank_within, key, strict=True)),
            rule=group_rule_words(results.scoring, key, rows),
            rows=[_row(r, final.get(r.entry.session_id, False), session_names) for r in rows],
        )
        for key, rows in grouped.items()
    ]
    if session is not None:
        covered = [session]
    elif wanted:
        covered = list(dict.fromkeys(row.session_id for g in groups for row in g.rows))
    else:
        covered = list(session_names)
    return ResultsOut(
        event_id=event_id,
        event_name=event_name,
        generated_at=generated_at,
        groups=groups,
        sessions=[states.get(s) or _no_state(s) for s in covered],
        rules=rules_json(results.scoring),
    )


def _no_state(session_id: str) -> SessionState:
    return SessionState(
        session_id=session_id, locked=False, locked_reason=None, locked_at=None, signed_off=[], panel=[]
    )


def _row(result: engine.EntryResult, final: bool, session_names: Mapping[str, str]) -> ResultRow:
    entry = result.entry
    fields = entry.fields
    return ResultRow(
        entry_id=entry.entry_id,
        session_id=entry.session_id,
        order=entry.order,
        title=entry.title,
        studio=fields.get("studio"),
        category=fields.get("category"),
        division=fields.get("division"),
        level=fields.get("level"),
        group=dict(zip(result.rank_within, result.group, strict=True)),
        score=None if result.score is None else format(result.score, "f"),
        rank=result.rank,
        award=result.award,
        complete=result.complete,
        final=final,
        provisional=not final,
        dropped=[d.judge_id for d in result.dropped],
        totals={judge_id: _total_text(total) for judge_id, total in result.totals.items()},
        explanation=result.explain(),
        session_name=session_names.get(entry.session_id),
        shared_with=list(result.shared_with),
    )


def _total_text(total: Decimal) -> str:
    return plain_number(total, signed_zero=False)


# -- the rules in words -----------------------------------------------------------------------------


def group_rule_words(
    scoring: Scoring, key: tuple[str | None, ...], rows: Iterable[engine.EntryResult]
) -> str:
    """A group's rules in words: how its scores are made (each distinct entry rule once), how ties
    are broken, how ranks count and the award bands."""
    ties, ranks = engine.group_rule(
        scoring, {n.casefold(): v for n, v in zip(scoring.rank_within, key, strict=True)}
    )
    entry_rules = list(dict.fromkeys(r.rule for r in rows)) or [engine.entry_rule(scoring, {})]
    scores = " / ".join(_score_words(rule) for rule in entry_rules)
    tie_words = ", then ".join(_tie_rule_words(t) for t in ties) if ties else "none"
    rank_words = "1-2-2-4 (skip)" if ranks == "skip" else "1-2-2-3 (dense)"
    awards = " / ".join(_award_words(bands) for bands in dict.fromkeys(r.awards for r in entry_rules))
    return f"score: {scores}; ties: {tie_words}, else shared; ranks {rank_words}; awards: {awards}"


def _score_words(rule: engine.EntryRule) -> str:
    if rule.judges == "trimmed_mean":
        drops = [
            *([f"{rule.drop_highest} highest"] if rule.drop_highest else []),
            *([f"{rule.drop_lowest} lowest"] if rule.drop_lowest else []),
        ]
        how = f"mean of judges' totals, {' and '.join(drops)} dropped" if drops else "mean of judges' totals"
    elif rule.judges == "median":
        how = "median of judges' totals"
    else:
        how = f"{rule.judges} of judges' totals"
    return f"{how}, {rule.precision} decimals"


def _tie_rule_words(rule: str) -> str:
    if rule.startswith(TIE_CRITERION):
        return rule.removeprefix(TIE_CRITERION)
    return rule.replace("_", " ")


def _award_words(bands: tuple[AwardBand, ...]) -> str:
    if not bands:
        return "none"
    return ", ".join(f"{band.label} from {plain_number(band.min)}" for band in bands)


def rules_json(scoring: Scoring) -> dict[str, Any]:
    """The scoring block as JSON (its defaults for an event without one)."""
    result: dict[str, Any] = msgspec.to_builtins(scoring)
    return result


def parse_group(items: Iterable[str]) -> dict[str, str]:
    """``FIELD=VALUE`` items (the CLI's ``--group``, the admin API's ``group`` query) as a dict;
    an item without ``=`` or with an empty field is refused."""
    wanted: dict[str, str] = {}
    bad = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            bad.append(item)
        else:
            wanted[name.strip()] = value
    if bad:
        raise InvalidInput(
            f"a group is FIELD=VALUE (category=Solo), not {', '.join(repr(b) for b in bad)}",
            [{"field": "group", "message": f"{b!r} is not FIELD=VALUE"} for b in bad],
        )
    return wanted
