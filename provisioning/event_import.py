"""Event packages: load a folder or a .zip (event.json, entries.csv, judges.csv), check all of it,
and import it into the box inside the caller's write transaction.

The format is fixed in EVENT_PACKAGE.md. Loading never touches the database: ``load_package``
either returns a fully checked ``Package`` or raises ``PackageInvalid`` listing every problem as
``file:line: message``. ``import_package`` then applies it in one transaction:

* before the event has any score sheet, the package replaces the event's setup entirely;
* once a sheet exists, the import adds and updates but never removes or renumbers a scored entry,
  never removes a judge who has sheets and never changes the criteria; what it kept is reported in
  ``ImportReport.refused``.

Participants' names are personal data, and so are the values of the entries.csv columns event.json
lists in ``personal_columns``: they leave this module only as ``personal.encrypt`` ciphertext (one
per field), never in extras, messages or the audit log.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import re
import sqlite3
import unicodedata
import zipfile
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from appliance.core import audit, personal, personal_fields
from appliance.core.box import ensure_not_frozen, get_box
from appliance.core.tabulation import PACKAGE_ENTRY_COLUMNS, PACKAGE_JUDGE_COLUMNS
from appliance.shared.canonical import canonical_json, content_hash
from appliance.shared.errors import DomainError, Frozen
from appliance.shared.times import now_rfc3339, parse_rfc3339, to_rfc3339

EVENT_FILE = "event.json"
ENTRIES_FILE = "entries.csv"
JUDGES_FILE = "judges.csv"
PACKAGE_FILES = (EVENT_FILE, ENTRIES_FILE, JUDGES_FILE)
# A real event is a few hundred kilobytes; the cap stops a zip bomb from filling the Pi's memory.
MAX_FILE_BYTES = 20 * 1024 * 1024

EVENT_KEYS = ("id", "name", "timezone", "criteria", "sessions")
CRITERION_KEYS = ("key", "label", "min", "max", "step")
SESSION_KEYS = ("id", "name", "stage", "starts_at")
# The package's columns, as the export also writes them (appliance/core/tabulation.py), plus the one
# personal column the export leaves out.
ENTRY_COLUMNS = (*PACKAGE_ENTRY_COLUMNS, "participants")
ENTRY_REQUIRED = ("entry_id", "session_id", "order", "title")
JUDGE_COLUMNS = PACKAGE_JUDGE_COLUMNS
ALL_SESSIONS = "*"


class PackageInvalid(DomainError):
    """The package breaks the format's rules; ``problems`` lists every one as ``file:line: message``."""

    def __init__(self, problems: list[str]) -> None:
        count = len(problems)
        noun, them = ("problem", "it") if count == 1 else ("problems", "them")
        super().__init__(
            f"event package has {count} {noun}; nothing was imported: fix {them} and import again",
            problems=list(problems),
        )
        self.problems = list(problems)


class ImportRefused(DomainError):
    """The import would take an event that is being scored off the box."""


@dataclass(frozen=True)
class Criterion:
    key: str
    label: str
    min: Decimal
    max: Decimal
    step: Decimal
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Session:
    session_id: str
    name: str
    stage: str | None
    starts_at: str | None  # RFC 3339, UTC
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
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


@dataclass
class ImportReport:
    event_id: str
    snapshot_id: str
    counts: dict[str, int]
    added: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    replaced: bool = False
    # Unscored entries, judges and sessions the package dropped after scoring had started.
    removed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- loading ------------------------------------------------------------------------------------


class _Problems:
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


def load_package(path: Path) -> Package:
    """Read and check an event package (a folder, or a .zip of one with the files at its root or
    in a single top-level folder). Raises ``PackageInvalid`` listing every problem at once."""
    path = Path(path)
    problems = _Problems()
    files = _read_files(path, problems)
    event = _parse_event(files.get(EVENT_FILE), problems)
    entries, personal = _parse_entries(
        files.get(ENTRIES_FILE), event.session_ids, problems, event.personal_columns
    )
    judges = _parse_judges(files.get(JUDGES_FILE), event.session_ids, problems)
    if problems:
        raise PackageInvalid(problems.lines())
    if "personal_columns" in event.extra:
        # Stored as entries.csv names them: the fields the admin API lists and reveals.
        event.extra["personal_columns"] = personal
    return Package(
        event_id=event.event_id,
        name=event.name,
        timezone=event.timezone,
        snapshot_id=snapshot_id(files),
        criteria=tuple(event.criteria),
        sessions=tuple(event.sessions),
        entries=tuple(entries),
        judges=tuple(judges),
        extra=event.extra,
        source=path.name,
    )


