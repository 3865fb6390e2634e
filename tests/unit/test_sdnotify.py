"""sd_notify over a real unix datagram socket standing in for systemd's."""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.shell.sdnotify import notify, watchdog_interval_s


def receive_one(sock: socket.socket) -> bytes:
    """The one datagram waiting on ``sock``; fails if none arrives or if a second one follows."""
    sock.settimeout(2.0)
    datagram = sock.recv(65536)
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(65536)
    return datagram


@pytest.fixture
def notify_socket_path() -> Iterator[Path]:
    # A short directory of our own: unix socket paths are limited to 107 bytes, and pytest's
    # tmp_path can be longer than that.
    with tempfile.TemporaryDirectory(prefix="sdn-") as directory:
        yield Path(directory) / "notify"


def test_notify_sends_lines_as_one_datagram_to_socket_path(
    notify_socket_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(notify_socket_path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket_path))

        assert notify("READY=1", "STATUS=x") is True
        assert receive_one(systemd) == b"READY=1\nSTATUS=x"


@pytest.mark.skipif(sys.platform != "linux", reason="abstract unix socket addresses exist only on Linux")
def test_notify_reaches_abstract_socket_address(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"venuebox-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)

        assert notify("WATCHDOG=1") is True
        assert receive_one(systemd) == b"WATCHDOG=1"


def test_notify_without_systemd_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)

    assert notify("READY=1") is False


def test_notify_to_missing_socket_returns_false_and_logs(
    notify_socket_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket_path))

    with caplog.at_level(logging.DEBUG, logger="appliance.shell.sdnotify"):
        assert notify("STOPPING=1") is False
    assert "STOPPING=1" in caplog.text


def test_notify_ignores_an_address_that_is_not_a_unix_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/notify")

    assert notify("READY=1") is False


def test_watchdog_interval_is_half_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)

    assert watchdog_interval_s() == 15.0


def test_watchdog_interval_applies_when_watchdog_pid_is_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))

    assert watchdog_interval_s() == 15.0


def test_no_watchdog_without_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)

    assert watchdog_interval_s() is None


def test_no_watchdog_when_it_is_meant_for_another_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))

    assert watchdog_interval_s() is None


@pytest.mark.parametrize("usec", ["0", "-5", "thirty"])
def test_no_watchdog_for_a_meaningless_timeout(usec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)

    assert watchdog_interval_s() is None
