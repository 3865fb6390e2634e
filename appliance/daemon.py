"""The composition root: builds config, storage and the API servers, runs them, stops them in order.

Only this module and ``cli.py`` (the other entry point) import the outer packages (edge_api,
provisioning). The tablet API listens on the LAN; the admin API on loopback unless configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Any

import uvicorn

from appliance.box import get_box
from appliance.config import Config
from appliance.secrets_files import read_secret
from appliance.storage.db import Store

log = logging.getLogger("venuebox.daemon")
RUNTIME_FILE = "daemon.json"


class _EmbeddedServer(uvicorn.Server):
    """uvicorn re-raises a captured signal after shutdown; the daemon owns its signals instead."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def runtime_info(config: Config) -> dict[str, Any] | None:
    """Where a running daemon listens (written at start, removed at clean stop), or None."""
    path = config.data_dir / RUNTIME_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


async def serve(config: Config, *, on_ready: Any = None) -> None:
    """Run the tablet and admin APIs until SIGTERM/SIGINT, then stop in reverse order."""
    from edge_api.app import create_admin_app, create_app

    store = Store(config.db_path)
    try:
        box = store.query(get_box)
        admin_token = read_secret(config.admin_token_path)
        tablet_sock = _bind(config.host, config.port)
        admin_sock = _bind(config.admin_host, config.admin_port)
        servers = [
            _EmbeddedServer(
                uvicorn.Config(
                    app,
                    log_config=None,
                    access_log=False,
                    lifespan="on",
                    timeout_graceful_shutdown=5,
                    loop="none",
                    http="auto",
                )
            )
            for app in (
                create_app(store, config, box["box_id"]),
                create_admin_app(store, config, box["box_id"], admin_token),
            )
        ]
        tasks = [
            asyncio.create_task(server.serve(sockets=[sock]))
            for server, sock in zip(servers, (tablet_sock, admin_sock), strict=True)
        ]

        def stop(signum: int) -> None:
            log.info("signal %s: stopping", signal.Signals(signum).name)
            for server in servers:
                server.should_exit = True

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop, signum)

        while not all(server.started for server in servers):
            if any(task.done() for task in tasks):
                break
            await asyncio.sleep(0.01)
        runtime = {
            "pid": os.getpid(),
            "box_id": box["box_id"],
            "tablet_url": _url(tablet_sock),
            "admin_url": _url(admin_sock),
        }
        _write_runtime(config.data_dir / RUNTIME_FILE, runtime)
        log.info("serving tablets on %s, admin on %s", runtime["tablet_url"], runtime["admin_url"])
        if on_ready:
            on_ready(runtime)
        try:
            await asyncio.gather(*tasks)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            with contextlib.suppress(OSError):
                (config.data_dir / RUNTIME_FILE).unlink()
    finally:
        # Last: every queued write is committed and the WAL checkpointed before the process exits.
        store.close()


def _write_runtime(path: Path, runtime: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(runtime))
    os.replace(tmp, path)


def run(config: Config, on_ready: Any = None) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(config, on_ready=on_ready))
    else:
        uvloop.run(serve(config, on_ready=on_ready))
