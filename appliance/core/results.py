"""Results: each entry's score, rank and award under the event's scoring rules (EVENT_PACKAGE.md,
"scoring"), from the ledger's current sheets.

Two steps, kept apart so each can be tested and timed alone:

* ``load(conn)`` reads the inputs in one read: the event's rules (its ``Scoring``, each criterion's
  ``CriterionRule``), its entries with the fields results use, each session's panel, and the values
  of every current sheet (``read_sheets``: ``ledger.current_sheet_seqs``), as exact decimals from
  their stored JSON text;
* ``compute(inputs)`` is pure: per entry its sheet totals, the judges dropped and why, its score,
  complete or provisional, its rank within its group and its award, each able to ``explain()``
  itself in words.

The rules, as EVENT_PACKAGE.md states them:

* a sheet's total is the sum of weight x value over ``score`` criteria less the sum of weight x
  value over ``deduction`` criteria;
* an entry's score combines its judges' totals by its ``judges`` rule (``mean``, ``sum``,
  ``median``: the mean of the two middle totals for an even count, ``trimmed_mean``: the mean once
  the ``drop_highest`` highest and ``drop_lowest`` lowest totals are dropped, or of all of them,
  said so, when fewer than drop_highest + drop_lowest + 1 judges have scored), rounded half-up to
  ``precision`` decimals; that rounded score is what is shown, ranked and banded. An entry nobody
  scored has no score (None, never 0);
* complete: every judge on the entry's session panel has a current sheet (a session with no panel
  judge completes nothing, as in the console's progress). An incomplete entry keeps its partial
  score, is provisional, and has no rank and no award;
* complete entries rank within groups of equal ``rank_within`` fields, highest score first; equal
  scores are separated by the ``ties`` rules in order (``criterion:KEY``: that criterion's own
  values combined by the entry's judges rule, unweighted, rounded to its precision;
  ``highest_single``: the best single sheet total, dropped judges included), and entries still
  equal share a rank, the next one skipping (``skip``, 1-2-2-4) or not (``dense``, 1-2-2-3);
* the award is the first band, in the order given, whose ``min`` the score reaches;
* an override replaces the keys it lists: ``judges``, the drops, ``precision`` and ``awards`` for
  each entry whose fields equal its ``match`` (the first such override); ``ties`` and ``ranks`` for
  a whole group: those of the first override that matches only on rank_within fields and whose
  ``match`` the group's fields equal (the import refuses ``ties`` or ``ranks`` in any other).

Arithmetic is exact: values are decimals read from the stored text (0.1 + 0.2 is 0.3), totals
are exact decimal sums and products, and a mean is rounded half-up from the exact fraction, never
from a float or a truncated quotient. Field names match entries.csv's columns in any case; an empty
cell is no value (None), so it equals no ``match`` text.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal

import msgspec

from appliance.core.box import current_event_id
from appliance.core.event_package.format import (
    RESULT_FIELDS,
    TIE_CRITERION,
    TIE_HIGHEST_SINGLE,
    AwardBand,
    CriterionRule,
    JudgesRule,
    Override,
    RankStyle,
    Scoring,
    criterion_rule_of,
    plain_number,
    scoring_of,
)
from appliance.core.ledger import current_sheet_seqs
from appliance.shared.errors import NoEvent

Values = dict[str, Decimal]  # a sheet's value per criterion key

# -- the inputs -------------------------------------------------------------------------------------


class ResultEntry(msgspec.Struct, frozen=True):
    """An entry as results need it: ``fields`` holds the entries.csv fields results can group and
    match on (``RESULT_FIELDS`` and the extra columns that are not personal), by lower-case name,
    empty cells left out; ``position`` is its session's position in the event (None if unknown)."""

    entry_id: str
    session_id: str
    order: int
    title: str
    fields: dict[str, str]
    position: int | None = None


