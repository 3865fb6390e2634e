"""The rules of the event package format (EVENT_PACKAGE.md): what ``reading`` read becomes checked
records (``format``), and every broken rule a problem at its line. Nothing here touches the database.

Participants' names are personal data, and so are the values of the entries.csv columns event.json
lists in ``personal_columns``: a problem message never shows them (a name is masked), and they are
kept apart from the extras (``Entry.participants``, ``Entry.personal``).
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from appliance.core import personal
from appliance.core.event_package.format import (
    ALL_SESSIONS,
    CRITERION_KEYS,
    CRITERION_KIND,
    CRITERION_KINDS,
    CRITERION_WEIGHT,
    DEFAULT_RANK_WITHIN,
    ENTRIES_FILE,
    ENTRY_COLUMNS,
    ENTRY_PUBLIC_COLUMNS,
    ENTRY_REQUIRED,
    EVENT_FILE,
    EVENT_KEYS,
    GROUP_RULE_KEYS,
    JUDGE_COLUMNS,
    JUDGES_FILE,
    JUDGES_RULES,
    LIST_SEPARATOR,
    MAX_PRECISION,
    OVERRIDE_KEYS,
    PARTICIPANTS,
    PERSONAL_COLUMNS,
    RANK_STYLES,
    RESULT_FIELDS,
    SCORING,
    SCORING_KEYS,
    SESSION_KEYS,
    TABLETS_SEE_PARTICIPANTS,
    TIE_CRITERION,
    TIE_HIGHEST_SINGLE,
    Criterion,
    Entry,
    Judge,
    Problems,
    Session,
    plain_number,
)
from appliance.core.event_package.json_lines import JsonLines, dotted
from appliance.core.event_package.reading import read_csv, read_event_json
from appliance.shared.times import parse_rfc3339, to_rfc3339


@dataclass(frozen=True)
class FieldUse:
    """An entries.csv field name the scoring block uses, where (its line in event.json) and how
    (``scoring: rank_within``, ``scoring override 2: match``), for the problem if the file lacks it."""

    name: str
    line: int
    use: str


@dataclass
class EventJson:
    """What event.json holds, checked: the valid criteria and sessions, the other fields as ``extra``."""

    event_id: str = ""
    name: str = ""
    timezone: str = ""
    criteria: list[Criterion] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    session_ids: set[str] | None = None  # None: no usable sessions list, so don't check the CSVs' sessions
    personal_columns: list[tuple[str, int]] = field(default_factory=list)  # (column, line in event.json)
    # The entries.csv fields the scoring block groups or matches on, checked against entries.csv's header.
    scoring_fields: list[FieldUse] = field(default_factory=list)


class _JsonProblems:
    """Reports a problem of event.json at the line of a JSON path."""

    def __init__(self, where: JsonLines, problems: Problems) -> None:
        self.where = where
        self.problems = problems

    def __call__(self, path: tuple[Any, ...], message: str) -> None:
        self.problems.add(EVENT_FILE, self.where.line(path), message)

    def line(self, path: tuple[Any, ...]) -> int:
        return self.where.line(path)


def check_event(data: bytes | None, problems: Problems) -> EventJson:
    """event.json checked; every problem is reported, and what is valid is kept (the CSVs are
    checked against the sessions it names even while it has problems)."""
    event = EventJson()
    read = read_event_json(data, problems)
    if read is None:
        return event
    document, where = read
    problem = _JsonProblems(where, problems)
    for line, path in where.duplicates:
        problems.add(EVENT_FILE, line, f"key {dotted(path)!r} appears twice in the same object")
    if not isinstance(document, dict):
        problem((), "the file must hold one JSON object {...} with id, name, timezone, criteria, sessions")
        return event
    event.event_id = _json_text(document, (), "id", problem, required=True) or ""
    event.name = _json_text(document, (), "name", problem, required=True) or ""
    timezone = _json_text(document, (), "timezone", problem, required=True)
    if timezone:
        try:
            ZoneInfo(timezone)
            event.timezone = timezone
        except (ZoneInfoNotFoundError, ValueError):
            problem(("timezone",), f"unknown timezone {timezone!r}: use an IANA name such as America/Toronto")
    event.extra = {k: v for k, v in document.items() if k not in EVENT_KEYS}
    event.personal_columns = _parse_personal_settings(document, problem)
    event.criteria = _parse_criteria(document, problem)
    event.scoring_fields = _parse_scoring(document, problem)
    event.sessions, event.session_ids = _parse_sessions(document, problem)
    return event


def _parse_personal_settings(document: dict[str, Any], problem: _JsonProblems) -> list[tuple[str, int]]:
    """``tablets_see_participants`` (true or false) and ``personal_columns``: a list of entries.csv
    column names, each with its line; documented columns other than participants cannot be personal.
    Whether each column exists is checked against entries.csv's header (``_personal_columns``)."""
    flag = document.get(TABLETS_SEE_PARTICIPANTS, False)
    if not isinstance(flag, bool):
        problem(
            (TABLETS_SEE_PARTICIPANTS,),
            f"'tablets_see_participants' must be true or false, not {json.dumps(flag)}",
        )
    if PERSONAL_COLUMNS not in document:
        return []
    listed = document[PERSONAL_COLUMNS]
    if not isinstance(listed, list):
        problem((PERSONAL_COLUMNS,), "'personal_columns' must be a list of entries.csv column names")
        return []
    columns: list[tuple[str, int]] = []
    for index, name in enumerate(listed):
        path = (PERSONAL_COLUMNS, index)
        if not isinstance(name, str) or not name.strip():
            problem(path, f"personal_columns: {json.dumps(name)} is not a column name")
        elif name.strip().lower() in ENTRY_PUBLIC_COLUMNS:
            problem(
                path,
                f"personal_columns: {name.strip()!r} is a documented column that is not personal data "
                "(only participants and extra columns can be personal)",
            )
        else:
            columns.append((name.strip(), problem.line(path)))
    return columns


