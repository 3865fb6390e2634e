"""Talking to systemd: the sd_notify(3) protocol in a few lines, no dependency.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET``, a unix datagram socket (a path, or an
abstract name written ``@name``). A message is newline-separated ``KEY=VALUE`` lines in one datagram.
The messages the box sends, and what systemd does with each:

- ``READY=1``: start-up is finished. Until it arrives the unit stays "activating"; units ordered
  after ours wait, and if it does not come within ``TimeoutStartSec=`` the start fails.
- ``STATUS=<text>``: free text shown by ``systemctl status venuebox`` ("serving 3 tablets").
- ``WATCHDOG=1``: the service is alive. With ``WatchdogSec=`` set, systemd kills the service (SIGABRT)
  and restarts it per ``Restart=`` if no ping arrives within that time; send it every
  ``watchdog_interval_s()`` seconds.
- ``STOPPING=1``: shutdown has begun. The unit shows "deactivating", and systemd allows the process
  ``TimeoutStopSec=`` to exit before it kills it.

Outside systemd (a terminal, tests) ``$NOTIFY_SOCKET`` is unset and every call is a no-op. Sending never
raises: a failed notification must not take the scoring service down with it.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(*lines: str) -> bool:
    """Send ``lines`` to systemd as one notification, e.g. ``notify("READY=1", "STATUS=serving")``.

    Returns True if the datagram was sent, False when not run by systemd (no ``$NOTIFY_SOCKET``) or
    when sending failed; failures are logged at debug level, never raised."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        # Abstract namespace: the kernel name starts with a NUL byte, not a literal "@".
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        # sd_notify(3) accepts only absolute paths and abstract names for AF_UNIX.
        log.debug("NOTIFY_SOCKET=%r is not a unix socket address, not notifying", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(lines).encode(), address)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path, unencodable text
        log.debug("sd_notify %r to %r failed: %s", lines, address, exc)
        return False
    return True


def watchdog_interval_s() -> float | None:
    """Seconds between ``WATCHDOG=1`` pings, or None when systemd's watchdog is not enabled for us.

    Reads ``$WATCHDOG_USEC`` (the unit's ``WatchdogSec=``); if ``$WATCHDOG_PID`` is set it must be
    this process, as the variables may have been inherited from a parent. Returns half the timeout,
    the ping interval sd_watchdog_enabled(3) recommends."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    try:
        timeout_us = int(usec) if usec else 0
        watchdog_pid = int(pid) if pid else os.getpid()
    except ValueError:
        log.debug("ignoring malformed WATCHDOG_USEC=%r / WATCHDOG_PID=%r", usec, pid)
        return None
    if timeout_us <= 0 or watchdog_pid != os.getpid():
        return None
    return timeout_us / 2 / 1_000_000