class Inputs(msgspec.Struct, frozen=True):
    """What ``compute`` needs: the rules, the entries (by session position and running order), each
    session's panel (judge ids) and each entry's current sheets (entry id -> judge id -> values)."""

    scoring: Scoring
    criteria: dict[str, CriterionRule]
    entries: tuple[ResultEntry, ...]
    panels: dict[str, tuple[str, ...]]
    sheets: dict[str, dict[str, Values]]


# -- the results ------------------------------------------------------------------------------------


class EntryRule(msgspec.Struct, frozen=True):
    """The rules that apply to one entry: the event-wide ones with its override's keys replaced."""

    judges: JudgesRule
    drop_highest: int
    drop_lowest: int
    precision: int
    awards: tuple[AwardBand, ...]


class Dropped(msgspec.Struct, frozen=True):
    """A judge whose total the trimmed mean left out, and from which end."""

    judge_id: str
    total: Decimal
    end: Literal["highest", "lowest"]


class TieStep(msgspec.Struct, frozen=True):
    """One tie rule applied to entries sharing a score: this entry's value, the others' (in the
    order of ``tied_with``), and whether the rule told it apart from them. ``rule`` is a tie rule
    of the scoring block (``criterion:KEY``, ``highest_single``)."""

    rule: str
    tied_with: tuple[str, ...]
    value: Decimal | None
    others: tuple[Decimal | None, ...]
    separated: bool


class EntryResult(msgspec.Struct, frozen=True):
    """One entry's result. ``totals`` are its judges' current sheet totals (by judge id); ``score``
    is None when nobody scored it; ``rank`` and ``award`` are None unless it is complete."""

    entry: ResultEntry
    group: tuple[str | None, ...]  # its rank_within fields' values
    rule: EntryRule
    panel: tuple[str, ...]
    totals: dict[str, Decimal]
    dropped: tuple[Dropped, ...]
    drops_skipped: bool  # a trimmed mean with too few judges: nothing dropped
    score: Decimal | None
    complete: bool
    rank: int | None
    award: str | None
    ties: tuple[TieStep, ...]
    rank_within: tuple[str, ...]
    shared_with: tuple[str, ...]  # entries of its group with the same rank

    @property
    def provisional(self) -> bool:
        return not self.complete

    def explain(self) -> str:
        """The result in words: "J3 9.8 and J5 7.1 dropped; mean of 3 = 8.93; tie with 144 broken
        on technique 9.10 > 9.05; rank 1 in category Solo, division Teen; award Platinum"."""
        return explain(self)


class Results(msgspec.Struct, frozen=True):
    """Every entry's result, by group (their rank_within values, empty ones last), then rank
    (unranked last), session position and running order."""

    scoring: Scoring
    entries: tuple[EntryResult, ...]


# -- reading ----------------------------------------------------------------------------------------


_CURRENT_SHEETS_SQL = (
    f"SELECT entry_id, judge_id, score_values FROM sheets WHERE seq IN ({current_sheet_seqs()})"
)
_decode_values = msgspec.json.Decoder(Values).decode


def load(conn: sqlite3.Connection) -> Inputs:
    """The current event's inputs for ``compute``, in the caller's read. Raises ``NoEvent``."""
    event_id = current_event_id(conn)
    event = (
        None
        if event_id is None
        else conn.execute("SELECT extra FROM events WHERE event_id = ?", (event_id,)).fetchone()
    )
    if event_id is None or event is None:
        raise NoEvent("no event imported on this box: import one with `venuebox event import PATH`")
    criteria = {
        key: criterion_rule_of(extra)
        for key, extra in conn.execute(
            "SELECT key, extra FROM criteria WHERE event_id = ? ORDER BY position", (event_id,)
        )
    }
    entries = tuple(
        _entry(*row)
        for row in conn.execute(
            "SELECT e.entry_id, e.session_id, e.running_order, e.title, e.category, e.division, e.level,"
            " e.studio, e.extra, se.position FROM entries e"
            " LEFT JOIN sessions se ON se.event_id = e.event_id AND se.session_id = e.session_id"
            # Scratched entries and walk-ons waiting in the unscheduled pool are not in results
            # (appliance/core/schedule.py); their sheets stay in the ledger.
            " WHERE e.event_id = ? AND e.scratched = 0 AND e.session_id IS NOT NULL"
            " ORDER BY se.position, e.running_order, e.entry_id",
            (event_id,),
        )
    )
    panels: dict[str, list[str]] = {}
    for session_id, judge_id in conn.execute(
        "SELECT session_id, judge_id FROM panels WHERE event_id = ? ORDER BY session_id, judge_id",
        (event_id,),
    ):
        panels.setdefault(session_id, []).append(judge_id)
    return Inputs(
        scoring=scoring_of(event[0]),
        criteria=criteria,
        entries=entries,
        panels={session_id: tuple(judges) for session_id, judges in panels.items()},
        sheets=read_sheets(conn, event_id),
    )


