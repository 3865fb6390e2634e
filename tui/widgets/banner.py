"""The top of every screen: the freeze state (impossible to miss) and the link to the daemon."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

from appliance.shared.status import ConsoleStatus
from tui import format as fmt
from tui.state import Link


class BoxBanner(Static):
    """One line when all is well; a red block when frozen; a warning line when the daemon is away.

    It reads the App's ``status`` and ``link`` (set by the App's poller) and redraws when either
    changes, so every screen shows a freeze within one poll of it happening, wherever it came from
    (this console, the CLI, the watchdog)."""

    DEFAULT_CLASSES = "banner"
    _shown: tuple[str, tuple[Any, ...]] | None = None

    def on_mount(self) -> None:
        self.watch(self.app, "status", self._redraw, init=False)
        self.watch(self.app, "link", self._redraw, init=False)
        self._redraw()

    def _redraw(self, *_: Any) -> None:
        status: ConsoleStatus | None = getattr(self.app, "status", None)
        link: Link | None = getattr(self.app, "link", None)
        frozen = status is not None and status.freeze.frozen
        self.set_class(frozen, "-frozen")
        self.set_class(link is not None and not link.ok, "-unreachable")
        text = banner_text(status, link)
        # The status arrives twice a second and rarely changes the banner: skip the repaint then.
        drawn = (text.plain, tuple(text.spans))  # Text == Text compares the words only
        if drawn != self._shown:
            self._shown = drawn
            self.update(text)


def banner_text(status: ConsoleStatus | None, link: Link | None) -> Text:
    text = Text()
    tz = fmt.zone(status.event.timezone) if status is not None and status.event is not None else None
    if status is None:
        text.append(" venuebox console ", style="bold")
    elif status.freeze.frozen:
        freeze = status.freeze
        category = f" [{freeze.category}]" if freeze.category else ""
        text.append(" ■ FROZEN: scoring halted ", style="bold")
        text.append(f"{category} {freeze.reason}")
        text.append(f"  since {fmt.clock(freeze.since, tz)} by {freeze.by}  (f: unfreeze)")
    else:
        event = status.event
        text.append(" ● scoring open ", style="bold")
        text.append(f" {status.box.name}")
        if event:
            text.append(f" · {event.name}")
    if link is not None and link.not_running:
        # Stopped or killed: nothing to retry against, the tech starts it; the console finds it.
        text.append("\n")
        text.append(" ▲ DAEMON NOT RUNNING ", style="bold")
        text.append(
            f"since {fmt.clock(link.since, tz)} ({link.error}). Start it (systemctl start venuebox): "
            "the console finds it by itself."
        )
        if status is not None:
            text.append(" Figures below are from before.")
    elif link is not None and not link.ok:
        text.append("\n")
        text.append(" ▲ DAEMON UNREACHABLE ", style="bold")
        text.append(f"since {fmt.clock(link.since, tz)}: {link.error}. Retrying by itself.")
        if status is not None:
            text.append(" Figures below are from before.")
    return text
