"""Reading back what the uplink receiver holds of this box's chains (``GET
/v1/boxes/{box}/chains/{chain}``, PROTOCOL.md), page by page, with the box's uplink target and token:
the cloud source of `venuebox restore` and `venuebox recover` (appliance/core/recovery.py, which
continues the chains with it; the shell passes ``read_cloud`` in as its ``CloudReader``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import httpx

from appliance.core.config import Config
from appliance.core.recovery import CHAINS, Candidate, Cloud, SourceState, cloud_row
from appliance.core.uplink_state import resolve_target
from appliance.shared.secrets_files import read_secret
from appliance.shared.uplink_url import shown_url
from appliance.storage.db import connect
from uplink.answers import describe_network_error
from uplink.client import new_client
from uplink.settings import UplinkSettings

# Entries asked for per request.
CLOUD_PAGE = 1000


def read_cloud(config: Config, box_id: str, after: dict[str, int], say: Callable[[str], None]) -> Cloud:
    """What the receiver holds of both chains from seq ``after[chain]`` on (inclusive: the row at
    ``after`` is there to check the receiver agrees with the snapshot), with the uplink target and
    token of the box whose settings are ``config``. Unreachable or refusing, it is reported, not
    fatal. A ``CloudReader`` (appliance/core/recovery.py)."""
    with contextlib.closing(connect(config.db_path, readonly=True)) as conn:
        target = resolve_target(conn, config)
    if target is None:
        return Cloud(SourceState("none", "no uplink configured"))
    settings = UplinkSettings.from_config(config)
    try:
        token = read_secret(target.token_file)
    except OSError as exc:
        return Cloud(SourceState("refused", f"the uplink token cannot be read ({exc.strerror or exc})"))
    where = shown_url(target.url)
    say(f"asking the cloud at {where} what it holds of box {box_id}")

    async def fetch() -> Cloud:
        found = Cloud(SourceState("used", where))
        async with new_client(target, settings) as client:
            for chain in CHAINS:
                start = max(0, after[chain] - 1)
                while True:
                    response = await client.get(
                        f"{target.url}/v1/boxes/{box_id}/chains/{chain}",
                        params={"after": start, "limit": CLOUD_PAGE},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    if response.status_code != 200:
                        # Nothing of a cloud that answered only in part is used: all or nothing.
                        status = response.status_code
                        state = "unreachable" if status >= 500 or status == 429 else "refused"
                        return Cloud(SourceState(state, f"{where} answered {status} for box {box_id}"))
                    page = response.json()
                    held = page.get("head")
                    found.heads[chain] = (held["seq"], held["hash"]) if held else None
                    for entry in page["entries"]:
                        try:
                            row = cloud_row(chain, entry["payload"])
                        except (KeyError, TypeError):
                            continue
                        if row["seq"] == entry["seq"] and row["hash"] == entry["hash"]:
                            found.rows[chain].append(Candidate("cloud", row))
                    if not page["entries"] or page["last_seq"] <= start:
                        break
                    start = page["last_seq"]
        return found

    try:
        return asyncio.run(fetch())
    except (httpx.HTTPError, OSError, ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, httpx.HTTPError | OSError):
            reason = describe_network_error(exc, target.url, settings)
        else:
            reason = f"{where} did not answer as a venuebox receiver ({type(exc).__name__})"
        return Cloud(SourceState("unreachable", reason))