_decode_extra = msgspec.json.Decoder(dict[str, Any]).decode


def _entry(
    entry_id: str,
    session_id: str,
    order: int,
    title: str,
    category: str | None,
    division: str | None,
    level: str | None,
    studio: str | None,
    extra: str,
    position: int | None,
) -> ResultEntry:
    # The stored extras are entries.csv's other columns as text (personal ones are sealed, not here).
    documented = zip(
        RESULT_FIELDS, (entry_id, session_id, title, category, division, level, studio), strict=True
    )
    fields = {name: value for name, value in documented if value}
    for name, value in _decode_extra(extra).items():
        if isinstance(value, str) and value:
            fields.setdefault(name.casefold(), value)
    return ResultEntry(entry_id, session_id, order, title, fields, position)


def current_sheet_rows(conn: sqlite3.Connection, event_id: str) -> list[tuple[str, str, str]]:
    """(entry_id, judge_id, score_values text) of every current sheet of the event: the ledger read
    results start from (``bench/results.py`` times it alone)."""
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples
    return cursor.execute(_CURRENT_SHEETS_SQL, {"event": event_id}).fetchall()


def read_sheets(conn: sqlite3.Connection, event_id: str) -> dict[str, dict[str, Values]]:
    """The values of every current sheet of the event, entry id -> judge id -> criterion -> exact
    decimal. Sheets with the same stored text share one decoded dict (judges give the same scores
    again and again); nothing downstream changes it."""
    decoded: dict[str, Values] = {}
    sheets: dict[str, dict[str, Values]] = {}
    for entry_id, judge_id, text in current_sheet_rows(conn, event_id):
        values = decoded.get(text)
        if values is None:
            values = decoded[text] = _decode_values(text)
        sheets.setdefault(entry_id, {})[judge_id] = values
    return sheets


# -- computing --------------------------------------------------------------------------------------


def sheet_total(values: Values, criteria: dict[str, CriterionRule]) -> Decimal:
    """Weight x value over the score criteria less weight x value over the deductions, exactly."""
    total = Decimal(0)
    for key, rule in criteria.items():
        value = values.get(key)
        if value is None:
            continue
        counted = value if rule.weight == 1 else rule.weight * value
        total = total - counted if rule.kind == "deduction" else total + counted
    return total


def entry_rule(scoring: Scoring, fields: dict[str, str]) -> EntryRule:
    """The event-wide rules with the keys of the first override matching ``fields`` replaced."""
    o = next((o for o in scoring.overrides if _matches(o, fields)), Override(match={}))
    return EntryRule(
        judges=scoring.judges if o.judges is None else o.judges,
        drop_highest=scoring.drop_highest if o.drop_highest is None else o.drop_highest,
        drop_lowest=scoring.drop_lowest if o.drop_lowest is None else o.drop_lowest,
        precision=scoring.precision if o.precision is None else o.precision,
        awards=scoring.awards if o.awards is None else o.awards,
    )


def group_rule(scoring: Scoring, group: dict[str, str | None]) -> tuple[tuple[str, ...], RankStyle]:
    """The ``ties`` and ``ranks`` of a group (its rank_within fields' values, by lower-case name):
    those of the first override matching on rank_within fields only whose match the group equals."""
    for override in scoring.overrides:
        if all(
            name.casefold() in group and group[name.casefold()] == value
            for name, value in override.match.items()
        ):
            return (
                scoring.ties if override.ties is None else override.ties,
                scoring.ranks if override.ranks is None else override.ranks,
            )
    return scoring.ties, scoring.ranks


