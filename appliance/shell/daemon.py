"""The composition root: `venuebox run` builds everything, starts it in order, stops it in reverse.

Start: store -> listening sockets -> mDNS advertisement started in the background -> API servers
(tablet on the LAN, admin on loopback) -> health watchdog (scheduler + event-loop probe) -> uplink
worker -> systemd READY=1 and the watchdog feeder. READY=1 does not wait for mDNS: its name check
(on a thread of its own, while the apps are built), probing (~1 s by protocol design, once the
listeners serve) and announcing go on after it, and the STATUS line says when the box is advertised
(or that it is not, with an alert, trying again: never a reason to stop serving).
Stop (SIGTERM/SIGINT): STOPPING=1 -> scheduler -> uplink worker (a batch in flight is simply sent
again after the restart) -> servers stop accepting and finish in-flight requests -> mDNS goodbyes
-> store (queued writes committed, WAL checkpointed) -> exit 0.

Only this module and the ``cli`` package (the other entry point) import the outer packages (edge_api,
provisioning, uplink).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
import logging
import os
import resource
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

from appliance.core import data_key, keys, outbox, tls
from appliance.core.alerts import active_counts, clear_alert, raise_alert
from appliance.core.box import get_box
from appliance.core.config import RUNTIME_FILE, Config
from appliance.core.storage import Store
from appliance.core.watchdog import LoopLagProbe, WatchdogSettings, build_scheduler
from appliance.shared.errors import DAMAGED_DATABASE_SECTION, DatabaseDamaged, DomainError
from appliance.shared.netloc import http_url
from appliance.shared.secrets_files import atomic_write, read_secret
from appliance.shared.status import AlertCounts, BoxStatus
from appliance.shell import sdnotify
from appliance.shell.mdns import Advertisement
from appliance.storage.db import UNSAFE_SYNCHRONOUS_ENV
from appliance.web.server import EmbeddedServer, bind, server_config, socket_url

log = logging.getLogger("venuebox.daemon")
LOCK_FILE = "daemon.lock"
# The status snapshot and the active alert counts: what the systemd STATUS line says.
FullStatus = tuple[BoxStatus, AlertCounts]
MDNS_FINGERPRINT = "mdns-advertisement"
# A failed mDNS start (no network yet at boot, ...) is tried again after 2 s, then 4, 8, ... 60 s.
MDNS_RETRY_FIRST_S = 2.0
MDNS_RETRY_MAX_S = 60.0


def lan_server_options(config: Config) -> dict[str, Any]:
    """uvicorn options of the LAN-facing listener: httptools with a deadline and a byte cap for
    each request head (edge_api/guard.py), and the idle keep-alive timeout. The admin port is
    loopback and keeps uvicorn's defaults. (bench/lan_side.py measures with these too.)"""
    from edge_api.guard import guarded_protocol

    return {
        "http": guarded_protocol(config.header_timeout_s, config.max_header_bytes),
        "timeout_keep_alive": max(1, round(config.keep_alive_s)),
    }


def tablet_urls(
    tablet_url: str, advertisement: Advertisement | None, port: int, scheme: str = "http"
) -> list[str]:
    """Where tablets reach the box, best first: with mDNS, the advertised host name, then each
    advertised address (only addresses the tablet listener is bound to: see
    ``appliance.shell.mdns.advertised_addresses``); without, the tablet listener's own URL."""
    if advertisement is None:
        return [tablet_url]
    hosts = [advertisement.host_name.rstrip("."), *advertisement.addresses]
    return [http_url(scheme, host, port) for host in hosts]