def _json_text(
    obj: dict[str, Any],
    path: tuple[Any, ...],
    key: str,
    problem: _JsonProblems,
    *,
    required: bool,
    what: str = "",
) -> str | None:
    """A stripped text field of a JSON object; reports a missing, non-text or empty value."""
    prefix = f"{what}: " if what else ""
    if key not in obj or obj[key] is None:
        if required:
            problem(path, f"{prefix}missing required field {key!r}")
        return None
    value = obj[key]
    if not isinstance(value, str):
        problem((*path, key), f"{prefix}{key!r} must be text, not {json.dumps(value)}")
        return None
    if not value.strip():
        if required:
            problem((*path, key), f"{prefix}{key!r} is empty")
        return None
    return value.strip()


def _json_number(
    obj: dict[str, Any], path: tuple[Any, ...], key: str, problem: _JsonProblems, what: str
) -> Decimal | None:
    if key not in obj:
        problem(path, f"{what}: missing required field {key!r}")
        return None
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        problem((*path, key), f"{what}: {key!r} must be a number, not {json.dumps(value)}")
        return None
    # Decimal(str(x)): 0.1 is exactly 0.1 here, so the step check has no binary rounding surprises.
    return Decimal(str(value))


def _json_list(document: dict[str, Any], key: str, problem: _JsonProblems) -> list[Any]:
    if key not in document:
        problem((), f"missing required field {key!r}")
        return []
    value = document[key]
    if not isinstance(value, list) or not value:
        problem((key,), f"{key!r} must be a non-empty list of objects")
        return []
    return value


def _parse_criteria(document: dict[str, Any], problem: _JsonProblems) -> list[Criterion]:
    criteria: list[Criterion] = []
    first_line: dict[str, int] = {}
    for index, item in enumerate(_json_list(document, "criteria", problem)):
        path = ("criteria", index)
        what = f"criterion {index + 1}"
        if not isinstance(item, dict):
            problem(path, f"{what} must be an object with key, label, min, max, step")
            continue
        key = _json_text(item, path, "key", problem, required=True, what=what)
        valid = key is not None
        if key:
            what = f"criterion {key!r}"
            if key in first_line:
                problem((*path, "key"), f"duplicate criterion key {key!r} (first on line {first_line[key]})")
                valid = False
            else:
                first_line[key] = problem.line((*path, "key"))
        # label is optional (the key stands in), but a label that is there must not be blank.
        label = _json_text(item, path, "label", problem, required="label" in item, what=what)
        if "label" in item and label is None:
            valid = False
        valid = _check_criterion_rule(item, path, what, problem) and valid
        low = _json_number(item, path, "min", problem, what)
        high = _json_number(item, path, "max", problem, what)
        step = _json_number(item, path, "step", problem, what)
        if low is None or high is None or step is None:
            continue
        if low >= high:
            problem(
                (*path, "min"),
                f"{what}: min ({plain_number(low)}) must be less than max ({plain_number(high)})",
            )
        elif step <= 0:
            problem((*path, "step"), f"{what}: step ({plain_number(step)}) must be greater than 0")
        elif (high - low) % step != 0:
            problem(
                (*path, "step"),
                f"{what}: step {plain_number(step)} does not divide the range "
                f"{plain_number(low)}..{plain_number(high)} (max - min must be a whole number of steps)",
            )
        elif valid and key is not None:
            extra = {k: v for k, v in item.items() if k not in CRITERION_KEYS}
            criteria.append(Criterion(key, label or key, low, high, step, extra))
    return criteria


