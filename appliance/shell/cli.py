"""The `venuebox` command: a thin layer over library functions (the sqlite-utils shape).

Each command opens the data dir's store, calls one function that a test could call, and prints.
Errors a person can act on are one line on stderr and exit status 1; usage errors exit 2; a damaged
database exits EXIT_DATABASE_DAMAGED.
Heavy imports live inside the commands: start-up time matters on a Pi.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from appliance.core.box import FREEZE_CATEGORIES
from appliance.core.config import Config, ConfigError, load_config, resolve_data_dir
from appliance.shared.errors import DatabaseDamaged, DomainError
from appliance.shared.secrets_files import InsecureSecretFile, write_secret
from appliance.shared.tablet_text import printable
from appliance.shell.logs import setup_logging

T = TypeVar("T")

# Every command exits with this when the database file is damaged, `venuebox run` included:
# systemd/venuebox.service lists it in RestartPreventExitStatus=, so systemd does not restart a box
# that cannot store a score over and over (docs/operations.md, "The SD card died / the database is damaged").
EXIT_DATABASE_DAMAGED = 3


class VenueboxGroup(click.Group):
    """Turns every error a person can act on into one readable line and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DatabaseDamaged as exc:
            click.echo(f"venuebox: error: {exc.detail}", err=True)
            ctx.exit(EXIT_DATABASE_DAMAGED)
        except (DomainError, ConfigError, InsecureSecretFile, ValueError, OSError, sqlite3.Error) as exc:
            detail = getattr(exc, "detail", None) or str(exc)
            click.echo(f"venuebox: error: {detail}", err=True)
            problems = getattr(exc, "problems", None)
            if problems:
                for problem in problems:
                    click.echo(problem, err=True)
            ctx.exit(1)


def _config(ctx: click.Context, **overrides: Any) -> Config:
    config = load_config(ctx.obj["data_dir"], overrides=overrides)
    _keep_data_dir_owner(ctx, config.data_dir)
    return config


def _named_data_dir(ctx: click.Context) -> tuple[Path, str] | None:
    """The data dir the tech named, and how: ``--data-dir``, else ``$VENUEBOX_DATA_DIR``, else
    ``$STATE_DIRECTORY`` (systemd); None when none is named (not the ``./venuebox-data`` fallback).
    For the commands whose data dir is optional (`restore`, `recover`) or has its own default (`demo`):
    they honour the environment exactly as every other command does."""
    if ctx.obj["data_dir"] is not None:
        return ctx.obj["data_dir"], "--data-dir"
    for var in ("VENUEBOX_DATA_DIR", "STATE_DIRECTORY"):
        if os.environ.get(var):
            return resolve_data_dir(None, os.environ), f"${var}"
    return None


def _keep_data_dir_owner(ctx: click.Context, data_dir: Path) -> None:
    """A tech runs `sudo venuebox freeze ...` on a data dir that belongs to the service's user;
    files root creates there (the database's -wal and -shm while the service is stopped) would be
    unreadable to the service. When the command ends, hand anything root made back to the owner."""
    if os.geteuid() != 0 or not data_dir.exists():
        return
    owner = data_dir.stat()
    if owner.st_uid == 0:
        return

    def hand_back() -> None:
        for path in [data_dir, *data_dir.rglob("*")]:
            try:
                if path.lstat().st_uid != owner.st_uid:
                    os.lchown(path, owner.st_uid, owner.st_gid)
            except FileNotFoundError:
                continue  # a -journal or temp file that came and went

    ctx.call_on_close(hand_back)


def _with_store(config: Config, fn: Callable[[Any], T]) -> T:
    from appliance.core.storage import Store

    if not config.db_path.exists():
        raise DomainError(f"no box in {config.data_dir}: run `venuebox init` first (or pass --data-dir)")
    with Store(config.db_path) as store:
        return fn(store)


def _print_json(value: Any) -> None:
    # json.dumps escapes C0 controls but leaves C1 and bidi overrides raw; its own new lines are
    # the only ones outside strings, so each line gets the same \uXXXX escapes (still valid JSON).
    text = json.dumps(value, indent=2, ensure_ascii=False)
    click.echo("\n".join(printable(line) for line in text.split("\n")))


@click.group(cls=VenueboxGroup)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the box keeps its state (default: $VENUEBOX_DATA_DIR, $STATE_DIRECTORY, ./venuebox-data).",
)
@click.version_option(package_name="venuebox")
@click.pass_context
def cli(ctx: click.Context, data_dir: Path | None) -> None:
    """venuebox: the on-site scoring box."""
    ctx.ensure_object(dict)
    ctx.obj["data_dir"] = data_dir


@cli.command()
@click.option("--name", help="Display name on the LAN (mDNS instance name), e.g. 'Main stage box'.")
@click.pass_context
def init(ctx: click.Context, name: str | None) -> None:
    """Create the data dir: database, box identity, admin token (0600), personal-data key (0600)."""
    from provisioning.first_boot import init_box

    result = init_box(_config(ctx), name)
    box = result["box"]
    what = ", ".join(result["created"]) or "nothing (already initialised)"
    click.echo(f"box {box['box_id']} ({box['name']}) in {result['data_dir']}: created {what}")


@cli.group()
def event() -> None:
    """The event on this box."""


