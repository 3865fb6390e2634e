"""The event package format (EVENT_PACKAGE.md): the files a package holds, event.json's field names,
the CSV columns, the records a checked package is made of, and how its problems are reported.

The import reads packages in this format (``reading``, ``validate``, ``provisioning/event_import.py``)
and the export writes the current event back in it (``appliance/core/tabulation.py``), so both follow
these names and columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

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


def plain_number(value: Decimal) -> str:
    """10.0 -> '10', 0.50 -> '0.5': numbers as a person wrote them, never '1E+1'."""
    return format(value.normalize(), "f")
