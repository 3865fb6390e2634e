"""Paired tablets: bearer tokens (stored only as hashes), lookup, listing and revocation."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from appliance.core import audit
from appliance.shared.admin_wire import RevokedDevice
from appliance.shared.errors import NotAuthenticated, NotFound
from appliance.shared.times import now_rfc3339, parse_rfc3339, to_rfc3339, utcnow

TOKEN_BYTES = 32  # 256 bits


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    # Tokens are 256 random bits, so a plain SHA-256 cannot be brute-forced; a slow KDF would only
    # cost every request time.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    event_id: str
    judge_id: str
    name: str
    expires_at: str | None = None

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and (now or utcnow()) >= parse_rfc3339(self.expires_at)


EXPIRED = "this tablet's token has expired: pair this tablet again"
EVENT_END_GRACE = timedelta(hours=12)
MIN_TOKEN_LIFE = timedelta(hours=24)
NO_SCHEDULE_LIFE = timedelta(days=7)


def token_expiry(conn: sqlite3.Connection, event_id: str, now: datetime, ttl_h: float = 0.0) -> datetime:
    """When a token issued ``now`` stops working: ``ttl_h`` hours later, or (0) at the end of the
    event: its last session's start plus 12 h; never sooner than a day from now (a box set up for
    an event already under way, or a demo with an old sample), and a week when no session has a
    start time."""
    if ttl_h > 0:
        return now + timedelta(hours=ttl_h)
    starts = [
        parse_rfc3339(row[0])
        for row in conn.execute(
            "SELECT starts_at FROM sessions WHERE event_id = ? AND starts_at IS NOT NULL", (event_id,)
        )
    ]
    if not starts:
        return now + NO_SCHEDULE_LIFE
    return max(max(starts) + EVENT_END_GRACE, now + MIN_TOKEN_LIFE)


def authenticate(conn: sqlite3.Connection, token: str | None) -> Device:
    """The active device holding ``token``; NotAuthenticated for unknown, revoked, expired or
    malformed."""
    if not token or len(token) > 200:
        raise NotAuthenticated("missing or malformed device token")
    row = conn.execute(
        "SELECT device_id, event_id, judge_id, name, revoked_at, expires_at FROM devices"
        " WHERE token_hash = ?",
        (token_hash(token),),
    ).fetchone()
    if row is None or row["revoked_at"] is not None:
        raise NotAuthenticated("unknown or revoked device token: pair this tablet again")
    device = Device(row["device_id"], row["event_id"], row["judge_id"], row["name"], row["expires_at"])
    if device.expired():
        raise NotAuthenticated(EXPIRED)
    return device


def ensure_active(conn: sqlite3.Connection, device: Device) -> None:
    """Re-check inside a write transaction, so a revoke (or a rotation, or the expiry) that comes
    first always wins."""
    row = conn.execute(
        "SELECT revoked_at, expires_at FROM devices WHERE device_id = ?", (device.device_id,)
    ).fetchone()
    if row is None or row[0] is not None:
        raise NotAuthenticated("this device was revoked: pair this tablet again")
    if row[1] is not None and utcnow() >= parse_rfc3339(row[1]):
        raise NotAuthenticated(EXPIRED)


def rotate_token(
    conn: sqlite3.Connection, device: Device, ttl_h: float, request_id: str | None = None
) -> dict[str, Any]:
    """A new token for ``device`` (the one it used stops working at once), with a new expiry."""
    ensure_active(conn, device)
    token = new_token()
    expires = to_rfc3339(token_expiry(conn, device.event_id, utcnow(), ttl_h))
    conn.execute(
        "UPDATE devices SET token_hash = ?, expires_at = ? WHERE device_id = ?",
        (token_hash(token), expires, device.device_id),
    )
    audit.record(
        conn, f"device:{device.device_id}", "device.rotate", {"device_id": device.device_id}, request_id
    )
    return {"device_id": device.device_id, "token": token, "expires_at": expires}


def devices_signature(conn: sqlite3.Connection) -> str:
    """Changes whenever a tablet is paired, revoked or rotates its token: the box then takes a
    snapshot, so a box rebuilt from its backups still knows every tablet and its token."""
    digest = hashlib.sha256()
    for row in conn.execute("SELECT device_id, token_hash, revoked_at FROM devices ORDER BY device_id"):
        digest.update("|".join(str(v) for v in row).encode() + b"\n")
    return digest.hexdigest()


def list_devices(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        """
        SELECT d.device_id, d.judge_id, j.name AS judge_name, d.name, d.paired_at, d.revoked_at,
               p.last_seen_at, p.battery, p.app_version, p.queue_depth, p.clock_skew_s, p.address
        FROM devices d
        LEFT JOIN judges j ON j.event_id = d.event_id AND j.judge_id = d.judge_id
        LEFT JOIN presence p ON p.device_id = d.device_id
        ORDER BY d.paired_at
        """
    )
    return [dict(row) for row in rows]


def revoke(
    conn: sqlite3.Connection, device_id: str, actor: str, request_id: str | None = None
) -> RevokedDevice:
    """Revoke ``device_id``'s token (audited; revoking again changes nothing); NotFound for no such
    device."""
    row = conn.execute(
        "SELECT device_id, judge_id, revoked_at FROM devices WHERE device_id = ?", (device_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no device {device_id!r}: `venuebox devices` lists them")
    if row["revoked_at"] is None:
        conn.execute("UPDATE devices SET revoked_at = ? WHERE device_id = ?", (now_rfc3339(), device_id))
        audit.record(
            conn, actor, "device.revoke", {"device_id": device_id, "judge_id": row["judge_id"]}, request_id
        )
    revoked = conn.execute(
        "SELECT device_id, judge_id, name, revoked_at FROM devices WHERE device_id = ?", (device_id,)
    ).fetchone()
    return RevokedDevice(**dict(revoked))
