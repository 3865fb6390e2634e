"""What the console knows about its link to the daemon."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Link:
    """``ok`` since ``since``; when not ok, ``error`` says why in plain words. ``not_running``: no
    daemon runs at all (rather than one that does not answer); ``error`` then says where it was."""

    ok: bool
    since: datetime
    error: str | None = None
    not_running: bool = False