@event.command("import")
@click.argument("package", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the import report as JSON.")
@click.pass_context
def event_import(ctx: click.Context, package: Path, as_json: bool) -> None:
    """Import an event package (folder or .zip): all or nothing."""
    from appliance.core import data_key
    from provisioning.event_import import import_package, load_package

    config = _config(ctx)
    loaded = load_package(package)
    # The key is chosen inside the transaction: the one the database names (a rotation may be running).
    seal = data_key.with_key(config.data_key_path, lambda conn, key: import_package(conn, loaded, key, "cli"))
    report = _with_store(config, lambda store: store.write_sync(seal))
    if as_json:
        _print_json(report.as_dict())
        return
    one = {"sessions": "session", "entries": "entry", "judges": "judge", "criteria": "criterion"}
    counts = ", ".join(f"{n} {one.get(what, what) if n == 1 else what}" for what, n in report.counts.items())
    click.echo(f"imported {report.event_id} (snapshot {report.snapshot_id[:12]}): {counts}")
    for line in report.added:
        click.echo(f"  added: {line}")
    for line in report.removed:
        click.echo(f"  removed: {line}")
    for line in report.refused:
        click.echo(f"  refused: {line}")


@cli.group(invoke_without_command=True)
@click.pass_context
def pair(ctx: click.Context) -> None:
    """Pairing codes for judges' tablets."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@pair.command("new")
@click.option("--judge", "judge_id", required=True, help="Judge id from judges.csv, e.g. J1.")
@click.option(
    "--ttl",
    "ttl_s",
    type=int,
    default=None,
    help="Seconds the code stays valid (default 600; at most pairing_code_max_ttl_s, 24 h by default).",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def pair_new(ctx: click.Context, judge_id: str, ttl_s: int | None, as_json: bool) -> None:
    """Make a one-time pairing code for a judge (printed on the last line)."""
    from appliance.core import tls
    from appliance.core.keys import pairing_key
    from appliance.core.pairing import create_code

    config = _config(ctx)
    ttl = ttl_s or config.pairing_code_ttl_s
    cap = config.pairing_code_max_ttl_s

    def make(store: Any) -> dict[str, Any]:
        key = pairing_key(config)
        return store.write_sync(lambda conn: create_code(conn, judge_id, ttl, "cli", key=key, max_ttl_s=cap))

    code = _with_store(config, make)
    tablet_url, fingerprint = _pairing_target(config)
    code = {
        **code,
        "url": tls.pairing_url(tablet_url, code["code"], fingerprint),
        "tls_fingerprint": fingerprint,
    }
    if as_json:
        _print_json(code)
        return
    click.echo(f"pairing code for {code['judge']['name']} ({judge_id}), valid until {code['expires_at']}:")
    click.echo(f"  tablet opens  {code['url']}")
    if fingerprint:
        click.echo(
            f"  certificate   {tls.short_fingerprint(fingerprint)}  (the judge compares it on the tablet)"
        )
    click.echo(code["code"])


def _pairing_target(config: Config) -> tuple[str, str | None]:
    """Where a tablet reaches the box and the certificate fingerprint it must see: the running
    daemon's (its advertised name first), else what the config and the certificate on disk say."""
    from appliance.core import tls
    from appliance.shell.daemon import runtime_info
    from edge_api.context import configured_tablet_url

    daemon = runtime_info(config)
    if daemon and daemon.get("tablet_urls"):
        return daemon["tablet_urls"][0], daemon.get("tls_fingerprint")
    fingerprint = None
    if config.tls:
        with contextlib.suppress(OSError, ValueError):
            fingerprint = tls.load_identity(config.data_dir).fingerprint
    return configured_tablet_url(config), fingerprint


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def devices(ctx: click.Context, as_json: bool) -> None:
    """List paired tablets (and `devices revoke ID`)."""
    if ctx.invoked_subcommand is not None:
        return
    from appliance.core.devices import list_devices

    rows = _with_store(_config(ctx), lambda store: store.query(list_devices))
    if as_json:
        _print_json(rows)
        return
    if not rows:
        click.echo("no paired tablets")
        return
    for row in rows:
        state = "revoked" if row["revoked_at"] else f"last seen {row['last_seen_at'] or 'never'}"
        # The name is what the tablet said when it paired (an old row may hold escape sequences).
        click.echo(f"{row['device_id']}  {row['judge_id']:<6} {printable(row['name'])[:24]:<24} {state}")


@devices.command("revoke")
@click.argument("device_id")
@click.pass_context
def devices_revoke(ctx: click.Context, device_id: str) -> None:
    """Revoke a tablet's token at once (it must pair again)."""
    from appliance.core.devices import revoke

    row = _with_store(
        _config(ctx), lambda store: store.write_sync(lambda conn: revoke(conn, device_id, "cli"))
    )
    click.echo(f"revoked {row['device_id']} ({row['judge_id']}, {printable(row['name'])})")


@cli.command()
@click.option("--reason", required=True, help="Shown to every judge, e.g. 'dispute on entry 142'.")
@click.option(
    "--category",
    type=click.Choice(FREEZE_CATEGORIES),
    default="other",
    show_default=True,
    help="Why, for the console and the audit log (judges see only the reason).",
)
@click.pass_context
def freeze(ctx: click.Context, reason: str, category: str) -> None:
    """Halt all competition writes (takes effect on a running box at once)."""
    from appliance.core.box import freeze as do_freeze

    state = _with_store(
        _config(ctx),
        lambda store: store.write_sync(lambda conn: do_freeze(conn, reason, "cli", category=category)),
    )
    click.echo(f"FROZEN ({state['freeze_category']}) since {state['frozen_at']}: {state['freeze_reason']}")


@cli.command()
@click.pass_context
def unfreeze(ctx: click.Context) -> None:
    """Resume competition writes."""
    from appliance.core.box import unfreeze as do_unfreeze

    _with_store(_config(ctx), lambda store: store.write_sync(lambda conn: do_unfreeze(conn, "cli")))
    click.echo("unfrozen: scoring resumes")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """A summary of the box: event, freeze, tablets, sheets, outbox."""
    from appliance.core.status import snapshot
    from appliance.shell.daemon import runtime_info

    config = _config(ctx)

    def read(store: Any) -> dict[str, Any]:
        store.ensure_sound()  # a damaged file is said whatever pages the summary happens to read
        return store.query(lambda conn: snapshot(conn, config))

    snap = _with_store(config, read)
    snap["daemon"] = runtime_info(config)
    if as_json:
        _print_json(snap)
        return
    box, ev, fr = snap["box"], snap["event"], snap["freeze"]
    click.echo(f"box      {box['id']} ({box['name']}), venuebox {box['version']}")
    daemon = snap["daemon"]
    click.echo(f"daemon   {'running, tablets at ' + daemon['tablet_url'] if daemon else 'not running'}")
    if daemon and daemon.get("tls_fingerprint"):
        from appliance.core.tls import grouped

        click.echo(f"tls      fingerprint {grouped(daemon['tls_fingerprint'])}")
    click.echo(f"event    {ev['id'] + ' - ' + ev['name'] if ev else 'none imported'}")
    click.echo(f"freeze   {'FROZEN: ' + fr['reason'] if fr['frozen'] else 'not frozen'}")
    t = snap["tablets"]
    click.echo(f"tablets  {t['online']} online, {t['stale']} stale, {t['offline']} offline")
    s = snap["sheets"]
    click.echo(f"sheets   {s['total']} stored, {s['last_5_min']} in the last 5 min")
    click.echo(f"outbox   {snap['outbox']['records']} records waiting")
    if snap.get("recovery"):
        for line in _recovery_lines(snap["recovery"]):
            click.echo(line)


def _recovery_lines(rec: dict[str, Any]) -> list[str]:
    """What `venuebox status` says of the recovery that built this data dir."""
    got = rec["sheets"]
    lines = [
        f"recovery {rec['at']} from {rec['snapshot']}: {got['snapshot']} sheets from the snapshot, "
        f"{got['salvage']} salvaged, {got['cloud']} from the cloud; {rec['since']} stored since "
        "(tablets sending back what they kept, and new scores)"
    ]
    for source in ("salvage", "cloud"):
        if rec[source]["state"] != "used":
            lines.append(f"         {source} {rec[source]['state']}: {rec[source]['detail']}")
    missing = rec["missing_sheet_ids"]
    if missing or rec["missing_unnamed"]:
        parts = []
        if missing:
            parts.append(f"{len(missing)} sheet(s) seen but not restorable: {', '.join(missing[:5])}")
        if rec["missing_unnamed"]:
            parts.append(
                f"{rec['missing_unnamed']} place(s) of the old ledger (it reached seq {rec['known_head']}) "
                "that no source could name (a sheet a tablet sent back since is counted in 'stored since', "
                "not here)"
            )
        lines.append(f"missing  {'; '.join(parts)}")
    else:
        lines.append("missing  none known")
    return lines


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def verify(ctx: click.Context, as_json: bool) -> None:
    """Check the ledger and audit hash chains; exits 1 naming the first altered row."""
    from appliance.core.chain import ChainsReport, verify_chains

    def read(store: Any) -> ChainsReport:
        store.ensure_sound()  # the file first: chains read from a damaged file prove nothing
        return store.query(verify_chains)

    report = _with_store(_config(ctx), read)
    if as_json:
        _print_json([r.__dict__ | {"ok": r.ok} for r in report.chains])
    else:
        for r in report.chains:
            if r.ok:
                click.echo(f"{r.table}: {r.rows} rows, chain intact (head {r.head_hash[:16]})")
            else:
                click.echo(f"{r.table}: BROKEN at row {r.first_bad_seq}: {r.problem}", err=True)
    if not report.ok:
        sys.exit(1)


@cli.command("run")
@click.option("--host", default=None, help="Tablet API address (default 0.0.0.0).")
@click.option("--port", type=int, default=None, help="Tablet API port (default 8080; 0 = any free port).")
@click.option("--admin-port", type=int, default=None, help="Admin API port on loopback (default 8081).")
@click.option("--no-mdns", is_flag=True, help="Do not advertise the box on the LAN.")
@click.pass_context
def run_daemon(
    ctx: click.Context, host: str | None, port: int | None, admin_port: int | None, no_mdns: bool
) -> None:
    """Run the appliance (what systemd starts): tablet and admin APIs, mDNS, health watchdog."""
    from appliance.shell.daemon import run

    overrides: dict[str, Any] = {"host": host, "port": port, "admin_port": admin_port}
    if no_mdns:
        overrides["mdns_enabled"] = False
    config = _config(ctx, **overrides)
    if not config.db_path.exists():
        raise DomainError(f"no box in {config.data_dir}: run `venuebox init` first (or pass --data-dir)")
    setup_logging(os.environ.get("VENUEBOX_LOG_LEVEL", "INFO"))
    run(
        config,
        on_ready=lambda rt: click.echo(
            f"venuebox running: tablets {rt['tablet_url']}, admin {rt['admin_url']}", err=True
        ),
    )


# `serve` was the name before the daemon existed: kept as an alias, so scripts and units that use it
# keep working, and said to be one in `venuebox --help` and `venuebox serve --help`.
serve_alias = copy.copy(run_daemon)
serve_alias.name = "serve"
serve_alias.help = f"Alias of `venuebox run` (its old name; the same command and options). {run_daemon.help}"
serve_alias.short_help = "Alias of `run` (its old name)."
cli.add_command(serve_alias)


@cli.command()
@click.option("--tablets", type=int, default=8, show_default=True, help="How many simulated judges.")
@click.option("--seconds", type=float, default=None, help="Stop after this long (default: until Ctrl-C).")
@click.option("--pace", "pace_s", type=float, default=20.0, show_default=True, help="Seconds between sheets.")
@click.option("--dropout", type=float, default=0.05, show_default=True, help="Chance a tablet drops off.")
@click.option("--url", "tablet_url", default=None, help="Tablet API URL (default: find the box by mDNS).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def simulate(
    ctx: click.Context,
    tablets: int,
    seconds: float | None,
    pace_s: float,
    dropout: float,
    tablet_url: str | None,
    as_json: bool,
) -> None:
    """Simulated judges' tablets against a running box: pair (through the admin API), score, heartbeat,
    drop off the network now and then, honour freeze."""
    from appliance.shared.secrets_files import read_secret
    from appliance.shell.daemon import runtime_info
    from appliance.tablet_client.simulator import run_simulation_sync

    if tablets < 1:
        raise DomainError("--tablets must be at least 1")
    config = _config(ctx)
    runtime = runtime_info(config)
    admin_url = runtime["admin_url"] if runtime else config.admin_url
    import httpx

    try:
        report = run_simulation_sync(
            admin_url,
            read_secret(config.admin_token_path),
            tablets,
            tablet_url=tablet_url,
            seconds=seconds,
            pace_s=pace_s,
            dropout=dropout,
            # The box on this data dir: its tablets pin the certificate it serves.
            fingerprint=(runtime or {}).get("tls_fingerprint"),
        )
    except httpx.HTTPError as exc:
        raise DomainError(
            f"cannot reach the box's admin API at {admin_url} ({exc}): is `venuebox run` running?"
        ) from None
    if as_json:
        _print_json(report.as_dict())
    else:
        click.echo(report.summary())


@cli.command()
@click.option(
    "--theme",
    default=None,
    help="Textual theme, e.g. textual-light for a light terminal (default textual-dark; ctrl+p changes it).",
)
@click.pass_context
def console(ctx: click.Context, theme: str | None) -> None:
    """The venue console: a full-screen view of the running box (keys: ? for help, f to freeze)."""
    from textual.theme import BUILTIN_THEMES

    from tui.app import ConsoleApp
    from tui.client import AdminClient

    if theme is not None and theme not in BUILTIN_THEMES:
        raise click.ClickException(f"no theme {theme!r}: choose one of {', '.join(sorted(BUILTIN_THEMES))}")
    config = load_config(ctx.obj["data_dir"])
    if not config.admin_token_path.exists():
        raise click.ClickException(
            f"no box in {config.data_dir} (no admin.token): pass --data-dir, or run `venuebox init` first"
        )
    ConsoleApp(AdminClient(config), theme=theme).run()


@cli.command()
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--tablets", type=int, default=12, show_default=True, help="Simulated judges scoring.")
@click.option("--fresh", is_flag=True, help="Start from an empty demo data dir.")
@click.pass_context
def demo(ctx: click.Context, port: int, tablets: int, fresh: bool) -> None:
    """A demo box: the shipped sample event, the daemon, simulated judges scoring; Ctrl-C stops all."""
    import shutil

    from appliance.shell.daemon import run_demo
    from provisioning.demo import prepare_demo

    named = _named_data_dir(ctx)
    data_dir = named[0] if named else Path("venuebox-demo")
    _refuse_a_real_box(data_dir, named[1] if named else None)
    if fresh and data_dir.exists():
        shutil.rmtree(data_dir)
    config = load_config(data_dir, overrides={"port": port})
    codes = prepare_demo(config)
    setup_logging(os.environ.get("VENUEBOX_LOG_LEVEL", "WARNING"))
    receiver, receiver_url = _demo_receiver(config)
    ctx.call_on_close(lambda: _stop_process(receiver))

    def ready(runtime: dict[str, Any]) -> None:
        click.echo(f"venuebox demo: data dir {config.data_dir}")
        click.echo(f"  tablet API  {runtime['tablet_url']}/api/v1/health   (OpenAPI at /schema/openapi.json)")
        if runtime.get("tls_fingerprint"):
            from appliance.core.tls import grouped

            click.echo(f"  certificate {grouped(runtime['tls_fingerprint'])} (self-signed; tablets pin it)")
        click.echo(f"  judge app   {runtime['tablet_url']}/   (a tablet's or phone's browser; codes below)")
        click.echo(
            f"  admin API   {runtime['admin_url']}/admin/v1/status (token in {config.admin_token_path})"
        )
        if runtime.get("mdns_name"):
            click.echo(f"  on the LAN  {runtime['mdns_name']} (_venuebox._tcp)")
        if receiver_url:
            click.echo(
                f"  uplink      to the reference receiver at {receiver_url} "
                f"(data in {config.data_dir / 'receiver'})"
            )
        status_cmd = f"venuebox --data-dir {config.data_dir} status"
        click.echo(f"  {tablets} simulated judges are scoring; `{status_cmd}` shows it")
        click.echo("  pairing codes for your own tablet (valid 1 hour):")
        for code in codes:
            click.echo(f"    {code['judge']['id']:<4} {code['judge']['name']:<24} {code['code']}")
        click.echo(f"  venue console: `venuebox --data-dir {config.data_dir} console` in another terminal")
        click.echo("  Ctrl-C stops the box.")

    report = run_demo(config, tablets, on_ready=ready)
    if report is not None:
        click.echo(report.summary())


def _refuse_a_real_box(data_dir: Path, named_by: str | None) -> None:
    """The demo's simulated judges score into the box they run on, and --fresh deletes it: a data dir
    that holds a box the demo did not make (the one $VENUEBOX_DATA_DIR names for every command, say)
    is refused before anything is touched."""
    from provisioning.demo import DEMO_BOX_NAME

    database = data_dir / "venuebox.sqlite"
    if not data_dir.exists() or (not database.exists() and not any(data_dir.iterdir())):
        return
    name = _box_at(database)[1]
    if name == DEMO_BOX_NAME:
        return
    what = f"the box {name!r}" if name else "files that are not a demo's"
    raise DomainError(
        f"{data_dir} ({named_by or 'the demo default'}) holds {what}: the demo scores with simulated "
        "judges and --fresh deletes its data dir, so it runs only on a demo's; give it another "
        "--data-dir (a new folder)"
    )


def _demo_receiver(config: Config) -> tuple[Any, str | None]:
    """The demo's cloud: a reference receiver process on loopback (its data in the demo data dir),
    the box's uplink pointed at it. A box whose uplink is set by config keys keeps its own."""
    import subprocess
    import time

    from appliance.core.box import get_box
    from appliance.core.storage import Store
    from appliance.core.uplink_state import configure_target
    from appliance.shared.times import utcnow
    from uplink.receiver_store import add_box, load_boxes, runtime_info

    if config.uplink_url:
        return None, None
    receiver_dir = config.data_dir / "receiver"
    runtime = receiver_dir / "receiver.json"
    runtime.unlink(missing_ok=True)
    receiver_dir.mkdir(parents=True, exist_ok=True)
    log = (receiver_dir / "receiver.log").open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appliance",
            "ingest-server",
            "run",
            "--data-dir",
            str(receiver_dir),
            "--port",
            "0",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 15
    while (info := runtime_info(receiver_dir)) is None or info["pid"] != process.pid:
        if process.poll() is not None or time.monotonic() > deadline:
            _stop_process(process)
            click.echo(
                f"venuebox demo: the reference receiver did not start (see {receiver_dir}/receiver.log)"
            )
            return None, None
        time.sleep(0.05)
    with Store(config.db_path) as store:
        box_id = store.query(get_box)["box_id"]
        token = load_boxes(receiver_dir).get(box_id) or add_box(receiver_dir, box_id)
        write_secret(config.uplink_token_path, token)
        store.write_sync(
            lambda conn: configure_target(
                conn, info["url"], config.uplink_token_path.resolve(), None, "demo", utcnow()
            )
        )
    return process, info["url"]


def _stop_process(process: Any) -> None:
    import subprocess

    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@cli.group("tls")
def tls_group() -> None:
    """The box's TLS certificate (tablets pin its fingerprint): show it, rotate it."""


@tls_group.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def tls_show(ctx: click.Context, as_json: bool) -> None:
    """The certificate tablets pin: fingerprint (compare it on a tablet), names, addresses, validity."""
    from appliance.core import tls
    from appliance.shell.daemon import runtime_info

    config = _config(ctx)
    try:
        identity = tls.load_identity(config.data_dir)
    except FileNotFoundError:
        raise click.ClickException("this box has no TLS certificate yet: run `venuebox init`") from None
    except ValueError as exc:
        raise click.ClickException(f"{exc}; make a new one with `venuebox tls rotate`") from None
    daemon = runtime_info(config) or {}
    info = {**identity.as_dict(), "enabled": config.tls, "served": daemon.get("tls_fingerprint")}
    if as_json:
        _print_json(info)
        return
    click.echo(f"fingerprint  {info['fingerprint_groups']}")
    click.echo(f"             (sha256 {identity.fingerprint})")
    click.echo(f"names        {', '.join(identity.names)}")
    click.echo(f"addresses    {', '.join(identity.addresses)}")
    click.echo(f"valid        {identity.not_before} to {identity.not_after}")
    click.echo(f"certificate  {identity.cert_path}")
    if not config.tls:
        click.echo("TLS is off (tls = false): tablets talk plain HTTP")
    elif daemon and daemon.get("tls_fingerprint") not in (None, identity.fingerprint):
        click.echo("the running box still serves the previous certificate; it switches within seconds")


@tls_group.command("rotate")
@click.option(
    "--address",
    "addresses",
    multiple=True,
    help="An address to name in the certificate (repeatable); default: the box's current addresses.",
)
@click.pass_context
def tls_rotate(ctx: click.Context, addresses: tuple[str, ...]) -> None:
    """A new key and certificate. Tablets that pinned the old one refuse the box until re-paired."""
    import ipaddress

    from appliance.core import tls
    from appliance.core.box import get_box

    config = _config(ctx)
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise click.ClickException(f"--address {address!r} is not an IP address") from None
    identity = _with_store(
        config,
        lambda store: tls.rotate(
            config.data_dir,
            store.query(get_box)["name"],
            list(addresses) if addresses else None,
            store,
            "cli",
        ),
    )
    click.echo(f"new certificate, fingerprint {tls.grouped(identity.fingerprint)}")
    click.echo(f"names {', '.join(identity.names)}; addresses {', '.join(identity.addresses)}")
    click.echo(
        "a running box serves it within seconds; tablets that pinned the old one refuse it until "
        "they are paired again (compare this fingerprint on each tablet)"
    )


@cli.group()
def uplink() -> None:
    """The cloud uplink: configure, check, status, sync now, retry quarantined records."""


@uplink.command("configure")
@click.option("--url", required=True, help="The receiver, e.g. https://cloud.example.org (no token in it).")
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="A file holding the uplink token the receiver issued for this box (copied to the data dir, 0600).",
)
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A CA bundle (PEM) to trust for the receiver's TLS certificate, for a private CA.",
)
@click.option(
    "--insecure-http",
    is_flag=True,
    help="Allow an http:// URL to another machine: the token and the scores then cross the network "
    "in the clear. (http:// to this machine, loopback, is always allowed.)",
)
@click.pass_context
def uplink_configure(
    ctx: click.Context, url: str, token_file: Path, ca_file: Path | None, insecure_http: bool
) -> None:
    """Set where the outbox goes; takes effect on a running box within a second."""
    import hashlib

    from appliance.core.uplink_state import check_url, configure_target
    from appliance.shared.times import utcnow
    from uplink.worker import load_ca_file, read_token_file

    config = _config(ctx)
    if config.uplink_url:
        raise DomainError(
            "uplink_url is set in venuebox.toml or VENUEBOX_UPLINK_URL and wins over `uplink configure`: "
            "change it there (or remove it to configure here)"
        )
    url = check_url(url, insecure_http)  # before anything is written: a refused URL stores nothing
    token = read_token_file(token_file)
    if ca_file is not None:
        load_ca_file(ca_file)
        ca_file = ca_file.resolve()
    # A file of its own for each token, named by its hash, written before the database names it:
    # a power cut leaves the old URL with the old token or the new URL with the new one, never a mix.
    stored_token = config.data_dir / f"uplink-{hashlib.sha256(token.encode()).hexdigest()[:12]}.token"
    write_secret(stored_token, token)
    target = _with_store(
        config,
        lambda store: store.write_sync(
            lambda conn: configure_target(
                conn, url, stored_token.resolve(), ca_file, "cli", utcnow(), insecure_http
            )
        ),
    )
    for old in config.data_dir.glob("uplink-*.token"):
        if old.name != stored_token.name:
            old.unlink()  # only once the database names the new one
    click.echo(f"uplink configured: {target.view()['url']} (token in {stored_token})")
    click.echo("`venuebox uplink check` tests it now; a running box starts sending within a second.")


