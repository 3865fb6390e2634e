"""What every command shares: the data dir's config, its store, JSON output, the box a data dir holds."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from appliance.core.config import Config, load_config, resolve_data_dir
from appliance.shared.errors import DomainError
from appliance.shared.tablet_text import printable

T = TypeVar("T")

# A file an option names for the command to read (a key, a token, a certificate): click refuses a
# path that does not exist or is a folder before the command runs.
EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def config_for(ctx: click.Context, **overrides: Any) -> Config:
    """The config of the data dir the command runs on (`--data-dir`, else the environment's, else
    ./venuebox-data), with ``overrides``; under sudo, what the command creates there goes back to the
    data dir's owner when it ends."""
    config = load_config(ctx.obj["data_dir"], overrides=overrides)
    _keep_data_dir_owner(ctx, config.data_dir)
    return config


def named_data_dir(ctx: click.Context) -> tuple[Path, str] | None:
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


def with_store(config: Config, fn: Callable[[Any], T]) -> T:
    """``fn`` called with the open store of ``config``'s box; a data dir with no database is refused."""
    from appliance.core.storage import Store

    if not config.db_path.exists():
        raise DomainError(f"no box in {config.data_dir}: run `venuebox init` first (or pass --data-dir)")
    with Store(config.db_path) as store:
        return fn(store)


def print_json(value: Any) -> None:
    # json.dumps escapes C0 controls but leaves C1 and bidi overrides raw; its own new lines are
    # the only ones outside strings, so each line gets the same \uXXXX escapes (still valid JSON).
    text = json.dumps(value, indent=2, ensure_ascii=False)
    click.echo("\n".join(printable(line) for line in text.split("\n")))


def box_at(database: Path) -> tuple[str | None, str | None]:
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