def snapshot_id(files: dict[str, bytes]) -> str:
    """Content hash of a package's files: the same bytes give the same id, folder or zip."""
    return content_hash(sorted([name, hashlib.sha256(data).hexdigest()] for name, data in files.items()))


def _read_files(path: Path, problems: _Problems) -> dict[str, bytes]:
    if path.is_dir():
        files = {}
        for name in PACKAGE_FILES:
            file = path / name
            if not file.is_file():
                problems.add(
                    name, 1, f"file is missing from {path.name}/ (a package holds {', '.join(PACKAGE_FILES)})"
                )
            elif file.stat().st_size > MAX_FILE_BYTES:
                problems.add(name, 1, f"file is larger than {MAX_FILE_BYTES // 2**20} MB")
            else:
                files[name] = file.read_bytes()
        return files
    if path.is_file() and zipfile.is_zipfile(path):
        return _read_zip(path, problems)
    if not path.exists():
        problems.add(path.name, 1, "no such file or folder")
    else:
        problems.add(path.name, 1, "not a folder or a .zip file: give the package folder or a .zip of it")
    return {}


def _read_zip(path: Path, problems: _Problems) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(path) as archive:
            members = {}
            for info in archive.infolist():
                name = info.filename.replace("\\", "/")
                parts = PurePosixPath(name).parts
                # Skip folders and the clutter macOS and Windows add to zips made in a file manager.
                if info.is_dir() or not parts or parts[0] == "__MACOSX" or parts[-1].startswith("._"):
                    continue
                members[name] = info
            prefix = ""
            if not any(name in members for name in PACKAGE_FILES):
                tops = {PurePosixPath(name).parts[0] for name in members if "/" in name}
                if len(tops) == 1:
                    prefix = tops.pop() + "/"
            files = {}
            for name in PACKAGE_FILES:
                packed = members.get(prefix + name)
                if packed is None:
                    problems.add(
                        name,
                        1,
                        f"file is missing from {path.name} (a package holds "
                        f"{', '.join(PACKAGE_FILES)}, at the zip's root or in one folder)",
                    )
                    continue
                with archive.open(packed) as member:
                    data = member.read(MAX_FILE_BYTES + 1)
                if len(data) > MAX_FILE_BYTES:
                    problems.add(name, 1, f"file is larger than {MAX_FILE_BYTES // 2**20} MB")
                else:
                    files[name] = data
            return files
    except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
        # RuntimeError: an encrypted member (zipfile asks for a password).
        problems.add(path.name, 1, f"the zip cannot be read ({exc}): make it again from the folder")
        return {}


def _decode(name: str, data: bytes | None, problems: _Problems) -> str | None:
    if data is None:
        return None
    try:
        # utf-8-sig accepts and drops the BOM that spreadsheet programs put at the start.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problems.add(name, line, "not UTF-8 text: save the file as UTF-8 (in a spreadsheet: 'CSV UTF-8')")
        return None


# -- event.json ---------------------------------------------------------------------------------


@dataclass
class _Event:
    event_id: str = ""
    name: str = ""
    timezone: str = ""
    criteria: list[Criterion] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    session_ids: set[str] | None = None  # None: no usable sessions list, so don't check the CSVs' sessions
    personal_columns: list[tuple[str, int]] = field(default_factory=list)  # (column, line in event.json)


# json.decoder's string scanner (C-accelerated) is there at run time but missing from typeshed.
_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