def raise_open_file_limit() -> tuple[int, int]:
    """The soft limit on open files raised to the hard limit (every connection is a file: the default
    soft limit of 1024 would run out in a connection flood long before the per-address caps
    matter). The unit sets both to 65536 (LimitNOFILE=); by hand the hard limit is often higher
    than the soft one. Returns (soft, hard) as they are now; a refusal is logged, not fatal."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        log.info("open-file limit %d", soft)
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as exc:
        log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
        return soft, hard
    log.info("open-file limit raised from %d to %d", soft, hard)
    return hard, hard


class AlreadyRunning(DomainError):
    """Another daemon serves this data dir."""


def hold_data_dir(data_dir: Path) -> int:
    """Take the data dir for this daemon (an exclusive lock on ``daemon.lock``, held until the
    process ends, whatever way it ends); AlreadyRunning if another daemon holds it. Two daemons on
    one data dir would both answer tablets, on two ports, and overwrite each other's daemon.json."""
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise AlreadyRunning(
            f"another venuebox daemon (pid {holder}) is already running on {data_dir}: stop it first "
            "(`systemctl stop venuebox`), or give this one another --data-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    return fd


def runtime_info(config: Config) -> dict[str, Any] | None:
    """Where a running daemon listens (written at start, removed at clean stop), or None."""
    path = config.data_dir / RUNTIME_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _status_line(full: FullStatus, lan: str | None = None) -> str:
    """One line a tech reads in `systemctl status venuebox`; ``lan``: what mDNS is doing, if on."""
    snap, alerts = full
    t = snap.tablets
    frozen = f"FROZEN ({snap.freeze.reason})" if snap.freeze.frozen else "scoring open"
    serious = (("critical", alerts.critical), ("warning", alerts.warning))
    worst = next((f"{count} {s} alert(s)" for s, count in serious if count), "no alerts")
    return (
        f"{frozen}; tablets {t.online} online, {t.stale} stale, {t.offline} offline; "
        f"{snap.sheets.total} sheets; outbox {snap.outbox.records}; {worst}" + (f"; {lan}" if lan else "")
    )


def damaged_status_line(damage: DatabaseDamaged) -> str:
    """`systemctl status venuebox` once the database is found damaged."""
    return (
        f"DATABASE DAMAGED: {damage.path}; scoring refused, nothing more is stored: see "
        f'"{DAMAGED_DATABASE_SECTION}" in docs/operations.md'
    )


def full_status(conn: sqlite3.Connection, config: Config) -> FullStatus:
    """The status snapshot and the active alert counts by severity."""
    from appliance.core import status  # imported when first used: its imports would delay the start

    return status.snapshot(conn, config), active_counts(conn)


class Daemon:
    """One box process: servers, advertisement, watchdog, systemd integration."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store: Store | None = None
        self.servers: list[EmbeddedServer] = []
        self.advertisement: Advertisement | None = None
        self.probe = LoopLagProbe()
        self.runtime: dict[str, Any] = {}
        self.apps: tuple[Any, ...] = ()
        self.uplink: Any = None
        self._tablet_port = 0
        self._scheme = "https" if config.tls else "http"
        self.tls_identity: tls.TlsIdentity | None = None
        self.landing: Any = None  # what the plain-HTTP landing page shows (with TLS and http_port)
        self.last_status: FullStatus | None = None  # the last snapshot, for the systemd STATUS line
        # What the STATUS line says of mDNS: None (disabled), "announcing", "advertised", "failed".
        self.mdns_state: str | None = None
        self.mdns_error: str | None = None
        self._started_at = time.monotonic()
        self._advertised_after_s: float | None = None
        self._advertised_event: str | None = None
        self.connection_gate: Any = None  # open connections per client address on the LAN listeners
        self._stopping = asyncio.Event()

    def request_stop(self, reason: str) -> None:
        if not self._stopping.is_set():
            log.info("stopping: %s", reason)
            sdnotify.notify("STOPPING=1", f"STATUS=stopping ({reason})")
            self._stopping.set()

    async def run(self, on_ready: Any = None) -> None:
        config = self.config
        started = self._started_at = time.monotonic()
        lock_fd = hold_data_dir(config.data_dir)
        raise_open_file_limit()
        if os.environ.get(UNSAFE_SYNCHRONOUS_ENV):
            log.warning(
                "%s is set: the database runs with synchronous=NORMAL and a power cut LOSES acknowledged "
                "scores (a test of the power-cut harness only; never on a venue box)",
                UNSAFE_SYNCHRONOUS_ENV,
            )
        try:
            self.store = store = Store(config.db_path)
            # A damaged database is refused before anything listens (the CLI exits
            # EXIT_DATABASE_DAMAGED, which systemd does not restart). The whole quick_check, not only
            # the header and schema, since it is cheap at a venue's size: on a box holding 20,000
            # sheets (17 MB) it took 15-30 ms with the file in the page cache, 0.2 s read from disk.
            store.ensure_sound()
        except BaseException:
            if self.store is not None:
                self.store.close()
            os.close(lock_fd)
            raise
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signal.Signals(signum).name)
        scheduler = None
        server_tasks: list[asyncio.Task[Any]] = []
        background: list[asyncio.Task[Any]] = []
        try:
            box = store.query(get_box)
            try:
                # A personal-data key rotation that stopped half-way (a crash, a power cut): the
                # database's recorded key id decides whether it is finished or undone.
                if settled := data_key.settle(config.data_key_path, store):
                    log.warning("personal-data key rotation %s at start", settled)
            except (DomainError, OSError) as exc:  # scores come first: the box serves them anyway
                log.error("personal-data key: %s", getattr(exc, "detail", None) or exc)
            admin_token = read_secret(config.admin_token_path)
            identity = None
            if config.tls:
                if settled := tls.settle_rotation(config.data_dir, store):
                    log.warning("TLS certificate rotation %s at start", settled)
                # A box initialised before TLS existed gets its certificate now.
                try:
                    identity, created = tls.ensure_identity(config.data_dir, box["name"])
                except ValueError as exc:
                    raise DomainError(f"{exc}: make a new one with `venuebox tls rotate`") from None
                if created:
                    log.info("made the box's TLS certificate", extra={"fingerprint": identity.fingerprint})
            self.tls_identity = identity
            sockets = [
                bind(config.host, config.port, inheritable=True),
                bind(config.admin_host, config.admin_port, inheritable=True),
            ]
            serving = asyncio.Event()
            if config.mdns_enabled:
                # Started now, in the background: the name check runs on its own thread while the apps
                # are built, and probing waits until the listeners serve (``serving``). READY=1 does
                # not wait for any of it.
                self._advertised_event = box["event_id"]
                self.advertisement = Advertisement(
                    name=box["name"],
                    box_id=box["box_id"],
                    event_id=box["event_id"],
                    port=sockets[0].getsockname()[1],
                    interfaces=config.mdns_interfaces or None,
                    tls_fingerprint=identity.fingerprint if identity else None,
                    listen_host=sockets[0].getsockname()[0],
                )
                self.mdns_state = "announcing"
                background.append(asyncio.create_task(self._advertise(serving), name="venuebox-mdns"))
                await asyncio.sleep(0)  # the task hands the name check to its thread before the imports

            from appliance.core.backup import add_backup_jobs
            from appliance.core.status import gauges
            from edge_api.app import create_admin_app, create_app
            from edge_api.connections import ConnectionGate, gated_factory
            from edge_api.context import set_tablet_urls, set_tls_fingerprint
            from edge_api.landing import LandingInfo, create_landing_app
            from edge_api.metrics import Metrics
            from uplink.worker import UplinkWorker

            # The state gauges are read at scrape time (on the scraping thread, a few indexed reads).
            metrics = Metrics(snapshot=lambda: store.query(lambda c: gauges(c, config)))
            self.uplink = UplinkWorker(store, config, box["box_id"])
            # Records queued in this process (a sheet stored, an audit record) go out at once; the
            # worker's poll finds the ones other processes (the CLI) queue.
            loop = asyncio.get_running_loop()
            store.listen(outbox.QUEUED, lambda: loop.call_soon_threadsafe(self.uplink.wake))
            self.apps = apps = (
                create_app(store, config, box["box_id"], metrics),
                create_admin_app(
                    store, config, box["box_id"], admin_token, metrics, on_uplink_request=self.uplink.wake
                ),
            )
            lan_side = lan_server_options(config)
            if identity is not None:
                lan_side["ssl_certfile"] = str(identity.pem_path)
                lan_side["ssl_ciphers"] = tls.TLS12_CIPHERS
            served: list[tuple[Any, dict[str, Any]]] = [(apps[0], lan_side), (apps[1], {})]
            if identity is not None and config.http_port:
                self.landing = LandingInfo(box["name"], identity.fingerprint, identity.cert_path)
                sockets.append(bind(config.host, config.http_port, inheritable=True))
                served.append((create_landing_app(self.landing), {**lan_side, "ssl_certfile": None}))
            # One gate for the LAN-facing listeners (tablet port, landing page): an address's
            # connections count on both. The admin API is loopback and has none.
            gate = ConnectionGate(config.max_connections_per_address, metrics.connections_refused.inc)
            self.connection_gate = gate
            # The gate starts TLS itself, with a handshake deadline (uvicorn passes none: asyncio's
            # default is 60 s).
            gated = functools.partial(gated_factory, gate, handshake_timeout_s=config.tls_handshake_timeout_s)
            self.servers = [
                EmbeddedServer(server_config(app, **options), front=None if app is apps[1] else gated)
                for app, options in served
            ]
            server_tasks = [
                asyncio.create_task(server.serve(sockets=[sock]))
                for server, sock in zip(self.servers, sockets, strict=True)
            ]
            while not all(server.started for server in self.servers):
                if any(task.done() for task in server_tasks):
                    await asyncio.gather(*server_tasks)  # a server that could not start: its error propagates
                await asyncio.sleep(0.01)
            serving.set()

            self._tablet_port = sockets[0].getsockname()[1]
            own_url = socket_url(sockets[0], self._scheme)
            urls = tablet_urls(own_url, self.advertisement, self._tablet_port, self._scheme)
            for app in apps:
                set_tablet_urls(app, urls)
                set_tls_fingerprint(app, identity.fingerprint if identity else None)
            if self.landing is not None:
                self.landing.https_urls = urls

            self.probe.start()
            scheduler = build_scheduler(
                store,
                WatchdogSettings.from_config(config),
                self.probe,
                connection_floods=lambda: gate.floods(config.connection_flood_alert_s),
            )
            keys.ensure_box_keys(config)  # a box initialised before backups existed gets its keys now
            add_backup_jobs(scheduler, config, store)
            scheduler.start()
            background.append(asyncio.create_task(self.uplink.run(), name="venuebox-uplink"))
            background.append(asyncio.create_task(self._feed_systemd()))

            self.runtime = {
                "pid": os.getpid(),
                "box_id": box["box_id"],
                "tablet_url": socket_url(sockets[0], self._scheme),
                "tablet_urls": urls,
                "tls_fingerprint": identity.fingerprint if identity else None,
                "admin_url": socket_url(sockets[1]),
                "landing_url": socket_url(sockets[2]) if len(sockets) > 2 else None,
                "ready_after_s": round(time.monotonic() - started, 3),
                **self._mdns_runtime(),
            }
            _write_runtime(config.data_dir / RUNTIME_FILE, self.runtime)
            self.last_status = store.query(lambda c: full_status(c, config))
            sdnotify.notify("READY=1", "STATUS=" + self._status_line(self.last_status))
            log.info("ready", extra={k: v for k, v in self.runtime.items() if k != "pid"})
            if on_ready:
                on_ready(self.runtime)

            await self._stopping.wait()
        finally:
            await self._shutdown(scheduler, server_tasks, background)
            os.close(lock_fd)  # releases the data dir for the next daemon

    async def _shutdown(
        self, scheduler: Any, server_tasks: list[asyncio.Task[Any]], background: list[asyncio.Task[Any]]
    ) -> None:
        loop = asyncio.get_running_loop()
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        self.probe.stop()
        for task in background:
            task.cancel()
        for server in self.servers:
            server.should_exit = True
        # Servers stop accepting and finish what is in flight (appliance/web/server.py).
        await asyncio.gather(*server_tasks, return_exceptions=True)
        # Python 3.11's asyncio.wait_for can swallow a cancellation that lands as its inner call
        # completes (fixed in 3.12): a task caught that way would loop on and the daemon never exit
        # (seen: SIGTERM just after ready, while the first health write was in flight). Cancel
        # again until every background task has ended.
        pending = set(background)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1.0)
        if self.advertisement is not None:
            await self.advertisement.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        with contextlib.suppress(OSError):
            (self.config.data_dir / RUNTIME_FILE).unlink()
        if self.store is not None:
            # Last: every queued write committed, the WAL checkpointed, before the process exits.
            self.store.close()

    async def _feed_systemd(self) -> None:
        """WATCHDOG=1 only while the event loop runs (this task runs on it) and the database takes a
        write through the single writer; a hung daemon stops feeding and systemd restarts it."""
        assert self.store is not None
        interval = sdnotify.watchdog_interval_s() or self.config.status_interval_s
        while True:
            damage = self.store.damaged
            if damage is not None:
                # The box keeps answering (health says damaged, tablets keep their sheets, the console
                # shows the alert) and writes nothing more. A restart would not repair the file, and
                # start-up refuses it anyway: feed systemd while the event loop runs.
                with contextlib.suppress(Exception):
                    self.last_status = await self.store.read(lambda c: full_status(c, self.config))
                if self.probe.is_healthy(self.config.loop_lag_critical_s):
                    sdnotify.notify("WATCHDOG=1", "STATUS=" + damaged_status_line(damage))
                await asyncio.sleep(interval)
                continue
            try:
                snap = await asyncio.wait_for(
                    self.store.write(lambda c: full_status(c, self.config)), timeout=max(interval, 1.0)
                )
            except Exception as exc:  # any failure means: do not feed
                log.warning("health: database did not answer (%s); not feeding the systemd watchdog", exc)
                sdnotify.notify(f"STATUS=database not answering: {exc}")
            else:
                self.last_status = snap
                await self._follow_event(snap[0])
                self._follow_tablet_urls()
                await self._follow_certificate()
                if self.probe.is_healthy(self.config.loop_lag_critical_s):
                    sdnotify.notify("WATCHDOG=1", "STATUS=" + self._status_line(snap))
            await asyncio.sleep(interval)

    def _status_line(self, full: FullStatus) -> str:
        return _status_line(full, self._mdns_phrase())

    def _mdns_phrase(self) -> str | None:
        """The STATUS line's words for mDNS (None when it is disabled)."""
        advertisement = self.advertisement
        if self.mdns_state is None or advertisement is None:
            return None
        if self.mdns_state == "advertised":
            host = advertisement.host_name.rstrip(".")
            return f"advertised on the LAN as {advertisement.instance_name!r} ({host})"
        if self.mdns_state == "failed":
            return f"NOT advertised on the LAN (mDNS: {self.mdns_error}; trying again)"
        return "announcing on the LAN (mDNS)"

    def _mdns_runtime(self) -> dict[str, Any]:
        """daemon.json's mDNS keys: the name (the one being claimed until advertised), the state."""
        advertisement = self.advertisement
        return {
            "mdns_name": advertisement.instance_name if advertisement else None,
            "mdns_state": self.mdns_state,
            "mdns_error": self.mdns_error,
            "mdns_advertised_after_s": self._advertised_after_s,
        }

    async def _advertise(self, serving: asyncio.Event) -> None:
        """Start the mDNS advertisement (probing waits for ``serving``); on failure raise an alert,
        say so in the STATUS line and try again (2 s, 4 s, ... 60 s apart) until it works."""
        advertisement = self.advertisement
        assert advertisement is not None and self.store is not None
        delay = MDNS_RETRY_FIRST_S
        failed_before = False
        while True:
            try:
                await advertisement.start(serving)
            except Exception as exc:
                error = str(exc) or type(exc).__name__
                log.error("mDNS: could not advertise the box (%s); trying again in %g s", error, delay)
                self._mdns_changed("failed", error)
                if not failed_before:
                    failed_before = True
                    await self._alert_mdns(error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MDNS_RETRY_MAX_S)
                continue
            break
        self._advertised_after_s = round(time.monotonic() - self._started_at, 3)
        log.info(
            "mDNS: advertised %.3f s after start",
            self._advertised_after_s,
            extra={"mdns_name": advertisement.instance_name, "host": advertisement.host_name},
        )
        self._mdns_changed("advertised", None)
        self._follow_tablet_urls()  # a clash with another box renamed it
        try:
            await self.store.write(lambda c: clear_alert(c, MDNS_FINGERPRINT))
        except Exception as exc:
            log.warning("mDNS: could not clear the alert: %s", exc)

    def _mdns_changed(self, state: str, error: str | None) -> None:
        """A new mDNS state: the STATUS line and daemon.json say it at once."""
        self.mdns_state, self.mdns_error = state, error
        if self.last_status is not None:
            sdnotify.notify("STATUS=" + self._status_line(self.last_status))
        if self.runtime:
            self.runtime.update(self._mdns_runtime())
            self._rewrite_runtime()

    async def _alert_mdns(self, error: str) -> None:
        assert self.store is not None
        detail = (
            f"mDNS could not start: {error}. Tablets cannot find the box by its name on the venue "
            "network; the box keeps serving scores, at its address, and tries again by itself. Check "
            "that the box is connected to the venue network (and mdns_interfaces in venuebox.toml)."
        )
        try:
            await self.store.write(
                lambda c: raise_alert(
                    c, MDNS_FINGERPRINT, "warning", "The box is not advertised on the LAN", detail
                )
            )
        except Exception as exc:
            log.warning("mDNS: could not raise the alert: %s", exc)

    async def _follow_event(self, snap: BoxStatus) -> None:
        """An import (by the CLI, another process) changes the event: the TXT record follows."""
        event_id = snap.event.id if snap.event else None
        if self.advertisement is not None and event_id != self._advertised_event:
            self._advertised_event = event_id
            await self.advertisement.update_event(event_id)

    def _follow_tablet_urls(self) -> None:
        """Advertised addresses change (Wi-Fi reconnects, DHCP): pairing URLs and daemon.json follow."""
        if self.advertisement is None or "tablet_url" not in self.runtime:
            return
        from edge_api.context import set_tablet_urls

        urls = tablet_urls(self.runtime["tablet_url"], self.advertisement, self._tablet_port, self._scheme)
        if urls == self.runtime.get("tablet_urls"):
            return
        for app in self.apps:
            set_tablet_urls(app, urls)
        if self.landing is not None:
            self.landing.https_urls = urls
        self.runtime["tablet_urls"] = urls
        self._rewrite_runtime()

    async def _follow_certificate(self) -> None:
        """`venuebox tls rotate` replaced the certificate: new handshakes present the new one (the
        listening socket stays), and the TXT record, pairing answers and landing page follow."""
        if self.tls_identity is None or not self.servers:
            return
        try:
            identity = tls.load_identity(self.config.data_dir)
        except (OSError, ValueError) as exc:
            log.warning("cannot read the TLS certificate (%s); still serving the one loaded", exc)
            return
        if identity.fingerprint == self.tls_identity.fingerprint:
            return
        from edge_api.context import set_tls_fingerprint

        context = self.servers[0].config.ssl
        if context is None:
            return
        context.load_cert_chain(str(identity.pem_path))
        self.tls_identity = identity
        for app in self.apps:
            set_tls_fingerprint(app, identity.fingerprint)
        if self.landing is not None:
            self.landing.fingerprint = identity.fingerprint
        if self.advertisement is not None:
            await self.advertisement.update_tls(identity.fingerprint)
        self.runtime["tls_fingerprint"] = identity.fingerprint
        self._rewrite_runtime()
        log.info("serving a new TLS certificate", extra={"fingerprint": identity.fingerprint})

    def _rewrite_runtime(self) -> None:
        try:
            _write_runtime(self.config.data_dir / RUNTIME_FILE, self.runtime)
        except OSError as exc:  # the daemon keeps serving; only the CLI's view of it is stale
            log.warning("could not update %s: %s", RUNTIME_FILE, exc)


def _write_runtime(path: Path, runtime: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(runtime).encode(), 0o600)


def run(config: Config, on_ready: Any = None) -> None:
    """Run the daemon until SIGTERM/SIGINT; returns after a clean stop (exit status 0)."""

    async def main() -> None:
        await Daemon(config).run(on_ready)

    _run_loop(main)


def run_demo(config: Config, tablets: int, on_ready: Any = None, pace_s: float = 6.0) -> Any:
    """The daemon plus ``tablets`` simulated judges scoring against it, until Ctrl-C; returns the
    simulation's report (the simulated tablets' queues stay in the data dir, as a real tablet's
    would)."""
    from appliance.tablet_client.simulator import run_simulation

    reports: list[Any] = []

    async def main() -> None:
        daemon = Daemon(config)
        ready = asyncio.Event()

        def became_ready(runtime: dict[str, Any]) -> None:
            if on_ready:
                on_ready(runtime)
            ready.set()

        daemon_task = asyncio.create_task(daemon.run(became_ready))
        ready_wait = asyncio.create_task(ready.wait())
        await asyncio.wait({daemon_task, ready_wait}, return_when=asyncio.FIRST_COMPLETED)
        if daemon_task.done():
            ready_wait.cancel()
            await daemon_task  # it failed to start: its error propagates
            return
        token = read_secret(config.admin_token_path)
        simulation = asyncio.create_task(
            run_simulation(
                daemon.runtime["admin_url"],
                token,
                tablets,
                tablet_url=daemon.runtime["tablet_url"],
                fingerprint=daemon.runtime["tls_fingerprint"],
                pace_s=pace_s,
                state_dir=config.data_dir / "simulated-tablets",
            )
        )
        await daemon_task
        simulation.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            reports.append(await simulation)

    _run_loop(main)
    return reports[0] if reports else None


def _run_loop(main: Any) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