def _uplink_target(config: Config) -> Any:
    from appliance.core.uplink_state import resolve_target
    from appliance.shared.errors import UplinkNotConfigured

    target = _with_store(config, lambda store: store.query(lambda conn: resolve_target(conn, config)))
    if target is None:
        raise UplinkNotConfigured(
            "the uplink is not configured: `venuebox uplink configure --url URL --token-file FILE`"
        )
    return target


@uplink.command("check")
@click.pass_context
def uplink_check(ctx: click.Context) -> None:
    """Send one signed, empty request to the receiver: URL, TLS, token and clock all at once."""
    import asyncio

    from appliance.core.box import get_box
    from uplink.worker import UplinkSettings, check_target

    config = _config(ctx)
    target = _uplink_target(config)
    box_id = _with_store(config, lambda store: store.query(get_box))["box_id"]
    result = asyncio.run(check_target(target, box_id, UplinkSettings.from_config(config)))
    if not result.ok:
        raise DomainError(f"uplink check failed: {result.message}")
    click.echo(f"ok: {result.message} in {result.seconds * 1000:.0f} ms")


def _print_uplink(view: dict[str, Any], daemon_running: bool) -> None:
    target = view["target"]
    click.echo(
        f"state     {view['state']}" + ("" if daemon_running else " (daemon not running: nothing is sent)")
    )
    click.echo(f"target    {target['url'] + ' (' + target['source'] + ')' if target else 'not configured'}")
    oldest = f", oldest {view['oldest_age_s']:.0f} s old" if view["oldest_age_s"] is not None else ""
    click.echo(f"backlog   {view['backlog']} records{oldest}; {view['quarantined']} quarantined")
    click.echo(
        f"sent      {view['records_acked']} records acked; last success {view['last_success_at'] or 'never'}"
    )
    if view["last_error"]:  # may quote the receiver: printed escaped
        click.echo(f"error     {printable(view['last_error'])} (at {view['last_error_at']})")
    if view["next_attempt_at"]:
        click.echo(f"next try  {view['next_attempt_at']} (in {view['next_attempt_in_s']:.0f} s)")
    for record in view.get("quarantine", []):
        what = f"sheet {record['sheet_id']}" if record["sheet_id"] else record["kind"]
        reason = printable(record["quarantine_reason"] or "")
        click.echo(f"  quarantined {printable(record['record_id'])} ({what}): {reason}")


