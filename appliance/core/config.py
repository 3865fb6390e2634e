"""The box's configuration: one typed object, read once.

Precedence, lowest to highest: built-in defaults, ``<data dir>/venuebox.toml``, ``VENUEBOX_*``
environment variables, then CLI flags. Zero configuration works: every field has a default.
The data dir itself comes from ``--data-dir``, else ``$VENUEBOX_DATA_DIR``, else
``$STATE_DIRECTORY`` (set by systemd's ``StateDirectory=``), else ``./venuebox-data``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from appliance.shared.csv_dialects import UnknownCsvDialect, csv_dialect
from appliance.shared.netloc import http_url
from appliance.shared.uplink_url import check_url

CONFIG_FILE = "venuebox.toml"
# Written by a running daemon (where its APIs listen, its pid), read by the console and the CLI.
RUNTIME_FILE = "daemon.json"
# No setting lets a pairing code live longer than this (pairing_code_max_ttl_s is at most this).
MAX_PAIRING_CODE_TTL_S = 7 * 24 * 3600
# The longest comment any box takes (the sheet schema's limit); comment_max_chars is at most this.
MAX_COMMENT_CHARS = 2000
ENV_PREFIX = "VENUEBOX_"


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    data_dir: Path = Path("venuebox-data")
    # Tablet API: on every interface, the tablets are on the venue LAN.
    host: str = "0.0.0.0"
    port: int = msgspec.field(default=8080)
    # Admin API: loopback only unless a tech explicitly says otherwise.
    admin_host: str = "127.0.0.1"
    admin_port: int = 8081
    admin_allow_remote: bool = False
    # TLS on the tablet port: a self-signed certificate made at first boot (<data dir>/tls/), pinned
    # by tablets through the fingerprint in mDNS and the pairing answer. false = plain HTTP (a lab).
    tls: bool = True
    # With TLS, an optional plain-HTTP port serving only a page that explains how to trust the box
    # (its fingerprint, the certificate to download, the https address). 0 = none.
    http_port: int = 0
    # Presence thresholds (seconds since the last heartbeat) and the interval tablets are told.
    heartbeat_interval_s: int = 10
    presence_online_s: int = 30
    presence_stale_s: int = 120
    heartbeat_history_per_device: int = 360
    # Limits.
    max_body_bytes: int = 1_048_576
    batch_max_sheets: int = 500
    comment_max_chars: int = MAX_COMMENT_CHARS
    device_rate_per_s: float = 20.0
    device_burst: int = 100
    pair_attempts_per_minute: int = 10
    # Failed pairing attempts (wrong, used or expired codes) a minute on the whole box, from any
    # address: a guesser on many addresses gets past the per-address limit, not past this. Beyond
    # it every pairing attempt answers 429 + Retry-After and the pairing-flood alert is raised; the
    # alert clears after pair_flood_calm_s without a refused attempt.
    pair_failures_per_minute_box: int = 60
    pair_flood_calm_s: float = 60.0
    # Per client address, whatever the device (tablets share nothing; a flood from one address
    # must not starve them): requests per second and burst, answered 429 + Retry-After beyond.
    address_rate_per_s: float = 50.0
    address_burst: int = 200
    # Slow or oversized clients on the tablet port: the request line and headers must arrive within
    # header_timeout_s (of connecting, or of the previous response) and fit in max_header_bytes
    # (431 beyond); a body must arrive within body_timeout_s (408); idle connections close after
    # keep_alive_s.
    max_header_bytes: int = 16_384
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: float = 15.0
    # Connections on the tablet port (and the plain-HTTP page), counted before TLS or HTTP: one client
    # address holds at most max_connections_per_address open at once, the extra ones are closed at
    # once (the venuebox_connections_refused metric counts them). Tablets behind one NAT share an
    # address, and so this cap: raise it for more than about 30 tablets behind one router. A TLS
    # handshake must finish within tls_handshake_timeout_s of connecting. An address refused and
    # still at its cap for connection_flood_alert_s raises the connection-flood:<address> alert,
    # which clears once it has been below its cap, and not refused, for as long.
    max_connections_per_address: int = 64
    tls_handshake_timeout_s: float = 10.0
    connection_flood_alert_s: float = 30.0
    pairing_code_ttl_s: int = 600
    # The longest a pairing code may live (`pair new --ttl`, the admin API's ttl_s): a code is
    # guessable, so it should not wait on the LAN for days.
    pairing_code_max_ttl_s: int = 86_400
    # Device tokens expire: after this many hours, or with 0 at the end of the event (its last
    # session's start + 12 h), and never sooner than a day after pairing.
    device_token_ttl_h: float = 0.0
    freeze_retry_after_s: int = 30
    write_timeout_s: float = 10.0
    # Daemon: mDNS advertisement, systemd STATUS refresh, health watchdog.
    mdns_enabled: bool = True
    mdns_interfaces: list[str] = msgspec.field(default_factory=list)
    status_interval_s: float = 10.0
    loop_lag_critical_s: float = 2.0
    # How often the watchdog runs PRAGMA quick_check on the database (a damaged file raises the
    # db-integrity alert and freezes the box; a read or write that meets damage does so at once).
    quick_check_s: float = 600.0
    # Watchdog thresholds: a tablet clock off by more than clock_skew_max_s raises clock-skew:<device>;
    # under disk_warning_free_mb free on the data disk raises disk-free (warning), under
    # disk_critical_free_mb makes it critical and freezes the box (unless auto_freeze_on_disk_critical
    # is false). A failed integrity check always freezes it: that is not a setting.
    clock_skew_max_s: float = 5.0
    disk_warning_free_mb: float = 1024.0
    disk_critical_free_mb: float = 256.0
    auto_freeze_on_disk_critical: bool = True
    # Uplink. Where to: `venuebox uplink configure` (stored in the database), or these three keys,
    # which win when uplink_url is set. The token file defaults to <data dir>/uplink.token.
    uplink_url: str = ""
    uplink_token_file: str = ""
    uplink_ca_file: str = ""
    # An http:// uplink_url to another machine sends the token and the scores in the clear: refused
    # unless this says so (loopback, a receiver on the box itself, is always allowed).
    uplink_insecure_http: bool = False
    # Batches (the reference receiver takes at most 1000 records and 4 MiB per request).
    uplink_batch_max_records: int = 1000
    uplink_batch_max_bytes: int = 4_000_000
    # Timeouts per request: connecting, waiting for each read, and the whole exchange.
    uplink_connect_timeout_s: float = 5.0
    uplink_read_timeout_s: float = 30.0
    uplink_total_timeout_s: float = 60.0
    # Retries: exponential backoff with full jitter, base doubling per failure up to the cap; after
    # uplink_breaker_failures failures in a row the circuit opens (one trial request per backoff).
    uplink_backoff_base_s: float = 1.0
    uplink_backoff_cap_s: float = 300.0
    uplink_breaker_failures: int = 5
    # How often an idle worker looks for new records and sync requests.
    uplink_poll_s: float = 1.0
    # Acked records are kept this long (hours), then pruned.
    uplink_retention_h: float = 72.0
    # A warning alert when the oldest record waiting is older than this.
    uplink_backlog_alert_s: float = 900.0
    # Encrypted local snapshots (age): where (default <data dir>/backups), how often, how many kept
    # (the newest backup_keep_last, plus the newest of each hour for backup_keep_hourly_h hours),
    # and who can decrypt them besides this box: organisers' age X25519 public keys (age1...), in
    # addition to <data dir>/backup-recipients.txt (`venuebox backup configure --recipient`).
    backup_dir: str = ""
    backup_interval_s: float = 900.0
    backup_verify_interval_s: float = 300.0
    backup_keep_last: int = 8
    backup_keep_hourly_h: int = 24
    backup_recipients: list[str] = msgspec.field(default_factory=list)
    # Folders the admin API (the console) may export into when given one: where USB keys get
    # mounted. The CLI's `venuebox export --to` (a person at a shell) may use any folder.
    export_roots: list[str] = msgspec.field(default_factory=lambda: ["/media", "/run/media", "/mnt"])
    # How the export's spreadsheet files (results, scores, ledger, personal) are written: "excel"
    # (commas, decimal points) or "excel-semicolon" (semicolons, decimal commas, for spreadsheets set
    # to a European language); `venuebox export --csv-dialect` overrides it for one export.
    export_csv_dialect: str = "excel"
    # Printed results (`venuebox results --format pdf`, the export's results.pdf): the paper size
    # ("A4" or "Letter"), and font files to print with (.ttf, .otf or .ttc): the first for the text
    # (its "-Bold" sibling, if any, for headings), the others as fallbacks for characters it lacks.
    # Empty: the system's DejaVu Sans, a CJK font and Symbola for symbols and emoji (Debian's
    # fonts-dejavu-core, fonts-droid-fallback, fonts-symbola).
    results_paper: str = "A4"
    results_fonts: list[str] = msgspec.field(default_factory=list)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "venuebox.sqlite"

    @property
    def admin_token_path(self) -> Path:
        return self.data_dir / "admin.token"

    @property
    def data_key_path(self) -> Path:
        return self.data_dir / "personal-data.key"

    @property
    def uplink_token_path(self) -> Path:
        return Path(self.uplink_token_file) if self.uplink_token_file else self.data_dir / "uplink.token"

    @property
    def backup_path(self) -> Path:
        return Path(self.backup_dir) if self.backup_dir else self.data_dir / "backups"

    @property
    def admin_url(self) -> str:
        host = "127.0.0.1" if self.admin_host in ("0.0.0.0", "") else self.admin_host
        return http_url("http", host, self.admin_port)


_FIELDS = set(Config.__struct_fields__)
# The built-in defaults, read by the settings derived from Config (watchdog, uplink) so that none
# declares a default of its own. Read only.
DEFAULTS = Config()


def resolve_data_dir(cli_value: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path:
    """Where the box keeps its state, by the documented precedence."""
    if cli_value:
        return Path(cli_value)
    for var in ("VENUEBOX_DATA_DIR", "STATE_DIRECTORY"):
        value = environ.get(var)
        if value:
            # systemd may pass several colon-separated state directories; the first is ours.
            return Path(value.split(":")[0])
    return Path("venuebox-data")


def load_config(
    data_dir: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the config from file, environment and explicit overrides (CLI flags)."""
    environ = os.environ if environ is None else environ
    directory = resolve_data_dir(data_dir, environ)
    values: dict[str, Any] = {}

    path = directory / CONFIG_FILE
    if path.exists():
        try:
            values.update(_flatten(tomllib.loads(path.read_text(encoding="utf-8"))))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
        unknown = sorted(set(values) - set(_FIELDS) - {"data_dir"})
        if unknown:
            raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}")

    for name in _FIELDS:
        env_value = environ.get(ENV_PREFIX + name.upper())
        if env_value is not None and name != "data_dir":
            # Lists in the environment are comma-separated: VENUEBOX_MDNS_INTERFACES=eth0,wlan0
            is_list = isinstance(getattr(Config(), name), list)
            values[name] = [v.strip() for v in env_value.split(",") if v.strip()] if is_list else env_value

    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    values["data_dir"] = str(directory)
    try:
        config = msgspec.convert(values, Config, strict=False, dec_hook=_decode_path)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid setting: {exc}") from exc
    _check(config)
    return config


