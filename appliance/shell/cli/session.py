"""Sessions at results time: `venuebox session lock|unlock|reopen|list`.

They write the data dir's database directly, like `freeze`: a running box's writer checks locks and
sign-offs in each sheet's transaction, so a lock holds from the very next sheet.
"""

from __future__ import annotations

import click
import msgspec

from appliance.shared.results_wire import SessionState
from appliance.shared.tablet_text import printable
from appliance.shell.cli.common import config_for, print_json, with_store


@click.group()
def session() -> None:
    """Lock sessions before awards and reopen judges' sign-offs."""


@session.command("lock")
@click.argument("session_id")
@click.option("--reason", required=True, help="Why the session is locked (kept in the audit log).")
@click.pass_context
def lock(ctx: click.Context, session_id: str, reason: str) -> None:
    """Lock a session: every sheet for it is refused (423) until it is unlocked."""
    from appliance.core import sessions

    state = with_store(
        config_for(ctx), lambda store: store.write_sync(lambda conn: sessions.lock(conn, session_id, reason))
    )
    click.echo(_line(state, sessions.is_final(state)))


@session.command("unlock")
@click.argument("session_id")
@click.option("--reason", required=True, help="Why the session is unlocked (kept in the audit log).")
@click.pass_context
def unlock(ctx: click.Context, session_id: str, reason: str) -> None:
    """Unlock a session: sheets for it are taken again."""
    from appliance.core import sessions

    state = with_store(
        config_for(ctx),
        lambda store: store.write_sync(lambda conn: sessions.unlock(conn, session_id, reason)),
    )
    click.echo(_line(state, sessions.is_final(state)))


@session.command("reopen")
@click.argument("session_id")
@click.option("--judge", "judge_id", required=True, help="The judge whose sign-off is taken back.")
@click.option("--reason", required=True, help="Why the sign-off is reopened (kept in the audit log).")
@click.pass_context
def reopen(ctx: click.Context, session_id: str, judge_id: str, reason: str) -> None:
    """Take back a judge's sign-off of a session: they may correct their sheets for it again."""
    from appliance.core import sessions

    state = with_store(
        config_for(ctx),
        lambda store: store.write_sync(lambda conn: sessions.reopen(conn, session_id, judge_id, reason)),
    )
    click.echo(f"reopened: judge {printable(judge_id)} may send sheets for {printable(session_id)} again")
    click.echo(_line(state, sessions.is_final(state)))


@session.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the states as JSON.")
@click.pass_context
def list_sessions(ctx: click.Context, as_json: bool) -> None:
    """Each session: locked or open, the judges of its panel who signed it off, final or provisional."""
    from appliance.core import sessions

    states = with_store(config_for(ctx), lambda store: store.query(sessions.session_states))
    if as_json:
        print_json(
            [msgspec.to_builtins(state) | {"final": sessions.is_final(state)} for state in states.values()]
        )
        return
    if not states:
        click.echo("no sessions: no event imported on this box")
        return
    for state in states.values():
        click.echo(_line(state, sessions.is_final(state)))


def _line(state: SessionState, final: bool) -> str:
    """One session as the tech reads it: `sat-am  LOCKED since ... (reason)  signed off 2 of 3 (J1, J2)
    waiting for J3  PROVISIONAL`."""
    lock = (
        f"LOCKED since {state.locked_at} ({printable(state.locked_reason or '')})" if state.locked else "open"
    )
    waiting = [judge for judge in state.panel if judge not in state.signed_off]
    signed = f"signed off {len(state.signed_off)} of {len(state.panel)}"
    if state.signed_off:
        signed += f" ({', '.join(printable(j) for j in state.signed_off)})"
    if waiting:
        signed += f", waiting for {', '.join(printable(j) for j in waiting)}"
    return f"{printable(state.session_id)}  {lock}  {signed}  {'FINAL' if final else 'PROVISIONAL'}"


COMMANDS: tuple[click.Command, ...] = (session,)