def _parse_sessions(
    document: dict[str, Any], problem: _JsonProblems
) -> tuple[list[Session], set[str] | None]:
    """The valid sessions, and every session id named (None when there is no sessions list), so the
    CSVs are checked against what the author meant even while a session has another problem."""
    if not isinstance(document.get("sessions"), list):
        _json_list(document, "sessions", problem)
        return [], None
    sessions: list[Session] = []
    first_line: dict[str, int] = {}
    for index, item in enumerate(_json_list(document, "sessions", problem)):
        path = ("sessions", index)
        what = f"session {index + 1}"
        if not isinstance(item, dict):
            problem(path, f"{what} must be an object with id, name, stage, starts_at")
            continue
        session_id = _json_text(item, path, "id", problem, required=True, what=what)
        valid = session_id is not None
        if session_id:
            what = f"session {session_id!r}"
            if session_id in first_line:
                problem(
                    (*path, "id"),
                    f"duplicate session id {session_id!r} (first on line {first_line[session_id]})",
                )
                valid = False
            else:
                first_line[session_id] = problem.line((*path, "id"))
        name = _json_text(item, path, "name", problem, required=True, what=what)
        stage = _json_text(item, path, "stage", problem, required=False, what=what)
        starts_at = _json_text(item, path, "starts_at", problem, required=False, what=what)
        if starts_at is not None:
            try:
                starts_at = to_rfc3339(parse_rfc3339(starts_at))
            except ValueError as exc:
                problem((*path, "starts_at"), f"{what}: starts_at {starts_at!r} {exc}")
                valid = False
        if valid and session_id is not None and name:
            extra = {k: v for k, v in item.items() if k not in SESSION_KEYS}
            sessions.append(Session(session_id, name, stage, starts_at, extra))
    return sessions, set(first_line) or None


def _check_criterion_rule(
    item: dict[str, Any], path: tuple[Any, ...], what: str, problem: _JsonProblems
) -> bool:
    """A criterion's ``weight`` (a number above 0, default 1) and ``kind`` (``score``, the default, or
    ``deduction``); True when both are right or absent."""
    ok = True
    if CRITERION_WEIGHT in item:
        weight = item[CRITERION_WEIGHT]
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            problem((*path, CRITERION_WEIGHT), f"{what}: 'weight' must be a number, not {json.dumps(weight)}")
            ok = False
        elif Decimal(str(weight)) <= 0:
            problem(
                (*path, CRITERION_WEIGHT),
                f"{what}: weight ({plain_number(Decimal(str(weight)))}) must be greater than 0",
            )
            ok = False
    if CRITERION_KIND in item and item[CRITERION_KIND] not in CRITERION_KINDS:
        problem(
            (*path, CRITERION_KIND),
            f'{what}: unknown kind {json.dumps(item[CRITERION_KIND])} (use "score" or "deduction")',
        )
        ok = False
    return ok


# -- the scoring block ----------------------------------------------------------------------------


def _parse_scoring(document: dict[str, Any], problem: _JsonProblems) -> list[FieldUse]:
    """The optional ``scoring`` block checked (EVENT_PACKAGE.md); returns the entries.csv fields it
    groups and matches on, which ``check_entries`` looks for in the file's header."""
    if SCORING not in document:
        return []
    block = document[SCORING]
    path: tuple[Any, ...] = (SCORING,)
    if not isinstance(block, dict):
        problem(path, f"'scoring' must be an object ({', '.join(SCORING_KEYS)}), not {json.dumps(block)}")
        return []
    _unknown_keys(block, path, SCORING_KEYS, "scoring", problem)
    _check_entry_rules(block, path, "scoring", problem)
    _check_group_rules(block, path, "scoring", _criterion_keys(document), problem)
    fields: list[FieldUse] = []
    rank_within = _rank_within(block, problem, fields)
    overrides = block.get("overrides", [])
    if not isinstance(overrides, list):
        problem(
            (*path, "overrides"),
            f"scoring: 'overrides' must be a list of objects, not {json.dumps(overrides)}",
        )
        return fields
    for index, override in enumerate(overrides):
        _check_override(override, (*path, "overrides", index), index, rank_within, document, problem, fields)
    return fields


