"""First boot: a data dir with a database, a box identity, the admin token, the data key, the
signing key, the backup identity and the TLS certificate."""

from __future__ import annotations

import os
import secrets
import sqlite3
import uuid
from pathlib import Path
from typing import Any

from appliance.core import audit, keys, personal, tls
from appliance.core.config import Config
from appliance.core.storage import Store, create_database
from appliance.core.watermark import new_epoch
from appliance.shared.fingerprint import grouped
from appliance.shared.secrets_files import write_secret
from appliance.shared.times import now_rfc3339


def init_box(config: Config, name: str | None = None) -> dict[str, Any]:
    """Create what is missing, keep what exists (running it twice is safe); returns the box row and
    whether anything was created.

    The box row is written last: it is the commit point. A power cut before it leaves files but no
    box (`venuebox run` says to run init, and init again keeps what is whole and makes the rest);
    a box row means every file it needs was made, fsynced, before it."""
    data_dir = config.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)  # the database holds personal data and hashes of secrets
    create_database(config.db_path)
    created: list[str] = []
    with Store(config.db_path) as store:
        existing = store.query(lambda conn: conn.execute("SELECT * FROM box WHERE id = 1").fetchone())
        box_name = existing["name"] if existing is not None else name or f"venuebox-{secrets.token_hex(2)}"
        if not config.admin_token_path.exists():
            write_secret(config.admin_token_path, secrets.token_urlsafe(32))
            created.append("admin token")
        if not config.data_key_path.exists():
            personal.create_key(config.data_key_path)
            created.append("personal-data key")
        created += keys.ensure_box_keys(config)
        tls.settle_rotation(config.data_dir, store)
        identity, made = tls.ensure_identity(config.data_dir, box_name)
        if made:
            created.append(f"TLS certificate (fingerprint {grouped(identity.fingerprint)})")

        def write(conn: sqlite3.Connection) -> dict[str, Any]:
            row = conn.execute("SELECT * FROM box WHERE id = 1").fetchone()
            if row is None:
                box_id = "vb-" + uuid.uuid4().hex[:12]
                conn.execute(
                    "INSERT INTO box (id, box_id, name, created_at) VALUES (1, ?, ?, ?)",
                    (box_id, box_name, now_rfc3339()),
                )
                new_epoch(conn)
                audit.record(conn, "cli", "box.init", {"box_id": box_id, "name": box_name})
                created.append("box identity")
            return dict(conn.execute("SELECT * FROM box WHERE id = 1").fetchone())

        box = store.write_sync(write)
    return {"box": box, "created": created, "data_dir": str(Path(data_dir).resolve())}
