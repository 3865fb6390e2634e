"""The event package format (EVENT_PACKAGE.md): the files a package holds, event.json's field names,
the CSV columns, the records a checked package is made of, and how its problems are reported.

The import reads packages in this format (``reading``, ``validate``, ``provisioning/event_import.py``)
and the export writes the current event back in it (``appliance/core/tabulation.py``), so both follow
these names and columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import msgspec

EVENT_FILE = "event.json"
ENTRIES_FILE = "entries.csv"
JUDGES_FILE = "judges.csv"
PACKAGE_FILES = (EVENT_FILE, ENTRIES_FILE, JUDGES_FILE)

# event.json: the documented fields of the event, a criterion and a session. Any other field is kept
# as the record's extra attributes; the event's optional settings below are among them.
EVENT_KEYS = ("id", "name", "timezone", "criteria", "sessions")
CRITERION_KEYS = ("key", "label", "min", "max", "step")
SESSION_KEYS = ("id", "name", "stage", "starts_at")
PERSONAL_COLUMNS = "personal_columns"  # the entries.csv extra columns that are personal data
TABLETS_SEE_PARTICIPANTS = "tablets_see_participants"

# entries.csv: the documented columns that are not personal data (all the export writes), then the
# one that is. Column names match case-insensitively; any other column is an extra attribute.
ENTRY_PUBLIC_COLUMNS = (
    "entry_id",
    "session_id",
    "order",
    "scheduled_at",
    "title",
    "category",
    "division",
    "level",
    "studio",
)
PARTICIPANTS = "participants"
ENTRY_COLUMNS = (*ENTRY_PUBLIC_COLUMNS, PARTICIPANTS)
ENTRY_REQUIRED = ("entry_id", "session_id", "order", "title")
# judges.csv: every documented column is required.
JUDGE_COLUMNS = ("judge_id", "name", "sessions")
# A judge's sessions and an entry's participants are lists in one cell, split on this.
LIST_SEPARATOR = ";"
ALL_SESSIONS = "*"  # judges.csv sessions: every session of the event


# The records of a checked package. Dataclasses rather than msgspec Structs: an entry's personal
# fields stay out of its repr and a package's source (its file name) out of its equality, which a
# Struct cannot declare field by field.


@dataclass(frozen=True)
class Criterion:
    """A criterion of event.json: a sheet scores it from min to max in steps of step (exact decimals)."""

    key: str
    label: str
    min: Decimal
    max: Decimal
    step: Decimal
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Session:
    """A session of event.json."""

    session_id: str
    name: str
    stage: str | None
    starts_at: str | None  # RFC 3339, UTC
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """A row of entries.csv."""

    entry_id: str
    session_id: str
    order: int
    scheduled_at: str | None  # RFC 3339, UTC
    title: str
    category: str | None = None
    division: str | None = None
    level: str | None = None
    studio: str | None = None
    # Personal data: kept out of repr so a logged package never shows a name.
    participants: str | None = field(default=None, repr=False)
    # The values of the columns event.json marks personal (``personal_columns``), by column.
    personal: dict[str, str] = field(default_factory=dict, repr=False)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Judge:
    """A row of judges.csv: the sessions the judge sits on, or all of them."""

    judge_id: str
    name: str
    sessions: tuple[str, ...]  # empty when all_sessions
    all_sessions: bool
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Package:
    """A checked event package, ready to import. Equal packages have equal ``snapshot_id``s."""

    event_id: str
    name: str
    timezone: str
    snapshot_id: str
    criteria: tuple[Criterion, ...]
    sessions: tuple[Session, ...]
    entries: tuple[Entry, ...]
    judges: tuple[Judge, ...]
    extra: dict[str, Any] = field(default_factory=dict)
    source: str = field(default="", compare=False)


# -- scoring: how results are computed (the optional ``scoring`` block, criterion weight and kind) --
# Both are kept as they were written among the extra attributes (event.json's ``scoring`` in the
# event's, ``weight`` and ``kind`` in each criterion's), so they are stored and exported back with
# them; ``validate`` checks them at import and these Structs read them back (``scoring_of``,
# ``criterion_rule_of``), numbers as exact decimals from their JSON text.

SCORING = "scoring"
CRITERION_WEIGHT = "weight"
CRITERION_KIND = "kind"
JudgesRule = Literal["mean", "sum", "median", "trimmed_mean"]
JUDGES_RULES: tuple[JudgesRule, ...] = ("mean", "sum", "median", "trimmed_mean")
RankStyle = Literal["skip", "dense"]
RANK_STYLES: tuple[RankStyle, ...] = ("skip", "dense")
CriterionKind = Literal["score", "deduction"]
CRITERION_KINDS: tuple[CriterionKind, ...] = ("score", "deduction")
TIE_CRITERION = "criterion:"  # a tie rule "criterion:KEY"
TIE_HIGHEST_SINGLE = "highest_single"
DEFAULT_RANK_WITHIN = ("category", "division")
DEFAULT_PRECISION = 2
MAX_PRECISION = 10
# The entries.csv fields results can group and match on (besides the extra columns that are not
# personal): text as the file has it. order and scheduled_at are not (a number, a time normalised to
# UTC), nor participants (personal data, kept encrypted).
RESULT_FIELDS = ("entry_id", "session_id", "title", "category", "division", "level", "studio")
# The keys of the scoring block, and those an override may set besides its ``match``.
ENTRY_RULE_KEYS = ("judges", "drop_highest", "drop_lowest", "precision", "awards")  # apply per entry
GROUP_RULE_KEYS = ("ties", "ranks")  # apply to a whole rank_within group
SCORING_KEYS = (*ENTRY_RULE_KEYS, "rank_within", *GROUP_RULE_KEYS, "overrides")
OVERRIDE_KEYS = ("match", *ENTRY_RULE_KEYS, *GROUP_RULE_KEYS)


class CriterionRule(msgspec.Struct, frozen=True):
    """How a criterion counts in a sheet's total: ``weight`` x value, added (``score``) or
    subtracted (``deduction``)."""

    weight: Decimal = Decimal(1)
    kind: CriterionKind = "score"


class AwardBand(msgspec.Struct, frozen=True):
    """An award band: a score reaching ``min`` earns ``label`` (bands are checked from the top)."""

    label: str
    min: Decimal


class Override(msgspec.Struct, frozen=True):
    """Rules for the entries whose fields equal every ``match`` field (names as entries.csv's columns,
    in any case); a key left None is not listed and keeps the event-wide value."""

    match: dict[str, str]
    judges: JudgesRule | None = None
    drop_highest: int | None = None
    drop_lowest: int | None = None
    precision: int | None = None
    awards: tuple[AwardBand, ...] | None = None
    ties: tuple[str, ...] | None = None
    ranks: RankStyle | None = None


class Scoring(msgspec.Struct, frozen=True):
    """The event's scoring block; the defaults are an event without one (EVENT_PACKAGE.md)."""

    judges: JudgesRule = "mean"
    drop_highest: int = 0
    drop_lowest: int = 0
    precision: int = DEFAULT_PRECISION
    rank_within: tuple[str, ...] = DEFAULT_RANK_WITHIN
    ties: tuple[str, ...] = ()
    ranks: RankStyle = "skip"
    awards: tuple[AwardBand, ...] = ()
    overrides: tuple[Override, ...] = ()


