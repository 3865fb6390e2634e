"""Pairing: pick a judge, show a one-time code (large), its QR code and expiry; paired tablets live."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from appliance.shared.admin_wire import Device, JudgeRow, NewPairingCode
from appliance.shared.fingerprint import short_fingerprint
from appliance.shared.tablet_text import printable
from appliance.shared.times import parse_rfc3339
from tui import format as fmt
from tui.client import AdminError, Unreachable
from tui.screens.base import BoxScreen
from tui.widgets.qr import qr_text


class PairingScreen(BoxScreen):
    TITLE_KEY = "4"

    def __init__(self) -> None:
        super().__init__()
        self.judges: list[JudgeRow] = []
        self.code: NewPairingCode | None = None
        self.code_judge: JudgeRow | None = None

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="pairing"):
            with Vertical(id="pairing-left"):
                yield Static("Judge (Enter: new code)", classes="section")
                yield OptionList(id="judges")
                yield Static("Paired tablets", classes="section")
                yield Static(id="paired")
            with VerticalScroll(id="pairing-code"):
                yield Static(
                    "Choose a judge on the left and press Enter.\nThe code works once, on one tablet.",
                    id="code-big",
                )
                yield Static(id="code-expiry")
                yield Static(id="code-cert")
                yield Static(id="code-qr")
                yield Static(id="code-url")

    def on_mount(self) -> None:
        self.set_interval(1.0, self._tick)

    async def refresh_data(self) -> None:
        try:
            judges = await self.client.judges()
            devices = await self.client.devices()
            codes = await self.client.pairing_codes() if self.code else []
        except (Unreachable, AdminError):
            return
        self.show_judges(judges)
        self.show_paired(devices)
        now = self.host.now()
        active = {c.code_id for c in codes}
        if self.code and remaining(self.code.expires_at, now) > 0 and self.code.code_id not in active:
            self.code_used()

    def code_used(self) -> None:
        """The code is no longer active and has not expired: a tablet redeemed it."""
        self.code = None
        self.query_one("#code-expiry", Static).update(
            Text(
                "used: the tablet is paired (see the list on the left)", style="bold green", justify="center"
            )
        )
        # A used code is worth nothing: take its QR code and URL off the screen.
        self.clear_code()

    def clear_code(self) -> None:
        for part in ("#code-cert", "#code-qr", "#code-url"):
            self.query_one(part, Static).update("")

    def show_judges(self, judges: list[JudgeRow]) -> None:
        if [j.judge_id for j in judges] == [j.judge_id for j in self.judges]:
            return
        self.judges = judges
        options = self.query_one("#judges", OptionList)
        highlighted = options.highlighted
        options.clear_options()
        options.add_options([Option(f"{j.judge_id}  {j.name}", id=j.judge_id) for j in judges])
        if judges:
            options.highlighted = min(highlighted or 0, len(judges) - 1)
        if not judges:
            self.query_one("#code-big", Static).update(
                "No judges: import the event first (`venuebox event import PACKAGE`)."
            )

    def show_paired(self, devices: list[Device]) -> None:
        active = [d for d in devices if d.presence != "revoked"]
        text = Text()
        for d in sorted(active, key=lambda d: d.paired_at, reverse=True)[:12]:
            text.append_text(fmt.presence(d.presence))
            text.append(f" {d.judge_name or d.judge_id}: {printable(d.name)}\n")
        if not active:
            text.append("none yet", style="dim")
        text.rstrip()
        self.query_one("#paired", Static).update(text)

    async def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        judge_id = str(event.option.id)
        judge = next(
            (j for j in self.judges if j.judge_id == judge_id),
            JudgeRow(judge_id=judge_id, name="", sessions=None),
        )
        try:
            code = await self.client.new_pairing_code(judge_id)
        except (Unreachable, AdminError) as exc:
            self.notify(str(exc), title="No code", severity="error")
            return
        self.show_code(code, judge)

    def show_code(self, code: NewPairingCode, judge: JudgeRow) -> None:
        self.code, self.code_judge = code, judge
        big = Text(justify="center")
        big.append(f"{judge.name or judge.judge_id}\n", style="bold")
        big.append(" " + " ".join(code.code) + " ", style="bold reverse")
        self.query_one("#code-big", Static).update(big)
        cert = Text(justify="center")
        if code.tls_fingerprint:
            # What the judge compares with the start of the certificate's SHA-256 fingerprint the
            # browser shows (`venuebox pair new` prints the same words); the QR code carries it all.
            cert.append("certificate ", style="dim")
            cert.append(short_fingerprint(code.tls_fingerprint), style="bold")
        self.query_one("#code-cert", Static).update(cert)
        self.query_one("#code-url", Static).update(Text(code.url, style="dim", justify="center"))
        self.query_one("#code-qr", Static).update(qr_text(code.url))
        self._tick()

    def _tick(self) -> None:
        if self.code is None:
            return
        expiry = self.query_one("#code-expiry", Static)
        left = remaining(self.code.expires_at, self.host.now())
        if left <= 0:
            expiry.update(
                Text("expired: choose the judge again for a new code", style="bold red", justify="center")
            )
            self.clear_code()
        else:
            expiry.update(Text(f"expires in {int(left) // 60}:{int(left) % 60:02d}", justify="center"))


def remaining(expires_at: str, now: datetime) -> float:
    return (parse_rfc3339(expires_at) - now).total_seconds()
