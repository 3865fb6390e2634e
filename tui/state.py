"""What the console knows about its link to the daemon."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Link:
    """``ok`` since ``since``; when not ok, ``error`` says why in plain words."""

    ok: bool
    since: datetime
    error: str | None = None
