"""Running the box (`run`, alias `serve`), simulated tablets against it, the venue console."""

from __future__ import annotations

import copy
import os
from typing import Any

import click

from appliance.core.config import load_config
from appliance.shared.errors import DomainError
from appliance.shared.logs import setup_logging
from appliance.shell.cli.common import config_for, print_json


@click.command("run")
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
    config = config_for(ctx, **overrides)
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


@click.command()
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
    config = config_for(ctx)
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
        print_json(report.as_dict())
    else:
        click.echo(report.summary())


@click.command()
@click.option(
    "--theme",
    default=None,
    help="Textual theme, e.g. textual-light for a light terminal (default textual-dark; ctrl+p changes it).",
)
@click.pass_context
def console(ctx: click.Context, theme: str | None) -> None:
    """The venue console: a full-screen view of the running box (keys: ? for help, f to freeze)."""
    from textual.theme import BUILTIN_THEMES

    from appliance.shell.console import DaemonLocator
    from tui.app import ConsoleApp
    from tui.client import AdminClient

    if theme is not None and theme not in BUILTIN_THEMES:
        raise click.ClickException(f"no theme {theme!r}: choose one of {', '.join(sorted(BUILTIN_THEMES))}")
    config = load_config(ctx.obj["data_dir"])
    if not config.admin_token_path.exists():
        raise click.ClickException(
            f"no box in {config.data_dir} (no admin.token): pass --data-dir, or run `venuebox init` first"
        )
    ConsoleApp(AdminClient(DaemonLocator(config)), theme=theme).run()


# What this module adds to the root `venuebox` group (appliance/shell/cli/__init__.py).
COMMANDS: tuple[click.Command, ...] = (
    run_daemon,
    serve_alias,
    simulate,
    console,
)