def _criterion_keys(document: dict[str, Any]) -> list[str]:
    """The keys event.json's criteria name (those with other problems too: they are reported there)."""
    criteria = document.get("criteria")
    items = criteria if isinstance(criteria, list) else []
    return [
        item["key"].strip()
        for item in items
        if isinstance(item, dict) and isinstance(item.get("key"), str) and item["key"].strip()
    ]


def _unknown_keys(
    obj: dict[str, Any], path: tuple[Any, ...], known: tuple[str, ...], what: str, problem: _JsonProblems
) -> None:
    # A misspelt rule would silently fall back to its default at awards time: refused instead.
    for key in obj:
        if key not in known:
            problem((*path, key), f"{what}: unknown key {key!r} (known: {', '.join(known)})")


def _check_entry_rules(obj: dict[str, Any], path: tuple[Any, ...], what: str, problem: _JsonProblems) -> None:
    """``judges``, ``drop_highest``, ``drop_lowest``, ``precision`` and ``awards``, where present."""
    if "judges" in obj and obj["judges"] not in JUDGES_RULES:
        problem(
            (*path, "judges"),
            f"{what}: unknown judges rule {json.dumps(obj['judges'])} (use {', '.join(JUDGES_RULES)})",
        )
    for key in ("drop_highest", "drop_lowest"):
        if key not in obj:
            continue
        drops = obj[key]
        if isinstance(drops, bool) or not isinstance(drops, int):
            problem((*path, key), f"{what}: {key} must be a whole number of judges, not {json.dumps(drops)}")
        elif drops < 0:
            problem((*path, key), f"{what}: {key} ({drops}) must not be negative")
    if "precision" in obj:
        places = obj["precision"]
        if isinstance(places, bool) or not isinstance(places, int) or not 0 <= places <= MAX_PRECISION:
            problem(
                (*path, "precision"),
                f"{what}: precision must be a whole number of decimals from 0 to {MAX_PRECISION}, "
                f"not {json.dumps(places)}",
            )
    if "awards" in obj:
        _check_awards(obj["awards"], (*path, "awards"), what, problem)


def _check_awards(bands: Any, path: tuple[Any, ...], what: str, problem: _JsonProblems) -> None:
    """A list of {"label", "min"} bands, in descending ``min`` (each below the one above it)."""
    if not isinstance(bands, list):
        problem(
            path, f'{what}: \'awards\' must be a list of {{"label", "min"}} bands, not {json.dumps(bands)}'
        )
        return
    above: tuple[str, Decimal] | None = None
    for index, band in enumerate(bands):
        band_path = (*path, index)
        band_what = f"{what}: award band {index + 1}"
        if not isinstance(band, dict):
            problem(band_path, f"{band_what} must be an object with label and min")
            continue
        _unknown_keys(band, band_path, ("label", "min"), band_what, problem)
        label = _json_text(band, band_path, "label", problem, required=True, what=band_what)
        low = _json_number(band, band_path, "min", problem, band_what)
        if label is None or low is None:
            continue
        if above is not None and low >= above[1]:
            problem(
                (*band_path, "min"),
                f"{what}: award bands must be in descending min: {label!r} (min {plain_number(low)}) "
                f"is not below {above[0]!r} (min {plain_number(above[1])})",
            )
        above = (label, low)


