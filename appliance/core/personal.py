"""Personal data at rest: field-by-field AES-256-GCM.

Each value gets a random 96-bit nonce; the associated data binds the ciphertext to its table,
column and row, so a value copied to another row or column does not decrypt. The data key is a
0600 file in the data dir, created by ``venuebox init``.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from appliance.shared.secrets_files import read_secret, write_secret

PREFIX = "v1:"


def create_key(path: Path) -> None:
    write_secret(path, key_text(AESGCM.generate_key(bit_length=256)))


def key_text(key: bytes) -> str:
    """A key as its file holds it (base64)."""
    return base64.b64encode(key).decode("ascii")


def load_key(path: Path) -> bytes:
    return base64.b64decode(read_secret(path))


def _aad(table: str, column: str, row_id: str) -> bytes:
    return f"{table}\x1f{column}\x1f{row_id}".encode()


def encrypt(key: bytes, table: str, column: str, row_id: str, plaintext: str) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), _aad(table, column, row_id))
    return PREFIX + base64.b64encode(nonce + sealed).decode("ascii")


def decrypt(key: bytes, table: str, column: str, row_id: str, token: str) -> str:
    if not token.startswith(PREFIX):
        raise ValueError("not a venuebox personal-data ciphertext")
    raw = base64.b64decode(token[len(PREFIX) :])
    return AESGCM(key).decrypt(raw[:12], raw[12:], _aad(table, column, row_id)).decode("utf-8")


def mask(name: str) -> str:
    """'Ana María López' -> 'A. M. L.': enough for a tech to tell entries apart, not to identify."""
    initials = [part[0] + "." for part in name.split() if part]
    return " ".join(initials) if initials else ""


def mask_value(value: str) -> str:
    """Any other personal value: its first character and a fixed '•••' ('+1 416 555 0199' ->
    '+•••'), so a tech sees that there is a value and roughly what kind (a phone, an email), never
    its length; a value shorter than 4 characters is all dots."""
    value = value.strip()
    if not value:
        return ""
    return value[0] + "•••" if len(value) >= 4 else "•••"
