"""Encrypted snapshots (`backup configure/now/status/verify`) and a box from one: `restore`, `recover`."""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import msgspec

from appliance.core.config import Config, load_config
from appliance.shared.errors import DomainError
from appliance.shared.fingerprint import grouped
from appliance.shell.cli.common import (
    EXISTING_FILE,
    box_at,
    config_for,
    named_data_dir,
    print_json,
    with_store,
)


@click.group()
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
    type=EXISTING_FILE,
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
    config = config_for(ctx)
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
    with_store(
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

    config = config_for(ctx)

    def run(store: Any) -> tuple[Any, list[tuple[str, list[str]]]]:
        return snapshot_job(config, store), verify_job(config, store)

    taken, verified = with_store(config, run)
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

    config = config_for(ctx)
    view, snaps = with_store(
        config,
        lambda store: store.query(lambda conn: (backup_view(conn, config, utcnow()), list_snapshots(conn))),
    )
    if as_json:
        listed = [snap | {"location": location(config, snap)} for snap in snaps]
        print_json(msgspec.to_builtins(view) | {"snapshots": listed})
        return
    who = f"this box, {view.recipients} organiser key(s)" + (", the passphrase" if view.passphrase else "")
    when = f"every {view.interval_s:g} s" if runtime_info(config) else "none taken: the daemon is not running"
    click.echo(f"backups   {view.directory}, {when}; open with {who}")
    if not view.configured:
        click.echo("          only this box can open them: `venuebox backup configure --recipient age1...`")
    disk = {
        True: "on another disk than the database",
        False: "on the database's disk: lost with it; `venuebox backup configure --dir PATH` on another disk",
        None: "MISSING: plug its disk back in, or `venuebox backup configure --dir PATH`",
    }
    click.echo(f"          {disk[view.other_disk]}")
    good = view.newest_verified
    if good is not None:
        click.echo(
            f"newest verified: {good.path} ({good.created_at}, {good.ledger_rows} sheets)"
            + {"here": "", "missing": " [file missing]", "elsewhere": " [in the backup dir used before]"}[
                good.location
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

    config = config_for(ctx)
    results = with_store(config, lambda store: verify_job(config, store))
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
        type=EXISTING_FILE,
        default=None,
        help="The backup passphrase (opens backup-identity.age beside the snapshot).",
    )(command)
    return click.option(
        "--identity",
        type=EXISTING_FILE,
        default=None,
        help="An age identity file that opens the snapshot: an organiser's key, or a box's "
        "backup-identity.key.",
    )(command)


@click.command()
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
    from appliance.core.recovery import restore as do_restore
    from uplink.cloud_copy import read_cloud

    named = named_data_dir(ctx)
    config = load_config(named[0]) if named else None
    if named is not None and named[1] != "--data-dir":
        click.echo(f"  this box: {named[0]} ({named[1]}); its key opens its own snapshots")
    identities = load_identity(identity, passphrase_file, snapshot, config)
    try:
        restoration = do_restore(
            snapshot,
            target,
            identities,
            progress=lambda step: click.echo(f"  {step}"),
            box_id=_box_id_at(config) if config is not None else None,
            read_cloud=None if no_cloud else read_cloud,
        )
    except NotOpened as exc:
        if named is None or config is None or identity is not None or passphrase_file is not None:
            raise
        where = config.data_dir if named[1] == "--data-dir" else f"{config.data_dir}, {named[1]}"
        raise DomainError(
            f"{exc.detail}: this box's key ({where}) opens only its own snapshots; for another box's, "
            f"give the key that opens it (--identity FILE or --passphrase-file FILE) without {named[1]}"
        ) from None
    done, cloud = restoration.restored, restoration.cloud
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
    if cloud is not None and cloud.state.state == "used":
        added = cloud.appended
        click.echo(
            f"cloud     {added['sheets']} sheets, {added['audit']} audit records after the snapshot "
            f"from {cloud.state.detail}"
        )
    elif cloud is not None:
        click.echo(f"cloud     {cloud.state.state}: {cloud.state.detail}")
    for name, line in _restored_identity(done):
        click.echo(f"{name:<9} {line}")
    click.echo(f"check it: venuebox --data-dir {done.data_dir} verify")


@click.command()
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
    from uplink.cloud_copy import read_cloud

    named = named_data_dir(ctx)
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
        read_cloud=None if no_cloud else read_cloud,
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


def _box_id_at(config: Config) -> str | None:
    """The box id of the box in ``config``'s data dir, or None (no box there, or its database cannot
    be read: damaged, say; then its key, which opens only its own snapshots, is the check)."""
    return box_at(config.db_path)[0]


def _restored_identity(done: Any) -> list[tuple[str, str]]:
    """What `venuebox restore` says about the restored box's identity, one (topic, line) each."""

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
                f"certificate {grouped(installed.tls_fingerprint)} restored: tablets that pinned it "
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


def audit_record(conn: sqlite3.Connection, actor: str, action: str, detail: dict[str, Any]) -> None:
    from appliance.core import audit

    audit.record(conn, actor, action, detail)


# What this module adds to the root `venuebox` group (appliance/shell/cli/__init__.py).
COMMANDS: tuple[click.Command, ...] = (
    backup,
    restore,
    recover,
)
