"""`venuebox console` in a real terminal: tmux runs it, the test types keys and reads the screen.

This is the console as a venue tech meets it: a real pseudo-terminal, real key presses through
`tmux send-keys`, the screen read back with `tmux capture-pane`, against a real daemon process.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningBox, make_box, panel_entries

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (.ci/run installs it)")


class Terminal:
    """One tmux server of our own (its own socket), one window running one command."""

    def __init__(self, command: list[str], width: int = 100, height: int = 30) -> None:
        assert TMUX is not None
        self.base = [TMUX, "-L", f"venuebox-test-{uuid.uuid4().hex[:8]}", "-f", "/dev/null"]
        subprocess.run(
            [*self.base, "new-session", "-d", "-s", "console", "-x", str(width), "-y", str(height)],
            check=True,
            env={"TERM": "xterm-256color", "PATH": "/usr/bin:/bin"},
        )
        # Keep the pane (and its last screen) after the console exits, so the test can read it.
        subprocess.run([*self.base, "set-option", "-t", "console", "remain-on-exit", "on"], check=True)
        subprocess.run(
            [*self.base, "respawn-pane", "-k", "-t", "console", " ".join(_quote(c) for c in command)],
            check=True,
        )

    def screen(self) -> str:
        return subprocess.run(
            [*self.base, "capture-pane", "-p", "-t", "console"], capture_output=True, text=True, check=True
        ).stdout

    def keys(self, *keys: str, literal: bool = False) -> None:
        subprocess.run(
            [*self.base, "send-keys", "-t", "console", *(["-l"] if literal else []), *keys], check=True
        )

    def wait_for(self, *texts: str, timeout: float = 15.0) -> str:
        """The screen once every one of `texts` is on it.

        Textual paints a screen in more than one pass (the header can be up before the footer), so a
        test names everything it is about to read rather than waiting for one string and assuming.
        """
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if all(text in screen for text in texts):
                return screen
            time.sleep(0.1)
        missing = [text for text in texts if text not in screen]
        raise AssertionError(f"{missing!r} not on screen within {timeout} s; the screen shows:\n{screen}")

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True)


def _quote(part: str) -> str:
    return "'" + part.replace("'", "'\\''") + "'"


@pytest.fixture
def box(tmp_path: Path) -> Iterator[RunningBox]:
    running = RunningBox(make_box(tmp_path / "box")).start()
    yield running
    running.stop()


def test_a_tech_freezes_the_box_from_the_console_in_a_terminal(box: RunningBox) -> None:
    tablet = box.pair("J1")
    entry = panel_entries(tablet.event())[0]
    console = [sys.executable, "-m", "appliance", "--data-dir", str(box.config.data_dir), "console"]
    terminal = Terminal(console)
    try:
        # The first screen: status, tabs, the overview's panels and the footer's key help.
        terminal.wait_for("scoring open", "1 Overview", "Tablets", "Missing scores", "Freeze/unfreeze")

        terminal.keys("f")
        terminal.wait_for("Freeze scoring: why?")
        terminal.keys("Enter")  # the highlighted category: dispute
        # Choosing moves the focus to the reason field; tmux types far faster than a person, so
        # give the console a moment to move it before the words arrive.
        time.sleep(0.5)
        terminal.keys("Power cut in hall B", literal=True)
        terminal.keys("Enter")
        terminal.wait_for("Freeze all scoring now?", "Reason (dispute): Power cut in hall B")
        terminal.keys("y")
        terminal.wait_for("FROZEN", "Power cut in hall B")

        with tablet.client() as c:
            refused = c.post("/api/v1/sheets", json=tablet.sheet_for(entry))
        assert refused.status_code == 423
        assert refused.json()["detail"] == "Power cut in hall B"

        terminal.keys("2")  # another screen: the banner is still there
        terminal.wait_for("Last seen", "FROZEN")

        terminal.keys("f")
        terminal.wait_for("Unfreeze scoring?")
        terminal.keys("y")
        terminal.wait_for("scoring open")
        with tablet.client() as c:
            assert c.post("/api/v1/sheets", json=tablet.sheet_for(entry)).status_code == 201

        terminal.keys("q")
        deadline = time.monotonic() + 10
        while "scoring open" in terminal.screen() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "scoring open" not in terminal.screen(), "q quits the console"
    finally:
        terminal.close()


def test_the_console_says_the_daemon_is_not_running_and_where_it_was_once_it_stops(box: RunningBox) -> None:
    # As a tech on the box: the data dir from $VENUEBOX_DATA_DIR, no --data-dir.
    data_dir = str(box.config.data_dir)
    terminal = Terminal(
        ["env", f"VENUEBOX_DATA_DIR={data_dir}", sys.executable, "-m", "appliance", "console"]
    )
    try:
        terminal.wait_for("scoring open", "1 Overview", "Freeze/unfreeze")
        was_on = box.admin_url.removeprefix("http://")
        assert box.stop() == 0  # `systemctl stop venuebox`: a clean stop removes daemon.json
        screen = terminal.wait_for("DAEMON NOT RUNNING", f"it was on {was_on}", "Start it (systemctl start")
        assert "UNREACHABLE" not in screen and "8081" not in screen and "connection refused" not in screen

        box.start()  # another free port: the console finds it by itself
        terminal.wait_for("scoring open")
        deadline = time.monotonic() + 10
        while "NOT RUNNING" in terminal.screen() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "NOT RUNNING" not in terminal.screen()
        terminal.keys("q")
    finally:
        terminal.close()