def _check_group_rules(
    obj: dict[str, Any], path: tuple[Any, ...], what: str, criteria: list[str], problem: _JsonProblems
) -> None:
    """``ties`` (``criterion:KEY`` of a criterion of event.json, or ``highest_single``) and ``ranks``."""
    if "ties" in obj:
        ties = obj["ties"]
        if not isinstance(ties, list):
            problem((*path, "ties"), f"{what}: 'ties' must be a list of tie rules, not {json.dumps(ties)}")
        else:
            for index, rule in enumerate(ties):
                key = rule[len(TIE_CRITERION) :] if isinstance(rule, str) else ""
                if rule == TIE_HIGHEST_SINGLE or (
                    isinstance(rule, str) and rule.startswith(TIE_CRITERION) and key in criteria
                ):
                    continue
                if isinstance(rule, str) and rule.startswith(TIE_CRITERION):
                    problem(
                        (*path, "ties", index),
                        f"{what}: tie rule {rule!r} names no criterion of event.json "
                        f"(its criteria: {', '.join(criteria) or 'none'})",
                    )
                else:
                    problem(
                        (*path, "ties", index),
                        f"{what}: unknown tie rule {json.dumps(rule)} "
                        f'(use "{TIE_CRITERION}KEY" or "{TIE_HIGHEST_SINGLE}")',
                    )
    if "ranks" in obj and obj["ranks"] not in RANK_STYLES:
        problem(
            (*path, "ranks"),
            f"{what}: unknown ranks style {json.dumps(obj['ranks'])} "
            '(use "skip", 1-2-2-4, or "dense", 1-2-2-3)',
        )


def _rank_within(block: dict[str, Any], problem: _JsonProblems, fields: list[FieldUse]) -> list[str]:
    """The rank_within field names (the default when absent), each noted in ``fields`` to be found
    in entries.csv."""
    if "rank_within" not in block:
        return list(DEFAULT_RANK_WITHIN)
    names = block["rank_within"]
    path = (SCORING, "rank_within")
    if not isinstance(names, list):
        problem(
            path,
            f"scoring: 'rank_within' must be a list of entries.csv column names, not {json.dumps(names)}",
        )
        return []
    found: list[str] = []
    for index, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            problem((*path, index), f"scoring: rank_within: {json.dumps(name)} is not a column name")
            continue
        found.append(name.strip())
        fields.append(FieldUse(name.strip(), problem.line((*path, index)), "scoring: rank_within"))
    return found


def _check_override(
    override: Any,
    path: tuple[Any, ...],
    index: int,
    rank_within: list[str],
    document: dict[str, Any],
    problem: _JsonProblems,
    fields: list[FieldUse],
) -> None:
    """One override: a ``match`` of entries.csv fields to text, and the rules it replaces. ``ties`` and
    ``ranks`` apply to a whole group, so an override setting either matches on rank_within fields
    only; ``rank_within`` itself is event-wide."""
    what = f"scoring override {index + 1}"
    if not isinstance(override, dict):
        problem(path, f"{what} must be an object with match and the rules it replaces")
        return
    if "rank_within" in override:
        problem(
            (*path, "rank_within"),
            f"{what}: rank_within is event-wide only: set it in scoring, not in an override",
        )
    _unknown_keys(
        {k: v for k, v in override.items() if k != "rank_within"}, path, OVERRIDE_KEYS, what, problem
    )
    _check_entry_rules(override, path, what, problem)
    _check_group_rules(override, path, what, _criterion_keys(document), problem)
    match = override.get("match")
    if not isinstance(match, dict) or not match:
        problem(
            (*path, "match") if "match" in override else path,
            f"{what}: 'match' must be an object of entries.csv fields and the text they equal, "
            'such as {"category": "Solo"}',
        )
        return
    sets_group = [key for key in GROUP_RULE_KEYS if key in override]
    grouped = {name.casefold() for name in rank_within}
    for name, value in match.items():
        line = problem.line((*path, "match", name))
        fields.append(FieldUse(name, line, f"{what}: match"))
        if not isinstance(value, str):
            problem((*path, "match", name), f"{what}: match {name!r} must be text, not {json.dumps(value)}")
        if sets_group and name.casefold() not in grouped:
            problem(
                (*path, "match", name),
                f"{what}: sets {' and '.join(sets_group)}, which apply to a whole group, so it may match "
                f"only on rank_within fields ({', '.join(rank_within) or 'none'}), not {name!r}",
            )


# -- entries.csv and judges.csv -------------------------------------------------------------------


def _split_names(text: str) -> list[str]:
    return [part.strip() for part in text.split(LIST_SEPARATOR) if part.strip()]


def _person_key(name: str) -> str:
    # Trimmed and case-insensitive; NFC so 'é' typed two ways is still the same dancer.
    return unicodedata.normalize("NFC", " ".join(name.split())).casefold()


