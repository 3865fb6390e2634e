"""The box's TLS identity: an ECDSA P-256 key and a self-signed certificate, pinned by tablets.

Nobody on a venue LAN can get a certificate from a public CA for ``main-stage.local``, so the box
signs its own, and tablets trust it by its fingerprint (the hex SHA-256 of the certificate's DER
bytes), which they learn from the mDNS TXT record (``fp=``) and from the pairing answer, and then
pin: a box presenting any other certificate is refused.

Key and certificate live together in one 0600 PEM file (``<data dir>/tls/box.pem``), so that a
rotation replaces both with a single atomic rename; the certificate alone is also written to
``box.crt`` for the landing page and for a tech who installs it on tablets (public, but 0600 like
every file in the data dir: the landing page serves it to whoever needs it).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.core.storage import Store
from appliance.shared.fingerprint import fingerprint_of_der, grouped
from appliance.shared.hostnet import current_addresses, host_label
from appliance.shared.secrets_files import atomic_write, fsync_dir

TLS_DIR = "tls"
PEM_FILE = "box.pem"
CERT_FILE = "box.crt"
# Apple devices refuse a trusted certificate valid for more than 825 days; stay under it.
VALIDITY_DAYS = 820
LOOPBACK = ("127.0.0.1", "::1")
# What the tablet port offers a TLS 1.2 client: forward secrecy (ECDHE) and AEAD ciphers only, no
# CBC (padding oracles, Lucky 13), no RSA key exchange, no SHA-1. Every current tablet browser has
# one of these, and most speak TLS 1.3, whose own suites are all AEAD (set_ciphers leaves them be).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


@dataclass(frozen=True)
class TlsIdentity:
    pem_path: Path
    cert_path: Path
    fingerprint: str
    names: tuple[str, ...]
    addresses: tuple[str, ...]
    not_before: str
    not_after: str

    def as_dict(self) -> dict[str, object]:
        return {
            "fingerprint": self.fingerprint,
            "fingerprint_groups": grouped(self.fingerprint),
            "names": list(self.names),
            "addresses": list(self.addresses),
            "not_before": self.not_before,
            "not_after": self.not_after,
            "certificate": self.cert_path.name,
        }


def tls_dir(data_dir: Path) -> Path:
    return data_dir / TLS_DIR


def pem_path(data_dir: Path) -> Path:
    return tls_dir(data_dir) / PEM_FILE


def pairing_url(tablet_url: str, code: str, fingerprint: str | None) -> str:
    """What a QR code carries: the judge app told which code to redeem (``?pair=``) and, with TLS,
    the certificate fingerprint in the fragment (``#fp=``), which a browser never sends to a server
    and the Python tablet client checks before it sends the code."""
    url = f"{tablet_url.rstrip('/')}/?pair={code}"
    return f"{url}#fp={fingerprint}" if fingerprint else url


def make_certificate(
    box_name: str, addresses: list[str], now: dt.datetime | None = None
) -> tuple[bytes, bytes]:
    """A new key and a self-signed certificate for ``<box name>.local``, ``localhost`` and
    ``addresses`` (plus loopback); returns (key PEM, certificate PEM)."""
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    host = f"{host_label(box_name)}.local"
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, host),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "venuebox"),
        ]
    )
    ips = []
    for address in [*addresses, *LOOPBACK]:
        ip = ipaddress.ip_address(address)
        if ip not in ips:
            ips.append(ip)
    san = x509.SubjectAlternativeName(
        [x509.DNSName(host), x509.DNSName("localhost"), *(x509.IPAddress(ip) for ip in ips)]
    )
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        # An hour back: a tablet whose clock runs a little behind still accepts a fresh certificate.
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=VALIDITY_DAYS))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)


def write_identity(data_dir: Path, box_name: str, addresses: list[str] | None = None) -> TlsIdentity:
    """Make a new key and certificate and put them in place: the 0600 key+certificate file in one
    atomic rename (a crash leaves the old pair or the new pair, never half of each), then the
    public ``box.crt`` copy."""
    directory = tls_dir(data_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    key_pem, cert_pem = make_certificate(box_name, current_addresses() if addresses is None else addresses)
    atomic_write(directory / PEM_FILE, key_pem + cert_pem, 0o600)
    atomic_write(directory / CERT_FILE, cert_pem, 0o600)
    return load_identity(data_dir)


def load_identity(data_dir: Path) -> TlsIdentity:
    """The identity on disk; FileNotFoundError without one, ValueError if the file is unusable."""
    path = pem_path(data_dir)
    pem = path.read_bytes()
    try:
        certificate = x509.load_pem_x509_certificate(pem)
        serialization.load_pem_private_key(pem, password=None)
    except ValueError as exc:
        raise ValueError(f"{path} does not hold a PEM key and certificate ({exc})") from exc
    cert_path = path.with_name(CERT_FILE)
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    if not cert_path.exists() or cert_path.read_bytes() != cert_pem:
        # The public copy is derived; a crash between the two renames is repaired here.
        atomic_write(cert_path, cert_pem, 0o600)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return TlsIdentity(
        pem_path=path,
        cert_path=cert_path,
        fingerprint=fingerprint_of_der(certificate.public_bytes(serialization.Encoding.DER)),
        names=tuple(san.get_values_for_type(x509.DNSName)),
        addresses=tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress)),
        not_before=certificate.not_valid_before_utc.isoformat(),
        not_after=certificate.not_valid_after_utc.isoformat(),
    )


def put_identity(data_dir: Path, pem: bytes) -> TlsIdentity:
    """Put a key and certificate kept elsewhere (a restore's keys bundle) in place as the box's
    identity: the 0600 pair in one atomic rename, then the public ``box.crt``. ValueError (nothing
    in place) when ``pem`` does not hold both."""
    try:
        x509.load_pem_x509_certificate(pem)
        serialization.load_pem_private_key(pem, password=None)
    except ValueError as exc:
        raise ValueError(f"the TLS key and certificate to restore are unusable ({exc})") from exc
    directory = tls_dir(data_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    atomic_write(directory / PEM_FILE, pem, 0o600)
    return load_identity(data_dir)


def ensure_identity(data_dir: Path, box_name: str) -> tuple[TlsIdentity, bool]:
    """The box's identity, made now if it has none; (identity, whether it was created)."""
    try:
        return load_identity(data_dir), False
    except FileNotFoundError:
        return write_identity(data_dir, box_name), True


# -- rotation: the audit record is the commit point ------------------------------------------------

PENDING_FILE = "box.pem.new"


def pem_fingerprint(pem: bytes) -> str:
    """The fingerprint of the certificate in a PEM (ValueError when it holds none)."""
    certificate = x509.load_pem_x509_certificate(pem)
    return fingerprint_of_der(certificate.public_bytes(serialization.Encoding.DER))


def _promote(data_dir: Path) -> None:
    directory = tls_dir(data_dir)
    # A rename, not a write (atomic_write's job): step 1 wrote the pending pair whole and durably.
    os.replace(directory / PENDING_FILE, directory / PEM_FILE)
    fsync_dir(directory)
    load_identity(data_dir)  # writes the public box.crt copy to match


def rotate(
    data_dir: Path, box_name: str, addresses: list[str] | None, store: Store, actor: str
) -> TlsIdentity:
    """A new key and certificate, in three steps so a power cut at any point leaves the old
    identity or the new one, with an audit record exactly when the new one is in force:

    1. the new pair goes to ``tls/box.pem.new`` (0600, durable);
    2. the ``tls.rotate`` audit record naming both fingerprints commits (the commit point);
    3. the new pair is renamed over ``box.pem`` (and ``box.crt`` follows).

    ``settle_rotation`` (at the daemon's start) finishes step 3 or undoes step 1, as the audit
    log says."""
    from appliance.core import audit

    settle_rotation(data_dir, store)
    try:
        old: str | None = load_identity(data_dir).fingerprint
    except (OSError, ValueError):
        old = None
    directory = tls_dir(data_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_pem, cert_pem = make_certificate(box_name, current_addresses() if addresses is None else addresses)
    atomic_write(directory / PENDING_FILE, key_pem + cert_pem, 0o600)
    new = pem_fingerprint(cert_pem)
    store.write_sync(
        lambda conn: audit.record(conn, actor, "tls.rotate", {"old_fingerprint": old, "new_fingerprint": new})
    )
    _promote(data_dir)
    return load_identity(data_dir)


def settle_rotation(data_dir: Path, store: Store) -> str | None:
    """Finish ("finished") or undo ("undone") a rotation a crash stopped between its steps; None
    when there is nothing to settle."""
    pending = tls_dir(data_dir) / PENDING_FILE
    if not pending.exists():
        return None
    try:
        fingerprint = pem_fingerprint(pending.read_bytes())
    except ValueError:
        fingerprint = None  # cut while it was written: never committed
    row = store.query(
        lambda conn: conn.execute(
            "SELECT detail FROM audit_log WHERE action = 'tls.rotate' ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    )
    committed = row is not None and json.loads(row[0]).get("new_fingerprint") == fingerprint
    if committed and fingerprint is not None:
        _promote(data_dir)
        return "finished"
    pending.unlink()
    fsync_dir(pending.parent)
    return "undone"
