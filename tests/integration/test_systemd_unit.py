"""The shipped systemd units: systemd itself accepts them, and their sandboxes score well.

The checks run systemd's own `systemd-analyze` on the files; no running systemd is needed.
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
CONSOLE_UNIT = UNIT.with_name("venuebox-console@.service")
# A template is checked as one of its instances, so %I and %i are filled in as on a box.
CONSOLE_INSTANCE = "venuebox-console@tty2.service"
# The install path docs/operations.md creates (python3 -m venv /opt/venuebox).
SHIPPED_VENUEBOX = "/opt/venuebox/bin/venuebox"
SHIPPED_EXEC_START = f"ExecStart={SHIPPED_VENUEBOX} run"
CONSOLE_ARGUMENTS = "--data-dir /var/lib/venuebox console"
SHIPPED_CONSOLE_EXEC_START = f"ExecStart={SHIPPED_VENUEBOX} {CONSOLE_ARGUMENTS}"
MAX_EXPOSURE = 2.0
# The console scores 1.9 with systemd 252 (the daemon 1.5). What it keeps exposed it needs: it runs
# as root, to read the DynamicUser's admin.token, with CAP_DAC_READ_SEARCH as its one capability;
# it has the host's network, for the admin API on the host's loopback (IPAddressAllow=localhost
# only); and it has no private /dev or device policy, because systemd resets, hangs up and
# disallocates the VT from inside the service. Everything else is locked as in the daemon's unit,
# so the daemon's bound holds for it too; a unit that loosens any other setting fails it.
CONSOLE_MAX_EXPOSURE = 2.0

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


def installed_venuebox(arguments: str) -> str:
    """This environment's `venuebox` entry point with ``arguments``, as it would be in /opt/venuebox/bin."""
    console_script = Path(sys.executable).parent / "venuebox"
    if console_script.exists():
        return f"{console_script} {arguments}"
    return f"{sys.executable} -m appliance {arguments}"


def complaints_about(unit: Path, shipped_exec_start: str, arguments: str, folder: Path, name: str) -> str:
    """`systemd-analyze verify` of ``name`` (the unit, or an instance of the template) from a copy of
    ``unit`` in ``folder``; the output lines about our unit, or "" when there are none."""
    # verify checks that ExecStart's program exists and is executable, and /opt/venuebox is not
    # installed here. So verify a copy, identical except that ExecStart runs this environment's
    # `venuebox`: every other line is checked as shipped, and the program check stays meaningful.
    shipped = unit.read_text()
    assert shipped.count(shipped_exec_start) == 1
    copy = folder / unit.name
    copy.write_text(shipped.replace(shipped_exec_start, f"ExecStart={installed_venuebox(arguments)}"))

    result = systemd_analyze("verify", str(folder / name))

    # verify also loads the units ours refers to (network-online.target, getty.target, ...) and may
    # complain about them or about the host, e.g. no D-Bus in a container. Those are not ours to
    # fix, so only lines naming our unit count: its path ("<path>:<line>: Unknown key ...") or its
    # name ("venuebox.service: Command ... is not executable"). The exit status is not used: it is
    # 0 even for unknown keys and bad values, which systemd ignores with a warning.
    output = result.stdout + result.stderr
    ours = (unit.name, name)
    return "\n".join(line for line in output.splitlines() if any(n in line for n in ours))


def exposure(unit: Path) -> tuple[float, str]:
    """`systemd-analyze security`'s overall exposure level of ``unit``, and its whole report."""
    result = systemd_analyze("security", "--offline=true", str(unit))

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    found = re.search(rf"Overall exposure level for {re.escape(unit.name)}: (\d+\.\d+)", output)
    assert found, output
    return float(found.group(1)), output


def test_unit_starts_the_installed_daemon_with_the_watchdog() -> None:
    lines = UNIT.read_text().splitlines()

    for directive in (SHIPPED_EXEC_START, "Type=notify", "NotifyAccess=main", "WatchdogSec=30"):
        assert directive in lines


def test_unit_gives_the_daemon_room_for_many_connections() -> None:
    # Each connection is an open file; the per-address caps (max_connections_per_address) need room
    # to work in a flood (tests/integration/test_connections.py reads the running daemon's limit).
    assert "LimitNOFILE=65536" in UNIT.read_text().splitlines()


def test_systemd_analyze_verify_has_no_complaints_about_the_unit(tmp_path: Path) -> None:
    assert complaints_about(UNIT, SHIPPED_EXEC_START, "run", tmp_path, UNIT.name) == ""


def test_sandbox_exposure_is_at_most_two() -> None:
    level, report = exposure(UNIT)

    assert level <= MAX_EXPOSURE, report


def test_console_unit_shows_the_console_on_its_tty_instead_of_the_login_prompt() -> None:
    lines = CONSOLE_UNIT.read_text().splitlines()

    for directive in (
        SHIPPED_CONSOLE_EXEC_START,
        "Environment=TERM=linux",
        "StandardInput=tty",
        "StandardOutput=tty",
        "StandardError=tty",
        "TTYPath=/dev/%I",
        "TTYReset=yes",
        "TTYVHangup=yes",
        "TTYVTDisallocate=yes",
        "Conflicts=getty@%i.service",
        "Wants=venuebox.service",
        "After=venuebox.service",
        "Restart=always",
        "ProtectSystem=strict",
    ):
        assert directive in lines


def test_systemd_analyze_verify_has_no_complaints_about_the_console_unit(tmp_path: Path) -> None:
    complaints = complaints_about(
        CONSOLE_UNIT, SHIPPED_CONSOLE_EXEC_START, CONSOLE_ARGUMENTS, tmp_path, CONSOLE_INSTANCE
    )

    assert complaints == ""


def test_console_sandbox_exposure_is_at_most_two(tmp_path: Path) -> None:
    instance = tmp_path / CONSOLE_INSTANCE
    shutil.copy(CONSOLE_UNIT, tmp_path / CONSOLE_UNIT.name)

    level, report = exposure(instance)

    assert level <= CONSOLE_MAX_EXPOSURE, report