class _JsonLines:
    """Line numbers of the keys and items of a JSON document, by path (``("criteria", 0, "min")``),
    so a problem can point at the line to fix. Also notes keys that appear twice in an object."""

    _WS = re.compile(r"[ \t\n\r]*")
    _SCALAR = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null|NaN|-?Infinity")

    def __init__(self, text: str) -> None:
        self.text = text
        self._starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.lines: dict[tuple[Any, ...], int] = {}
        self.duplicates: list[tuple[int, tuple[Any, ...]]] = []
        # The document already parsed with json.loads; a locator hiccup only costs precise lines.
        with contextlib.suppress(IndexError, ValueError):
            self._value(0, ())

    def line(self, path: tuple[Any, ...]) -> int:
        """The line of ``path``, or of its nearest ancestor that has one, else 1."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return 1

    def _line_at(self, pos: int) -> int:
        return bisect_right(self._starts, pos)

    def _skip(self, pos: int) -> int:
        return self._end_of(self._WS, pos)

    def _end_of(self, token: re.Pattern[str], pos: int) -> int:
        found = token.match(self.text, pos)
        if found is None:
            raise ValueError(f"no JSON token at {pos}")  # a locator hiccup (see __init__)
        return found.end()

    def _value(self, pos: int, path: tuple[Any, ...]) -> int:
        pos = self._skip(pos)
        char = self.text[pos]
        if char == "{":
            seen: set[str] = set()
            pos = self._skip(pos + 1)
            if self.text[pos] == "}":
                return pos + 1
            while True:
                pos = self._skip(pos)
                key, end = _scanstring(self.text, pos + 1)
                child = (*path, key)
                if key in seen:
                    self.duplicates.append((self._line_at(pos), child))
                seen.add(key)
                self.lines[child] = self._line_at(pos)  # json.loads keeps the last duplicate
                pos = self._skip(end) + 1  # past ':'
                pos = self._skip(self._value(pos, child))
                if self.text[pos] == "}":
                    return pos + 1
                pos += 1  # ','
        if char == "[":
            index = 0
            pos = self._skip(pos + 1)
            if self.text[pos] == "]":
                return pos + 1
            while True:
                pos = self._skip(pos)
                self.lines[(*path, index)] = self._line_at(pos)
                pos = self._skip(self._value(pos, (*path, index)))
                index += 1
                if self.text[pos] == "]":
                    return pos + 1
                pos += 1
        if char == '"':
            return _scanstring(self.text, pos + 1)[1]
        return self._end_of(self._SCALAR, pos)


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


class _JsonProblems:
    """Reports a problem of event.json at the line of a JSON path."""

    def __init__(self, where: _JsonLines, problems: _Problems) -> None:
        self.where = where
        self.problems = problems

    def __call__(self, path: tuple[Any, ...], message: str) -> None:
        self.problems.add(EVENT_FILE, self.where.line(path), message)

    def line(self, path: tuple[Any, ...]) -> int:
        return self.where.line(path)


def _parse_event(data: bytes | None, problems: _Problems) -> _Event:
    event = _Event()
    text = _decode(EVENT_FILE, data, problems)
    if text is None:
        return event
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        problems.add(EVENT_FILE, exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})")
        return event
    except ValueError as exc:
        match = re.search(re.escape(str(exc)), text)
        line = text.count("\n", 0, match.start()) + 1 if match else 1
        problems.add(EVENT_FILE, line, f"invalid JSON: {exc} is not a number JSON allows")
        return event
    where = _JsonLines(text)
    problem = _JsonProblems(where, problems)
    for line, path in where.duplicates:
        problems.add(EVENT_FILE, line, f"key {_dotted(path)!r} appears twice in the same object")
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
    event.sessions, event.session_ids = _parse_sessions(document, problem)
    return event


def _parse_personal_settings(document: dict[str, Any], problem: _JsonProblems) -> list[tuple[str, int]]:
    """``tablets_see_participants`` (true or false) and ``personal_columns``: a list of entries.csv
    column names, each with its line; documented columns other than participants cannot be personal.
    Whether each column exists is checked against entries.csv's header (``_personal_columns``)."""
    flag = document.get("tablets_see_participants", False)
    if not isinstance(flag, bool):
        problem(
            ("tablets_see_participants",),
            f"'tablets_see_participants' must be true or false, not {json.dumps(flag)}",
        )
    if "personal_columns" not in document:
        return []
    listed = document["personal_columns"]
    if not isinstance(listed, list):
        problem(("personal_columns",), "'personal_columns' must be a list of entries.csv column names")
        return []
    columns: list[tuple[str, int]] = []
    for index, name in enumerate(listed):
        path = ("personal_columns", index)
        if not isinstance(name, str) or not name.strip():
            problem(path, f"personal_columns: {json.dumps(name)} is not a column name")
        elif name.strip().lower() in PACKAGE_ENTRY_COLUMNS:
            problem(
                path,
                f"personal_columns: {name.strip()!r} is a documented column that is not personal data "
                "(only participants and extra columns can be personal)",
            )
        else:
            columns.append((name.strip(), problem.line(path)))
    return columns


