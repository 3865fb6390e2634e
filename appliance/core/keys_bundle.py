"""The keys bundle: everything a restored box needs to be the same box, kept encrypted with its backups.

``venuebox-keys/2`` is a JSON object: the box id; the personal-data key that sealed the database it
was written with; the signing key; the backup identity; the pairing key (so the restored box still
accepts the pairing codes it had issued; a bundle written before it travelled gives a new key at
the first start, and codes issued before the snapshot no longer pair); the TLS key and certificate
(``tls/box.pem``, whose fingerprint tablets pinned); the admin token; the uplink token (with the
name of its file and who set it: `venuebox uplink configure` or the ``uplink_*`` settings); the
settings file ``venuebox.toml`` as text; the organisers' recipients file (never the backup
passphrase: a person's words, perhaps used elsewhere, are not the box's to hand on; a restored
box is given it again with `venuebox backup configure --passphrase-file`); and the ledger and audit
heads of that database, so a restore can tell that a bundle belongs to its snapshot. A box
restored with it serves the same certificate, so pinned tablets reconnect with the tokens they hold,
and its admin and uplink tokens still work.

``write_key_files`` writes it, age-encrypted to the snapshots' recipients: appliance/core/backup.py
with every snapshot, as ``snapshot-<time>.keys.age`` beside it (deleted with it; a snapshot restores
with the identity in force when it was taken, whatever was rotated since) and as ``keys.age``
(``KEYS_FILE``), the newest. An export holds its own ``keys.age``; a personal-data key rotation
(appliance/core/data_key.py) leaves ``keys-<old key id>.age``. A ``venuebox-keys/1`` bundle (the
three keys only, written before the identity travelled) still restores: that box gets a new admin
token, and a new certificate at its first start.

It holds every secret of the box: whoever opens it (the box's backup identity, an organiser key,
the passphrase) can act as the box, as they can already read every backup of it.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import pyrage

from appliance.core import keys, personal, tls
from appliance.core.chain import head
from appliance.core.config import CONFIG_FILE, Config, ConfigError, load_config
from appliance.core.uplink_state import resolve_target
from appliance.shared.errors import DomainError
from appliance.shared.secrets_files import InsecureSecretFile, atomic_write, read_secret, write_secret
from appliance.shared.uplink_url import shown_url
from appliance.storage.db import connect

FORMAT = "venuebox-keys/2"
READABLE = ("venuebox-keys/1", FORMAT)
# The bundle written with snapshot-<time>.sqlite.age is snapshot-<time>.keys.age.
SNAPSHOT_SUFFIX = ".sqlite.age"
SUFFIX = ".keys.age"
# The newest bundle, beside the snapshots (and in an export).
KEYS_FILE = "keys.age"
# The uplink token of a box whose uplink is set by the uplink_* settings, in a restored data dir.
CONFIG_UPLINK_TOKEN = "uplink.token"


class BundleRefused(DomainError):
    """A keys bundle that cannot be read, or does not belong to the snapshot it is beside."""


class UplinkToken(msgspec.Struct, kw_only=True):
    source: Literal["configure", "config"]
    url: str  # as shown (no credentials): what the restore says it restored
    file: str  # the token file's name in the data dir (configure), or as set (config)
    token: str


class DatabaseMark(msgspec.Struct, kw_only=True):
    """The heads of the database the bundle was written with: its snapshot has the same."""

    ledger_rows: int
    ledger_head: str
    audit_rows: int
    audit_head: str


class KeysBundle(msgspec.Struct, kw_only=True):
    format: str
    box_id: str | None = None
    database: DatabaseMark | None = None
    personal_data_key: str
    box_signing_key: str
    backup_identity: str
    pairing_key: str | None = None
    tls_pem: str | None = None
    admin_token: str | None = None
    uplink: UplinkToken | None = None
    settings: str | None = None
    backup_recipients: str | None = None


def bundle_name(snapshot_name: str) -> str:
    """``snapshot-<time>.keys.age`` for ``snapshot-<time>.sqlite.age``; "" for any other name (an
    export's ``database.sqlite.age`` goes with the ``keys.age`` in its folder)."""
    if snapshot_name.startswith("snapshot-") and snapshot_name.endswith(SNAPSHOT_SUFFIX):
        return snapshot_name[: -len(SNAPSHOT_SUFFIX)] + SUFFIX
    return ""


# -- writing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoxFiles:
    """The data dir's identity files, read before the database is copied (`read_box_files`)."""

    tls_pem: bytes | None
    tls_pending: bytes | None
    admin_token: str | None
    uplink_tokens: dict[str, str] = field(default_factory=dict)


def _secret(path: Path) -> str | None:
    try:
        return read_secret(path)
    except (FileNotFoundError, InsecureSecretFile, UnicodeDecodeError):
        return None


def _bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def read_box_files(config: Config) -> BoxFiles:
    """The files that may change while a snapshot is taken, read BEFORE its copy of the database:
    a `tls rotate` or `uplink configure` that lands between the two then leaves the bundle with
    what was in force up to the copy (the certificate tablets pinned by then; the token file the
    copy names, which `uplink configure` may delete as soon as the database names a new one)."""
    directory = tls.tls_dir(config.data_dir)
    return BoxFiles(
        tls_pem=_bytes(directory / tls.PEM_FILE),
        tls_pending=_bytes(directory / tls.PENDING_FILE),
        admin_token=_secret(config.admin_token_path),
        uplink_tokens={
            path.name: token
            for path in sorted(config.data_dir.glob("uplink*.token"))
            if (token := _secret(path)) is not None
        },
    )


@contextlib.contextmanager
def _reading(database: Path | None, config: Config) -> Iterator[sqlite3.Connection]:
    if database is None:  # the live database (a WAL file: an ordinary connection that refuses writes)
        conn = connect(config.db_path, readonly=True)
    else:  # a copy about to be encrypted: read-only, so it stays byte for byte what was copied
        conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


def build(
    config: Config,
    personal_data_key: bytes | None = None,
    database: Path | None = None,
    files: BoxFiles | None = None,
) -> KeysBundle:
    """The bundle for ``database`` (a copy about to be encrypted; None: the live database, unmarked)
    with ``personal_data_key`` (the one that sealed it; None: the key file's) and ``files`` (read
    before the copy; None: read now)."""
    keys.ensure_box_keys(config)
    files = files or read_box_files(config)
    with _reading(database, config) as conn:
        box = conn.execute("SELECT box_id FROM box WHERE id = 1").fetchone()
        target = resolve_target(conn, config)
        mark = None
        if database is not None:
            ledger_rows, ledger_head = head(conn, "sheets")
            audit_rows, audit_head = head(conn, "audit_log")
            mark = DatabaseMark(
                ledger_rows=ledger_rows, ledger_head=ledger_head, audit_rows=audit_rows, audit_head=audit_head
            )
        # The certificate in force at the copy: box.pem, unless the copy's newest `tls.rotate`
        # record names the one a rotation had written but not yet renamed (appliance/core/tls.py).
        rotated = conn.execute(
            "SELECT detail FROM audit_log WHERE action = 'tls.rotate' ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    tls_pem = files.tls_pem
    if rotated is not None and files.tls_pending is not None:
        with contextlib.suppress(ValueError):
            if tls.pem_fingerprint(files.tls_pending) == json.loads(rotated[0]).get("new_fingerprint"):
                tls_pem = files.tls_pending
    uplink = None
    if target is not None:
        if target.source == "configure":
            token = files.uplink_tokens.get(target.token_file.name) or _secret(target.token_file)
            name = target.token_file.name
        else:
            token, name = _secret(target.token_file), config.uplink_token_file or CONFIG_UPLINK_TOKEN
        if token is not None:  # unreadable: the restored box asks for `uplink configure` again
            uplink = UplinkToken(source=target.source, url=shown_url(target.url), file=name, token=token)
    settings = config.data_dir / CONFIG_FILE
    recipients = config.data_dir / keys.RECIPIENTS
    return KeysBundle(
        format=FORMAT,
        box_id=box["box_id"] if box is not None else None,
        database=mark,
        personal_data_key=(
            personal.key_text(personal_data_key)
            if personal_data_key is not None
            else read_secret(config.data_key_path)
        ),
        box_signing_key=read_secret(config.data_dir / keys.SIGNING_KEY),
        backup_identity=read_secret(config.data_dir / keys.IDENTITY),
        pairing_key=read_secret(config.data_dir / keys.PAIRING_KEY),
        tls_pem=tls_pem.decode("ascii") if tls_pem is not None else None,
        admin_token=files.admin_token,
        uplink=uplink,
        settings=settings.read_text(encoding="utf-8") if settings.exists() else None,
        backup_recipients=recipients.read_text(encoding="utf-8") if recipients.exists() else None,
    )


def encode(bundle: KeysBundle) -> bytes:
    """The bundle as JSON, indented: `age -d keys.age` shows it readably."""
    return json.dumps(msgspec.to_builtins(bundle), indent=2).encode("utf-8")


def write_key_files(
    config: Config,
    directory: Path,
    personal_data_key: bytes | None = None,
    name: str = KEYS_FILE,
    *,
    database: Path | None = None,
    files: BoxFiles | None = None,
    copies: tuple[str, ...] = (),
) -> int:
    """The keys bundle for ``database`` (a copy about to be encrypted; None: the live database) as
    ``name`` and each of ``copies`` in ``directory``, age-encrypted in memory to the backups'
    recipients (its plain text never touches a disk); with a passphrase, also
    ``backup-identity.age``. Returns the encrypted bundle's size in bytes."""
    bundle = build(config, personal_data_key, database, files)
    sealed = pyrage.encrypt(encode(bundle), keys.recipients(config))
    for each in (name, *copies):
        atomic_write(directory / each, sealed)
    wrapped = keys.wrapped_identity(config)
    if wrapped is not None:
        atomic_write(directory / keys.WRAPPED_IDENTITY, wrapped)
    return len(sealed)


# -- reading and restoring ------------------------------------------------------------------------


def decode(data: bytes, name: str) -> KeysBundle:
    try:
        bundle = msgspec.json.decode(data, type=KeysBundle)
    except msgspec.DecodeError as exc:
        raise BundleRefused(f"{name} is not a venuebox keys bundle ({exc})") from None
    if bundle.format not in READABLE:
        raise BundleRefused(
            f"{name} is a {bundle.format} keys bundle, which this venuebox cannot read: restore with a "
            "newer venuebox"
        )
    return bundle


def mark_of(facts: dict[str, Any]) -> DatabaseMark:
    """A database's mark from ``backup.database_facts``."""
    return DatabaseMark(
        ledger_rows=facts["ledger_rows"],
        ledger_head=facts["ledger_head"],
        audit_rows=facts["audit_rows"],
        audit_head=facts["audit_head"],
    )


def belongs(bundle: KeysBundle, name: str, snapshot: str, box_id: str, mark: DatabaseMark) -> str | None:
    """Why the bundle in file ``name`` cannot go with the snapshot ``snapshot`` of box ``box_id``
    whose database has ``mark``, or None. A bundle of another box never goes; the one written with
    the snapshot (``bundle_name``) must carry its mark; ``keys.age`` may be newer than the snapshot
    (same box, a later snapshot's identity). A /1 bundle names no box: only its key is checked."""
    if bundle.box_id is not None and bundle.box_id != box_id:
        own = bundle_name(snapshot) or "keys.age"
        return (
            f"{name} holds the keys of box {bundle.box_id}, but {snapshot} is a snapshot of box {box_id}: "
            f"it does not belong to this snapshot; put the snapshot's own {own} beside it and restore again"
        )
    if name == bundle_name(snapshot) and bundle.database is not None and bundle.database != mark:
        return (
            f"{name} was written with another database than {snapshot} (ledger {bundle.database.ledger_rows} "
            f"rows, {mark.ledger_rows} in the snapshot): it does not belong to this snapshot; put the "
            "snapshot's own keys file beside it and restore again"
        )
    return None


@dataclass(frozen=True)
class Installed:
    """What a restore put in place from a bundle, for the restore's report."""

    bundle_format: str
    tls_fingerprint: str | None  # None: no certificate in the bundle (the box makes one at start)
    admin_token: bool  # True: the old box's token; False: a new one
    uplink: UplinkToken | None  # with its token file written; None: nothing to restore
    uplink_note: str | None  # what the tech must still do for the uplink
    settings: bool
    backup_dir: str | None  # the snapshots folder the restored settings name


def install(bundle: KeysBundle, target: Path, conn: sqlite3.Connection) -> Installed:
    """Put ``bundle`` in place in the new data dir ``target`` (every secret 0600, atomically), and
    point the restored database's uplink target (``conn``, in the caller's transaction) at the
    token file it now has. Returns what was restored."""
    write_secret(target / "personal-data.key", bundle.personal_data_key)
    write_secret(target / keys.SIGNING_KEY, bundle.box_signing_key)
    write_secret(target / keys.IDENTITY, bundle.backup_identity)
    if bundle.pairing_key is not None:
        write_secret(target / keys.PAIRING_KEY, bundle.pairing_key)
    fingerprint = None
    if bundle.tls_pem is not None:
        fingerprint = tls.put_identity(target, bundle.tls_pem.encode("ascii")).fingerprint
    if bundle.admin_token is not None:
        write_secret(target / "admin.token", bundle.admin_token)
    if bundle.backup_recipients is not None:
        atomic_write(target / keys.RECIPIENTS, bundle.backup_recipients.encode("utf-8"), 0o600)
    backup_dir = None
    if bundle.settings is not None:
        # As the old box had it, backup_dir included: snapshots stay on the second disk.
        atomic_write(target / CONFIG_FILE, bundle.settings.encode("utf-8"))
        with contextlib.suppress(ConfigError):
            backup_dir = load_config(target, environ={}).backup_dir or None
    uplink, note = bundle.uplink, None
    if uplink is not None and uplink.source == "configure" and not _uplink_configured(conn):
        uplink = None  # a newer bundle (keys.age) than a snapshot taken before `uplink configure`
    elif uplink is not None and uplink.source == "configure":
        name = Path(uplink.file).name
        write_secret(target / name, uplink.token)
        # Named relative to the data dir (appliance/core/uplink_state.py): the restored dir is moved
        # into place after the restore (docs/operations.md, "Restore", step 4).
        conn.execute("UPDATE uplink_target SET token_file = ? WHERE id = 1", (name,))
    elif uplink is not None:
        write_secret(target / CONFIG_UPLINK_TOKEN, uplink.token)
        if uplink.file != CONFIG_UPLINK_TOKEN:
            note = (
                f"venuebox.toml sets uplink_token_file = {uplink.file}: the token is restored as "
                f"{target / CONFIG_UPLINK_TOKEN}; copy it there, or remove that setting"
            )
    elif _uplink_configured(conn):
        why = (
            "could not be read when this snapshot was taken"
            if bundle.format == FORMAT
            else f"is not in this {bundle.format} keys file"
        )
        note = f"the uplink token {why}: give it again with `venuebox uplink configure`"
    return Installed(
        bundle_format=bundle.format,
        tls_fingerprint=fingerprint,
        admin_token=bundle.admin_token is not None,
        uplink=uplink,
        uplink_note=note,
        settings=bundle.settings is not None,
        backup_dir=backup_dir,
    )


def _uplink_configured(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM uplink_target WHERE id = 1").fetchone() is not None