@uplink.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def uplink_status(ctx: click.Context, as_json: bool) -> None:
    """State, backlog and oldest record, last success, last error, next attempt, quarantine."""
    from appliance.core import outbox
    from appliance.core.uplink_state import uplink_view
    from appliance.shared.times import utcnow
    from appliance.shell.daemon import runtime_info

    config = _config(ctx)

    def read(conn: sqlite3.Connection) -> dict[str, Any]:
        view = uplink_view(conn, config, utcnow())
        view["quarantine"] = outbox.quarantined(conn, 100)
        return view

    view = _with_store(config, lambda store: store.query(read))
    running = runtime_info(config) is not None
    view["daemon_running"] = running
    if as_json:
        _print_json(view)
    else:
        _print_uplink(view, running)


@uplink.command("sync")
@click.option(
    "--wait", "wait_s", type=float, default=30.0, show_default=True, help="Seconds to wait for the answer."
)
@click.pass_context
def uplink_sync(ctx: click.Context, wait_s: float) -> None:
    """Send now, whatever the backoff: through the running daemon, or here when none runs."""
    from appliance.shell.daemon import runtime_info
    from uplink.worker import sync_now

    config = _config(ctx)
    _uplink_target(config)
    daemon = runtime_info(config) is not None
    view = _with_store(config, lambda store: sync_now(store, config, daemon_running=daemon, wait_s=wait_s))
    _print_uplink(view, daemon_running=True)
    if view["synced"]:  # every record queued when the sync was asked for was acked
        return
    if not view["attempted"]:
        raise DomainError(
            f"the daemon did not try within {wait_s:g} s: is it running (`systemctl status venuebox`)?"
        )
    if view["failed"]:
        then = (
            "the uplink stays paused until that is fixed; the records stay queued on the box"
            if view["state"] == "paused"
            else "the records stay queued on the box, and a running box keeps trying "
            "(`venuebox uplink status`)"
        )
        error = printable(view["last_error"] or "failed")
        raise DomainError(f"uplink sync did not get through: {error}; {then}")
    if view["refused"] and not view["waiting"]:
        raise DomainError(
            f"uplink sync: the receiver refused {view['refused']} record(s), now set aside (quarantined; the "
            "rest got through): `venuebox uplink status` says why, `venuebox uplink retry` sends them again"
        )
    raise DomainError(
        f"uplink sync: {view['waiting']} record(s) still wait after {wait_s:g} s, with no error so far: "
        "`venuebox uplink status` shows progress; `venuebox uplink sync --wait SECONDS` waits longer"
    )


