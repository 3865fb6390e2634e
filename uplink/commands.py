"""What the CLI's uplink commands call: `venuebox uplink configure` checks its token and CA files
(``read_token_file``, ``load_ca_file``), `venuebox uplink check` sends one signed, empty batch
(``check_target``), `venuebox uplink sync` asks for a sync and waits for it (``sync_now``)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.core import outbox
from appliance.core.box import get_box
from appliance.core.config import Config
from appliance.core.storage import Store
from appliance.core.uplink_state import Target, request_sync, uplink_view
from appliance.shared.errors import BadUplinkTarget
from appliance.shared.secrets_files import read_secret
from appliance.shared.status import UplinkView
from appliance.shared.times import utcnow
from appliance.shared.uplink_url import shown_url
from uplink.client import new_client, post_batch
from uplink.settings import UplinkSettings
from uplink.worker import UplinkWorker

# The worker's logger (uplink/worker.py): silenced while `venuebox uplink sync` drains here.
log = logging.getLogger("venuebox.uplink")


@dataclass(frozen=True)
class CheckResult:
    """What `venuebox uplink check` says: whether the receiver took the signed request, in words,
    and how long the exchange took."""

    ok: bool
    message: str
    seconds: float


async def check_target(target: Target, box_id: str, settings: UplinkSettings) -> CheckResult:
    """Send one signed, empty batch: proves the URL, TLS, token, signature and clock at once
    without sending any record (the receiver answers ``{"acked": []}``)."""
    started = time.monotonic()
    try:
        token = read_secret(target.token_file)
    except OSError as exc:
        return CheckResult(False, f"cannot read the uplink token file {target.token_file}: {exc}", 0.0)
    try:
        client = new_client(target, settings)
    except (OSError, ssl.SSLError) as exc:
        return CheckResult(False, f"cannot load the CA bundle {target.ca_file}: {exc}", 0.0)
    async with client:
        outcome = await post_batch(
            client, target, token, box_id, f"check-{uuid.uuid4()}", b'{"records":[]}', settings
        )
    seconds = time.monotonic() - started
    if outcome.kind == "acked":
        return CheckResult(
            True, f"the receiver at {shown_url(target.url)} accepted a signed request", seconds
        )
    return CheckResult(False, outcome.error or outcome.kind, seconds)


def read_token_file(path: Path) -> str:
    """The uplink token in ``path`` (one line), or BadUplinkTarget saying what is wrong with it."""
    try:
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadUplinkTarget(f"cannot read the token file {path}: {exc}") from None
    if not token or any(ch.isspace() for ch in token) or not token.isprintable():
        raise BadUplinkTarget(f"the token file {path} must hold the token alone, on one line")
    return token


def load_ca_file(path: Path) -> ssl.SSLContext:
    """A TLS context trusting the CA bundle in ``path``, or BadUplinkTarget."""
    try:
        return ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise BadUplinkTarget(
            f"cannot use {path} as a CA bundle (PEM certificates expected): {exc}"
        ) from None


@dataclass(frozen=True)
class SyncOutcome:
    """What `venuebox uplink sync` got: the uplink view after it, ``waiting`` (records queued at the
    request still waiting), ``refused`` (of those, the ones the receiver refused since: quarantined),
    ``attempted`` (an attempt was made after the request) and ``failed`` (the newest outcome since
    the request is an error)."""

    view: UplinkView
    waiting: int
    refused: int
    attempted: bool
    failed: bool

    @property
    def synced(self) -> bool:
        """Attempted, and every record queued at the request was acked."""
        return self.attempted and not self.waiting and not self.refused


def sync_now(store: Store, config: Config, *, daemon_running: bool, wait_s: float = 30.0) -> SyncOutcome:
    """`venuebox uplink sync`: with a daemon running, ask its worker (through the database) and wait
    up to ``wait_s`` until the records queued at the request got through or an attempt failed;
    without one, drain here until the queue is empty or an attempt fails."""
    requested, last_seq = store.write_sync(
        lambda conn: (request_sync(conn, "cli", utcnow()), outbox.last_pending_seq(conn))
    )
    deadline = time.monotonic() + wait_s

    def view() -> SyncOutcome:
        def read(conn: Any) -> tuple[UplinkView, tuple[int, int]]:
            return uplink_view(conn, config, utcnow()), outbox.delivery_up_to(conn, last_seq, requested)

        current, (waiting, refused) = store.query(read)
        error_at = current.last_error_at or ""
        return SyncOutcome(
            view=current,
            waiting=waiting,
            refused=refused,
            attempted=(current.last_attempt_at or "") >= requested,
            failed=error_at >= requested and error_at >= (current.last_success_at or ""),
        )

    if daemon_running:
        current = view()
        while not (current.attempted and not current.waiting) and not current.failed:
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
            current = view()
        return current

    async def drain() -> None:
        worker = UplinkWorker(store, config, store.query(get_box)["box_id"])
        try:
            while time.monotonic() < deadline and await worker.step() == 0:
                pass
        finally:
            await worker.aclose()

    # The command says the outcome in one line: the worker's log lines would repeat it on the
    # terminal, unformatted (a CLI command sets up no logging).
    quiet, log.disabled = log.disabled, True
    try:
        asyncio.run(drain())
    finally:
        log.disabled = quiet
    return view()
