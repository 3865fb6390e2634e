"""Schedule: the day-of changes. The published versions (who, when, why, what each changed; the
newest is the schedule tablets have), the draft with what ``validate`` finds in it (errors refuse a
publish, warnings are said), ``p`` to publish the draft as the next version (asks why) and ``d`` to
discard it (confirms). Changes are typed with `venuebox schedule ...` on the box's shell or through
the admin API; the console shows them and publishes them."""

from __future__ import annotations

import time
from typing import ClassVar
from zoneinfo import ZoneInfo

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Label, Static

from appliance.shared.schedule_wire import (
    DiffLine,
    DraftView,
    ScheduleChange,
    ScheduleProblem,
    ScheduleVersion,
    Validation,
)
from appliance.shared.tablet_text import printable
from tui import format as fmt
from tui.client import AdminError, Unreachable
from tui.screens.base import BoxScreen, nav_text
from tui.screens.dialogs import ConfirmScreen, ReasonDialog
from tui.widgets.table import Column, LinedTable

# The longest reason a publish keeps (the admin API refuses longer ones).
PUBLISH_REASON_MAX_CHARS = 500
# ``validate`` reads the whole schedule: asked again when the draft or the version changed, and
# otherwise this often (a sheet for an entry the draft scratches is a new warning).
VALIDATE_EVERY_S = 10.0

COLUMNS = (
    Column("version", "Ver", justify="right"),
    Column("at", "When"),
    Column("actor", "Who", max_width=10),
    Column("reason", "Why", max_width=24),
    Column("changed", "What changed", max_width=60),
)


def when(moment: str | None, tz: ZoneInfo | None) -> str:
    """A schedule time in the event's zone, with its day: "Sat 09:30:00"."""
    return fmt.clock(moment, tz, with_date=True) if moment else "–"


def change_text(change: ScheduleChange, tz: ZoneInfo | None) -> str:
    """One change of the draft in words: "scratch 101", "move 103 to SAT-PM #2", "walk-on 501 'Late
    Bloom' into SAT-AM #3 at Sat 09:30:00", "retime session SAT-AM to Sat 13:20:00", "rollback to
    version 1"; times in the event's zone."""
    kind = change.kind.replace("_", "-")
    if change.kind == "rollback":
        return f"rollback to version {change.version}"
    if change.entry_id is None:
        return printable(f"{kind} session {change.session_id} to {when(change.scheduled_at, tz)}")
    words = f"{kind} {change.entry_id}"
    if change.kind == "walk_on" and change.title:
        words += f" '{change.title}'"
    if change.kind in ("walk_on", "move") and change.session_id:
        where = change.session_id + (f" #{change.position}" if change.position is not None else "")
        words += f" {'into' if change.kind == 'walk_on' else 'to'} {where}"
    if change.scheduled_at:
        words += f" {'at' if change.kind == 'walk_on' else 'to'} {when(change.scheduled_at, tz)}"
    return printable(words)


def diff_text(line: DiffLine, tz: ZoneInfo | None) -> str:
    """One line of a version's diff: "entry 101: scratched no → yes", "session SAT-PM: starts_at Sat
    13:00:00 → Sat 13:20:00" (times in the event's zone)."""
    what = f"entry {line.entry_id}" if line.entry_id is not None else f"session {line.session_id}"
    before, after = line.before or "–", line.after or "–"
    if line.field in ("scheduled_at", "starts_at"):
        before, after = when(line.before, tz), when(line.after, tz)
    return printable(f"{what}: {line.field} {before} → {after}")


def diff_summary(diff: list[DiffLine]) -> str:
    """A version's diff in a table cell, by what happened: "scratched 101 · added 501 · moved 103
    104" (an entry put in at a position renumbers, so moves the entries after it)."""
    if not diff:
        return "nothing (the import)"
    done: dict[str, list[str]] = {verb: [] for verb in ("scratched", "restored", "added", "moved", "retimed")}
    for line in diff:
        who = line.entry_id if line.entry_id is not None else f"session {line.session_id}"
        if line.field == "added":
            verb = "added"
        elif line.field == "scratched":
            verb = "scratched" if line.after == "yes" else "restored"
        elif line.field == "place":
            verb = "moved"
        else:
            verb = "retimed"
        if who not in done[verb]:
            done[verb].append(who)
    return printable(" · ".join(f"{verb} {' '.join(ids)}" for verb, ids in done.items() if ids))


def problem_text(problem: ScheduleProblem) -> Text:
    """ "ERROR ..." in red (a publish is refused) or "warning ..." in yellow (said and allowed)."""
    if problem.severity == "error":
        return Text.assemble(("ERROR ", "bold red"), printable(problem.message))
    return Text.assemble(("warning ", "bold yellow"), printable(problem.message))


