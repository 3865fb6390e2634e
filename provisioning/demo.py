"""The demo box: a data dir with the shipped sample event and a pairing code for every judge."""

from __future__ import annotations

import sqlite3
from functools import partial
from pathlib import Path
from typing import Any

from appliance.core import keys, personal
from appliance.core.box import current_event_id
from appliance.core.config import Config
from appliance.core.pairing import create_code
from appliance.core.storage import Store
from provisioning.event_import import import_package, load_package
from provisioning.first_boot import init_box

# The demo's box is named so; `venuebox demo` runs only on a data dir holding this box (or none).
DEMO_BOX_NAME = "venuebox-demo"
SAMPLE_EVENT = Path(__file__).parent / "sample_event"


def prepare_demo(config: Config, code_ttl_s: int = 3600) -> list[dict[str, Any]]:
    """Init the box if needed, import the sample event if none is loaded, and make fresh codes."""
    init_box(config, name=DEMO_BOX_NAME)
    key = personal.load_key(config.data_key_path)
    with Store(config.db_path) as store:
        if store.query(current_event_id) is None:
            package = load_package(SAMPLE_EVENT)
            store.write_sync(lambda conn: import_package(conn, package, key, "demo"))
        judges = store.query(_judge_ids)
        pairing_key = keys.pairing_key(config)
        return [
            store.write_sync(
                partial(create_code, judge_id=j, ttl_s=code_ttl_s, actor="demo", key=pairing_key)
            )
            for j in judges
        ]


def _judge_ids(conn: sqlite3.Connection) -> list[str]:
    sql = "SELECT judge_id FROM judges WHERE event_id = (SELECT event_id FROM box) ORDER BY judge_id"
    return [row[0] for row in conn.execute(sql)]
