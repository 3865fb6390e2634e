"""The box's own keys, each a 0600 file in the data dir, made at `venuebox init` (or the first time
they are needed on a box initialised before they existed):

* ``box-signing.key``: Ed25519 (cryptography); signs export manifests.
* ``backup-identity.key``: an age X25519 identity (pyrage); every snapshot and exported database is
  encrypted to it (so the box can verify and restore its own backups) and to the organisers'
  recipients.
* ``pairing.key``: 32 random bytes; pairing codes are stored as HMAC-SHA256 under it
  (appliance/core/pairing.py), so a copy of the database alone does not give the codes back.
* ``backup.passphrase`` (optional, set by `venuebox backup configure --passphrase-file`): wraps the
  backup identity in ``backup-identity.age`` (age scrypt), so a passphrase alone opens the backups.

Recipients: ``backup-recipients.txt`` (age's recipients-file format: one ``age1...`` per line, ``#``
comments; `age -R` reads it as is) plus the ``backup_recipients`` setting.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from pathlib import Path
from typing import TypedDict

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pyrage import passphrase as age_passphrase
from pyrage import x25519

from appliance.core.config import Config
from appliance.shared.errors import DomainError
from appliance.shared.secrets_files import atomic_write, read_secret, write_secret

SIGNING_KEY = "box-signing.key"
IDENTITY = "backup-identity.key"
PAIRING_KEY = "pairing.key"
PASSPHRASE = "backup.passphrase"
RECIPIENTS = "backup-recipients.txt"
WRAPPED_IDENTITY = "backup-identity.age"


class BadBackupKey(DomainError):
    """A recipient, identity or passphrase that cannot be used; the message says which."""


def ensure_box_keys(config: Config) -> list[str]:
    """Create the signing key and the backup identity if missing; returns what was created."""
    created = []
    signing = config.data_dir / SIGNING_KEY
    if not signing.exists():
        raw = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        write_secret(signing, base64.b64encode(raw).decode("ascii"))
        created.append("signing key")
    identity = config.data_dir / IDENTITY
    if not identity.exists():
        write_secret(identity, str(x25519.Identity.generate()))
        created.append("backup identity")
    pairing = config.data_dir / PAIRING_KEY
    if not pairing.exists():
        write_secret(pairing, base64.b64encode(secrets.token_bytes(32)).decode("ascii"))
        created.append("pairing key")
    return created


def pairing_key(config: Config) -> bytes:
    """The key pairing codes are hashed with (HMAC-SHA256), made now on a box initialised before
    it existed."""
    ensure_box_keys(config)
    return base64.b64decode(read_secret(config.data_dir / PAIRING_KEY))


def signing_key(config: Config) -> Ed25519PrivateKey:
    ensure_box_keys(config)
    raw = base64.b64decode(read_secret(config.data_dir / SIGNING_KEY))
    return Ed25519PrivateKey.from_private_bytes(raw)


def public_key_text(key: Ed25519PublicKey) -> str:
    """The public key as base64 of its 32 raw bytes (what a manifest carries)."""
    return base64.b64encode(
        key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ).decode()


def key_fingerprint(public_key_b64: str) -> str:
    """A short, readable fingerprint of a public key: SHA-256, first 16 hex digits in groups of 4."""
    digest = hashlib.sha256(base64.b64decode(public_key_b64)).hexdigest()[:16]
    return " ".join(digest[i : i + 4] for i in range(0, 16, 4))


def box_identity(config: Config) -> x25519.Identity:
    ensure_box_keys(config)
    return x25519.Identity.from_str(read_secret(config.data_dir / IDENTITY))


def parse_recipient(text: str) -> x25519.Recipient:
    try:
        return x25519.Recipient.from_str(text.strip())
    except Exception:
        raise BadBackupKey(
            f"{text.strip()[:20]!r} is not an age X25519 public key (it starts with age1…; "
            "`age-keygen -y key.txt` prints the one of a key file)"
        ) from None


def organiser_recipients(config: Config) -> list[str]:
    """The organisers' public keys: the recipients file, then the setting, without duplicates."""
    found: list[str] = []
    path = config.data_dir / RECIPIENTS
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                found.append(line)
    found += config.backup_recipients
    return list(dict.fromkeys(found))


def recipients(config: Config) -> list[x25519.Recipient]:
    """Everyone a backup is encrypted to: this box first, then each organiser."""
    return [box_identity(config).to_public(), *(parse_recipient(r) for r in organiser_recipients(config))]


def passphrase(config: Config) -> str | None:
    path = config.data_dir / PASSPHRASE
    return read_secret(path) if path.exists() else None


def wrapped_identity(config: Config) -> bytes | None:
    """The box's backup identity encrypted with the passphrase (age scrypt), or None without one:
    `age -d backup-identity.age > id.txt` asks for the passphrase, then `age -d -i id.txt FILE`."""
    secret = passphrase(config)
    if secret is None:
        return None
    return age_passphrase.encrypt((str(box_identity(config)) + "\n").encode("ascii"), secret)


class BackupKeys(TypedDict):
    """What backups and exports are encrypted to, besides the box's own key."""

    recipients: list[str]  # the organisers' age public keys
    passphrase: bool  # a backup passphrase is set


def configure(config: Config, recipient_keys: list[str], passphrase_file: Path | None) -> BackupKeys:
    """`venuebox backup configure`: replace the recipients file (each key checked) and, with a file,
    set the passphrase (at least 12 characters). Returns what is now configured."""
    for key in recipient_keys:
        parse_recipient(key)
    ensure_box_keys(config)
    if recipient_keys:
        lines = [
            "# Organisers' age public keys: every backup and export is also encrypted to these.",
            *recipient_keys,
        ]
        atomic_write(config.data_dir / RECIPIENTS, ("\n".join(lines) + "\n").encode("utf-8"), 0o600)
    if passphrase_file is not None:
        secret = passphrase_file.read_text(encoding="utf-8").strip("\r\n")
        if len(secret) < 12 or not secret.isascii() or not secret.isprintable():
            raise BadBackupKey(
                "the backup passphrase must be at least 12 printable ASCII characters (a few words are best; "
                "the age tool reads it from a terminal)"
            )
        write_secret(config.data_dir / PASSPHRASE, secret)
    return {"recipients": organiser_recipients(config), "passphrase": passphrase(config) is not None}