def draft_text(draft: DraftView, validation: Validation | None, tz: ZoneInfo | None) -> Text:
    """The draft's changes in the order typed, then what ``validate`` found."""
    if not draft.changes:
        return Text(
            f"No draft: the schedule is version {draft.version}. Changes are typed on the box's shell "
            "(venuebox schedule scratch|restore|walk-on|move|retime) or through the admin API.",
            style="dim",
        )
    text = Text()
    text.append(f"{len(draft.changes)} change(s) on version {draft.version}", style="bold")
    text.append("   p publishes · d discards\n", style="dim")
    for index, change in enumerate(draft.changes, start=1):
        text.append(f"{index:>3}. ")
        text.append(change_text(change, tz), style="bold")
        text.append(f"  {printable(change.reason)}", style="italic")
        text.append(f" ({printable(change.actor)})\n", style="dim")
    if validation is None:
        text.append("Checking…", style="dim")
        return text
    errors = [p for p in validation.problems if p.severity == "error"]
    warnings = [p for p in validation.problems if p.severity == "warning"]
    if validation.ok and not warnings:
        text.append("✓ no problem found: it can be published", style="bold green")
    elif validation.ok:
        text.append(f"{len(warnings)} warning(s): it can be published", style="bold yellow")
    else:
        text.append(
            f"{len(errors)} error(s), {len(warnings)} warning(s): it cannot be published until the "
            "errors are fixed",
            style="bold red",
        )
    for problem in [*errors, *warnings]:
        text.append("\n")
        text.append_text(problem_text(problem))
    return text