@uplink.command("retry")
@click.argument("record_ids", nargs=-1)
@click.pass_context
def uplink_retry(ctx: click.Context, record_ids: tuple[str, ...]) -> None:
    """Send quarantined records again (all of them, or the RECORD_IDS named)."""
    from appliance.core.uplink_state import retry_quarantined

    requeued = _with_store(
        _config(ctx),
        lambda store: store.write_sync(lambda conn: retry_quarantined(conn, list(record_ids) or None, "cli")),
    )
    click.echo(f"{requeued} quarantined record(s) back in the send queue")


@cli.group("keys")
def keys_group() -> None:
    """The box's keys: rotate the personal-data key."""


@keys_group.command("rotate-data-key")
@click.pass_context
def keys_rotate_data_key(ctx: click.Context) -> None:
    """Re-encrypt every personal field with a new personal-data key, in one transaction; the old key
    is kept only in the backup dir's keys-<old key id>.age, for the snapshots taken before. Safe while
    the daemon runs."""
    from appliance.core.data_key import rotate

    config = _config(ctx)
    done = _with_store(config, lambda store: rotate(config, store, "cli"))
    kept = (
        f"; old key kept for earlier snapshots in {done.kept_for_backups.name}"
        if done.kept_for_backups
        else ""
    )
    click.echo(
        f"personal-data key rotated: {done.previous_key_id} -> {done.key_id}, {done.fields} field(s) of "
        f"{done.entries} entries re-encrypted in one transaction{kept}"
    )


@cli.group()
def backup() -> None:
    """Encrypted local snapshots: configure who can open them, take one now, status, verify."""


