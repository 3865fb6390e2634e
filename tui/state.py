"""What the console knows about its link to the daemon."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from tui.client import AdminClient


@dataclass(frozen=True)
class Link:
    """``ok`` since ``since``; when not ok, ``error`` says why in plain words. ``not_running``: no
    daemon runs at all (rather than one that does not answer); ``error`` then says where it was."""

    ok: bool
    since: datetime
    error: str | None = None
    not_running: bool = False


class ConsoleHost(Protocol):
    """What screens use of the console App (tui/app.py), so they are typed without importing it."""

    client: AdminClient
    now: Callable[[], datetime]  # the console's own clock
