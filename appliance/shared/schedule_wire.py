"""Day-of schedule changes as the admin API answers them and the CLI and the console show them
(appliance/core/schedule.py builds them): a change of the draft, a problem ``validate`` finds, one
line of a version's diff, a version, what a publish or a rollback made, and what a discard dropped."""

from __future__ import annotations

from typing import Literal

import msgspec

ChangeKind = Literal["scratch", "restore", "walk_on", "move", "retime", "rollback"]
Severity = Literal["error", "warning"]


class ScheduleChange(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One change as typed: who, when, why, and what. ``entry_id`` names the entry (all kinds but a
    session's retime and a rollback); ``session_id`` the target session of a walk-on or a move, or
    the session retimed; ``position`` the running position asked for; ``scheduled_at`` a retime's or
    a walk-on's time. A walk-on's fields ride along (its participants are sealed on the box, only
    their count is shown); a rollback names the version it copies."""

    kind: ChangeKind
    actor: str
    at: str
    reason: str
    entry_id: str | None = None
    session_id: str | None = None
    position: int | None = None
    scheduled_at: str | None = None
    title: str | None = None
    category: str | None = None
    division: str | None = None
    level: str | None = None
    studio: str | None = None
    participants: int | None = None
    version: int | None = None


class ScheduleProblem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A problem of the schedule as it would be after publishing: an ``error`` refuses the publish,
    a ``warning`` is said and allowed. ``code``: duplicate-order, refused-change,
    scratched-with-sheets, turnaround."""

    severity: Severity
    code: str
    message: str
    entry_ids: list[str] = []
    session_id: str | None = None


class DiffLine(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What one published version changed: an entry's or a session's field, before and after
    (``scratched`` as "yes"/"no"; a place as "SESSION #ORDER", the pool as "unscheduled")."""

    field: Literal["added", "scratched", "place", "scheduled_at", "starts_at"]
    before: str | None
    after: str | None
    entry_id: str | None = None
    session_id: str | None = None


class DraftView(msgspec.Struct, kw_only=True):
    """The draft: the version it would follow and its changes in the order typed."""

    version: int
    changes: list[ScheduleChange]


class Validation(msgspec.Struct, kw_only=True):
    """``validate``: every problem of the schedule as publishing the draft would make it (problems
    already there included), and whether a publish would be taken (no ``error``)."""

    version: int
    changes: int
    ok: bool
    problems: list[ScheduleProblem]


class ScheduleVersion(msgspec.Struct, kw_only=True):
    """One published version (1 is the import): who, when, why, the changes it applied, its diff."""

    version: int
    at: str
    actor: str
    reason: str
    changes: list[ScheduleChange]
    diff: list[DiffLine]


class Published(msgspec.Struct, kw_only=True):
    """What a publish or a rollback made: the new version, its diff, and the warnings it kept."""

    version: int
    diff: list[DiffLine]
    warnings: list[ScheduleProblem]


class Discarded(msgspec.Struct, kw_only=True):
    """What dropping the draft dropped: how many changes it held."""

    discarded: int