def write_setting(data_dir: Path, name: str, value: Any) -> Path:
    """Set one setting in ``<data dir>/venuebox.toml`` for the daemon and every later command: that
    key only, wherever it is (top level or a section), every other key and comment kept as the tech
    wrote them (tomlkit); the file is made (0600) if there is none. Written atomically and durably,
    with the file's mode kept. Returns the file's path."""
    import stat

    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    from appliance.shared.secrets_files import atomic_write

    if name not in _FIELDS or name == "data_dir":
        raise ConfigError(f"unknown setting {name}")
    path = data_dir / CONFIG_FILE
    exists = path.exists()
    try:
        document = tomlkit.parse(path.read_text(encoding="utf-8")) if exists else tomlkit.document()
    except (TOMLKitError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc

    def set_in(table: Any) -> bool:
        found = False
        for key, item in list(table.items()):
            if key == name and not isinstance(item, Mapping):
                table[key] = value
                found = True
            elif isinstance(item, Mapping):
                found = set_in(item) or found
        return found

    if not set_in(document):
        document[name] = value
    text = tomlkit.dumps(document)
    if _flatten(tomllib.loads(text)).get(name) != value:  # what load_config will read
        raise ConfigError(f"{path}: could not set {name}")
    mode = stat.S_IMODE(path.stat().st_mode) if exists else 0o600
    atomic_write(path, text.encode("utf-8"), mode)
    return path


def _decode_path(kind: type, value: Any) -> Any:
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise TypeError(f"cannot read a {kind.__name__} from configuration")


def _flatten(table: Mapping[str, Any]) -> dict[str, Any]:
    """Allow ``[api] port = 80`` as well as ``port = 80``; sections are for humans only."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value))
        else:
            flat[key] = value
    return flat


def _check(config: Config) -> None:
    for name in ("port", "admin_port", "http_port"):
        port = getattr(config, name)
        if not 0 <= port <= 65535:
            raise ConfigError(f"{name} must be between 0 and 65535, got {port}")
    if not 0 < config.presence_online_s < config.presence_stale_s:
        raise ConfigError("presence thresholds must satisfy 0 < presence_online_s < presence_stale_s")
    if config.address_rate_per_s <= 0 or config.address_burst < 1:
        raise ConfigError("address_rate_per_s must be positive and address_burst >= 1")
    if config.max_header_bytes < 1024:
        raise ConfigError("max_header_bytes must be >= 1024")
    if config.max_connections_per_address < 1:
        raise ConfigError("max_connections_per_address must be >= 1")
    for name in (
        "header_timeout_s",
        "body_timeout_s",
        "keep_alive_s",
        "quick_check_s",
        "tls_handshake_timeout_s",
        "connection_flood_alert_s",
        "clock_skew_max_s",
    ):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name} must be a positive number of seconds")
    if not 0 <= config.disk_critical_free_mb <= config.disk_warning_free_mb:
        raise ConfigError("disk thresholds must satisfy 0 <= disk_critical_free_mb <= disk_warning_free_mb")
    if not 0 <= config.comment_max_chars <= MAX_COMMENT_CHARS:
        raise ConfigError(f"comment_max_chars must be between 0 and {MAX_COMMENT_CHARS}")
    if config.batch_max_sheets < 1 or config.max_body_bytes < 1024:
        raise ConfigError("batch_max_sheets must be >= 1 and max_body_bytes >= 1024")
    if config.uplink_batch_max_records < 1 or config.uplink_batch_max_bytes < 1024:
        raise ConfigError("uplink_batch_max_records must be >= 1 and uplink_batch_max_bytes >= 1024")
    if not 0 < config.uplink_backoff_base_s <= config.uplink_backoff_cap_s:
        raise ConfigError("uplink backoff must satisfy 0 < uplink_backoff_base_s <= uplink_backoff_cap_s")
    for name in (
        "uplink_connect_timeout_s",
        "uplink_read_timeout_s",
        "uplink_total_timeout_s",
        "uplink_poll_s",
        "uplink_retention_h",
        "uplink_backlog_alert_s",
    ):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name} must be a positive number")
    if config.backup_interval_s < 10 or config.backup_verify_interval_s < 1:
        raise ConfigError("backup_interval_s must be >= 10 and backup_verify_interval_s >= 1")
    if config.backup_keep_last < 1 or config.backup_keep_hourly_h < 0:
        raise ConfigError("backup_keep_last must be >= 1 and backup_keep_hourly_h >= 0")
    try:
        csv_dialect(config.export_csv_dialect)
    except UnknownCsvDialect as exc:
        raise ConfigError(f"export_csv_dialect: {exc.detail}") from None
    if config.results_paper not in ("A4", "Letter"):
        raise ConfigError(f'results_paper must be "A4" or "Letter", got {config.results_paper!r}')
    if config.pair_failures_per_minute_box < 1:
        raise ConfigError("pair_failures_per_minute_box must be >= 1")
    if config.pair_flood_calm_s <= 0:
        raise ConfigError("pair_flood_calm_s must be a positive number of seconds")
    if not 10 <= config.pairing_code_ttl_s <= config.pairing_code_max_ttl_s <= MAX_PAIRING_CODE_TTL_S:
        raise ConfigError(
            "pairing code lifetimes must satisfy 10 <= pairing_code_ttl_s <= pairing_code_max_ttl_s <= "
            f"{MAX_PAIRING_CODE_TTL_S} (7 days)"
        )
    if config.device_token_ttl_h < 0:
        raise ConfigError("device_token_ttl_h must be >= 0 (0: until the end of the event)")
    if config.uplink_breaker_failures < 1:
        raise ConfigError("uplink_breaker_failures must be >= 1")
    if config.uplink_url:
        check_url(config.uplink_url, config.uplink_insecure_http, "set uplink_insecure_http = true")
