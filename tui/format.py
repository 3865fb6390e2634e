"""How the console words things: ages, clock times in the event's zone, presence, severities.

Pure functions, so a test can pin every wording. Nothing here relies on colour alone: each state has
a word and a glyph, and the colour (a Rich style) only repeats them.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rich.text import Text

from appliance.shared.times import parse_rfc3339

PRESENCE = {
    # word: (glyph, style)
    "online": ("●", "bold green"),
    "stale": ("◐", "bold yellow"),
    "offline": ("○", "bold red"),
    "revoked": ("×", "dim"),
}
SEVERITY = {
    "critical": ("!!", "bold white on red"),
    "warning": ("! ", "bold black on yellow"),
    "info": ("i ", "bold"),
}
UPLINK_STATE = {
    # uplink state word: style (idle, sending and "not configured" need no colour)
    "backing off": "bold yellow",
    "circuit open": "bold red",
    "paused": "bold red",
}
VERIFIED = {
    # a snapshot's verification (None: not decrypted and checked yet): (words, style)
    True: ("✓ verified", "green"),
    None: ("not verified yet", ""),
    False: ("✗ DOES NOT VERIFY", "bold red"),
}
CELL = {
    # grid cell state: (glyph, style)
    "scored": ("✓", "green"),
    "corrected": ("✎", "bold cyan"),
    "missing": ("·", "red"),
}


def duration(seconds: float) -> str:
    """ "12 s", "4 min", "2 h 5 min": a span of time as a tech says it."""
    s = max(0, int(seconds))
    if s < 90:
        return f"{s} s"
    minutes = s // 60
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def ago(seconds: float | None) -> str:
    """ "12 s ago", "4 min ago", "2 h 5 min ago"; "never" for None."""
    if seconds is None:
        return "never"
    return f"{duration(seconds)} ago"


def seconds_between(earlier: str | None, later: str | None) -> float | None:
    if not earlier or not later:
        return None
    return (parse_rfc3339(later) - parse_rfc3339(earlier)).total_seconds()


def zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def clock(moment: str | datetime | None, tz: ZoneInfo | None, with_date: bool = False) -> str:
    """A wall-clock time in the event's zone ("10:42:07"), or UTC with a Z when there is none."""
    if moment is None:
        return "-"
    when = parse_rfc3339(moment) if isinstance(moment, str) else moment
    local = when.astimezone(tz) if tz else when
    text = local.strftime("%a %H:%M:%S" if with_date else "%H:%M:%S")
    return text if tz else text + "Z"


def presence(word: str, count: int | None = None) -> Text:
    """ "● online", or with a count "● 6 online": the glyph and the word, never colour alone."""
    glyph, style = PRESENCE.get(word, ("?", ""))
    middle = "" if count is None else f"{count} "
    return Text(f"{glyph} {middle}{word}", style=style)


def severity(word: str) -> Text:
    glyph, style = SEVERITY.get(word, ("  ", ""))
    return Text(f"{glyph}{word}", style=style)


def uplink_state(word: str) -> Text:
    """The uplink's state word, red when it has stopped trying on its own, yellow while it backs off."""
    return Text(word, style=UPLINK_STATE.get(word, ""))


def verified(outcome: bool | None) -> Text:
    """A backup snapshot's check: "✓ verified", "not verified yet", or "✗ DOES NOT VERIFY" in red."""
    words, style = VERIFIED[outcome]
    return Text(words, style=style)


def cell(state: str) -> Text:
    glyph, style = CELL.get(state, ("?", ""))
    return Text(glyph, style=style)


def battery(level: int | None) -> Text:
    if level is None:
        return Text("-", style="dim")
    style = "bold red" if level < 15 else "yellow" if level < 30 else ""
    return Text(f"{level}%", style=style)


def skew(seconds: float | None, alert_s: float) -> Text:
    """A tablet's clock skew: yellow from ``alert_s`` (the box's clock-skew alert threshold, the
    ``clock_skew_max_s`` setting), red from a minute."""
    if seconds is None:
        return Text("-", style="dim")
    flagged = abs(seconds) >= alert_s
    style = "bold red" if abs(seconds) >= 60 else "yellow" if flagged else ""
    if abs(seconds) < 0.05:
        return Text("0.0 s")  # not "-0.0 s": a few milliseconds of network delay is no skew
    return Text(f"{seconds:+.1f} s", style=style)


def number(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:g}"
    return str(int(value))


def megabytes(mb: float | None) -> str:
    if mb is None:
        return "-"
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def size(n_bytes: int | None) -> str:
    """ "412 KB", "2.4 MB", "31 MB", "1.2 GB": a file's size as a person reads it."""
    if n_bytes is None:
        return "-"
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n_bytes >= scale:
            value = n_bytes / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{n_bytes} bytes"