def _matches(override: Override, fields: dict[str, str]) -> bool:
    return all(fields.get(name.casefold()) == value for name, value in override.match.items())


def half_up(value: Fraction, places: int) -> Decimal:
    """``value`` rounded half-up (away from zero on a half) to ``places`` decimals, from the exact
    fraction."""
    scaled = abs(value) * 10**places
    whole, rest = divmod(scaled.numerator, scaled.denominator)
    if 2 * rest >= scaled.denominator:
        whole += 1
    return Decimal(-whole if value < 0 else whole).scaleb(-places)


class Combined(msgspec.Struct, frozen=True):
    """Judges' numbers combined by a judges rule: the rounded value, who was dropped, how many
    numbers made the value, and whether a trimmed mean had too few to drop any."""

    value: Decimal
    dropped: tuple[Dropped, ...]
    counted: int
    drops_skipped: bool


def combine(numbers: dict[str, Decimal], rule: EntryRule) -> Combined | None:
    """``numbers`` (judge id -> a total, or one criterion's value) combined by ``rule``'s judges rule
    and rounded to its precision; None when there are none. A trimmed mean drops from the sorted
    numbers (equal ones in judge id order: the lowest ids are dropped low, the highest high)."""
    if not numbers:
        return None
    ordered = sorted(numbers.items(), key=lambda item: (item[1], item[0]))
    dropped: tuple[Dropped, ...] = ()
    skipped = False
    if rule.judges == "trimmed_mean" and (rule.drop_highest or rule.drop_lowest):
        if len(ordered) < rule.drop_highest + rule.drop_lowest + 1:
            skipped = True
        else:
            high = ordered[len(ordered) - rule.drop_highest :]
            low = ordered[: rule.drop_lowest]
            dropped = tuple(Dropped(j, v, "highest") for j, v in reversed(high)) + tuple(
                Dropped(j, v, "lowest") for j, v in low
            )
            ordered = ordered[rule.drop_lowest : len(ordered) - rule.drop_highest]
    values = [value for _, value in ordered]
    if rule.judges == "sum":
        exact = Fraction(sum(values, Decimal(0)))
    elif rule.judges == "median":
        middle = len(values) // 2
        pair = values[middle - 1 : middle + 1] if len(values) % 2 == 0 else values[middle : middle + 1]
        exact = Fraction(sum(pair, Decimal(0))) / len(pair)
    else:  # mean, trimmed_mean
        exact = Fraction(sum(values, Decimal(0))) / len(values)
    return Combined(half_up(exact, rule.precision), dropped, len(values), skipped)


class _Scored:
    """An entry on its way to a result (rank and tie steps are added while ranking)."""

    __slots__ = (
        "combined",
        "complete",
        "entry",
        "group",
        "panel",
        "rank",
        "rule",
        "shared_with",
        "sheets",
        "ties",
        "totals",
    )

    def __init__(
        self,
        entry: ResultEntry,
        rule: EntryRule,
        panel: tuple[str, ...],
        sheets: dict[str, Values],
        criteria: dict[str, CriterionRule],
        rank_within: tuple[str, ...],
    ) -> None:
        self.entry = entry
        self.rule = rule
        self.panel = panel
        self.sheets = sheets
        self.totals = {judge_id: sheet_total(values, criteria) for judge_id, values in sorted(sheets.items())}
        self.combined = combine(self.totals, rule)
        self.complete = bool(panel) and all(judge_id in sheets for judge_id in panel)
        self.group = tuple(entry.fields.get(name.casefold()) for name in rank_within)
        self.rank: int | None = None
        self.shared_with: tuple[str, ...] = ()
        self.ties: list[TieStep] = []

    @property
    def score(self) -> Decimal | None:
        return None if self.combined is None else self.combined.value