def _dotted(path: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


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
        low = _json_number(item, path, "min", problem, what)
        high = _json_number(item, path, "max", problem, what)
        step = _json_number(item, path, "step", problem, what)
        if low is None or high is None or step is None:
            continue
        if low >= high:
            problem((*path, "min"), f"{what}: min ({_num(low)}) must be less than max ({_num(high)})")
        elif step <= 0:
            problem((*path, "step"), f"{what}: step ({_num(step)}) must be greater than 0")
        elif (high - low) % step != 0:
            problem(
                (*path, "step"),
                f"{what}: step {_num(step)} does not divide the range "
                f"{_num(low)}..{_num(high)} (max - min must be a whole number of steps)",
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


# -- CSV files ----------------------------------------------------------------------------------


@dataclass
class _Row:
    line: int
    values: dict[str, str]
    extra: dict[str, str]


def _read_csv(
    name: str, data: bytes | None, columns: tuple[str, ...], required: tuple[str, ...], problems: _Problems
) -> tuple[list[_Row], set[str], list[str]]:
    """Rows of a CSV file with the physical line each starts on (header = line 1), the set of
    documented columns present, and the header's column names ([] when it cannot be read).
    Documented columns match case-insensitively; others are extras."""
    text = _decode(name, data, problems)
    if text is None:
        return [], set(columns), []  # missing or unreadable: already reported, don't pile on
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text, required), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        problems.add(name, 1, f"the file is empty: it needs a header row ({', '.join(required)}, ...)")
        return [], set(), []
    except csv.Error as exc:
        problems.add(name, 1, f"the header row is not valid CSV ({exc})")
        return [], set(), []
    keys: list[str] = []
    for position, raw in enumerate(header, 1):
        label = raw.strip()
        key = label.lower() if label.lower() in columns else label
        if key and key in keys:
            problems.add(name, 1, f"column {label!r} appears twice in the header (column {position})")
        keys.append(key)
    present = {key for key in keys if key in columns}
    for column in required:
        if column not in present:
            problems.add(name, 1, f"missing required column {column!r}")

    rows: list[_Row] = []
    end = reader.line_num
    while True:
        start = end + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.add(name, start, f"not valid CSV ({exc}): check the quotes on this line")
            end = reader.line_num
            continue
        end = reader.line_num
        if not any(value.strip() for value in fields):
            continue  # blank lines and the empty rows spreadsheets leave at the end
        if len(fields) > len(keys) and any(value.strip() for value in fields[len(keys) :]):
            problems.add(
                name,
                start,
                f"this row has {len(fields)} values but the header has {len(keys)} "
                "columns (a comma inside a value needs quotes around the value)",
            )
        values: dict[str, str] = {}
        extra: dict[str, str] = {}
        for position, key in enumerate(keys):
            value = fields[position].strip() if position < len(fields) else ""
            if key in columns:
                values[key] = value
            elif key:
                extra[key] = value
            elif value:
                problems.add(name, start, f"value {value!r} is in column {position + 1}, which has no header")
        rows.append(_Row(start, values, extra))
    return rows, present, keys


def _delimiter(text: str, required: tuple[str, ...]) -> str:
    """The header's separator: a comma, or the semicolon or tab that a spreadsheet set to a language
    with decimal commas writes. Whichever finds the most required column names; a tie keeps the comma."""
    header = text.split("\n", 1)[0]

    def found(separator: str) -> int:
        try:
            labels = next(csv.reader([header], delimiter=separator, strict=True), [])
        except csv.Error:
            return 0
        return sum(1 for label in labels if label.strip().lower() in required)

    return max((",", ";", "\t"), key=found)


def _split_names(text: str) -> list[str]:
    return [part.strip() for part in text.split(";") if part.strip()]


def _person_key(name: str) -> str:
    # Trimmed and case-insensitive; NFC so 'é' typed two ways is still the same dancer.
    return unicodedata.normalize("NFC", " ".join(name.split())).casefold()


def _parse_entries(
    data: bytes | None,
    session_ids: set[str] | None,
    problems: _Problems,
    personal_columns: list[tuple[str, int]] | None = None,
) -> tuple[list[Entry], list[str]]:
    """The valid entries, and the extra columns event.json marks personal (as the header names them)."""

    def problem(line: int, message: str) -> None:
        problems.add(ENTRIES_FILE, line, message)

    if data is None:
        return [], []
    rows, present, header = _read_csv(ENTRIES_FILE, data, ENTRY_COLUMNS, ENTRY_REQUIRED, problems)
    sealed_columns = _personal_columns(personal_columns or [], header, problems)
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
        participants = get("participants") or None
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


def _personal_columns(listed: list[tuple[str, int]], header: list[str], problems: _Problems) -> list[str]:
    """event.json's ``personal_columns`` (name, line) matched to entries.csv's extra columns (case
    does not matter); a name the header lacks is a problem at its line in event.json."""
    extras = {key.casefold(): key for key in header if key and key not in ENTRY_COLUMNS}
    found: list[str] = []
    for name, line in listed:
        if name.casefold() == "participants":
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


def _missing_any(present: set[str], required: tuple[str, ...]) -> bool:
    # A row can't become a record while its file lacks a required column (already reported).
    return any(column not in present for column in required)


def _parse_judges(data: bytes | None, session_ids: set[str] | None, problems: _Problems) -> list[Judge]:
    def problem(line: int, message: str) -> None:
        problems.add(JUDGES_FILE, line, message)

    if data is None:
        return []
    rows, present, _ = _read_csv(JUDGES_FILE, data, JUDGE_COLUMNS, JUDGE_COLUMNS, problems)
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


# -- importing ----------------------------------------------------------------------------------


def import_package(
    conn: sqlite3.Connection,
    package: Package,
    data_key: bytes,
    actor: str,
    request_id: str | None = None,
) -> ImportReport:
    """Apply a checked package inside the caller's write transaction (``store.write_sync``).

    Before the event has sheets, its setup is replaced; after, the import only adds and updates
    (see the module docstring) and reports what it kept. Raises ``Frozen`` while the box is frozen
    and ``ImportRefused`` when another event that has sheets is on the box."""
    try:
        ensure_not_frozen(conn)
    except Frozen as exc:
        raise Frozen(f"the box is frozen ({exc.detail}): imports refused until a tech unfreezes it") from None
    event_id = package.event_id
    current = get_box(conn)["event_id"]
    if current and current != event_id:
        scored = _sheet_count(conn, current)
        if scored:
            raise ImportRefused(
                f"this box holds event {current!r} with {scored} score sheet(s); importing {event_id!r} "
                f"would take it off the box. Import a package of {current!r}, or set up another box "
                f"for {event_id!r}"
            )
    _upsert_event(conn, package)
    replaced = not _sheet_count(conn, event_id)
    report = ImportReport(event_id, package.snapshot_id, {}, replaced=replaced)
    if replaced:
        _replace_setup(conn, package, data_key)
    else:
        _merge_setup(conn, package, data_key, report)
    conn.execute("UPDATE box SET event_id = ? WHERE id = 1", (event_id,))
    report.counts = {
        table: conn.execute(f"SELECT count(*) FROM {table} WHERE event_id = ?", (event_id,)).fetchone()[0]
        for table in ("sessions", "entries", "judges", "criteria")
    }
    audit.record(
        conn,
        actor,
        "event.import",
        {
            "event_id": event_id,
            "snapshot_id": package.snapshot_id,
            "source": package.source,
            "replaced": replaced,
            **report.counts,
            "added": report.added,
            "removed": report.removed,
            "refused": report.refused,
        },
        request_id,
    )
    return report


def _sheet_count(conn: sqlite3.Connection, event_id: str) -> int:
    return conn.execute("SELECT count(*) FROM sheets WHERE event_id = ?", (event_id,)).fetchone()[0]


def _upsert_event(conn: sqlite3.Connection, package: Package) -> None:
    conn.execute(
        "INSERT INTO events (event_id, name, timezone, snapshot_id, imported_at, extra) "
        "VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (event_id) DO UPDATE SET name = excluded.name, timezone = excluded.timezone, "
        "snapshot_id = excluded.snapshot_id, imported_at = excluded.imported_at, extra = excluded.extra",
        (
            package.event_id,
            package.name,
            package.timezone,
            package.snapshot_id,
            now_rfc3339(),
            canonical_json(package.extra),
        ),
    )


def _replace_setup(conn: sqlite3.Connection, package: Package, data_key: bytes) -> None:
    event_id = package.event_id
    # Children before parents: the foreign keys are checked statement by statement.
    for table in ("panels", "entries", "judges", "sessions", "criteria"):
        conn.execute(f"DELETE FROM {table} WHERE event_id = ?", (event_id,))
    for position, criterion in enumerate(package.criteria, 1):
        _insert_criterion(conn, event_id, criterion, position)
    for position, session in enumerate(package.sessions, 1):
        _upsert_session(conn, event_id, session, position)
    for entry in package.entries:
        _upsert_entry(conn, event_id, entry, entry.session_id, entry.order, data_key)
    all_ids = [s.session_id for s in package.sessions]
    for judge in package.judges:
        _upsert_judge(conn, event_id, judge)
        for session_id in all_ids if judge.all_sessions else judge.sessions:
            conn.execute(
                "INSERT INTO panels (event_id, judge_id, session_id) VALUES (?, ?, ?)",
                (event_id, judge.judge_id, session_id),
            )


def _insert_criterion(conn: sqlite3.Connection, event_id: str, criterion: Criterion, position: int) -> None:
    conn.execute(
        "INSERT INTO criteria (event_id, key, label, min, max, step, position, extra) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event_id,
            criterion.key,
            criterion.label,
            float(criterion.min),
            float(criterion.max),
            float(criterion.step),
            position,
            canonical_json(criterion.extra),
        ),
    )


