"""Tablets: every paired device, its presence and health; sortable; revoke with confirmation."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Static

from appliance.shared.admin_wire import Device
from appliance.shared.status import DevicePresence
from appliance.shared.tablet_text import printable
from tui import format as fmt
from tui.client import AdminError, Unreachable
from tui.screens.base import BoxScreen
from tui.screens.dialogs import ConfirmScreen
from tui.widgets.table import Column, LinedTable

COLUMNS = (
    # Presence and health first: at 80 columns they are what must stay visible.
    Column("presence", "Presence"),
    Column("judge", "Judge", max_width=22),
    Column("seen", "Last seen", justify="right"),
    Column("battery", "Battery", justify="right"),
    Column("queue", "Queued", justify="right"),
    Column("skew", "Clock skew", justify="right"),
    Column("app", "App", max_width=14),
    Column("device", "Device", max_width=30),
    Column("address", "Address", max_width=39),
)
PRESENCE_ORDER: dict[DevicePresence, int] = {"offline": 0, "stale": 1, "online": 2, "revoked": 3}


class TabletsScreen(BoxScreen):
    TITLE_KEY = "2"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "sort(False)", "Sort next"),
        Binding("S", "sort(True)", "Reverse"),
        Binding("r", "revoke", "Revoke"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.devices: dict[str, Device] = {}
        self._sort_index = 0  # presence: offline tablets on top
        self._reverse = False
        self._skew_alert_s = 0.0  # the box's clock_skew_max_s, from the status

    def compose_body(self) -> ComposeResult:
        yield Static(id="tablets-summary", classes="summary")
        yield LinedTable(COLUMNS, id="tablets", zebra_stripes=True)

    async def refresh_data(self) -> None:
        status = self.status
        if status is None:
            return  # the banner says the console waits for the daemon
        try:
            devices = await self.client.devices()
        except (Unreachable, AdminError):
            return  # the banner says why
        self._skew_alert_s = status.settings.clock_skew_max_s
        self.show(devices)

    def show(self, devices: list[Device]) -> None:
        self.devices = {d.device_id: d for d in devices}
        key = COLUMNS[self._sort_index].key
        ordered = sorted(devices, key=lambda d: sort_value(d, key), reverse=self._reverse)
        rows = {d.device_id: device_row(d, self._skew_alert_s) for d in ordered}
        self.query_one("#tablets", LinedTable).show(rows)
        counts = dict.fromkeys(PRESENCE_ORDER, 0)
        for d in devices:
            counts[d.presence] += 1
        summary = Text(f" {len(devices)} tablets: ")
        summary.append(Text(", ").join(fmt.presence(w, counts[w]) for w in ("online", "stale", "offline")))
        if counts["revoked"]:
            summary.append(f", {counts['revoked']} revoked", style="dim")
        summary.append(
            f"   sorted by {COLUMNS[self._sort_index].label}{' (reversed)' if self._reverse else ''}"
        )
        # One line, always: no need to lay the screen out again (a large share of a refresh).
        self.query_one("#tablets-summary", Static).update(summary, layout=False)

    def action_sort(self, reverse: bool) -> None:
        if reverse:
            self._reverse = not self._reverse
        else:
            self._sort_index = (self._sort_index + 1) % len(COLUMNS)
        self.show(list(self.devices.values()))

    def action_revoke(self) -> None:
        selected = self.query_one("#tablets", LinedTable).selected_key()
        if selected is None:
            self.notify("No tablet selected.", severity="warning")
            return
        device = self.devices.get(selected)
        if device is None or device.presence == "revoked":
            self.notify("That tablet is already revoked.", severity="warning")
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._revoke(device.device_id))

        self.app.push_screen(
            ConfirmScreen(
                f"Revoke {printable(device.name)} ({device.judge_name or device.judge_id})?",
                "The tablet's token stops working at once; it must be paired again to score. "
                "Sheets it already sent stay in the ledger.",
                confirm_label="Revoke",
                danger=True,
            ),
            confirmed,
        )

    async def _revoke(self, device_id: str) -> None:
        try:
            await self.client.revoke(device_id)
        except (Unreachable, AdminError) as exc:
            self.notify(str(exc), title="Not revoked", severity="error")
            return
        self.notify("Tablet revoked")
        await self.refresh_now()


def device_row(d: Device, skew_alert_s: float) -> tuple[Text | str, ...]:
    """A tablet's row; its clock skew yellow from ``skew_alert_s`` (the box's clock-skew alert)."""
    return (
        fmt.presence(d.presence),
        d.judge_name or d.judge_id,
        fmt.ago(d.last_seen_age_s) if d.last_seen_at else "never",
        fmt.battery(d.battery),
        str(d.queue_depth) if d.queue_depth is not None else "-",
        fmt.skew(d.clock_skew_s, skew_alert_s),
        d.app_version or "-",
        d.name,
        d.address or "-",
    )


def sort_value(d: Device, key: str) -> Any:
    """A sortable value per column, then judge and device: a stable order, so a heartbeat that
    changes an age does not reshuffle (and redraw) the whole table. Unknowns sort last."""
    big = float("inf")
    match key:
        case "judge":
            first: Any = ""
        case "device":
            first = d.name.lower()
        case "presence":
            first = PRESENCE_ORDER[d.presence]
        case "seen":
            first = big if d.last_seen_age_s is None else d.last_seen_age_s
        case "battery":
            first = big if d.battery is None else d.battery
        case "app":
            first = d.app_version or "~"
        case "queue":
            first = -(d.queue_depth or 0)
        case "skew":
            first = -abs(d.clock_skew_s or 0.0)
        case _:
            first = d.address or "~"
    return (first, (d.judge_name or d.judge_id).lower(), d.name.lower())