@backup.command("configure")
@click.option(
    "--recipient",
    "recipient_keys",
    multiple=True,
    help="An organiser's age public key (age1...); repeat for several. Replaces the recipients file.",
)
@click.option(
    "--passphrase-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A file holding a passphrase (12+ characters) that also opens every backup and export.",
)
@click.option(
    "--dir",
    "directory",
    default=None,
    help="Where snapshots go from now on: an absolute path to an existing folder, best on another disk "
    "than the database (kept in venuebox.toml as backup_dir).",
)
@click.pass_context
def backup_configure(
    ctx: click.Context, recipient_keys: tuple[str, ...], passphrase_file: Path | None, directory: str | None
) -> None:
    """Who can decrypt the box's snapshots and exports, besides the box itself; where snapshots go."""
    from appliance.core import keys
    from appliance.core.backup import check_backup_dir
    from appliance.core.config import write_setting
    from appliance.shell.daemon import runtime_info

    if not recipient_keys and passphrase_file is None and directory is None:
        raise click.UsageError("give --recipient age1..., --passphrase-file FILE and/or --dir PATH")
    config = _config(ctx)
    if not config.db_path.exists():
        raise DomainError(f"no box in {config.data_dir}: run `venuebox init` first (or pass --data-dir)")
    # Every check before anything is written: a refused --dir changes nothing.
    checked = check_backup_dir(config, directory) if directory is not None else None
    detail: dict[str, Any] = {}
    if recipient_keys or passphrase_file is not None:
        done = keys.configure(config, list(recipient_keys), passphrase_file)
        detail |= {"recipients": len(done["recipients"]), "passphrase": done["passphrase"]}
    if checked is not None:
        settings = write_setting(config.data_dir, "backup_dir", str(checked.directory))
        detail |= {"dir": str(checked.directory), "other_disk": checked.other_disk}
    _with_store(
        config,
        lambda store: store.write_sync(lambda conn: audit_record(conn, "cli", "backup.configure", detail)),
    )
    if recipient_keys or passphrase_file is not None:
        click.echo(
            f"backups open with this box's key, {len(done['recipients'])} organiser key(s)"
            + (" and the passphrase" if done["passphrase"] else "")
        )
    if checked is not None:
        disk = "another disk than the database" if checked.other_disk else "the database's disk"
        click.echo(f"snapshots go to {checked.directory} ({disk}), set in {settings}")
        before = config.backup_path
        left = (
            []
            if before.resolve() == checked.directory.resolve()
            else list(before.glob("snapshot-*.sqlite.age"))
        )
        if left:
            click.echo(
                f"the {len(left)} snapshot(s) in {before} stay there: the box no longer checks or deletes "
                "them"
            )
        if os.environ.get("VENUEBOX_BACKUP_DIR"):
            click.echo(
                "venuebox: warning: VENUEBOX_BACKUP_DIR is set here and wins over venuebox.toml for "
                "commands run with it",
                err=True,
            )
        for warning in checked.warnings:
            click.echo(f"venuebox: warning: {warning}", err=True)
        if runtime_info(config):
            click.echo("the running box uses it once restarted: `sudo systemctl restart venuebox`")


@backup.command("now")
@click.pass_context
def backup_now(ctx: click.Context) -> None:
    """Take a snapshot now and verify it (the daemon also takes one every backup_interval_s)."""
    from appliance.core.backup import snapshot_job, verify_job

    config = _config(ctx)

    def run(store: Any) -> tuple[Any, list[tuple[str, list[str]]]]:
        return snapshot_job(config, store), verify_job(config, store)

    taken, verified = _with_store(config, run)
    problems = dict(verified).get(taken.name, [])
    click.echo(
        f"snapshot {taken.path} ({taken.bytes:,} bytes, {taken.facts['ledger_rows']} sheets, "
        f"sha256 {taken.sha256[:16]})"
    )
    if problems:
        raise DomainError(f"the snapshot does not verify: {'; '.join(problems)}")
    click.echo("verified: decrypts, integrity_check ok, row counts and ledger head as recorded")


@backup.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def backup_status(ctx: click.Context, as_json: bool) -> None:
    """The snapshots kept, the last one and its verification, who can open them."""
    from appliance.core.backup import backup_view, list_snapshots, location
    from appliance.shared.times import utcnow
    from appliance.shell.daemon import runtime_info

    config = _config(ctx)
    view, snaps = _with_store(
        config,
        lambda store: store.query(lambda conn: (backup_view(conn, config, utcnow()), list_snapshots(conn))),
    )
    if as_json:
        _print_json(view | {"snapshots": [snap | {"location": location(config, snap)} for snap in snaps]})
        return
    who = f"this box, {view['recipients']} organiser key(s)" + (
        ", the passphrase" if view["passphrase"] else ""
    )
    when = (
        f"every {view['interval_s']:g} s" if runtime_info(config) else "none taken: the daemon is not running"
    )
    click.echo(f"backups   {view['directory']}, {when}; open with {who}")
    if not view["configured"]:
        click.echo("          only this box can open them: `venuebox backup configure --recipient age1...`")
    disk = {
        True: "on another disk than the database",
        False: "on the database's disk: lost with it; `venuebox backup configure --dir PATH` on another disk",
        None: "MISSING: plug its disk back in, or `venuebox backup configure --dir PATH`",
    }
    click.echo(f"          {disk[view['other_disk']]}")
    good = view["newest_verified"]
    if good is not None:
        click.echo(
            f"newest verified: {good['path']} ({good['created_at']}, {good['ledger_rows']} sheets)"
            + {"here": "", "missing": " [file missing]", "elsewhere": " [in the backup dir used before]"}[
                good["location"]
            ]
        )
    elif snaps:
        click.echo("newest verified: none")
    where = {
        "here": "",
        "missing": "  [file missing]",
        "elsewhere": "  [in {dir}, the backup dir used before: not checked or deleted]",
    }
    for snap in snaps:
        verified = {None: "not verified yet", 1: "verified", 0: f"DOES NOT VERIFY: {snap['verify_problem']}"}
        snap["location"] = location(config, snap)
        click.echo(
            f"{snap['created_at']}  {snap['name']}  {snap['bytes']:,} bytes  {snap['ledger_rows']} sheets  "
            f"{verified[snap['verify_ok']]}" + where[snap["location"]].format(dir=Path(snap["path"]).parent)
        )
    if not snaps:
        click.echo("no snapshot yet (`venuebox backup now`)")


@backup.command("verify")
@click.pass_context
def backup_verify(ctx: click.Context) -> None:
    """Decrypt and check every snapshot not verified yet; exits 1 naming any that fails."""
    from appliance.core.backup import verify_job

    config = _config(ctx)
    results = _with_store(config, lambda store: verify_job(config, store))
    bad = [(name, problems) for name, problems in results if problems]
    for name, problems in results:
        click.echo(f"{name}: {'ok' if not problems else 'FAILED: ' + '; '.join(problems)}")
    if not results:
        click.echo("every snapshot is verified already")
    if bad:
        sys.exit(1)