def _upsert_session(conn: sqlite3.Connection, event_id: str, session: Session, position: int) -> None:
    conn.execute(
        "INSERT INTO sessions (event_id, session_id, name, stage, starts_at, position, extra) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id, session_id) DO UPDATE SET name = excluded.name, "
        "stage = excluded.stage, starts_at = excluded.starts_at, position = excluded.position, "
        "extra = excluded.extra",
        (
            event_id,
            session.session_id,
            session.name,
            session.stage,
            session.starts_at,
            position,
            canonical_json(session.extra),
        ),
    )


def _upsert_entry(
    conn: sqlite3.Connection, event_id: str, entry: Entry, session_id: str, order: int, data_key: bytes
) -> None:
    participants = None
    if entry.participants:
        participants = personal.encrypt(
            data_key, "entries", "participants", f"{event_id}/{entry.entry_id}", entry.participants
        )
    conn.execute(
        "INSERT INTO entries (event_id, entry_id, session_id, running_order, scheduled_at, title, category, "
        "division, level, studio, participants_enc, personal_enc, extra) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (event_id, entry_id) DO UPDATE SET session_id = excluded.session_id, "
        "running_order = excluded.running_order, scheduled_at = excluded.scheduled_at, "
        "title = excluded.title, "
        "category = excluded.category, division = excluded.division, level = excluded.level, "
        "studio = excluded.studio, participants_enc = excluded.participants_enc, "
        "personal_enc = excluded.personal_enc, extra = excluded.extra",
        (
            event_id,
            entry.entry_id,
            session_id,
            order,
            entry.scheduled_at,
            entry.title,
            entry.category,
            entry.division,
            entry.level,
            entry.studio,
            participants,
            personal_fields.seal_fields(data_key, event_id, entry.entry_id, entry.personal),
            canonical_json(entry.extra),
        ),
    )


