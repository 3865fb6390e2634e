"""What every console screen shares: the banner, the screen switcher line and the footer."""

from __future__ import annotations

import asyncio
from typing import cast

from rich.text import Text
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Static

from appliance.shared.status import ConsoleStatus
from tui.client import AdminClient
from tui.state import ConsoleHost, Link
from tui.widgets.banner import BoxBanner

NAV = (
    ("1", "Overview"),
    ("2", "Tablets"),
    ("3", "Scores"),
    ("4", "Pairing"),
    ("5", "Alerts"),
    ("6", "Audit"),
)


class BoxScreen(Screen[None]):
    """A top-level screen. Subclasses yield their body from ``compose_body`` and refresh their own
    figures in ``refresh_data`` (called by the App every second while the screen is shown)."""

    TITLE_KEY = ""

    def compose(self) -> ComposeResult:
        yield BoxBanner(id="banner")
        yield Static(nav_text(self.TITLE_KEY), id="nav", classes="nav")
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> ComposeResult:
        yield from ()

    async def refresh_data(self) -> None:
        """Fetch and show this screen's own figures (status-only screens need nothing)."""

    async def refresh_now(self) -> None:
        """``refresh_data``, one at a time: the App's timer and a screen coming back to front can
        ask together, and two interleaved refreshes could show an older answer last."""
        async with self._refresh_lock:
            await self.refresh_data()

    @property
    def _refresh_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    _lock: asyncio.Lock | None = None

    async def on_screen_resume(self) -> None:
        link: Link | None = getattr(self.app, "link", None)
        if link is not None and link.ok:
            await self.refresh_now()

    @property
    def status(self) -> ConsoleStatus | None:
        return getattr(self.app, "status", None)

    @property
    def timezone(self) -> str | None:
        """The current event's time zone (None before the first status, or without an event)."""
        status = self.status
        return status.event.timezone if status is not None and status.event is not None else None

    @property
    def host(self) -> ConsoleHost:
        return cast(ConsoleHost, self.app)

    @property
    def client(self) -> AdminClient:
        return self.host.client


def nav_text(current: str) -> Text:
    text = Text(" ")
    for key, title in NAV:
        if key == current:
            text.append(f" {key} {title} ", style="reverse bold")
        else:
            text.append(f" {key}", style="bold")
            text.append(f" {title} ")
        text.append(" ")
    return text
