"""`venuebox demo`: a demo box with the sample event, simulated judges scoring, and a reference
receiver as its cloud."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from appliance.core.config import Config, load_config
from appliance.shared.errors import DomainError
from appliance.shared.fingerprint import grouped
from appliance.shared.logs import setup_logging
from appliance.shared.secrets_files import write_secret
from appliance.shell.cli.common import box_at, named_data_dir


@click.command()
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--tablets", type=int, default=12, show_default=True, help="Simulated judges scoring.")
@click.option("--fresh", is_flag=True, help="Start from an empty demo data dir.")
@click.pass_context
def demo(ctx: click.Context, port: int, tablets: int, fresh: bool) -> None:
    """A demo box: the shipped sample event, the daemon, simulated judges scoring; Ctrl-C stops all."""
    import shutil

    from appliance.shell.daemon import run_demo
    from provisioning.demo import prepare_demo

    named = named_data_dir(ctx)
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
    name = box_at(database)[1]
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


# What this module adds to the root `venuebox` group (appliance/shell/cli/__init__.py).
COMMANDS: tuple[click.Command, ...] = (demo,)
