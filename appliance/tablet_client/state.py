"""What a tablet keeps in its state directory beside the sheet queue, so that a tablet that restarts
picks up where it was: the pairing with its token (``pairing.json``), the pinned certificate
fingerprint (``tls-pin.txt``) and the last event downloaded with its ETag (``event.json``).

Every file is written atomically and readable by this user only (the pairing holds the judge's token).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from appliance.shared.fingerprint import normalise_fingerprint
from appliance.shared.secrets_files import atomic_write

PAIRING_FILE = "pairing.json"
PIN_FILE = "tls-pin.txt"
EVENT_FILE = "event.json"


@dataclass(frozen=True)
class Pairing:
    """What pairing gave this tablet; kept in ``pairing.json`` (mode 0600) in the state dir."""

    device_id: str
    token: str = field(repr=False)
    judge_id: str
    judge_name: str
    event_id: str
    event_name: str
    paired_at: str


def load_pin(state_dir: Path) -> str | None:
    """The fingerprint pinned by an earlier run, None when there is none."""
    path = state_dir / PIN_FILE
    return normalise_fingerprint(path.read_text().strip()) if path.exists() else None


def has_pin(state_dir: Path) -> bool:
    return (state_dir / PIN_FILE).exists()


def save_pin(state_dir: Path, fingerprint: str) -> None:
    _write_private(state_dir / PIN_FILE, fingerprint + "\n")


def load_pairing(state_dir: Path) -> Pairing | None:
    path = state_dir / PAIRING_FILE
    if not path.exists():
        return None
    return Pairing(**json.loads(path.read_text()))


def save_pairing(state_dir: Path, pairing: Pairing) -> None:
    _write_private(state_dir / PAIRING_FILE, json.dumps(asdict(pairing), indent=2))


def load_event(state_dir: Path) -> tuple[str | None, dict[str, Any] | None]:
    """(ETag, body) of the event saved last, (None, None) when none is."""
    path = state_dir / EVENT_FILE
    if not path.exists():
        return None, None
    cached = json.loads(path.read_text())
    return cached.get("etag"), cached.get("body")


def save_event(state_dir: Path, etag: str | None, body: dict[str, Any] | None) -> None:
    """Save the event with its ETag; a ``body`` of None forgets the saved one."""
    path = state_dir / EVENT_FILE
    if body is None:
        path.unlink(missing_ok=True)
    else:
        _write_private(path, json.dumps({"etag": etag, "body": body}))


def _write_private(path: Path, text: str) -> None:
    atomic_write(path, text.encode("utf-8"), 0o600)
