"""Results: every group's ranks, scores and awards as the box computes them, each row PROVISIONAL or
FINAL, which judges have signed off each session, an entry's result in words (Enter), and the
session lock (``l``: asks why, then locks; on a locked session, unlocks)."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from appliance.shared.results_wire import ResultGroup, ResultRow, ResultsOut, SessionState
from tui.client import AdminError, Unreachable
from tui.screens.base import BoxScreen, nav_text
from tui.screens.dialogs import ReasonDialog
from tui.widgets.table import Column, LinedTable

# The longest reason a lock or an unlock keeps (the admin API refuses longer ones).
LOCK_REASON_MAX_CHARS = 500

# 80 columns hold the group to the status, what a tech reads at awards time; the studio follows,
# a scroll away on a narrow terminal.
COLUMNS = (
    Column("group", "Group", max_width=13),
    Column("rank", "Rank", justify="right"),
    Column("entry", "Entry"),
    Column("title", "Title", max_width=14),
    Column("score", "Score", justify="right"),
    Column("award", "Award", max_width=9),
    Column("status", "Status"),
    Column("studio", "Studio", max_width=20),
)


def group_label(group: ResultGroup) -> str:
    return " · ".join(value if value is not None else "(none)" for value in group.fields.values()) or "all"


def status_text(row: ResultRow, panel: int | None = None) -> Text:
    """FINAL, PROVISIONAL, or for an entry not every panel judge scored (no rank, no award yet)
    "PROVISIONAL, incomplete", or with the size of its session's ``panel`` "PROVISIONAL 2/3" (how
    many judges scored it: the table's 80 columns)."""
    if row.final:
        return Text("FINAL", style="bold green")
    if not row.complete:
        words = "incomplete" if panel is None else f"{len(row.totals)}/{panel}"
        return Text(f"PROVISIONAL{',' * (panel is None)} {words}", style="bold yellow")
    return Text("PROVISIONAL", style="yellow")


def session_line(state: SessionState, name: str | None = None) -> Text:
    """A session's lock and sign-offs: "SAT-AM LOCKED · signed off 3/3 · FINAL"."""
    waiting = [judge for judge in state.panel if judge not in state.signed_off]
    final = state.locked and bool(state.panel) and not waiting
    text = Text(state.session_id, style="bold")
    if name:
        text.append(f" {name}")
    text.append("  ")
    text.append("LOCKED" if state.locked else "open", style="bold red" if state.locked else "")
    text.append(f" · signed off {len(state.signed_off)}/{len(state.panel)}")
    if state.signed_off:
        text.append(f" ({' '.join(state.signed_off)})", style="green")
    if waiting:
        text.append(f" waiting: {' '.join(waiting)}", style="yellow")
    text.append(" · ")
    text.append("FINAL" if final else "provisional", style="bold green" if final else "yellow")
    return text


