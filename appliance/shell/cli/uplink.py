"""The cloud uplink (`uplink configure/check/status/sync/retry`) and the reference receiver that boxes
send to (`ingest-server`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import msgspec

from appliance.core.config import Config
from appliance.shared.admin_wire import QuarantinedRecord
from appliance.shared.errors import DomainError
from appliance.shared.logs import setup_logging
from appliance.shared.secrets_files import write_secret
from appliance.shared.status import UplinkView
from appliance.shared.tablet_text import printable
from appliance.shell.cli.common import EXISTING_FILE, config_for, print_json, with_store


@click.group()
def uplink() -> None:
    """The cloud uplink: configure, check, status, sync now, retry quarantined records."""


@uplink.command("configure")
@click.option("--url", required=True, help="The receiver, e.g. https://cloud.example.org (no token in it).")
@click.option(
    "--token-file",
    type=EXISTING_FILE,
    required=True,
    help="A file holding the uplink token the receiver issued for this box (copied to the data dir, 0600).",
)
@click.option(
    "--ca-file",
    type=EXISTING_FILE,
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

    from appliance.core.uplink_state import configure_target
    from appliance.shared.times import utcnow
    from appliance.shared.uplink_url import check_url
    from uplink.commands import load_ca_file, read_token_file

    config = config_for(ctx)
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
    target = with_store(
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
    click.echo(f"uplink configured: {target.view().url} (token in {stored_token})")
    click.echo("`venuebox uplink check` tests it now; a running box starts sending within a second.")


def _uplink_target(config: Config) -> Any:
    from appliance.core.uplink_state import resolve_target
    from appliance.shared.errors import UplinkNotConfigured

    target = with_store(config, lambda store: store.query(lambda conn: resolve_target(conn, config)))
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
    from uplink.commands import check_target
    from uplink.settings import UplinkSettings

    config = config_for(ctx)
    target = _uplink_target(config)
    box_id = with_store(config, lambda store: store.query(get_box))["box_id"]
    result = asyncio.run(check_target(target, box_id, UplinkSettings.from_config(config)))
    if not result.ok:
        raise DomainError(f"uplink check failed: {result.message}")
    click.echo(f"ok: {result.message} in {result.seconds * 1000:.0f} ms")


def _print_uplink(
    view: UplinkView, daemon_running: bool, quarantine: Sequence[QuarantinedRecord] = ()
) -> None:
    target = view.target
    click.echo(
        f"state     {view.state}" + ("" if daemon_running else " (daemon not running: nothing is sent)")
    )
    click.echo(f"target    {target.url + ' (' + target.source + ')' if target else 'not configured'}")
    oldest = f", oldest {view.oldest_age_s:.0f} s old" if view.oldest_age_s is not None else ""
    click.echo(f"backlog   {view.backlog} records{oldest}; {view.quarantined} quarantined")
    click.echo(
        f"sent      {view.records_acked} records acked; last success {view.last_success_at or 'never'}"
    )
    if view.last_error:  # may quote the receiver: printed escaped
        click.echo(f"error     {printable(view.last_error)} (at {view.last_error_at})")
    if view.next_attempt_at:
        click.echo(f"next try  {view.next_attempt_at} (in {view.next_attempt_in_s:.0f} s)")
    for record in quarantine:
        what = f"sheet {record.sheet_id}" if record.sheet_id else record.kind
        reason = printable(record.quarantine_reason or "")
        click.echo(f"  quarantined {printable(record.record_id)} ({what}): {reason}")


@uplink.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def uplink_status(ctx: click.Context, as_json: bool) -> None:
    """State, backlog and oldest record, last success, last error, next attempt, quarantine."""
    from appliance.core.uplink_state import uplink_answer
    from appliance.shared.times import utcnow
    from appliance.shell.daemon import runtime_info

    config = config_for(ctx)
    view = with_store(
        config, lambda store: store.query(lambda conn: uplink_answer(conn, config, utcnow(), 100))
    )
    running = runtime_info(config) is not None
    if as_json:
        print_json(msgspec.to_builtins(view) | {"daemon_running": running})
    else:
        _print_uplink(view, running, view.quarantine)


@uplink.command("sync")
@click.option(
    "--wait", "wait_s", type=float, default=30.0, show_default=True, help="Seconds to wait for the answer."
)
@click.pass_context
def uplink_sync(ctx: click.Context, wait_s: float) -> None:
    """Send now, whatever the backoff: through the running daemon, or here when none runs."""
    from appliance.shell.daemon import runtime_info
    from uplink.commands import sync_now

    config = config_for(ctx)
    _uplink_target(config)
    daemon = runtime_info(config) is not None
    outcome = with_store(config, lambda store: sync_now(store, config, daemon_running=daemon, wait_s=wait_s))
    view = outcome.view
    _print_uplink(view, daemon_running=True)
    if outcome.synced:  # every record queued when the sync was asked for was acked
        return
    if not outcome.attempted:
        raise DomainError(
            f"the daemon did not try within {wait_s:g} s: is it running (`systemctl status venuebox`)?"
        )
    if outcome.failed:
        then = (
            "the uplink stays paused until that is fixed; the records stay queued on the box"
            if view.state == "paused"
            else "the records stay queued on the box, and a running box keeps trying "
            "(`venuebox uplink status`)"
        )
        error = printable(view.last_error or "failed")
        raise DomainError(f"uplink sync did not get through: {error}; {then}")
    if outcome.refused and not outcome.waiting:
        raise DomainError(
            f"uplink sync: the receiver refused {outcome.refused} record(s), now set aside (quarantined; the "
            "rest got through): `venuebox uplink status` says why, `venuebox uplink retry` sends them again"
        )
    raise DomainError(
        f"uplink sync: {outcome.waiting} record(s) still wait after {wait_s:g} s, with no error so far: "
        "`venuebox uplink status` shows progress; `venuebox uplink sync --wait SECONDS` waits longer"
    )


@uplink.command("retry")
@click.argument("record_ids", nargs=-1)
@click.pass_context
def uplink_retry(ctx: click.Context, record_ids: tuple[str, ...]) -> None:
    """Send quarantined records again (all of them, or the RECORD_IDS named)."""
    from appliance.core.uplink_state import retry_quarantined

    requeued = with_store(
        config_for(ctx),
        lambda store: store.write_sync(lambda conn: retry_quarantined(conn, list(record_ids) or None, "cli")),
    )
    click.echo(f"{requeued} quarantined record(s) back in the send queue")


_receiver_data_dir = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("venuebox-receiver"),
    show_default=True,
    help="Where the receiver keeps receiver.sqlite and boxes.json (box id -> uplink token).",
)


@click.group("ingest-server")
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
    type=EXISTING_FILE,
    default=None,
    help="Serve HTTPS with this certificate chain (PEM); needs --tls-key.",
)
@click.option(
    "--tls-key",
    type=EXISTING_FILE,
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


# What this module adds to the root `venuebox` group (appliance/shell/cli/__init__.py).
COMMANDS: tuple[click.Command, ...] = (
    uplink,
    ingest_server,
)
