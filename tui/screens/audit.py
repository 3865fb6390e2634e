"""Audit: the tail of the audit log, a filter, and "verify chains" with its result."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Input, LoadingIndicator, Static

from appliance.shared.admin_wire import AuditRow, VerifyReport
from tui import format as fmt
from tui.client import AdminError, Unreachable
from tui.screens.base import BoxScreen
from tui.widgets.table import Column, LinedTable

TAIL = 200


COLUMNS = (
    Column("seq", "#", justify="right"),
    Column("at", "When"),
    Column("actor", "Actor", max_width=14),
    Column("action", "Action", max_width=22),
    Column("detail", "Detail", max_width=90),
)


class AuditScreen(BoxScreen):
    TITLE_KEY = "6"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter"),
        Binding("v", "verify", "Verify chains"),
        Binding("escape", "leave_filter", "Leave filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[AuditRow] = []

    def compose_body(self) -> ComposeResult:
        yield Input(placeholder="/ filter by action, actor or detail", id="audit-filter")
        yield LinedTable(COLUMNS, id="audit", zebra_stripes=True)
        yield LoadingIndicator(id="verify-busy")
        yield Static("v verifies the ledger and audit hash chains.", id="verify-result", classes="panel")

    def on_mount(self) -> None:
        self.query_one("#verify-busy").display = False
        self.query_one("#audit", LinedTable).focus()

    async def refresh_data(self) -> None:
        try:
            rows = await self.client.audit(limit=TAIL)
        except (Unreachable, AdminError):
            return
        self.rows = rows
        self.show()

    def show(self) -> None:
        needle = self.query_one("#audit-filter", Input).value.strip().lower()
        tz = fmt.zone(self.timezone)
        shown = {}
        for row in sorted(self.rows, key=lambda r: -r.seq):
            if needle and needle not in f"{row.action} {row.actor} {row.detail}".lower():
                continue
            shown[str(row.seq)] = (
                Text(str(row.seq)),
                Text(fmt.clock(row.at, tz, with_date=True)),
                Text(row.actor),
                Text(row.action),
                Text(row.detail),
            )
        self.query_one("#audit", LinedTable).show(shown)

    def on_input_changed(self, _: Input.Changed) -> None:
        self.show()

    def action_filter(self) -> None:
        self.query_one("#audit-filter", Input).focus()

    def action_leave_filter(self) -> None:
        self.query_one("#audit", LinedTable).focus()

    async def action_verify(self) -> None:
        busy = self.query_one("#verify-busy")
        result = self.query_one("#verify-result", Static)
        busy.display = True
        result.update("Verifying the hash chains…")
        try:
            report = await self.client.verify()
        except (Unreachable, AdminError) as exc:
            result.update(Text(f"Could not verify: {exc}", style="bold red"))
            return
        finally:
            busy.display = False
        result.update(verify_text(report))


def verify_text(report: VerifyReport) -> Text:
    text = Text()
    if report.ok:
        text.append("✓ chains intact", style="bold green")
    else:
        text.append("✗ CHAIN BROKEN: the database was changed outside venuebox", style="bold white on red")
    for chain in report.chains:
        line = f"\n{chain.table}: {chain.rows} rows, "
        if chain.ok:
            text.append(line + f"ok, head {chain.head_hash[:16] if chain.head_hash else '-'}")
        else:
            text.append(line + f"first bad row {chain.first_bad_seq}: {chain.problem}", style="bold red")
    return text