def _upsert_judge(conn: sqlite3.Connection, event_id: str, judge: Judge) -> None:
    conn.execute(
        "INSERT INTO judges (event_id, judge_id, name, all_sessions, extra) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (event_id, judge_id) DO UPDATE SET name = excluded.name, "
        "all_sessions = excluded.all_sessions, extra = excluded.extra",
        (event_id, judge.judge_id, judge.name, int(judge.all_sessions), canonical_json(judge.extra)),
    )


@dataclass
class _Placement:
    """Where an entry ends up after a merge: the package's entry (or None to keep the stored row)."""

    entry: Entry | None
    session_id: str
    order: int
    pinned: bool = False


def _merge_setup(conn: sqlite3.Connection, package: Package, data_key: bytes, report: ImportReport) -> None:
    event_id = package.event_id
    refused, added, removed = report.refused, report.added, report.removed

    def rows(sql: str) -> list[sqlite3.Row]:
        return conn.execute(sql, (event_id,)).fetchall()

    stored_entries = {r["entry_id"]: r for r in rows("SELECT * FROM entries WHERE event_id = ?")}
    stored_sessions = {
        r["session_id"]: r for r in rows("SELECT * FROM sessions WHERE event_id = ? ORDER BY position")
    }
    stored_judges = {r["judge_id"]: r for r in rows("SELECT * FROM judges WHERE event_id = ?")}
    stored_criteria = {
        r["key"]: r for r in rows("SELECT * FROM criteria WHERE event_id = ? ORDER BY position")
    }
    stored_panels = {(r[0], r[1]) for r in rows("SELECT judge_id, session_id FROM panels WHERE event_id = ?")}
    scored_entries = {r[0] for r in rows("SELECT DISTINCT entry_id FROM sheets WHERE event_id = ?")}
    # (judge, session) pairs with sheets: a judge keeps their seat where they have already scored.
    scored_seats = {
        (r[0], r[1])
        for r in rows(
            "SELECT DISTINCT s.judge_id, e.session_id FROM sheets s JOIN entries e "
            "ON e.event_id = s.event_id AND e.entry_id = s.entry_id WHERE s.event_id = ?"
        )
    }
    scored_judges = {r[0] for r in rows("SELECT DISTINCT judge_id FROM sheets WHERE event_id = ?")}

    # Criteria: the sheets were scored against them, so only labels and display order may change.
    for position, criterion in enumerate(package.criteria, 1):
        old = stored_criteria.get(criterion.key)
        if old is None:
            refused.append(
                f"criterion {criterion.key}: not added (scoring has started, criteria cannot change)"
            )
            continue
        was = tuple(Decimal(str(old[k])) for k in ("min", "max", "step"))
        wants = (criterion.min, criterion.max, criterion.step)
        if was != wants:
            refused.append(
                f"criterion {criterion.key}: kept min {_num(was[0])}, max {_num(was[1])}, "
                f"step {_num(was[2])} "
                f"(scoring has started; the package has min {_num(wants[0])}, max {_num(wants[1])}, "
                f"step {_num(wants[2])})"
            )
        conn.execute(
            "UPDATE criteria SET label = ?, position = ?, extra = ? WHERE event_id = ? AND key = ?",
            (criterion.label, position, canonical_json(criterion.extra), event_id, criterion.key),
        )
    wanted_keys = {c.key for c in package.criteria}
    position = len(package.criteria)
    for key in stored_criteria:
        if key not in wanted_keys:
            position += 1
            refused.append(f"criterion {key}: kept (scoring has started; the package removes it)")
            conn.execute(
                "UPDATE criteria SET position = ? WHERE event_id = ? AND key = ?", (position, event_id, key)
            )

    # Entries: scored ones keep their session and running order whatever the package says.
    plan = {e.entry_id: _Placement(e, e.session_id, e.order) for e in package.entries}
    for entry_id in sorted(scored_entries):
        old = stored_entries.get(entry_id)
        if old is None:
            continue
        slot = (old["session_id"], old["running_order"])
        placed = plan.get(entry_id)
        if placed is None:
            plan[entry_id] = _Placement(None, *slot, pinned=True)
            refused.append(f'entry {entry_id} "{old["title"]}": kept (it has sheets; the package removes it)')
            continue
        if (placed.session_id, placed.order) != slot:
            refused.append(
                f'entry {entry_id} "{old["title"]}": kept in {slot[0]} at order {slot[1]} (it has sheets; '
                f"the package moves it to {placed.session_id} order {placed.order})"
            )
            placed.session_id, placed.order = slot
        placed.pinned = True
    _resolve_slot_clashes(plan, stored_entries, refused)

    # Sessions: the package's, plus stored ones that still hold entries the box keeps.
    for position, session in enumerate(package.sessions, 1):
        if session.session_id not in stored_sessions:
            added.append(f"session {session.session_id} ({session.name})")
        _upsert_session(conn, event_id, session, position)
    wanted_sessions = [s.session_id for s in package.sessions]
    needed = {p.session_id for p in plan.values()} | {s for _, s in scored_seats}
    kept_sessions = [s for s in stored_sessions if s not in wanted_sessions and s in needed]
    for offset, session_id in enumerate(kept_sessions, len(wanted_sessions) + 1):
        refused.append(
            f"session {session_id}: kept (it still holds entries that have sheets or sit in "
            "their slots; the package removes it)"
        )
        conn.execute(
            "UPDATE sessions SET position = ? WHERE event_id = ? AND session_id = ?",
            (offset, event_id, session_id),
        )
    final_sessions = wanted_sessions + kept_sessions

    # Panels are rebuilt below; drop them first so sessions and judges can go.
    conn.execute("DELETE FROM panels WHERE event_id = ?", (event_id,))
    for entry_id, old in stored_entries.items():
        if entry_id not in plan:
            removed.append(f'entry {entry_id} "{old["title"]}"')
            conn.execute("DELETE FROM entries WHERE event_id = ? AND entry_id = ?", (event_id, entry_id))
    for entry_id, placed in plan.items():
        if placed.entry is None:
            continue
        if entry_id not in stored_entries:
            added.append(
                f'entry {entry_id} "{placed.entry.title}" in {placed.session_id} at order {placed.order}'
            )
        _upsert_entry(conn, event_id, placed.entry, placed.session_id, placed.order, data_key)

    # Judges: the package's, plus stored ones who have sheets.
    panels: set[tuple[str, str]] = set()
    for judge in package.judges:
        if judge.judge_id not in stored_judges:
            added.append(f"judge {judge.judge_id} ({judge.name})")
        _upsert_judge(conn, event_id, judge)
        seats = set(final_sessions if judge.all_sessions else judge.sessions)
        for seat_judge, session_id in sorted(scored_seats):
            if seat_judge == judge.judge_id and session_id not in seats:
                refused.append(
                    f"judge {judge.judge_id}: kept on session {session_id} (they have sheets there; "
                    "the package takes them off it)"
                )
                seats.add(session_id)
        panels |= {(judge.judge_id, s) for s in seats}
    wanted_judges = {j.judge_id for j in package.judges}
    for judge_id, old in stored_judges.items():
        if judge_id in wanted_judges:
            continue
        if judge_id in scored_judges:
            refused.append(
                f"judge {judge_id} ({old['name']}): kept (they have sheets; the package removes them)"
            )
            seats = (
                set(final_sessions) if old["all_sessions"] else {s for j, s in stored_panels if j == judge_id}
            )
            seats |= {s for j, s in scored_seats if j == judge_id}
            panels |= {(judge_id, s) for s in seats if s in final_sessions}
        else:
            removed.append(f"judge {judge_id} ({old['name']})")
            conn.execute("DELETE FROM judges WHERE event_id = ? AND judge_id = ?", (event_id, judge_id))
    conn.executemany(
        "INSERT INTO panels (event_id, judge_id, session_id) VALUES (?, ?, ?)",
        [(event_id, j, s) for j, s in sorted(panels)],
    )

    for session_id, old in stored_sessions.items():
        if session_id not in final_sessions:
            removed.append(f"session {session_id} ({old['name']})")
            conn.execute("DELETE FROM sessions WHERE event_id = ? AND session_id = ?", (event_id, session_id))


