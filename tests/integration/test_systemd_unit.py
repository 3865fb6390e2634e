"""The shipped systemd unit: systemd itself accepts it, and its sandbox scores well.

Both checks run systemd's own `systemd-analyze` on the file; no running systemd is needed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "venuebox.service"
# The install path docs/operations.md creates (python3 -m venv /opt/venuebox).
SHIPPED_EXEC_START = "ExecStart=/opt/venuebox/bin/venuebox run"
MAX_EXPOSURE = 2.0

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (it comes with systemd)"
)


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, "--no-pager", *args],
        capture_output=True,
        text=True,
        timeout=60,
        # Plain English, no colours, so the output can be parsed.
        env={**os.environ, "LC_ALL": "C", "SYSTEMD_COLORS": "0"},
    )


def installed_venuebox() -> str:
    """This environment's `venuebox` entry point, as it would be in /opt/venuebox/bin."""
    console_script = Path(sys.executable).parent / "venuebox"
    if console_script.exists():
        return f"{console_script} run"
    return f"{sys.executable} -m appliance run"


def test_unit_starts_the_installed_daemon_with_the_watchdog() -> None:
    lines = UNIT.read_text().splitlines()

    for directive in (SHIPPED_EXEC_START, "Type=notify", "NotifyAccess=main", "WatchdogSec=30"):
        assert directive in lines


def test_systemd_analyze_verify_has_no_complaints_about_the_unit(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists and is executable, and /opt/venuebox is not
    # installed here. So verify a copy, identical except that ExecStart runs this environment's
    # `venuebox`: every other line is checked as shipped, and the program check stays meaningful.
    shipped = UNIT.read_text()
    assert shipped.count(SHIPPED_EXEC_START) == 1
    copy = tmp_path / UNIT.name
    copy.write_text(shipped.replace(SHIPPED_EXEC_START, f"ExecStart={installed_venuebox()}"))

    result = systemd_analyze("verify", str(copy))

    # verify also loads the units ours refers to (network-online.target, multi-user.target, ...)
    # and may complain about them or about the host, e.g. no D-Bus in a container. Those are not
    # ours to fix, so only lines naming our unit count: its path ("<path>:<line>: Unknown key ...")
    # or its name ("venuebox.service: Command ... is not executable"). The exit status is not used:
    # it is 0 even for unknown keys and bad values, which systemd ignores with a warning.
    output = result.stdout + result.stderr
    about_our_unit = [line for line in output.splitlines() if UNIT.name in line]
    assert about_our_unit == [], output


def test_sandbox_exposure_is_at_most_two() -> None:
    result = systemd_analyze("security", "--offline=true", str(UNIT))

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    found = re.search(rf"Overall exposure level for {re.escape(UNIT.name)}: (\d+\.\d+)", output)
    assert found, output
    assert float(found.group(1)) <= MAX_EXPOSURE, output
