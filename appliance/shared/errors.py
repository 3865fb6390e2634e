"""Domain errors. Domain code raises these; only the problem tables map them to HTTP statuses
(appliance/web/problems.py, edge_api/errors.py, uplink/receiver.py) and only the CLI turns them
into an exit code and one line on stderr."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


class DomainError(Exception):
    """Base of every error a person or a client is meant to read."""

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInput(DomainError):
    """A request is well-formed JSON but its fields break the rules (per-field ``errors``)."""

    def __init__(self, detail: str, errors: list[dict[str, str]]) -> None:
        super().__init__(detail, errors=errors)
        self.errors = errors


class MalformedRequest(DomainError):
    """The body is not JSON at all (or not UTF-8)."""


class UnknownEntry(DomainError):
    """The sheet names an entry the event does not have."""


class EntryNotOnPanel(DomainError):
    """The entry exists but belongs to a session this judge does not score."""


class SheetConflict(DomainError):
    """A second original for (entry, judge), or a correction of a sheet that is not the head."""


class IdempotencyMismatch(DomainError):
    """The same sheet_id was sent before with different content."""


class Frozen(DomainError):
    """The box is frozen; competition writes are refused until a tech unfreezes it."""


class SessionLocked(DomainError):
    """The entry's session is locked by the venue tech: no sheet for it until it is unlocked."""


class SignedOff(DomainError):
    """The judge signed off the entry's session: their sheets for it are read-only until the tech
    reopens the sign-off."""


class SessionNotOnPanel(DomainError):
    """A judge signs off a session that is not on their panel."""


class ScheduleConflict(DomainError):
    """A schedule change or publish the rules refuse: a walk-on whose entry id exists, a move to a
    session whose panel has no judge (or lacks a judge who scored the entry), a scratch of a
    scratched entry, a publish with problems or with nothing in the draft."""


class NotAuthenticated(DomainError):
    """Unknown, revoked or malformed device token."""


class PairingRefused(DomainError):
    """Wrong, expired or used pairing code (one answer for all three, on purpose)."""


class TooManyRequests(DomainError):
    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.retry_after = retry_after


class NoEvent(DomainError):
    """No event has been imported on this box yet."""


class NotFound(DomainError):
    """A named thing (device, judge, record) does not exist."""


class Unavailable(DomainError):
    """The store could not take the write now (locked by another process too long, shutting down)."""


class NotInitialised(DomainError):
    """The data dir has no box yet: ``venuebox init`` first."""


class UplinkNotConfigured(DomainError):
    """An uplink action (sync, check) on a box with no uplink target."""


class BadUplinkTarget(DomainError):
    """An uplink URL, token file or CA file that cannot be used; the message says which and why."""


class DataKeyMismatch(DomainError):
    """The personal-data key file does not open the database's personal fields (a key from another
    box, or a rotation's new key lost); the message names the key id the database expects."""


class RotationRunning(DomainError):
    """Another rotation of the personal-data key holds its lock."""


class FontsMissing(DomainError):
    """Printing (the results PDF) cannot find a font it needs, or a text has a character no font on
    the box carries; the message names the Debian packages to install or the setting to change."""


# The runbook section a person with a damaged database follows (docs/operations.md); tests hold the
# two to the same words.
DAMAGED_DATABASE_SECTION = "The SD card died / the database is damaged"


class DatabaseDamaged(DomainError):
    """The database file itself is damaged: SQLite said "database disk image is malformed" or "file
    is not a database", or ``PRAGMA quick_check`` found problems. ``problems`` keeps SQLite's own
    words for the log and the alert; ``detail``, the line a person reads, names the file and the
    first steps of the runbook instead."""

    def __init__(self, path: Path | str, problems: Sequence[str] = ()) -> None:
        super().__init__(
            f"the database {path} is damaged: stop the service (`sudo systemctl stop venuebox`) and copy "
            f'the whole data dir to a USB key, then follow "{DAMAGED_DATABASE_SECTION}" in '
            "docs/operations.md",
            path=str(path),
            problems=list(problems),
        )
        self.path = Path(path)
        self.problems = list(problems)
