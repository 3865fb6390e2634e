"""The box's database: the SQLite engine (``appliance.storage.db``) opened with the box's schema
(``schema.migrate``). Its file must exist: `venuebox init` makes it."""

from __future__ import annotations

from pathlib import Path

from appliance.core.storage.schema import migrate
from appliance.storage import db


class Store(db.Store):
    """The data dir's database (``db.Store`` with the box's schema)."""

    def __init__(self, path: Path | str, *, read_threads: int = 2, create: bool = False) -> None:
        super().__init__(path, read_threads=read_threads, schema=migrate, create=create)


def create_database(path: Path) -> int:
    """Create or upgrade the box's database file; returns the schema version."""
    return db.create_database(path, migrate)
