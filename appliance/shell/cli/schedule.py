"""Day-of schedule changes: `venuebox schedule scratch|restore|walk-on|move|retime|validate|publish|
discard|versions|rollback`.

They write the data dir's database directly, like `session lock`: a change is typed into the draft
(or refused, one line naming the entry or session, the draft unchanged), `publish` makes the next
schedule version in one transaction, and a running box's tablets learn it from their next heartbeat.
"""

from __future__ import annotations

from typing import Any

import click
import msgspec

from appliance.shared.schedule_wire import DiffLine, DraftView, Published, ScheduleProblem
from appliance.shared.tablet_text import printable
from appliance.shell.cli.common import config_for, print_json, with_store

ACTOR = "cli"
REASON = click.option("--reason", required=True, help="Why (kept in the version and the audit log).")


@click.group()
def schedule() -> None:
    """Scratch, restore, walk on, move and retime entries in a draft; validate, publish, roll back."""


def _type(ctx: click.Context, kind: str, reason: str, participants: str | None = None, **fields: Any) -> None:
    from appliance.core import schedule as core

    config = config_for(ctx)
    change = core.stamp(kind, ACTOR, reason, **fields)
    draft = with_store(
        config,
        lambda store: store.write_sync(
            lambda conn: core.add_change(conn, change, participants, config.data_key_path)
        ),
    )
    click.echo(_draft_line(draft))


@schedule.command("scratch")
@click.argument("entry_id")
@REASON
@click.pass_context
def scratch(ctx: click.Context, entry_id: str, reason: str) -> None:
    """Scratch an entry (soft: it keeps its sheets, leaves results; `restore` brings it back)."""
    _type(ctx, "scratch", reason, entry_id=entry_id)


@schedule.command("restore")
@click.argument("entry_id")
@REASON
@click.pass_context
def restore(ctx: click.Context, entry_id: str, reason: str) -> None:
    """Restore a scratched entry."""
    _type(ctx, "restore", reason, entry_id=entry_id)


@schedule.command("walk-on")
@click.argument("entry_id")
@click.option("--title", required=True, help="The routine's title.")
@click.option("--session", "session_id", default=None, help="Its session (omitted: the unscheduled pool).")
@click.option(
    "--position", type=click.IntRange(min=1), default=None, help="Running position (default: last)."
)
@click.option("--at", "scheduled_at", default=None, help="Its scheduled time, RFC 3339.")
@click.option("--category", default=None)
@click.option("--division", default=None)
@click.option("--level", default=None)
@click.option("--studio", default=None)
@click.option("--participants", default=None, help="Names separated by ';' (sealed on the box).")
@REASON
@click.pass_context
def walk_on(
    ctx: click.Context,
    entry_id: str,
    title: str,
    session_id: str | None,
    position: int | None,
    scheduled_at: str | None,
    category: str | None,
    division: str | None,
    level: str | None,
    studio: str | None,
    participants: str | None,
    reason: str,
) -> None:
    """A new entry, into a session at a position or into the unscheduled pool."""
    _type(
        ctx,
        "walk_on",
        reason,
        participants,
        entry_id=entry_id,
        session_id=session_id,
        position=position,
        scheduled_at=scheduled_at,
        title=title,
        category=category,
        division=division,
        level=level,
        studio=studio,
    )


@schedule.command("move")
@click.argument("entry_id")
@click.option("--to", "session_id", required=True, help="The session it moves to (its own: a new position).")
@click.option(
    "--position", type=click.IntRange(min=1), default=None, help="Running position (default: last)."
)
@REASON
@click.pass_context
def move(ctx: click.Context, entry_id: str, session_id: str, position: int | None, reason: str) -> None:
    """Move an entry within its session or to another session whose panel has its judges."""
    _type(ctx, "move", reason, entry_id=entry_id, session_id=session_id, position=position)


@schedule.command("retime")
@click.option("--entry", "entry_id", default=None, help="The entry retimed.")
@click.option("--session", "session_id", default=None, help="The session retimed (its starts_at).")
@click.option("--at", "scheduled_at", required=True, help="The new time, RFC 3339.")
@REASON
@click.pass_context
def retime(
    ctx: click.Context, entry_id: str | None, session_id: str | None, scheduled_at: str, reason: str
) -> None:
    """Retime an entry (its scheduled_at) or a session (its starts_at)."""
    _type(ctx, "retime", reason, entry_id=entry_id, session_id=session_id, scheduled_at=scheduled_at)