def _resolve_slot_clashes(
    plan: dict[str, _Placement], stored: dict[str, sqlite3.Row], refused: list[str]
) -> None:
    """An entry whose slot (session, order) is held by a pinned entry keeps its stored slot (pinned
    in turn, which may displace another) or, if it is new, is not added. Two entries never share a
    slot. Ends because each pass pins or drops one entry that was not pinned."""
    while True:
        holders = {(p.session_id, p.order): entry_id for entry_id, p in plan.items() if p.pinned}
        clash = next(
            (
                (entry_id, p)
                for entry_id, p in sorted(plan.items())
                if not p.pinned and (p.session_id, p.order) in holders
            ),
            None,
        )
        if clash is None:
            return
        entry_id, placed = clash
        holder = holders[(placed.session_id, placed.order)]
        old = stored.get(entry_id)
        if old is None:
            del plan[entry_id]
            refused.append(
                f"entry {entry_id}: not added ({placed.session_id} order {placed.order} stays with "
                f"entry {holder}, which has sheets or sat there before)"
            )
        else:
            refused.append(
                f"entry {entry_id}: kept in {old['session_id']} at order {old['running_order']} "
                f"({placed.session_id} order {placed.order} stays with entry {holder}, which has sheets "
                "or sat there before)"
            )
            placed.session_id, placed.order, placed.pinned = old["session_id"], old["running_order"], True


def _num(value: Decimal) -> str:
    """10.0 -> '10', 0.50 -> '0.5': numbers as a person wrote them, never '1E+1'."""
    return format(value.normalize(), "f")