class ScheduleScreen(BoxScreen):
    TITLE_KEY = "8"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "publish", "Publish draft"),
        Binding("d", "discard", "Discard draft"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.versions: list[ScheduleVersion] = []
        self.draft: DraftView | None = None
        self.validation: Validation | None = None
        self.error: str | None = None
        self._validated: tuple[int, int, list[ScheduleChange]] | None = None  # what validation is of
        self._validated_at = 0.0

    def compose_body(self) -> ComposeResult:
        yield Static(id="schedule-head", classes="panel")
        yield LinedTable(COLUMNS, id="schedule-versions", zebra_stripes=True)
        yield Static(id="schedule-diff", classes="panel")
        yield Label("Draft", classes="section")
        with VerticalScroll(id="schedule-draft-box"):
            yield Static(id="schedule-draft", classes="panel")

    def on_mount(self) -> None:
        # The shared switcher line, with this screen's key added and shown as the current one; in 80
        # columns (the shared line's last spaces give way).
        nav = nav_text("")
        nav.rstrip()
        nav.append(" ")
        nav.append(f" {self.TITLE_KEY} Schedule", style="reverse bold")
        self.query_one("#nav", Static).update(nav)

    async def refresh_data(self) -> None:
        try:
            versions = await self.client.schedule_versions()
            draft = await self.client.schedule_draft()
            current = versions[-1].version if versions else 0
            seen = (current, draft.version, draft.changes)
            stale = time.monotonic() - self._validated_at >= VALIDATE_EVERY_S
            if draft.changes and (seen != self._validated or stale):
                self.validation = await self.client.schedule_validate()
                self._validated, self._validated_at = seen, time.monotonic()
            elif not draft.changes:
                self.validation, self._validated = None, None
        except AdminError as exc:
            self.show_error(exc.detail or exc.title)
            return
        except Unreachable:
            return
        self.show(versions, draft)

    def show_error(self, message: str) -> None:
        """No schedule to show (no event yet): say why, in place of the versions."""
        self.error = message
        self.versions, self.draft, self.validation, self._validated = [], None, None, None
        self.query_one("#schedule-head", Static).update(Text(message, style="yellow"))
        self.query_one("#schedule-versions", LinedTable).show({})
        self.query_one("#schedule-diff", Static).update("")
        self.query_one("#schedule-draft", Static).update("")

    def show(self, versions: list[ScheduleVersion], draft: DraftView) -> None:
        self.error = None
        self.versions, self.draft = versions, draft
        tz = fmt.zone(self.timezone)
        head = Text()
        if versions:
            last = versions[-1]
            head.append(f"Schedule version {last.version}", style="bold")
            head.append(" (what tablets have)", style="dim")
            if last.version > 1:
                head.append(
                    f" · published {fmt.clock(last.at, tz, with_date=True)} by {printable(last.actor)}: "
                    f"{printable(last.reason)}"
                )
            else:
                head.append(" · as imported")
        self.query_one("#schedule-head", Static).update(head)
        rows = {
            str(v.version): (
                Text(str(v.version), style="bold"),
                Text(fmt.clock(v.at, tz, with_date=True)),
                Text(v.actor),
                Text(v.reason),
                Text(diff_summary(v.diff)),
            )
            for v in reversed(versions)
        }
        table = self.query_one("#schedule-versions", LinedTable)
        table.show(rows)
        self._show_diff(table.selected_key())
        self.query_one("#schedule-draft", Static).update(draft_text(draft, self.validation, tz))

    def _show_diff(self, key: str | None) -> None:
        version = next((v for v in self.versions if str(v.version) == key), None)
        text = Text()
        if version is not None:
            text.append(f"Version {version.version} changed: ", style="bold")
            if not version.diff:
                text.append("nothing (the schedule as imported)", style="dim")
            tz = fmt.zone(self.timezone)
            for line in version.diff:
                text.append("\n  " + diff_text(line, tz))
        self.query_one("#schedule-diff", Static).update(text)

    def on_lined_table_highlighted(self, event: LinedTable.Highlighted) -> None:
        self._show_diff(event.key)

    async def on_screen_resume(self) -> None:
        # Back from another screen (a session unlocked on Results, say): validate again.
        self._validated = None
        await super().on_screen_resume()

    async def action_publish(self) -> None:
        draft = self.draft
        if draft is None or not draft.changes:
            self.notify("The draft is empty: there is nothing to publish.", severity="warning")
            return
        # What validate finds now, not at the last look: a session may have been locked since.
        self._validated = None
        await self.refresh_now()
        draft, validation = self.draft, self.validation
        if draft is None or not draft.changes:
            self.notify("The draft is empty now: there is nothing to publish.", severity="warning")
            return
        if validation is not None and not validation.ok:
            self.notify(
                "validate finds errors in the draft (listed under Draft): fix them first.",
                title="Cannot publish",
                severity="error",
                timeout=8,
            )
            return

        def answered(reason: str | None) -> None:
            if reason:
                self.run_worker(self._publish(reason), group="schedule")

        self.app.push_screen(PublishDialog(draft, validation, fmt.zone(self.timezone)), answered)

    async def _publish(self, reason: str) -> None:
        try:
            published = await self.client.schedule_publish(reason)
        except (Unreachable, AdminError) as exc:
            self.notify(str(exc), title="Not published", severity="error", timeout=10, markup=False)
            return
        kept = f", {len(published.warnings)} warning(s) kept" if published.warnings else ""
        self.notify(
            f"Schedule version {published.version} published ({len(published.diff)} change(s){kept}): "
            "tablets take it at their next heartbeat",
            timeout=6,
            markup=False,
        )
        await self.refresh_now()

    def action_discard(self) -> None:
        draft = self.draft
        if draft is None or not draft.changes:
            self.notify("The draft is empty: there is nothing to discard.", severity="warning")
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._discard(), group="schedule")

        self.app.push_screen(
            ConfirmScreen(
                "Discard the draft?",
                f"Its {len(draft.changes)} change(s) are dropped; "
                f"the schedule stays version {draft.version}.",
                confirm_label="Discard",
                danger=True,
            ),
            confirmed,
        )

    async def _discard(self) -> None:
        try:
            dropped = await self.client.schedule_discard()
        except (Unreachable, AdminError) as exc:
            self.notify(str(exc), title="Not discarded", severity="error", timeout=10, markup=False)
            return
        self.notify(f"Draft discarded ({dropped.discarded} change(s))", timeout=4, markup=False)
        await self.refresh_now()


class PublishDialog(ReasonDialog):
    """Publish the draft as the next version: what it holds, the warnings it keeps, and why (required:
    kept with the version, audited and uplinked)."""

    def __init__(self, draft: DraftView, validation: Validation | None, tz: ZoneInfo | None) -> None:
        detail = Text(
            f"{len(draft.changes)} change(s) become version {draft.version + 1}; every tablet takes it at "
            "its next heartbeat.\n"
        )
        for change in draft.changes:
            detail.append("  " + change_text(change, tz) + "\n")
        warnings = [p for p in validation.problems if p.severity == "warning"] if validation else []
        for problem in warnings:
            detail.append_text(problem_text(problem))
            detail.append("\n")
        super().__init__(
            "publish",
            "Publish the schedule changes: why?",
            detail,
            "Publish",
            "Reason in a few words (kept with the version)",
            max_chars=PUBLISH_REASON_MAX_CHARS,
        )
        self.draft = draft
        self.validation = validation