def compute(inputs: Inputs) -> Results:
    """Every entry's result under ``inputs.scoring`` (see the module docstring)."""
    scoring = inputs.scoring
    rank_within = scoring.rank_within
    scored = [
        _Scored(
            entry,
            entry_rule(scoring, entry.fields),
            inputs.panels.get(entry.session_id, ()),
            inputs.sheets.get(entry.entry_id, {}),
            inputs.criteria,
            rank_within,
        )
        for entry in inputs.entries
    ]
    groups: dict[tuple[str | None, ...], list[_Scored]] = {}
    for item in scored:
        groups.setdefault(item.group, []).append(item)
    for group, members in groups.items():
        ties, ranks = group_rule(scoring, {n.casefold(): v for n, v in zip(rank_within, group, strict=True)})
        _rank([m for m in members if m.complete], ties, ranks, inputs.criteria)

    def order(item: _Scored) -> tuple[object, ...]:
        return (
            *((value is None, value or "") for value in item.group),
            item.rank is None,
            item.rank or 0,
            item.entry.position is None,
            item.entry.position or 0,
            item.entry.order,
            item.entry.entry_id,
        )

    return Results(scoring, tuple(_result(item, rank_within) for item in sorted(scored, key=order)))


def _result(item: _Scored, rank_within: tuple[str, ...]) -> EntryResult:
    combined = item.combined
    ranked = item.rank is not None and item.score is not None
    return EntryResult(
        entry=item.entry,
        group=item.group,
        rule=item.rule,
        panel=item.panel,
        totals=item.totals,
        dropped=() if combined is None else combined.dropped,
        drops_skipped=combined is not None and combined.drops_skipped,
        score=item.score,
        complete=item.complete,
        rank=item.rank,
        award=_award(item.score, item.rule.awards) if ranked else None,
        ties=tuple(item.ties),
        rank_within=rank_within,
        shared_with=item.shared_with,
    )


def _award(score: Decimal | None, bands: Sequence[AwardBand]) -> str | None:
    if score is None:
        return None
    return next((band.label for band in bands if score >= band.min), None)


def _rank(
    members: list[_Scored], ties: tuple[str, ...], style: RankStyle, criteria: dict[str, CriterionRule]
) -> None:
    """Rank one group's complete entries: by score, then the tie rules; equal ones share a rank."""
    by_score: dict[Decimal, list[_Scored]] = {}
    for member in members:
        if member.score is not None:
            by_score.setdefault(member.score, []).append(member)
    clusters: list[list[_Scored]] = []
    for score in sorted(by_score, reverse=True):
        clusters.extend(_separate(by_score[score], ties, criteria))
    place = 0
    for index, cluster in enumerate(clusters, 1):
        rank = index if style == "dense" else place + 1
        for member in cluster:
            member.rank = rank
            member.shared_with = tuple(m.entry.entry_id for m in cluster if m is not member)
        place += len(cluster)


def _separate(
    tied: list[_Scored], ties: tuple[str, ...], criteria: dict[str, CriterionRule]
) -> list[list[_Scored]]:
    """Entries of equal score split by the tie rules in order, best first; each list left shares a
    rank. Each entry notes every rule tried on it (``TieStep``)."""
    if len(tied) == 1 or not ties:
        return [tied]
    rule, rest = ties[0], ties[1:]
    key = _tie_key(rule)
    values = [key(member) for member in tied]
    distinct = sorted({v for v in values if v is not None}, reverse=True)
    separated = len(distinct) + (None in values) > 1
    for index, member in enumerate(tied):
        others = [(other, value) for other, value in zip(tied, values, strict=True) if other is not member]
        member.ties.append(
            TieStep(
                rule=rule,
                tied_with=tuple(other.entry.entry_id for other, _ in others),
                value=values[index],
                others=tuple(value for _, value in others),
                separated=separated and any(value != values[index] for _, value in others),
            )
        )
    if not separated:
        return _separate(tied, rest, criteria)
    clusters: list[list[_Scored]] = []
    for level in [*distinct, None]:
        same = [member for member, value in zip(tied, values, strict=True) if value == level]
        if same:
            clusters.extend(_separate(same, rest, criteria))
    return clusters