@schedule.command("validate")
@click.option("--json", "as_json", is_flag=True, help="Print the validation as JSON.")
@click.pass_context
def validate(ctx: click.Context, as_json: bool) -> None:
    """Every problem of the schedule as publishing the draft would make it; exits 1 on an error."""
    from appliance.core import schedule as core

    config = config_for(ctx)
    found = with_store(
        config, lambda store: store.query(lambda conn: core.validate(conn, config.data_key_path))
    )
    if as_json:
        print_json(msgspec.to_builtins(found))
    else:
        click.echo(
            f"draft: {found.changes} change(s) on version {found.version}; "
            f"{len(found.problems)} problem(s){'' if found.ok else ', publish refused'}"
        )
        for problem in found.problems:
            click.echo(_problem_line(problem))
    if not found.ok:
        ctx.exit(1)


@schedule.command("publish")
@REASON
@click.pass_context
def publish(ctx: click.Context, reason: str) -> None:
    """Apply the whole draft as the next schedule version, or nothing."""
    from appliance.core import schedule as core

    config = config_for(ctx)
    published = with_store(
        config,
        lambda store: store.write_sync(lambda conn: core.publish(conn, ACTOR, reason, config.data_key_path)),
    )
    _echo_published(published)


@schedule.command("discard")
@click.pass_context
def discard(ctx: click.Context) -> None:
    """Drop the draft."""
    from appliance.core import schedule as core

    dropped = with_store(
        config_for(ctx), lambda store: store.write_sync(lambda conn: core.discard(conn, ACTOR))
    )
    click.echo(f"discarded {dropped} change(s)")


@schedule.command("versions")
@click.option("--json", "as_json", is_flag=True, help="Print the versions as JSON.")
@click.pass_context
def versions(ctx: click.Context, as_json: bool) -> None:
    """Every schedule version, version 1 (the import) first: who, when, why, what changed."""
    from appliance.core import schedule as core

    listed = with_store(config_for(ctx), lambda store: store.query(core.versions))
    if as_json:
        print_json(msgspec.to_builtins(listed))
        return
    for version in listed:
        click.echo(
            f"version {version.version}  {version.at}  {printable(version.actor)}  "
            f"{printable(version.reason)}  {len(version.changes)} change(s)"
        )
        for line in version.diff:
            click.echo("  " + _diff_line(line))


@schedule.command("rollback")
@click.argument("version", type=click.IntRange(min=1))
@REASON
@click.pass_context
def rollback(ctx: click.Context, version: int, reason: str) -> None:
    """Publish a copy of an earlier version as the next version, warnings and all."""
    from appliance.core import schedule as core

    config = config_for(ctx)
    published = with_store(
        config,
        lambda store: store.write_sync(
            lambda conn: core.rollback(conn, version, ACTOR, reason, config.data_key_path)
        ),
    )
    _echo_published(published)


def _echo_published(published: Published) -> None:
    click.echo(f"published version {published.version}: {len(published.diff)} change(s)")
    for line in published.diff:
        click.echo("  " + _diff_line(line))
    for problem in published.warnings:
        click.echo(_problem_line(problem))


def _draft_line(draft: DraftView) -> str:
    last = draft.changes[-1]
    what = last.entry_id if last.entry_id is not None else f"session {last.session_id}"
    return (
        f"draft: {len(draft.changes)} change(s) on version {draft.version}, "
        f"last {last.kind.replace('_', '-')} {printable(what or '')}"
    )


def _problem_line(problem: ScheduleProblem) -> str:
    return f"{problem.severity}: {printable(problem.message)}"


def _diff_line(line: DiffLine) -> str:
    what = f"entry {line.entry_id}" if line.entry_id is not None else f"session {line.session_id}"
    return printable(f"{what}: {line.field} {line.before or '-'} -> {line.after or '-'}")


COMMANDS: tuple[click.Command, ...] = (schedule,)
