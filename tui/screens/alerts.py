"""Alerts: what the watchdog found, with counts and first/last seen; acknowledge."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Static

from appliance.shared.status import Alert
from appliance.shared.tablet_text import printable
from tui import format as fmt
from tui.client import AdminError, Unreachable
from tui.screens.base import BoxScreen
from tui.widgets.table import Column, LinedTable

COLUMNS = (
    Column("severity", "Severity"),
    Column("title", "Alert", max_width=48),
    Column("count", "Times", justify="right"),
    Column("first", "First seen"),
    Column("last", "Last seen"),
    Column("state", "State"),
)


class AlertsScreen(BoxScreen):
    TITLE_KEY = "5"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "acknowledge", "Acknowledge"),
        Binding("c", "toggle_cleared", "Show/hide cleared"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.alerts: dict[str, Alert] = {}
        self.include_cleared = False

    def compose_body(self) -> ComposeResult:
        yield Static(id="alerts-summary", classes="summary")
        yield LinedTable(COLUMNS, id="alerts", zebra_stripes=True)
        yield Static(id="alert-detail", classes="panel")

    async def refresh_data(self) -> None:
        try:
            alerts = await self.client.alerts(include_cleared=self.include_cleared)
        except (Unreachable, AdminError):
            return
        self.show(alerts)

    def show(self, alerts: list[Alert]) -> None:
        tz = fmt.zone(self.timezone)
        self.alerts = {a.fingerprint: a for a in alerts}
        self.query_one("#alerts", LinedTable).show(
            {
                a.fingerprint: (
                    fmt.severity(a.severity),
                    Text(a.title),
                    Text(str(a.count)),
                    Text(fmt.clock(a.first_seen, tz, with_date=True)),
                    Text(fmt.clock(a.last_seen, tz, with_date=True)),
                    alert_state(a),
                )
                for a in alerts
            }
        )
        active = sum(a.active for a in alerts)
        unacked = sum(a.active and not a.acknowledged_at for a in alerts)
        summary = f" {active} active, {unacked} not acknowledged"
        summary += "  (cleared shown)" if self.include_cleared else "  (c shows cleared)"
        self.query_one("#alerts-summary", Static).update(summary, layout=False)  # one line, always
        self._show_detail()

    def on_lined_table_highlighted(self, _: LinedTable.Highlighted) -> None:
        self._show_detail()

    def _selected(self) -> Alert | None:
        key = self.query_one("#alerts", LinedTable).selected_key()
        return None if key is None else self.alerts.get(key)

    def _show_detail(self) -> None:
        alert = self._selected()
        detail = self.query_one("#alert-detail", Static)
        if alert is None:
            detail.update(Text("No alerts.", style="green"))
            return
        # A title may name a tablet as it named itself.
        detail.update(Text.assemble((printable(alert.title), "bold"), "\n", printable(alert.detail)))

    async def action_acknowledge(self) -> None:
        alert = self._selected()
        if alert is None:
            self.notify("No alert selected.", severity="warning")
            return
        try:
            await self.client.acknowledge(alert.fingerprint)
        except (Unreachable, AdminError) as exc:
            self.notify(str(exc), title="Not acknowledged", severity="error")
            return
        self.notify("Alert acknowledged")
        await self.refresh_now()

    async def action_toggle_cleared(self) -> None:
        self.include_cleared = not self.include_cleared
        await self.refresh_now()


def alert_state(alert: Alert) -> Text:
    if not alert.active:
        return Text("cleared", style="dim")
    if alert.acknowledged_at:
        return Text("active, acknowledged")
    return Text("active", style="bold")
