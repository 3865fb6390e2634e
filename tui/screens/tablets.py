"""Tablets: every paired device, its presence and health; sortable; revoke with confirmation."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Static

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
PRESENCE_ORDER = {"offline": 0, "stale": 1, "online": 2, "revoked": 3}


class TabletsScreen(BoxScreen):
    TITLE_KEY = "2"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "sort(False)", "Sort next"),
        Binding("S", "sort(True)", "Reverse"),
        Binding("r", "revoke", "Revoke"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.devices: dict[str, dict[str, Any]] = {}
        self._sort_index = 0  # presence: offline tablets on top
        self._reverse = False

    def compose_body(self) -> ComposeResult:
        yield Static(id="tablets-summary", classes="summary")
        yield LinedTable(COLUMNS, id="tablets", zebra_stripes=True)

    async def refresh_data(self) -> None:
        try:
            devices = await self.client.devices()
        except (Unreachable, AdminError):
            return  # the banner says why
        self.show(devices)

    def show(self, devices: list[dict[str, Any]]) -> None:
        self.devices = {d["device_id"]: d for d in devices}
        key = COLUMNS[self._sort_index].key
        ordered = sorted(devices, key=lambda d: sort_value(d, key), reverse=self._reverse)
        self.query_one("#tablets", LinedTable).show({d["device_id"]: device_row(d) for d in ordered})
        counts = {w: 0 for w in PRESENCE_ORDER}
        for d in devices:
            counts[d["presence"]] += 1
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
        if device is None or device["presence"] == "revoked":
            self.notify("That tablet is already revoked.", severity="warning")
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._revoke(device["device_id"]))

        self.app.push_screen(
            ConfirmScreen(
                f"Revoke {printable(device['name'])} ({device['judge_name'] or device['judge_id']})?",
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


def device_row(d: dict[str, Any]) -> tuple[Text | str, ...]:
    return (
        fmt.presence(d["presence"]),
        d.get("judge_name") or d["judge_id"],
        fmt.ago(d.get("last_seen_age_s")) if d.get("last_seen_at") else "never",
        fmt.battery(d.get("battery")),
        str(d["queue_depth"]) if d.get("queue_depth") is not None else "-",
        fmt.skew(d.get("clock_skew_s")),
        d.get("app_version") or "-",
        d["name"],
        d.get("address") or "-",
    )


def sort_value(d: dict[str, Any], key: str) -> Any:
    """A sortable value per column, then judge and device: a stable order, so a heartbeat that
    changes an age does not reshuffle (and redraw) the whole table. Unknowns sort last."""
    big = float("inf")
    match key:
        case "judge":
            first: Any = ""
        case "device":
            first = (d.get("name") or "").lower()
        case "presence":
            first = PRESENCE_ORDER.get(d.get("presence", ""), 9)
        case "seen":
            age = d.get("last_seen_age_s")
            first = big if age is None else age
        case "battery":
            first = big if d.get("battery") is None else d["battery"]
        case "app":
            first = d.get("app_version") or "~"
        case "queue":
            first = -(d.get("queue_depth") or 0)
        case "skew":
            first = -abs(d.get("clock_skew_s") or 0.0)
        case _:
            first = d.get("address") or "~"
    return (first, (d.get("judge_name") or d.get("judge_id") or "").lower(), (d.get("name") or "").lower())
