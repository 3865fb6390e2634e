"""Overview: the one screen a tech glances at all weekend."""

from __future__ import annotations

from typing import Any

from msgspec import structs
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from appliance.shared.status import ConsoleStatus, RecoveryView
from appliance.shared.tablet_text import printable
from tui import format as fmt
from tui.screens.base import BoxScreen

MISSING_SHOWN = 6  # fits beside the box panel at 80x24; the Scores screen has them all
CHOSEN_BY = {"latest-sheet": "latest sheet", "schedule": "schedule", "first": "first"}


class OverviewScreen(BoxScreen):
    TITLE_KEY = "1"

    def compose_body(self) -> ComposeResult:
        with Vertical(id="overview"):
            with Horizontal(id="overview-top"):
                yield Static(id="ov-box", classes="panel")
                yield Static(id="ov-missing", classes="panel")
            yield Static(id="ov-alerts", classes="panel")

    def on_mount(self) -> None:
        self.watch(self.app, "status", self._redraw, init=False)
        self._redraw()

    _drawn: dict[str, Any] | None = None

    def _redraw(self, *_: Any) -> None:
        status = self.status
        if status is None:
            self.query_one("#ov-box", Static).update("Waiting for the daemon…")
            return
        # Only the box's clock changed (the usual case twice a second): nothing to repaint. The uplink's
        # and the backups' ages move with that clock, so they count by the words they show.
        figures = {
            k: v
            for k, v in structs.asdict(status).items()
            if k not in ("server_time", "outbox", "uplink", "backup")
        }
        for name, lines in (("uplink", uplink_lines(status)), ("backup", backup_lines(status))):
            figures[name] = [(line.plain, tuple(line.spans)) for line in lines]
        if figures == self._drawn:
            return
        self._drawn = figures
        self.query_one("#ov-box", Static).update(box_panel(status))
        self.query_one("#ov-missing", Static).update(missing_panel(status))
        self.query_one("#ov-alerts", Static).update(alerts_panel(status))


def _kv() -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    return table


def box_panel(status: ConsoleStatus) -> Table:
    table = _kv()
    if status.database.state == "damaged":
        # First, in red: even when the alert itself could not be written to the damaged file.
        table.add_row(
            "Database",
            Text("DAMAGED: scoring refused. Stop the service, copy the data dir (runbook)", style="bold red"),
        )
    event = status.event
    table.add_row("Event", f"{event.name} ({event.entries} entries)" if event else "none imported")
    session = status.session
    if session:
        how = CHOSEN_BY[session.chosen_by]
        table.add_row("Session", Text.assemble(session.name, (f" (by {how})", "dim")))
    else:
        table.add_row("Session", "-")
    t = status.tablets
    table.add_row(
        "Tablets",
        Text("  ").join(
            [
                fmt.presence("online", t.online),
                fmt.presence("stale", t.stale),
                fmt.presence("offline", t.offline),
            ]
        ),
    )
    s = status.sheets
    table.add_row("Sheets", f"{s.total} total · {s.last_5_min} in last 5 min")
    first, *more = uplink_lines(status)
    table.add_row("Uplink", first)
    for line in more:
        table.add_row("", line)
    first, *more = backup_lines(status)
    table.add_row("Backup", first)
    for line in more:
        table.add_row("", line)
    if status.recovery:
        table.add_row("Recovery", recovery_line(status.recovery))
    disk = status.disk
    style = "bold red" if disk.used_pct >= 95 else "yellow" if disk.used_pct >= 85 else ""
    table.add_row(
        "Disk", Text(f"{fmt.megabytes(disk.free_mb)} free ({disk.used_pct:.0f}% used)", style=style)
    )
    return table


def recovery_line(recovery: RecoveryView) -> Text:
    """The recovery that built this box (`venuebox recover`): yellow while sheets it knows of are
    still missing (they come back as the tablets that kept them return), else dim."""
    missing = len(recovery.missing_sheet_ids) + recovery.missing_unnamed
    if missing:
        return Text(f"recovered · {missing} sheet(s) still missing: `venuebox status`", style="yellow")
    return Text(f"recovered · {recovery.since} sheets back since · none missing", style="dim")


