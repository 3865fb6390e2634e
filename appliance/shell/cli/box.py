"""The box on a data dir: init, event import, pairing codes, tablets, freeze/unfreeze, status, verify."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import click
import msgspec

from appliance.core.config import Config
from appliance.shared.admin_wire import VerifyReport
from appliance.shared.fingerprint import grouped, short_fingerprint
from appliance.shared.status import FREEZE_CATEGORIES, BoxStatus, RecoveryView
from appliance.shared.tablet_text import printable
from appliance.shell.cli.common import config_for, print_json, with_store


@click.command()
@click.option("--name", help="Display name on the LAN (mDNS instance name), e.g. 'Main stage box'.")
@click.pass_context
def init(ctx: click.Context, name: str | None) -> None:
    """Create the data dir: database, box identity, admin token (0600), personal-data key (0600)."""
    from provisioning.first_boot import init_box

    result = init_box(config_for(ctx), name)
    box = result["box"]
    what = ", ".join(result["created"]) or "nothing (already initialised)"
    click.echo(f"box {box['box_id']} ({box['name']}) in {result['data_dir']}: created {what}")


@click.group()
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

    config = config_for(ctx)
    loaded = load_package(package)
    # The key is chosen inside the transaction: the one the database names (a rotation may be running).
    seal = data_key.with_key(config.data_key_path, lambda conn, key: import_package(conn, loaded, key, "cli"))
    report = with_store(config, lambda store: store.write_sync(seal))
    if as_json:
        print_json(report.as_dict())
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
    for line in report.warnings:
        click.echo(f"  warning: {printable(line)}")


@click.group(invoke_without_command=True)
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

    config = config_for(ctx)
    ttl = ttl_s or config.pairing_code_ttl_s
    cap = config.pairing_code_max_ttl_s

    def make(store: Any) -> dict[str, Any]:
        key = pairing_key(config)
        return store.write_sync(lambda conn: create_code(conn, judge_id, ttl, "cli", key=key, max_ttl_s=cap))

    code = with_store(config, make)
    tablet_url, fingerprint = _pairing_target(config)
    code = {
        **code,
        "url": tls.pairing_url(tablet_url, code["code"], fingerprint),
        "tls_fingerprint": fingerprint,
    }
    if as_json:
        print_json(code)
        return
    click.echo(f"pairing code for {code['judge']['name']} ({judge_id}), valid until {code['expires_at']}:")
    click.echo(f"  tablet opens  {code['url']}")
    if fingerprint:
        click.echo(f"  certificate   {short_fingerprint(fingerprint)}  (the judge compares it on the tablet)")
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


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def devices(ctx: click.Context, as_json: bool) -> None:
    """List paired tablets (and `devices revoke ID`)."""
    if ctx.invoked_subcommand is not None:
        return
    from appliance.core.devices import list_devices

    rows = with_store(config_for(ctx), lambda store: store.query(list_devices))
    if as_json:
        print_json(rows)
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

    row = with_store(
        config_for(ctx), lambda store: store.write_sync(lambda conn: revoke(conn, device_id, "cli"))
    )
    click.echo(f"revoked {row.device_id} ({row.judge_id}, {printable(row.name)})")


@click.command()
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

    state = with_store(
        config_for(ctx),
        lambda store: store.write_sync(lambda conn: do_freeze(conn, reason, "cli", category=category)),
    )
    click.echo(f"FROZEN ({state['freeze_category']}) since {state['frozen_at']}: {state['freeze_reason']}")


@click.command()
@click.pass_context
def unfreeze(ctx: click.Context) -> None:
    """Resume competition writes."""
    from appliance.core.box import unfreeze as do_unfreeze

    with_store(config_for(ctx), lambda store: store.write_sync(lambda conn: do_unfreeze(conn, "cli")))
    click.echo("unfrozen: scoring resumes")


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """A summary of the box: event, freeze, tablets, sheets, outbox."""
    from appliance.core.status import snapshot
    from appliance.shell.daemon import runtime_info

    config = config_for(ctx)

    def read(store: Any) -> BoxStatus:
        store.ensure_sound()  # a damaged file is said whatever pages the summary happens to read
        return store.query(lambda conn: snapshot(conn, config))

    snap = with_store(config, read)
    daemon = runtime_info(config)
    if as_json:
        print_json(msgspec.to_builtins(snap) | {"daemon": daemon})
        return
    box, ev, fr = snap.box, snap.event, snap.freeze
    click.echo(f"box      {box.id} ({box.name}), venuebox {box.version}")
    click.echo(f"daemon   {'running, tablets at ' + daemon['tablet_url'] if daemon else 'not running'}")
    if daemon and daemon.get("tls_fingerprint"):
        click.echo(f"tls      fingerprint {grouped(daemon['tls_fingerprint'])}")
    click.echo(f"event    {ev.id + ' - ' + ev.name if ev else 'none imported'}")
    click.echo(f"freeze   {'FROZEN: ' + str(fr.reason) if fr.frozen else 'not frozen'}")
    t = snap.tablets
    click.echo(f"tablets  {t.online} online, {t.stale} stale, {t.offline} offline")
    s = snap.sheets
    click.echo(f"sheets   {s.total} stored, {s.last_5_min} in the last 5 min")
    click.echo(f"outbox   {snap.outbox.records} records waiting")
    if snap.recovery:
        for line in _recovery_lines(snap.recovery):
            click.echo(line)


def _recovery_lines(rec: RecoveryView) -> list[str]:
    """What `venuebox status` says of the recovery that built this data dir."""
    got = rec.sheets
    lines = [
        f"recovery {rec.at} from {rec.snapshot}: {got.snapshot} sheets from the snapshot, "
        f"{got.salvage} salvaged, {got.cloud} from the cloud; {rec.since} stored since "
        "(tablets sending back what they kept, and new scores)"
    ]
    for name, source in (("salvage", rec.salvage), ("cloud", rec.cloud)):
        if source.state != "used":
            lines.append(f"         {name} {source.state}: {source.detail}")
    missing = rec.missing_sheet_ids
    if missing or rec.missing_unnamed:
        parts = []
        if missing:
            parts.append(f"{len(missing)} sheet(s) seen but not restorable: {', '.join(missing[:5])}")
        if rec.missing_unnamed:
            parts.append(
                f"{rec.missing_unnamed} place(s) of the old ledger (it reached seq {rec.known_head}) "
                "that no source could name (a sheet a tablet sent back since is counted in 'stored since', "
                "not here)"
            )
        lines.append(f"missing  {'; '.join(parts)}")
    else:
        lines.append("missing  none known")
    return lines


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def verify(ctx: click.Context, as_json: bool) -> None:
    """Check the ledger and audit hash chains; exits 1 naming the first altered row."""
    from appliance.core.chain import verify_chains

    def read(store: Any) -> VerifyReport:
        store.ensure_sound()  # the file first: chains read from a damaged file prove nothing
        return store.query(verify_chains)

    report = with_store(config_for(ctx), read)
    if as_json:
        # `venuebox verify --json` keeps its own key order (the verdict last), not ChainCheck's.
        print_json(
            [
                {
                    "table": r.table,
                    "rows": r.rows,
                    "head_hash": r.head_hash,
                    "first_bad_seq": r.first_bad_seq,
                    "problem": r.problem,
                    "ok": r.ok,
                }
                for r in report.chains
            ]
        )
    else:
        for r in report.chains:
            if r.ok:
                click.echo(f"{r.table}: {r.rows} rows, chain intact (head {r.head_hash[:16]})")
            else:
                click.echo(f"{r.table}: BROKEN at row {r.first_bad_seq}: {r.problem}", err=True)
    if not report.ok:
        sys.exit(1)


# What this module adds to the root `venuebox` group (appliance/shell/cli/__init__.py).
COMMANDS: tuple[click.Command, ...] = (
    init,
    event,
    pair,
    devices,
    freeze,
    unfreeze,
    status,
    verify,
)