def snapshot_key_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--identity` and `--passphrase-file`: the key that opens snapshots (`restore`, `recover`)."""
    command = click.option(
        "--passphrase-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="The backup passphrase (opens backup-identity.age beside the snapshot).",
    )(command)
    return click.option(
        "--identity",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="An age identity file that opens the snapshot: an organiser's key, or a box's "
        "backup-identity.key.",
    )(command)


@cli.command()
@click.argument("snapshot", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--to", "target", type=click.Path(file_okay=False, path_type=Path), required=True, help="A new data dir."
)
@snapshot_key_options
@click.option(
    "--no-cloud", is_flag=True, help="Do not ask the cloud receiver for what it holds beyond the snapshot."
)
@click.pass_context
def restore(
    ctx: click.Context,
    snapshot: Path,
    target: Path,
    identity: Path | None,
    passphrase_file: Path | None,
    no_cloud: bool,
) -> None:
    """Restore a snapshot into a NEW data dir (never over a live one): the same box, with its keys,
    certificate, tokens and settings from the keys bundle beside the snapshot; then `venuebox verify` it."""
    from appliance.core.backup import NotOpened, load_identity
    from appliance.core.backup import restore as do_restore

    named = _named_data_dir(ctx)
    config = load_config(named[0]) if named else None
    if named is not None and named[1] != "--data-dir":
        click.echo(f"  this box: {named[0]} ({named[1]}); its key opens its own snapshots")
    identities = load_identity(identity, passphrase_file, snapshot, config)
    try:
        done = do_restore(
            snapshot,
            target,
            identities,
            progress=lambda step: click.echo(f"  {step}"),
            box_id=_box_id_at(config) if config is not None else None,
            use_cloud=not no_cloud,
        )
    except NotOpened as exc:
        if named is None or config is None or identity is not None or passphrase_file is not None:
            raise
        where = config.data_dir if named[1] == "--data-dir" else f"{config.data_dir}, {named[1]}"
        raise DomainError(
            f"{exc.detail}: this box's key ({where}) opens only its own snapshots; for another box's, "
            f"give the key that opens it (--identity FILE or --passphrase-file FILE) without {named[1]}"
        ) from None
    box_keys = (
        "restored"
        if done.keys_restored
        else "NOT found (no keys file beside it): participants stay unreadable"
    )
    if done.keys_restored and done.personal_data_opens is False:
        box_keys = (
            f"restored from {done.keys_file}, but its personal-data key does not open this snapshot's "
            "personal data (the key was rotated after it): put the keys-<key id>.age of that time beside it"
        )
    click.echo(
        f"restored {snapshot.name} into {done.data_dir}: {done.ledger_rows} sheets, "
        f"ledger head {done.ledger_head[:16]}; box keys {box_keys}"
    )
    if done.cloud is not None and done.cloud.state.state == "used":
        added = done.cloud.appended
        click.echo(
            f"cloud     {added['sheets']} sheets, {added['audit']} audit records after the snapshot "
            f"from {done.cloud.state.detail}"
        )
    elif done.cloud is not None:
        click.echo(f"cloud     {done.cloud.state.state}: {done.cloud.state.detail}")
    for name, line in _restored_identity(done):
        click.echo(f"{name:<9} {line}")
    click.echo(f"check it: venuebox --data-dir {done.data_dir} verify")


@cli.command()
@click.option(
    "--to",
    "target",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The new data dir: a path that does not exist yet.",
)
@click.option(
    "--from",
    "from_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="The old box's data dir (the old card, mounted): its damaged database is salvaged, its keys "
    "open its snapshots, its backup_dir is where they are.",
)
@click.option(
    "--snapshot",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="A snapshot, or a folder of them (its newest that verifies). Default: the old box's backup_dir.",
)
@snapshot_key_options
@click.option("--no-cloud", is_flag=True, help="Do not ask the cloud receiver for what it holds.")
@click.pass_context
def recover(
    ctx: click.Context,
    target: Path,
    from_dir: Path | None,
    snapshot: Path | None,
    identity: Path | None,
    passphrase_file: Path | None,
    no_cloud: bool,
) -> None:
    """Rebuild a box whose storage died into a NEW data dir: the newest snapshot that verifies, then
    what can be salvaged from the damaged database (--from), then what the cloud holds, each only
    where it continues the hash chains. Tablets then send back what they kept. Without --from, the old
    box is the data dir (--data-dir, else $VENUEBOX_DATA_DIR), when one is named."""
    from appliance.core.backup import load_identity
    from appliance.core.recovery import old_box
    from appliance.core.recovery import recover as do_recover

    named = _named_data_dir(ctx)
    if from_dir is None and named is not None:
        from_dir = named[0]
        if not from_dir.is_dir():
            raise DomainError(
                f"no folder at {from_dir} ({named[1]}, the old box's data dir when --from is not given): "
                f"give --from DIR, or recover without {named[1]} from --snapshot"
            )
        click.echo(f"  old box: {from_dir} ({named[1]})")

    old_config = old_box(from_dir)[0] if from_dir is not None else None

    def identities(path: Path) -> list[Any]:
        return load_identity(identity, passphrase_file, path, old_config)

    done = do_recover(
        target,
        from_dir=from_dir,
        snapshot=snapshot,
        identities=identities,
        use_cloud=not no_cloud,
        progress=lambda step: click.echo(f"  {step}"),
    )
    sheets, audit_log = done.chains["sheets"], done.chains["audit"]
    for name in done.passed_over:
        click.echo(f"passed over {name}")
    click.echo(
        f"snapshot  {done.snapshot.name}: {sheets.count('snapshot')} sheets, "
        f"{audit_log.count('snapshot')} audit records"
    )
    for source, state in (("salvage", done.salvage), ("cloud", done.cloud)):
        if state.state == "used":
            click.echo(
                f"{source:<9} {sheets.count(source)} sheets, {audit_log.count(source)} audit records "
                f"from {state.detail}"
            )
        else:
            click.echo(f"{source:<9} {state.state}: {state.detail}")
    click.echo(
        f"ledger    {sheets.head_seq} sheets (the old ledger reached at least seq {sheets.known_head}), "
        f"new epoch {done.epoch}: tablets send back every sheet they keep"
    )
    if done.listed:
        click.echo(f"not appended ({len(done.listed)}: they do not continue the hash chains):")
        for item in done.listed:
            click.echo(f"  {item.line()}")
    for name, line in _restored_identity(done.restored):
        click.echo(f"{name:<9} {line}")
    click.echo(
        f"next: venuebox --data-dir {done.data_dir} verify; then start the box on it "
        '(docs/operations.md, "The SD card died / the database is damaged")'
    )


def _box_at(database: Path) -> tuple[str | None, str | None]:
    """(box id, name) of the box whose database is ``database``, read only; (None, None) when there
    is none or it cannot be read (damaged, say)."""
    from appliance.storage.db import connect

    if not database.exists():
        return None, None
    try:
        with contextlib.closing(connect(database, readonly=True)) as conn:
            row = conn.execute("SELECT box_id, name FROM box WHERE id = 1").fetchone()
    except sqlite3.Error:
        return None, None
    return (row[0], row[1]) if row is not None else (None, None)


def _box_id_at(config: Config) -> str | None:
    """The box id of the box in ``config``'s data dir, or None (no box there, or its database cannot
    be read: damaged, say; then its key, which opens only its own snapshots, is the check)."""
    return _box_at(config.db_path)[0]


def _restored_identity(done: Any) -> list[tuple[str, str]]:
    """What `venuebox restore` says about the restored box's identity, one (topic, line) each."""
    from appliance.core import tls

    installed = done.identity
    if installed is not None:
        lines = [("box", f"{done.box_id}, identity from {done.identity_file} ({installed.bundle_format})")]
        missing = f"not in {done.identity_file}"
    else:
        lines = [("box", f"{done.box_id}; no keys file beside the snapshot")]
        missing = "no keys file"
    if installed is not None and installed.tls_fingerprint:
        lines.append(
            (
                "tls",
                f"certificate {tls.grouped(installed.tls_fingerprint)} restored: tablets that pinned it "
                "reconnect with the tokens they hold",
            )
        )
    else:
        lines.append(
            (
                "tls",
                f"{missing}: a new certificate at the first start, which pinned tablets refuse; "
                "pair them again",
            )
        )
    admin = installed is not None and installed.admin_token
    lines.append(("admin", "the old box's admin token" if admin else "a new admin token"))
    if installed is not None and installed.uplink is not None:
        uplink = installed.uplink
        via = "`uplink configure`" if uplink.source == "configure" else "venuebox.toml"
        lines.append(("uplink", f"{uplink.url} (set by {via}), its token restored"))
    if installed is not None and installed.uplink_note:
        lines.append(("uplink", installed.uplink_note))
    if installed is not None and installed.settings:
        where = (
            f"; its backup_dir {installed.backup_dir} is kept: the restored box takes its snapshots "
            "where the old one did (`venuebox backup configure --dir` changes it)"
            if installed.backup_dir
            else ""
        )
        lines.append(("settings", f"venuebox.toml restored{where}"))
    else:
        lines.append(("settings", f"{missing}: copy your venuebox.toml into {done.data_dir}"))
    return lines


@cli.group("export", invoke_without_command=True)
@click.option(
    "--to",
    "to",
    type=click.Path(path_type=Path),
    default=None,
    help="The folder to export into (default: the one USB key found mounted).",
)
@click.option(
    "--csv-dialect",
    "csv_dialect",
    default=None,
    metavar="DIALECT",
    help="How results/scores/ledger CSVs are written: excel (commas, decimal points) or excel-semicolon "
    "(semicolons, decimal commas, for European spreadsheets). Default: the export_csv_dialect setting.",
)
@click.pass_context
def export_group(ctx: click.Context, to: Path | None, csv_dialect: str | None) -> None:
    """Export to a USB key: plain CSVs for tabulating by hand, the encrypted database, a signed
    manifest. Works while frozen. `venuebox export verify PATH` checks one."""
    if ctx.invoked_subcommand is not None:
        return
    from appliance.core.export import choose_target, export_and_audit, find_usb_targets
    from appliance.core.tabulation import csv_dialect as dialect_named

    config = _config(ctx)
    dialect = dialect_named(csv_dialect or config.export_csv_dialect)  # refused before anything else
    if not config.db_path.exists():
        raise DomainError(f"no box in {config.data_dir}: run `venuebox init` first (or pass --data-dir)")
    target = choose_target(to, find_usb_targets())
    click.echo(f"exporting to {target}")
    done = export_and_audit(
        config,
        target,
        "cli",
        # The store opens after the export: a damaged database is still exported as far as it reads.
        lambda fn: _with_store(config, lambda store: store.write_sync(fn)),
        progress=lambda fraction, step: click.echo(f"  {fraction:4.0%}  {step}"),
        csv_dialect=dialect.name,
    )
    click.echo(f"spreadsheet files: {dialect.name} ({dialect.says})")
    click.echo(done.names)
    click.echo(
        f"done: {done.path} ({done.files} files, {done.bytes / 1024 / 1024:.1f} MB, "
        f"{done.ledger_rows} sheets, ledger head {done.ledger_head[:16]}, signing key {done.fingerprint}); "
        f"written and read back in {done.seconds:.1f} s"
    )


def audit_record(conn: sqlite3.Connection, actor: str, action: str, detail: dict[str, Any]) -> None:
    from appliance.core import audit

    audit.record(conn, actor, action, detail)


@export_group.command("verify")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
def export_verify(path: Path) -> None:
    """Check an export's signature and every file; exits 1 naming each file that differs."""
    from appliance.core.export import verify_export

    report = verify_export(path)
    if report.ok:
        manifest = report.manifest
        click.echo(
            f"ok: {len(report.files)} files as signed by box {manifest['box']['id']} "
            f"(key {report.fingerprint}); event {manifest['event']['id']}, "
            f"{manifest['ledger']['rows']} sheets, ledger head {manifest['ledger']['head_hash'][:16]}"
        )
        return
    for problem in report.problems:
        click.echo(f"FAILED {problem}", err=True)
    raise DomainError(f"the export does not verify: {', '.join(report.bad_files)}")


_receiver_data_dir = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("venuebox-receiver"),
    show_default=True,
    help="Where the receiver keeps receiver.sqlite and boxes.json (box id -> uplink token).",
)


@cli.group("ingest-server")
def ingest_server() -> None:
    """The reference uplink receiver: the cloud end that boxes send their outbox to."""


@ingest_server.command("add-box")
@click.argument("box_id")
@_receiver_data_dir
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the new uplink token to this file (0600) instead of printing it.",
)
@click.option("--rotate", is_flag=True, help="Replace the token of a box that has one (the old one stops).")
def ingest_server_add_box(box_id: str, data_dir: Path, token_file: Path | None, rotate: bool) -> None:
    """Issue an uplink token for BOX_ID (its `venuebox status` box id); printed on the last line."""
    from appliance.shared.secrets_files import write_secret
    from uplink.receiver_store import add_box

    token = add_box(data_dir, box_id, rotate=rotate)
    verb = "rotated" if rotate else "issued"
    if token_file is not None:
        write_secret(token_file, token)
        click.echo(f"uplink token for {box_id} {verb}, written to {token_file}")
        return
    click.echo(f"uplink token for {box_id} {verb} (give it to the box; it is not shown again):")
    click.echo(token)


@ingest_server.command("run")
@_receiver_data_dir
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=9090, show_default=True, help="Port (0 = any free port).")
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Serve HTTPS with this certificate chain (PEM); needs --tls-key.",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The private key (PEM) of --tls-cert.",
)
def ingest_server_run(
    data_dir: Path, host: str, port: int, tls_cert: Path | None, tls_key: Path | None
) -> None:
    """Receive boxes' uplink batches until Ctrl-C or SIGTERM (the URL is also in receiver.json)."""
    from uplink.receiver import run_receiver

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    setup_logging(os.environ.get("VENUEBOX_LOG_LEVEL", "INFO"))
    run_receiver(
        data_dir,
        host,
        port,
        on_ready=lambda url: click.echo(f"venuebox ingest-server receiving on {url} (data dir {data_dir})"),
        tls=(tls_cert, tls_key) if tls_cert and tls_key else None,
    )


def main() -> None:
    # What the box creates in its data dir is for its own user alone (files 0600, folders 0700),
    # whatever umask the shell or the service manager gave it; the unit file says UMask=0077 too.
    # The writers of secrets set their modes themselves (appliance/shared/secrets_files.py) as well.
    os.umask(0o077)
    cli(prog_name="venuebox")
