"""Scores: a session's entries x judges completeness grid, the live feed, and one entry's sheets."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Select, Static

from appliance.shared.admin_wire import FeedSheet, PersonalOut, SessionGrid, SessionOverview, SheetFeed
from tui import format as fmt
from tui.client import AdminError, Unreachable
from tui.screens.base import BoxScreen
from tui.screens.dialogs import EntryScreen
from tui.widgets.table import Column, LinedTable

SESSIONS_EVERY = 5  # refreshes between two reads of the session list


async def _nothing() -> None:
    return None


FEED_COLUMNS = (
    Column("time", "Received"),
    Column("judge", "Judge", max_width=18),
    Column("entry", "Entry", max_width=30),
    Column("total", "Total", justify="right"),
    Column("note", ""),
)


def grid_columns(judge_ids: list[str]) -> list[Column]:
    return [
        Column("order", "#", justify="right"),
        Column("title", "Entry", max_width=26),
        *(Column("judge:" + judge_id, judge_id, max_width=8) for judge_id in judge_ids),
    ]


class ScoresScreen(BoxScreen):
    TITLE_KEY = "3"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left_square_bracket", "session(-1)", "Prev session"),
        Binding("right_square_bracket", "session(1)", "Next session"),
        Binding("enter", "entry", "Entry sheets", show=False),
    ]

    feed_size = 100  # sheets kept in the feed

    def __init__(self) -> None:
        super().__init__()
        self.sessions: list[SessionOverview] = []
        self.session_id: str | None = None
        self.chosen_by_tech = False
        self.grid: SessionGrid | None = None
        self._grid_judges: list[str] = []
        self.feed: dict[int, FeedSheet] = {}
        self.last_seq: int | None = None
        self._refreshes = 0

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="scores-top"):
            yield Select[str]([], prompt="Session", id="session", allow_blank=True)
            yield Static(id="grid-legend", classes="legend")
        yield LinedTable(grid_columns([]), id="grid", zebra_stripes=True)
        yield Static("Arriving sheets (newest first)", id="feed-title", classes="section")
        yield LinedTable(FEED_COLUMNS, id="feed")

    async def refresh_data(self) -> None:
        try:
            # The session list (names and progress in the picker) changes slowly and is the
            # dearest read: every few refreshes is enough.
            if not self.sessions or self._refreshes % SESSIONS_EVERY == 0:
                self.show_sessions(await self.client.sessions())
            self._refreshes += 1
            if not self.chosen_by_tech or self.session_id is None:
                current = self.status.session if self.status else None
                fallback = self.sessions[0].id if self.sessions else None
                self.session_id = current.id if current else fallback
                self._select_current()
            grid_call = self.client.grid(self.session_id) if self.session_id else _nothing()
            grid, feed = await asyncio.gather(
                grid_call, self.client.sheets(after=self.last_seq, limit=self.feed_size)
            )
            if feed.sheets and feed.sheets[-1].seq < feed.last_seq:
                # More than a page arrived since the last look (a queue flushed after an
                # unfreeze): the feed shows the newest, so take the newest page.
                feed = await self.client.sheets(limit=self.feed_size)
        except (Unreachable, AdminError):
            return
        if grid is not None:
            self.show_grid(grid)
        self.show_feed(feed)

    def show_sessions(self, sessions: list[SessionOverview]) -> None:
        if sessions != self.sessions:
            options = [(f"{s.name} ({s.complete}/{s.entries} complete)", s.id) for s in sessions]
            with self.prevent(Select.Changed):
                self.query_one("#session", Select).set_options(options)
            self.sessions = sessions
            self._select_current()

    def _select_current(self) -> None:
        select = self.query_one("#session", Select)
        ids = {s.id for s in self.sessions}
        if self.session_id in ids and select.value != self.session_id:
            with self.prevent(Select.Changed):
                select.value = self.session_id

    def show_grid(self, grid: SessionGrid) -> None:
        if grid == self.grid:
            return  # nothing scored since the last look: the usual case between two sheets
        table = self.query_one("#grid", LinedTable)
        judges = [j.id for j in grid.judges]
        if self.grid is None or grid.session.id != self.grid.session.id or judges != self._grid_judges:
            table.set_columns(grid_columns(judges))
            self._grid_judges = judges
        self.grid = grid
        table.show(
            {
                e.entry_id: (
                    Text(str(e.order)),
                    Text(e.title),
                    *(fmt.cell(state) for state in e.cells),
                )
                for e in grid.entries
            }
        )
        missing = sum(state == "missing" for e in grid.entries for state in e.cells)
        legend = Text.assemble(
            fmt.cell("scored"),
            " scored  ",
            fmt.cell("corrected"),
            " corrected  ",
            fmt.cell("missing"),
            " missing  ",
            (f"{missing} missing", "bold" if missing else "green"),
        )
        names = "  ".join(f"{j.id} {j.name}" for j in grid.judges)
        legend.append("\n" + names, style="dim")
        self.query_one("#grid-legend", Static).update(legend, layout=False)  # two lines, always

    def show_feed(self, feed: SheetFeed) -> None:
        if not feed.sheets and self.last_seq is not None:
            return  # no new sheet
        tz = fmt.zone(self.timezone)
        for sheet in feed.sheets:
            self.feed[sheet.seq] = sheet
        for seq in sorted(self.feed)[: -self.feed_size]:
            del self.feed[seq]
        if feed.sheets:
            self.last_seq = feed.sheets[-1].seq
        elif self.last_seq is None:
            self.last_seq = feed.last_seq
        self.query_one("#feed", LinedTable).show(
            {
                str(seq): (
                    Text(fmt.clock(s.received_at, tz)),
                    Text(s.judge_name or s.judge_id),
                    Text(f"{s.entry_id} {s.entry_title}"),
                    Text(fmt.number(s.total)),
                    Text("correction", style="bold cyan") if s.supersedes else Text(""),
                )
                for seq, s in sorted(self.feed.items(), reverse=True)
            }
        )

    async def on_select_changed(self, event: Select.Changed) -> None:
        if event.value is Select.BLANK or event.value == self.session_id:
            return
        self.session_id = str(event.value)
        self.chosen_by_tech = True
        await self.refresh_now()

    async def action_session(self, step: int) -> None:
        if not self.sessions:
            return
        ids = [s.id for s in self.sessions]
        index = ids.index(self.session_id) if self.session_id in ids else 0
        self.session_id = ids[(index + step) % len(ids)]
        self.chosen_by_tech = True
        with self.prevent(Select.Changed):
            self.query_one("#session", Select).value = self.session_id
        await self.refresh_now()

    async def on_lined_table_selected(self, event: LinedTable.Selected) -> None:
        if event.table.id == "grid":
            await self.open_entry(event.key)
        elif event.table.id == "feed":
            sheet = self.feed.get(int(event.key))
            if sheet:
                await self.open_entry(sheet.entry_id)

    async def action_entry(self) -> None:
        entry_id = self.query_one("#grid", LinedTable).selected_key()
        if entry_id is not None:
            await self.open_entry(entry_id)

    async def open_entry(self, entry_id: str) -> None:
        # Unpacked apart from the await: mypy cannot infer a gather(return_exceptions=True) unpacked in place.
        answers = await asyncio.gather(
            self.client.entry(entry_id), self.client.personal(entry_id), return_exceptions=True
        )
        detail, personal = answers
        if isinstance(detail, BaseException):
            if not isinstance(detail, Unreachable | AdminError):
                raise detail
            self.notify(str(detail), severity="error")
            return
        # Masked by the box; without them (an older daemon) the sheets still show.
        masked = personal if isinstance(personal, PersonalOut) else None
        self.app.push_screen(EntryScreen(detail, self.timezone, masked))