def uplink_lines(status: ConsoleStatus) -> list[Text]:
    """The uplink at a glance, a line per thought, short enough for the box panel at 80 columns:

    the state (red when it stopped trying by itself, yellow while it backs off) and the last success;
    what waits and for how long; when it is in trouble, the next try (and any quarantined records);
    then why, in the worker's own words, cut with an ellipsis. "not configured" is one dim line."""
    uplink = status.uplink
    state = uplink.state
    if state == "not configured":
        return [Text("not configured", style="dim")]
    now = status.server_time
    sent_at = uplink.last_success_at
    sent = f"sent {fmt.ago(fmt.seconds_between(sent_at, now))}" if sent_at else "nothing sent yet"
    lines = [Text.assemble(fmt.uplink_state(state), f" · {sent}")]

    waiting = uplink.backlog
    backlog = Text(f"backlog {waiting:,}")
    age = uplink.oldest_age_s
    if age is None:
        age = fmt.seconds_between(uplink.oldest_created_at, now)
    if waiting and age is not None:
        backlog.append(f" · oldest {fmt.duration(age)}")
    lines.append(backlog)

    error = uplink.last_error
    if state == "paused":
        error = uplink.paused_reason or error
    trouble = bool(error) and state not in ("idle", "sending")
    after: list[Text] = []
    if trouble:
        wait = uplink.next_attempt_in_s
        if wait is None:
            wait = fmt.seconds_between(now, uplink.next_attempt_at)
        if wait is not None:
            after.append(Text("next try now" if wait < 1 else f"next try in {fmt.duration(wait)}"))
    if uplink.quarantined:
        after.append(Text(f"{uplink.quarantined:,} quarantined", style="yellow"))
    if after:
        lines.append(Text(" · ").join(after))
    if trouble:
        lines.append(Text(str(error), no_wrap=True, overflow="ellipsis"))
    return lines


def backup_lines(status: ConsoleStatus) -> list[Text]:
    """The box's encrypted local snapshots at a glance, short enough for the box panel at 80 columns:

    the last snapshot's age (yellow once it is older than two intervals: snapshots have stopped) and
    its check (✓ verified, not verified yet, ✗ DOES NOT VERIFY in red, then why, cut with an ellipsis);
    how many are kept and their size; "none yet" before the first. Without an organiser's key or a
    passphrase, a yellow line says that only this box can open them."""
    backup = status.backup
    last = backup.last
    lines: list[Text] = []
    if last is None:
        lines.append(Text("none yet"))
    else:
        age = last.age_s
        interval = backup.interval_s
        stopped = bool(interval) and age > 2 * interval
        lines.append(
            Text.assemble((fmt.ago(age), "yellow" if stopped else ""), " · ", fmt.verified(last.verified))
        )
        lines.append(Text(f"{backup.kept} kept · {fmt.size(backup.kept_bytes)}"))
        if last.verified is False and last.verify_problem:
            lines.append(Text(last.verify_problem, style="red", no_wrap=True, overflow="ellipsis"))
    if not backup.configured:
        lines.append(Text("only this box can open them", style="yellow"))
    return lines


def missing_panel(status: ConsoleStatus) -> Group | Text:
    session = status.session
    if not session:
        return Text("Missing scores: no session yet", style="bold")
    head = Text.assemble(
        ("Missing scores", "bold"),
        f"  {session.complete}/{session.entries} done",
    )
    if session.missing_total == 0:
        return Group(head, Text("none: every started entry has all its scores", style="green"))
    count = session.missing_total
    need = "1 entry needs" if count == 1 else f"{count} entries need"
    lines = [head, Text(f"{need} attention", style="bold red")]
    shown = session.missing[:MISSING_SHOWN]
    for item in shown:
        judges = ", ".join(j.name.split()[0] if j.name else j.id for j in item.missing_judges)
        kind = "skipped" if item.kind == "skipped" else "waiting"
        line = Text.assemble((f"#{item.order} ", "bold"), (f"{kind} ", "red"), judges, " · ", item.title)
        line.no_wrap, line.overflow = True, "ellipsis"
        lines.append(line)
    if session.missing_total > len(shown):
        lines.append(Text(f"… {session.missing_total - len(shown)} more: see 3 Scores", style="dim"))
    return Group(*lines)


def alerts_panel(status: ConsoleStatus) -> Group:
    counts = status.alerts_active
    top = status.alerts_top
    head = Text.assemble(("Alerts", "bold"), "  ")
    by_severity = (("critical", counts.critical), ("warning", counts.warning), ("info", counts.info))
    parts = [f"{n} {s}" for s, n in by_severity if n]
    head.append(", ".join(parts) if parts else "none active", style="" if parts else "green")
    lines: list[Any] = [head]
    for alert in top:
        line = fmt.severity(alert.severity) + Text(f" {printable(alert.title)}")  # may name a tablet
        if alert.count > 1:
            line.append(f" ({alert.count} times)", style="dim")
        if alert.acknowledged_at:
            line.append(" acknowledged", style="dim")
        lines.append(line)
    return Group(*lines)