def _tie_key(rule: str) -> Callable[[_Scored], Decimal | None]:
    if rule == TIE_HIGHEST_SINGLE:
        return lambda member: max(member.totals.values(), default=None)
    key = rule.removeprefix(TIE_CRITERION)

    def criterion_value(member: _Scored) -> Decimal | None:
        own = {j: values[key] for j, values in member.sheets.items() if key in values}
        combined = combine(own, member.rule)
        return None if combined is None else combined.value

    return criterion_value


# -- in words ---------------------------------------------------------------------------------------


_RULE_WORDS = {"mean": "mean", "sum": "sum", "median": "median", "trimmed_mean": "mean"}


def explain(result: EntryResult) -> str:
    """``EntryResult.explain``: the drops, the score and how it was made, the tie steps, the rank,
    the award, and what keeps it provisional."""
    rule = result.rule
    parts: list[str] = []
    if not result.totals:
        parts.append("not scored yet")
    else:
        if result.dropped:
            parts.append(f"{_and([f'{d.judge_id} {plain_number(d.total)}' for d in result.dropped])} dropped")
        elif result.drops_skipped:
            parts.append(
                f"{_judges(len(result.totals))} scored: nothing dropped (the trimmed mean drops "
                f"{rule.drop_highest} highest and {rule.drop_lowest} lowest from "
                f"{rule.drop_highest + rule.drop_lowest + 1} judges or more)"
            )
        counted = len(result.totals) - len(result.dropped)
        parts.append(f"{_RULE_WORDS[rule.judges]} of {counted} = {_shown(result.score)}")
    for step in result.ties:
        parts.append(_tie_words(step))
    if result.rank is not None:
        where = ", ".join(
            f"{name} {value if value is not None else '(none)'}"
            for name, value in zip(result.rank_within, result.group, strict=True)
        )
        shared = f" (shared with {_and(result.shared_with)})" if result.shared_with else ""
        parts.append(f"rank {result.rank}{shared}" + (f" in {where}" if where else ""))
        if result.award is not None:
            parts.append(f"award {result.award}")
        elif rule.awards:
            parts.append(f"no award (below {rule.awards[-1].label}'s {plain_number(rule.awards[-1].min)})")
    if not result.complete:
        missing = [judge_id for judge_id in result.panel if judge_id not in result.totals]
        why = (
            f"{len(result.panel) - len(missing)} of {len(result.panel)} panel judges scored"
            f" ({_and(missing)} missing)"
            if result.panel
            else "its session has no panel judge"
        )
        parts.append(f"provisional: {why}; no rank, no award")
    return "; ".join(parts)


def _tie_words(step: TieStep) -> str:
    label = step.rule.removeprefix(TIE_CRITERION).replace("_", " ")
    others = _and(list(step.tied_with))
    if not step.separated:
        return f"tie with {others} not broken on {label} ({_shown(step.value)} each)"
    if len(step.others) == 1:
        sign = ">" if _above(step.value, step.others[0]) else "<"
        return f"tie with {others} broken on {label} {_shown(step.value)} {sign} {_shown(step.others[0])}"
    against = ", ".join(f"{_shown(v)} ({e})" for e, v in zip(step.tied_with, step.others, strict=True))
    return f"tie with {others} broken on {label}: {_shown(step.value)} against {against}"


def _above(value: Decimal | None, other: Decimal | None) -> bool:
    return value is not None and (other is None or value > other)


def _shown(value: Decimal | None) -> str:
    # A score or tie value as rounded (its trailing zeros kept: 9.10); none as "none".
    return "none" if value is None else format(value, "f")


def _judges(count: int) -> str:
    return f"only {count} judge" if count == 1 else f"only {count} judges"


def _and(items: Iterable[str]) -> str:
    listed = list(items)
    return listed[0] if len(listed) == 1 else ", ".join(listed[:-1]) + " and " + listed[-1]