def check_entries(
    data: bytes | None,
    session_ids: set[str] | None,
    problems: Problems,
    personal_columns: list[tuple[str, int]] | None = None,
    scoring_fields: list[FieldUse] | None = None,
) -> tuple[list[Entry], list[str]]:
    """The valid entries of entries.csv, and the extra columns event.json marks personal (as the header
    names them). Each entry's session must be one of ``session_ids``, the ids event.json names (None:
    event.json has no usable sessions list, so sessions are not checked). The fields event.json's
    scoring block uses (``scoring_fields``) must be columns of the file results can read."""

    def problem(line: int, message: str) -> None:
        problems.add(ENTRIES_FILE, line, message)

    if data is None:
        return [], []
    rows, present, header = read_csv(ENTRIES_FILE, data, ENTRY_COLUMNS, ENTRY_REQUIRED, problems)
    sealed_columns = _personal_columns(personal_columns or [], header, problems)
    _check_scoring_fields(scoring_fields or [], header, sealed_columns, problems)
    entries: list[Entry] = []
    first_line: dict[str, int] = {}
    slots: dict[tuple[str, int], tuple[str, int]] = {}
    # scheduled instant -> participant key -> (entry_id, line): who is already on stage then.
    on_stage: dict[datetime, dict[str, tuple[str, int]]] = {}
    for row in rows:
        get = row.values.get
        ok = True
        entry_id = get("entry_id", "")
        label = f"entry {entry_id}" if entry_id else "entry"
        if "entry_id" in present:
            if not entry_id:
                problem(row.line, "entry_id is empty")
                ok = False
            elif entry_id in first_line:
                problem(row.line, f"duplicate entry_id {entry_id!r} (first on line {first_line[entry_id]})")
                ok = False
            else:
                first_line[entry_id] = row.line
        session_id = get("session_id", "")
        if "session_id" in present:
            if not session_id:
                problem(row.line, f"{label}: session_id is empty")
                ok = False
            elif session_ids is not None and session_id not in session_ids:
                known = ", ".join(sorted(session_ids)) or "none"
                problem(row.line, f"{label}: unknown session {session_id!r} (event.json has: {known})")
                ok = False
        order: int | None = None
        raw_order = get("order", "")
        if "order" in present:
            if re.fullmatch(r"[+-]?\d+", raw_order):
                order = int(raw_order)
                slot = (session_id, order)
                if session_id and slot in slots:
                    other, other_line = slots[slot]
                    problem(
                        row.line,
                        f"{label}: duplicate order {order} in session {session_id} "
                        f"(entry {other} on line {other_line} has it too)",
                    )
                    ok = False
                elif session_id:
                    slots[slot] = (entry_id, row.line)
            else:
                problem(row.line, f"{label}: order {raw_order!r} is not a whole number")
                ok = False
        title = get("title", "")
        if "title" in present and not title:
            problem(row.line, f"{label}: title is empty")
            ok = False
        scheduled_at: str | None = None
        moment: datetime | None = None
        if get("scheduled_at"):
            try:
                moment = parse_rfc3339(get("scheduled_at", ""))
                scheduled_at = to_rfc3339(moment)
            except ValueError as exc:
                problem(row.line, f"{label}: scheduled_at {get('scheduled_at')!r} {exc}")
                ok = False
        participants = get(PARTICIPANTS) or None
        if participants and moment is not None:
            busy = on_stage.setdefault(moment, {})
            for person in _split_names(participants):
                key = _person_key(person)
                if key in busy and busy[key][0] != entry_id:
                    other, other_line = busy[key]
                    # Masked: problem lists end up in terminals and logs; the lines say where to look.
                    problem(
                        row.line,
                        f"{label}: participant {personal.mask(person)!r} is also in entry "
                        f"{other} (line {other_line}) at the same scheduled_at {get('scheduled_at')}",
                    )
                    ok = False
                else:
                    busy.setdefault(key, (entry_id, row.line))
        if ok and not _missing_any(present, ENTRY_REQUIRED):
            entries.append(
                Entry(
                    entry_id=entry_id,
                    session_id=session_id,
                    order=order or 0,
                    scheduled_at=scheduled_at,
                    title=title,
                    category=get("category") or None,
                    division=get("division") or None,
                    level=get("level") or None,
                    studio=get("studio") or None,
                    participants=participants,
                    personal={c: row.extra[c] for c in sealed_columns if row.extra.get(c)},
                    extra={k: v for k, v in row.extra.items() if k not in sealed_columns},
                )
            )
    return entries, sealed_columns


