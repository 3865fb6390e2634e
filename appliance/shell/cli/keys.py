"""The box's keys and certificate: `tls show`/`tls rotate`, `keys rotate-data-key`."""

from __future__ import annotations

import click

from appliance.shared.fingerprint import grouped
from appliance.shell.cli.common import config_for, print_json, with_store


@click.group("tls")
def tls_group() -> None:
    """The box's TLS certificate (tablets pin its fingerprint): show it, rotate it."""


@tls_group.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def tls_show(ctx: click.Context, as_json: bool) -> None:
    """The certificate tablets pin: fingerprint (compare it on a tablet), names, addresses, validity."""
    from appliance.core import tls
    from appliance.shell.daemon import runtime_info

    config = config_for(ctx)
    try:
        identity = tls.load_identity(config.data_dir)
    except FileNotFoundError:
        raise click.ClickException("this box has no TLS certificate yet: run `venuebox init`") from None
    except ValueError as exc:
        raise click.ClickException(f"{exc}; make a new one with `venuebox tls rotate`") from None
    daemon = runtime_info(config) or {}
    info = {**identity.as_dict(), "enabled": config.tls, "served": daemon.get("tls_fingerprint")}
    if as_json:
        print_json(info)
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

    config = config_for(ctx)
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise click.ClickException(f"--address {address!r} is not an IP address") from None
    identity = with_store(
        config,
        lambda store: tls.rotate(
            config.data_dir,
            store.query(get_box)["name"],
            list(addresses) if addresses else None,
            store,
            "cli",
        ),
    )
    click.echo(f"new certificate, fingerprint {grouped(identity.fingerprint)}")
    click.echo(f"names {', '.join(identity.names)}; addresses {', '.join(identity.addresses)}")
    click.echo(
        "a running box serves it within seconds; tablets that pinned the old one refuse it until "
        "they are paired again (compare this fingerprint on each tablet)"
    )


@click.group("keys")
def keys_group() -> None:
    """The box's keys: rotate the personal-data key."""


@keys_group.command("rotate-data-key")
@click.pass_context
def keys_rotate_data_key(ctx: click.Context) -> None:
    """Re-encrypt every personal field with a new personal-data key, in one transaction; the old key
    is kept only in the backup dir's keys-<old key id>.age, for the snapshots taken before. Safe while
    the daemon runs."""
    from appliance.core.data_key import rotate

    config = config_for(ctx)
    done = with_store(config, lambda store: rotate(config, store, "cli"))
    kept = (
        f"; old key kept for earlier snapshots in {done.kept_for_backups.name}"
        if done.kept_for_backups
        else ""
    )
    click.echo(
        f"personal-data key rotated: {done.previous_key_id} -> {done.key_id}, {done.fields} field(s) of "
        f"{done.entries} entries re-encrypted in one transaction{kept}"
    )


# What this module adds to the root `venuebox` group (appliance/shell/cli/__init__.py).
COMMANDS: tuple[click.Command, ...] = (
    tls_group,
    keys_group,
)