class ResultsScreen(BoxScreen):
    TITLE_KEY = "7"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left_square_bracket", "session(-1)", "Prev session"),
        Binding("right_square_bracket", "session(1)", "Next session"),
        Binding("l", "lock", "Lock/unlock session"),
        Binding("enter", "explain", "Explain", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.results: ResultsOut | None = None
        self.session_id: str | None = None  # None: every session
        self.rows: dict[str, tuple[ResultGroup, ResultRow]] = {}
        self.error: str | None = None

    def compose_body(self) -> ComposeResult:
        yield Static(id="results-sessions", classes="legend")
        yield LinedTable(COLUMNS, id="results", zebra_stripes=True)
        yield Static(id="results-rule", classes="legend")

    def on_mount(self) -> None:
        # The shared switcher line, with this screen's key added and shown as the current one.
        nav = nav_text("")
        nav.append(f" {self.TITLE_KEY} Results ", style="reverse bold")
        self.query_one("#nav", Static).update(nav)

    async def refresh_data(self) -> None:
        try:
            results = await self.client.results()
        except AdminError as exc:
            self.show_error(exc.detail or exc.title)
            return
        except Unreachable:
            return
        self.show(results)

    def show_error(self, message: str) -> None:
        """No results to show (no event yet): say why, in place of the table."""
        self.error = message
        self.results = None
        self.rows = {}
        self.query_one("#results-sessions", Static).update(Text(message, style="yellow"))
        self.query_one("#results", LinedTable).show({})
        self.query_one("#results-rule", Static).update("")

    def show(self, results: ResultsOut) -> None:
        self.error = None
        previous = self.results
        self.results = results
        same = previous is not None and (previous.groups, previous.sessions) == (
            results.groups,
            results.sessions,
        )
        if same:
            return  # nothing changed since the last look
        names = {row.session_id: row.session_name for group in results.groups for row in group.rows}
        panels = {state.session_id: len(state.panel) for state in results.sessions}
        shown_sessions = [s for s in results.sessions if self.session_id in (None, s.session_id)]
        lines = Text("Showing: ", style="dim")
        lines.append("every session" if self.session_id is None else f"session {self.session_id}")
        lines.append("   [ ] change session · l lock/unlock · Enter explains an entry\n", style="dim")
        for index, state in enumerate(shown_sessions):
            if index:
                lines.append("\n")
            lines.append_text(session_line(state, names.get(state.session_id)))
        self.query_one("#results-sessions", Static).update(lines)
        self.rows = {}
        table: dict[str, tuple[Text, ...]] = {}
        for group in results.groups:
            label = group_label(group)
            for row in group.rows:
                if self.session_id is not None and row.session_id != self.session_id:
                    continue
                self.rows[row.entry_id] = (group, row)
                rank = "" if row.rank is None else f"{row.rank}{'=' if row.shared_with else ''}"
                table[row.entry_id] = (
                    Text(label),
                    Text(rank, style="bold"),
                    Text(row.entry_id),
                    Text(row.title),
                    Text(row.score or "–"),
                    Text(row.award or ""),
                    status_text(row, panels.get(row.session_id, 0)),
                    Text(row.studio or ""),
                )
        self.query_one("#results", LinedTable).show(table)
        self._show_rule(self.query_one("#results", LinedTable).selected_key())

    def _show_rule(self, entry_id: str | None) -> None:
        shown = self.rows.get(entry_id) if entry_id is not None else None
        rule = Text("")
        if shown is not None:
            group, _ = shown
            rule = Text.assemble((f"{group_label(group)}: ", "bold"), group.rule)
        self.query_one("#results-rule", Static).update(rule)

    def on_lined_table_highlighted(self, event: LinedTable.Highlighted) -> None:
        self._show_rule(event.key)

    def on_lined_table_selected(self, event: LinedTable.Selected) -> None:
        self.explain(event.key)

    def action_explain(self) -> None:
        entry_id = self.query_one("#results", LinedTable).selected_key()
        if entry_id is not None:
            self.explain(entry_id)

    def explain(self, entry_id: str) -> None:
        shown = self.rows.get(entry_id)
        if shown is not None:
            self.app.push_screen(ExplainScreen(*shown))

    async def action_session(self, step: int) -> None:
        if self.results is None or not self.results.sessions:
            return
        choices: list[str | None] = [None, *(s.session_id for s in self.results.sessions)]
        index = choices.index(self.session_id) if self.session_id in choices else 0
        self.session_id = choices[(index + step) % len(choices)]
        results, self.results = self.results, None
        self.show(results)

    def target_session(self) -> SessionState | None:
        """The session ``l`` acts on: the one shown, else the selected entry's."""
        if self.results is None:
            return None
        session_id = self.session_id
        if session_id is None:
            entry_id = self.query_one("#results", LinedTable).selected_key()
            shown = self.rows.get(entry_id) if entry_id is not None else None
            session_id = shown[1].session_id if shown is not None else None
        return next((s for s in self.results.sessions if s.session_id == session_id), None)

    def action_lock(self) -> None:
        state = self.target_session()
        if state is None:
            self.notify("Choose a session ([ and ]) or an entry first.", severity="warning")
            return

        def answered(reason: str | None) -> None:
            if reason:
                self.run_worker(self._lock_session(state, reason), group="lock")

        self.app.push_screen(LockDialog(state), answered)

    async def _lock_session(self, state: SessionState, reason: str) -> None:
        try:
            if state.locked:
                await self.client.unlock_session(state.session_id, reason)
            else:
                await self.client.lock_session(state.session_id, reason)
        except (Unreachable, AdminError) as exc:
            self.notify(str(exc), title="Not done", severity="error", timeout=10, markup=False)
            return
        done = "unlocked: judges can score it again" if state.locked else "locked: no sheet is accepted"
        self.notify(f"Session {state.session_id} {done}", timeout=4, markup=False)
        await self.refresh_now()


class LockDialog(ReasonDialog):
    """Lock (or unlock) a session: why? A reason is required; it is audited and uplinked."""

    def __init__(self, state: SessionState) -> None:
        verb = "Unlock" if state.locked else "Lock"
        waiting = [judge for judge in state.panel if judge not in state.signed_off]
        if state.locked:
            detail = "Judges can send and correct sheets for it again; its results become provisional."
        else:
            detail = "Every sheet for it is refused until it is unlocked."
            if waiting:
                detail += f" Not signed off yet: {', '.join(waiting)} (its results stay provisional)."
        super().__init__(
            "lock",
            f"{verb} session {state.session_id}: why?",
            detail,
            verb,
            "Reason in a few words (kept in the audit log)",
            max_chars=LOCK_REASON_MAX_CHARS,
        )
        self.state = state


class ExplainScreen(ModalScreen[None]):
    """One entry's result in words, with each judge's total and the judges dropped."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,enter,q", "close", "Close")]

    def __init__(self, group: ResultGroup, row: ResultRow) -> None:
        super().__init__()
        self.group = group
        self.row = row

    def compose(self) -> ComposeResult:
        row = self.row
        with VerticalScroll(classes="dialog -wide", id="explain-dialog"):
            yield Label(f"{row.entry_id} {row.title}", classes="dialog-title")
            yield Static(explain_text(self.group, row), id="explain-text")

    def action_close(self) -> None:
        self.dismiss(None)


def explain_text(group: ResultGroup, row: ResultRow) -> Text:
    text = Text()
    text.append(f"{group_label(group)}", style="bold")
    text.append(f" · session {row.session_id}\n")
    text.append("Score ", style="dim")
    text.append(row.score or "none", style="bold")
    text.append("  rank ", style="dim")
    text.append("none" if row.rank is None else str(row.rank), style="bold")
    text.append("  award ", style="dim")
    text.append(row.award or "none", style="bold")
    text.append("  ")
    text.append_text(status_text(row))
    text.append("\n\nJudges' totals: ", style="dim")
    totals = [
        f"{judge} {total}" + (" (dropped)" * (judge in row.dropped)) for judge, total in row.totals.items()
    ]
    text.append(", ".join(totals) or "none yet")
    text.append("\n\n")
    text.append(row.explanation)
    text.append("\n\nRule: ", style="dim")
    text.append(group.rule)
    if not row.final:
        text.append(
            "\n\nPROVISIONAL: final only once its session is locked and every panel judge signed off.",
            style="yellow",
        )
    return text