def _personal_columns(listed: list[tuple[str, int]], header: list[str], problems: Problems) -> list[str]:
    """event.json's ``personal_columns`` (name, line) matched to entries.csv's extra columns (case
    does not matter); a name the header lacks is a problem at its line in event.json."""
    extras = {key.casefold(): key for key in header if key and key not in ENTRY_COLUMNS}
    found: list[str] = []
    for name, line in listed:
        if name.casefold() == PARTICIPANTS:
            continue  # always personal, listed or not
        column = extras.get(name.casefold())
        if column is None:
            if header:  # an unreadable header is reported already
                have = ", ".join(sorted(extras.values())) or "none"
                problems.add(
                    EVENT_FILE,
                    line,
                    f"personal_columns: entries.csv has no column {name!r} (its extra columns: {have})",
                )
        elif column not in found:
            found.append(column)
    return found


def _check_scoring_fields(
    uses: list[FieldUse], header: list[str], sealed_columns: list[str], problems: Problems
) -> None:
    """Each field the scoring block groups or matches on is a column of entries.csv (case does not
    matter) that results can read: one of ``RESULT_FIELDS`` or an extra column that is not personal.
    A problem is reported at its line in event.json."""
    if not header:
        return  # an unreadable header is reported already
    columns = {key.casefold(): key for key in header if key}
    sealed = {column.casefold() for column in sealed_columns}
    readable = [
        column
        for key, column in columns.items()
        if key in RESULT_FIELDS or (key not in ENTRY_COLUMNS and key not in sealed)
    ]
    for use in uses:
        key = use.name.casefold()
        if key not in columns:
            problems.add(
                EVENT_FILE,
                use.line,
                f"{use.use}: entries.csv has no column {use.name!r} (its columns: {', '.join(readable)})",
            )
        elif columns[key] not in readable:
            problems.add(
                EVENT_FILE,
                use.line,
                f"{use.use}: results cannot use column {use.name!r} (participants and personal columns are "
                f"kept encrypted, order and scheduled_at are not text fields; usable: {', '.join(readable)})",
            )


def _missing_any(present: set[str], required: tuple[str, ...]) -> bool:
    # A row can't become a record while its file lacks a required column (already reported).
    return any(column not in present for column in required)


def check_judges(data: bytes | None, session_ids: set[str] | None, problems: Problems) -> list[Judge]:
    """The valid judges of judges.csv; ``session_ids`` as in ``check_entries``."""

    def problem(line: int, message: str) -> None:
        problems.add(JUDGES_FILE, line, message)

    if data is None:
        return []
    rows, present, _ = read_csv(JUDGES_FILE, data, JUDGE_COLUMNS, JUDGE_COLUMNS, problems)
    judges: list[Judge] = []
    first_line: dict[str, int] = {}
    for row in rows:
        get = row.values.get
        ok = True
        judge_id = get("judge_id", "")
        label = f"judge {judge_id}" if judge_id else "judge"
        if "judge_id" in present:
            if not judge_id:
                problem(row.line, "judge_id is empty")
                ok = False
            elif judge_id in first_line:
                problem(row.line, f"duplicate judge_id {judge_id!r} (first on line {first_line[judge_id]})")
                ok = False
            else:
                first_line[judge_id] = row.line
        name = get("name", "")
        if "name" in present and not name:
            problem(row.line, f"{label}: name is empty")
            ok = False
        listed = list(dict.fromkeys(_split_names(get("sessions", ""))))
        all_sessions = listed == [ALL_SESSIONS]
        if "sessions" in present and not all_sessions:
            if not listed:
                problem(
                    row.line, f"{label}: sessions is empty (list session ids separated by ';', or * for all)"
                )
                ok = False
            elif ALL_SESSIONS in listed:
                problem(row.line, f"{label}: * means all sessions and must stand alone in sessions")
                ok = False
            elif session_ids is not None:
                unknown = [s for s in listed if s not in session_ids]
                for session_id in unknown:
                    problem(
                        row.line,
                        f"{label}: unknown session {session_id!r} "
                        f"(event.json has: {', '.join(sorted(session_ids))})",
                    )
                if len(unknown) == len(listed):
                    problem(row.line, f"{label} is on no existing session")
                ok = ok and not unknown
        if ok and not _missing_any(present, JUDGE_COLUMNS):
            judges.append(
                Judge(judge_id, name, () if all_sessions else tuple(listed), all_sessions, row.extra)
            )
    return judges
