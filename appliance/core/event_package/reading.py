"""Reading an event package's bytes: the container (a folder, or a .zip of one), the files as UTF-8
text, event.json as JSON with the line of each key, and the CSV files as rows with the line each
starts on. Reading reports what keeps the files from being read: a file missing, too large or not
UTF-8, JSON that does not parse, a CSV header lacking a required column or naming one twice, a row
that does not fit the header. What the values mean is ``validate``'s business."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from appliance.core.event_package.format import EVENT_FILE, PACKAGE_FILES, Problems
from appliance.core.event_package.json_lines import JsonLines
from appliance.shared.canonical import content_hash

# A real event is a few hundred kilobytes; the cap stops a zip bomb from filling the Pi's memory.
MAX_FILE_BYTES = 20 * 1024 * 1024


def snapshot_id(files: dict[str, bytes]) -> str:
    """Content hash of a package's files: the same bytes give the same id, folder or zip."""
    return content_hash(sorted([name, hashlib.sha256(data).hexdigest()] for name, data in files.items()))


def read_files(path: Path, problems: Problems) -> dict[str, bytes]:
    """The package's files by name, from a folder or a .zip (at its root or in its one top-level
    folder); a file that is missing, too large or unreadable is reported and left out."""
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


def _read_zip(path: Path, problems: Problems) -> dict[str, bytes]:
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


def _decode(name: str, data: bytes | None, problems: Problems) -> str | None:
    """A file's text; None when it is missing (``read_files`` reported it) or is not UTF-8 (reported)."""
    if data is None:
        return None
    try:
        # utf-8-sig accepts and drops the BOM that spreadsheet programs put at the start.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problems.add(name, line, "not UTF-8 text: save the file as UTF-8 (in a spreadsheet: 'CSV UTF-8')")
        return None


def read_event_json(data: bytes | None, problems: Problems) -> tuple[Any, JsonLines] | None:
    """event.json's document and the lines of its keys and items; None when the file is missing or
    is not JSON (reported). NaN and Infinity, which Python's json accepts, are not JSON here."""
    text = _decode(EVENT_FILE, data, problems)
    if text is None:
        return None
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        problems.add(EVENT_FILE, exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})")
        return None
    except ValueError as exc:
        match = re.search(re.escape(str(exc)), text)
        line = text.count("\n", 0, match.start()) + 1 if match else 1
        problems.add(EVENT_FILE, line, f"invalid JSON: {exc} is not a number JSON allows")
        return None
    return document, JsonLines(text)


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


@dataclass
class Row:
    """A CSV row: the line it starts on, the documented columns' values and the extra columns'."""

    line: int
    values: dict[str, str]
    extra: dict[str, str]


def read_csv(
    name: str, data: bytes | None, columns: tuple[str, ...], required: tuple[str, ...], problems: Problems
) -> tuple[list[Row], set[str], list[str]]:
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

    rows: list[Row] = []
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
        rows.append(Row(start, values, extra))
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
