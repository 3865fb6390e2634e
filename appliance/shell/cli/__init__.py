"""The `venuebox` command: a thin layer over library functions (the sqlite-utils shape).

Each command opens the data dir's store, calls one function that a test could call, and prints.
Errors a person can act on are one line on stderr and exit status 1; usage errors exit 2; a damaged
database exits EXIT_DATABASE_DAMAGED.
Heavy imports live inside the commands: start-up time matters on a Pi.

This module holds the root group and `main`; the commands live in one module per group (box, serve,
demo, keys, uplink, backup, export, results, session, schedule), each listing its own in COMMANDS,
and share only appliance/shell/cli/common.py: none of them imports this module back.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import click

from appliance.core.config import ConfigError
from appliance.shared.errors import DatabaseDamaged, DomainError
from appliance.shared.secrets_files import InsecureSecretFile
from appliance.shell.cli import backup, box, demo, export, keys, results, schedule, serve, session, uplink

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


for command in (
    *box.COMMANDS,
    *serve.COMMANDS,
    *demo.COMMANDS,
    *keys.COMMANDS,
    *uplink.COMMANDS,
    *backup.COMMANDS,
    *export.COMMANDS,
    *results.COMMANDS,
    *session.COMMANDS,
    *schedule.COMMANDS,
):
    cli.add_command(command)


def main() -> None:
    # What the box creates in its data dir is for its own user alone (files 0600, folders 0700),
    # whatever umask the shell or the service manager gave it; the unit file says UMask=0077 too.
    # The writers of secrets set their modes themselves (appliance/shared/secrets_files.py) as well.
    os.umask(0o077)
    cli(prog_name="venuebox")
