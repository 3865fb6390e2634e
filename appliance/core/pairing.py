"""One-time pairing codes: a tech makes one for a judge, a tablet trades it for a device token.

Codes are 8 characters from a 32-symbol alphabet with no look-alikes (40 bits), single use,
expiring (10 minutes by default, at most ``pairing_code_max_ttl_s``), and stored only as
HMAC-SHA256 under the box's pairing key (``pairing.key`` in the data dir, appliance/core/keys.py): 40
bits are few enough that a bare SHA-256 found in a copy of the database would give the code back in
minutes; without the key file the hash gives nothing. With the pairing endpoint throttled per client
address and box-wide (edge_api), guessing one in its lifetime is out of reach.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import uuid
from datetime import timedelta
from typing import Any

from appliance.core import audit, devices
from appliance.core.box import require_event
from appliance.core.config import MAX_PAIRING_CODE_TTL_S
from appliance.shared.admin_wire import ActiveCode
from appliance.shared.errors import InvalidInput, NotFound, PairingRefused
from appliance.shared.times import now_rfc3339, parse_rfc3339, to_rfc3339, utcnow

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, 1/I
CODE_LENGTH = 8


def normalise_code(code: str) -> str:
    """Judges type codes by hand: ignore case, spaces and dashes."""
    return "".join(ch for ch in code.upper() if ch.isalnum())


def code_hash(code: str, key: bytes) -> str:
    """What the box stores for ``code``: HMAC-SHA256 under the pairing key, hex."""
    return hmac.new(key, normalise_code(code).encode("utf-8"), hashlib.sha256).hexdigest()


def format_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


def create_code(
    conn: sqlite3.Connection,
    judge_id: str,
    ttl_s: int,
    actor: str,
    request_id: str | None = None,
    *,
    key: bytes,
    max_ttl_s: int = MAX_PAIRING_CODE_TTL_S,
) -> dict[str, Any]:
    """A new code for ``judge_id`` of the current event, hashed under ``key`` (``keys.pairing_key``);
    returns it (the only time it is readable). A ``ttl_s`` over ``max_ttl_s`` (the
    ``pairing_code_max_ttl_s`` setting) is refused and nothing is stored."""
    longest = min(max_ttl_s, MAX_PAIRING_CODE_TTL_S)
    if not 10 <= ttl_s <= longest:
        message = (
            f"a pairing code lives 10 s to {longest} s ({_hours(longest)}, the setting "
            f"pairing_code_max_ttl_s), not {ttl_s} s: nothing was made; ask for a lifetime in that range"
        )
        raise InvalidInput(message, [{"field": "ttl_s", "message": f"must be between 10 and {longest}"}])
    event_id = require_event(conn, "no event imported yet: run `venuebox event import PACKAGE` first")
    judge = conn.execute(
        "SELECT judge_id, name FROM judges WHERE event_id = ? AND judge_id = ?", (event_id, judge_id)
    ).fetchone()
    if judge is None:
        raise NotFound(f"no judge {judge_id!r} in event {event_id!r}")
    code = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    now = utcnow()
    code_id = str(uuid.uuid4())
    expires_at = to_rfc3339(now + timedelta(seconds=ttl_s))
    conn.execute(
        "INSERT INTO pairing_codes (code_id, code_hash, event_id, judge_id, created_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (code_id, code_hash(code, key), event_id, judge_id, to_rfc3339(now), expires_at),
    )
    audit.record(
        conn,
        actor,
        "pairing.code",
        {"code_id": code_id, "judge_id": judge_id, "expires_at": expires_at},
        request_id,
    )
    return {
        "code": format_code(code),
        "code_id": code_id,
        "judge": {"id": judge_id, "name": judge["name"]},
        "event_id": event_id,
        "expires_at": expires_at,
        "ttl_s": ttl_s,
    }


def redeem(
    conn: sqlite3.Connection,
    code: str,
    device_name: str,
    address: str | None,
    request_id: str | None = None,
    token_ttl_h: float = 0.0,
    *,
    key: bytes,
) -> dict[str, Any]:
    """Trade a valid code (hashed under ``key``, as ``create_code`` stored it) for a new device and
    its token (inside the writer's transaction); the token expires as ``devices.token_expiry``
    says."""
    row = conn.execute(
        "SELECT code_id, event_id, judge_id, expires_at, used_at FROM pairing_codes WHERE code_hash = ?",
        (code_hash(code, key),),
    ).fetchone()
    now = utcnow()
    if row is None or row["used_at"] is not None or parse_rfc3339(row["expires_at"]) <= now:
        # One answer for wrong, used and expired, so an attacker learns nothing from it.
        raise PairingRefused("this pairing code is not valid: ask the venue tech for a new one")
    token = devices.new_token()
    device_id = str(uuid.uuid4())
    expires_at = to_rfc3339(devices.token_expiry(conn, row["event_id"], now, token_ttl_h))
    conn.execute(
        "INSERT INTO devices (device_id, event_id, judge_id, name, token_hash, paired_at, paired_from,"
        " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            device_id,
            row["event_id"],
            row["judge_id"],
            device_name,
            devices.token_hash(token),
            to_rfc3339(now),
            address,
            expires_at,
        ),
    )
    conn.execute(
        "UPDATE pairing_codes SET used_at = ?, device_id = ? WHERE code_id = ?",
        (to_rfc3339(now), device_id, row["code_id"]),
    )
    audit.record(
        conn,
        f"device:{device_id}",
        "device.pair",
        {"device_id": device_id, "judge_id": row["judge_id"], "code_id": row["code_id"]},
        request_id,
    )
    judge = conn.execute(
        "SELECT name FROM judges WHERE event_id = ? AND judge_id = ?", (row["event_id"], row["judge_id"])
    ).fetchone()
    event = conn.execute("SELECT name FROM events WHERE event_id = ?", (row["event_id"],)).fetchone()
    return {
        "device_id": device_id,
        "token": token,
        "token_expires_at": expires_at,
        "judge": {"id": row["judge_id"], "name": judge["name"]},
        "event": {"id": row["event_id"], "name": event["name"]},
    }


def _hours(seconds: int) -> str:
    return f"{seconds / 3600:g} h"


def active_codes(conn: sqlite3.Connection) -> list[ActiveCode]:
    """Unused, unexpired pairing codes, oldest first: their ids and judges, never the codes."""
    now = now_rfc3339()
    rows = conn.execute(
        "SELECT code_id, judge_id, created_at, expires_at FROM pairing_codes"
        " WHERE used_at IS NULL AND expires_at > ? ORDER BY created_at",
        (now,),
    )
    return [ActiveCode(**dict(r)) for r in rows]
