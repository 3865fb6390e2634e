"""`venuebox export` to a USB key, and `export verify` of one."""

from __future__ import annotations

from pathlib import Path

import click

from appliance.shared.errors import DomainError
from appliance.shell.cli.common import config_for, with_store


@click.group("export", invoke_without_command=True)
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
    from appliance.shared.csv_dialects import csv_dialect as dialect_named

    config = config_for(ctx)
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
        lambda fn: with_store(config, lambda store: store.write_sync(fn)),
        progress=lambda fraction, step: click.echo(f"  {fraction:4.0%}  {step}"),
        csv_dialect=dialect.name,
    )
    click.echo(f"spreadsheet files: {dialect.name} ({dialect.says})")
    click.echo(done.names)
    click.echo(done.results_print)
    click.echo(
        f"done: {done.path} ({done.files} files, {done.bytes / 1024 / 1024:.1f} MB, "
        f"{done.ledger_rows} sheets, ledger head {done.ledger_head[:16]}, signing key {done.fingerprint}); "
        f"written and read back in {done.seconds:.1f} s"
    )


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


# What this module adds to the root `venuebox` group (appliance/shell/cli/__init__.py).
COMMANDS: tuple[click.Command, ...] = (export_group,)