class _EventExtra(msgspec.Struct):
    scoring: Scoring = msgspec.field(default_factory=Scoring)


_event_extra = msgspec.json.Decoder(_EventExtra).decode
_criterion_rule = msgspec.json.Decoder(CriterionRule).decode


def scoring_of(event_extra: str) -> Scoring:
    """The scoring rules in an event's stored extra attributes (JSON text), checked at import; the
    defaults when the event has no scoring block."""
    return _event_extra(event_extra).scoring


def criterion_rule_of(criterion_extra: str) -> CriterionRule:
    """A criterion's weight and kind from its stored extra attributes (JSON text)."""
    return _criterion_rule(criterion_extra)


class Problems:
    """Problems in file order, then line order, each rendered as ``file:line: message``."""

    def __init__(self) -> None:
        self._items: list[tuple[int, int, int, str]] = []

    def add(self, file: str, line: int, message: str) -> None:
        rank = PACKAGE_FILES.index(file) if file in PACKAGE_FILES else -1
        self._items.append((rank, line, len(self._items), f"{file}:{line}: {message}"))

    def __bool__(self) -> bool:
        return bool(self._items)

    def lines(self) -> list[str]:
        return [text for *_, text in sorted(self._items)]


def plain_number(value: Decimal, *, signed_zero: bool = True) -> str:
    """10.0 -> '10', 0.50 -> '0.5': numbers as a person wrote them, never '1E+1'. A negative zero is
    '-0' as the package wrote it (the import's messages quote it), or '0' without ``signed_zero`` (the
    export's cells, where it is the number 0)."""
    text = format(value.normalize(), "f")
    return "0" if text == "-0" and not signed_zero else text
