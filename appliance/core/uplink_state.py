"""Where the outbox goes (the uplink target) and how its delivery stands (the uplink state), as rows
every process reads: the worker inside the daemon writes the state, `venuebox uplink ...` and the
admin API read it and ask for a sync, so the CLI, the console and /metrics never disagree.

The uplink token itself is never in the database, a log or an answer: it lives in a 0600 file
(``<data dir>/uplink.token`` unless configured otherwise).
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from appliance.core import alerts, audit, outbox
from appliance.core.config import Config
from appliance.shared.admin_wire import UplinkAnswer
from appliance.shared.status import UplinkBatch, UplinkTarget, UplinkView
from appliance.shared.tablet_text import printable
from appliance.shared.times import parse_rfc3339, to_rfc3339
from appliance.shared.uplink_url import check_url, shown_url

V = TypeVar("V", bound=UplinkView)


@dataclass(frozen=True)
class Target:
    """Where to send: ``source`` says who set it ("config" keys or `uplink configure`)."""

    url: str
    token_file: Path
    ca_file: Path | None
    source: Literal["config", "configure"]
    configured_at: str | None = None

    def fingerprint(self) -> str:
        """Changes whenever the target, its token file or its CA file changes: the worker rebuilds
        its client and a pause for refused credentials ends (the tech reconfigured)."""
        stamps = []
        for path in (self.token_file, self.ca_file):
            try:
                st = path.stat() if path is not None else None
            except OSError:
                stamps.append("missing")
                continue
            stamps.append(f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}" if st else "none")
        text = "|".join([self.url, str(self.token_file), str(self.ca_file), *stamps, str(self.configured_at)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def view(self) -> UplinkTarget:
        """The target as views show it: the URL without credentials, no token file."""
        return UplinkTarget(
            url=shown_url(self.url), source=self.source, ca_file=str(self.ca_file or "") or None
        )


def resolve_target(conn: sqlite3.Connection, config: Config) -> Target | None:
    """The uplink target in force: the config keys when ``uplink_url`` is set, else what
    `venuebox uplink configure` stored, else None (not configured)."""
    if config.uplink_url:
        return Target(
            url=config.uplink_url.rstrip("/"),
            token_file=config.uplink_token_path,
            ca_file=Path(config.uplink_ca_file) if config.uplink_ca_file else None,
            source="config",
        )
    row = conn.execute("SELECT * FROM uplink_target WHERE id = 1").fetchone()
    if row is None:
        return None
    return Target(
        url=row["url"],
        # A name alone is in the data dir (a restored box's: appliance/core/keys_bundle.py).
        token_file=config.data_dir / row["token_file"],
        ca_file=Path(row["ca_file"]) if row["ca_file"] else None,
        source="configure",
        configured_at=row["configured_at"],
    )


def configure_target(
    conn: sqlite3.Connection,
    url: str,
    token_file: Path,
    ca_file: Path | None,
    actor: str,
    now: datetime,
    insecure_http: bool = False,
) -> Target:
    """Store the target `venuebox uplink configure` set (the token already in its 0600 file). A
    pause for refused credentials ends: the worker tries the new target at once. Plain HTTP off
    loopback only with ``insecure_http`` (check_url)."""
    url = check_url(url, insecure_http)
    at = to_rfc3339(now)
    conn.execute(
        "INSERT INTO uplink_target (id, url, token_file, ca_file, configured_at, configured_by)"
        " VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET url = excluded.url,"
        " token_file = excluded.token_file, ca_file = excluded.ca_file,"
        " configured_at = excluded.configured_at, configured_by = excluded.configured_by",
        (url, str(token_file), str(ca_file) if ca_file else None, at, actor),
    )
    conn.execute(
        "UPDATE uplink_state SET paused_reason = NULL, paused_target = NULL, consecutive_failures = 0,"
        " breaker = 'closed', next_attempt_at = NULL, sync_requested_at = ?,"
        " state = CASE WHEN state IN ('not configured', 'paused') THEN 'idle' ELSE state END WHERE id = 1",
        (at,),
    )
    audit.record(conn, actor, "uplink.configure", {"url": shown_url(url), "ca_file": bool(ca_file)})
    return Target(url=url, token_file=token_file, ca_file=ca_file, source="configure", configured_at=at)


def get_state(conn: sqlite3.Connection) -> dict[str, Any]:
    return dict(conn.execute("SELECT * FROM uplink_state WHERE id = 1").fetchone())


def update_state(conn: sqlite3.Connection, now: datetime, **fields: Any) -> None:
    """Set columns of the state row (``fields`` are column names, all from this code)."""
    fields["updated_at"] = to_rfc3339(now)
    assignments = ", ".join(f"{name} = ?" for name in fields)
    conn.execute(f"UPDATE uplink_state SET {assignments} WHERE id = 1", tuple(fields.values()))


def request_sync(conn: sqlite3.Connection, actor: str, now: datetime, request_id: str | None = None) -> str:
    """Ask the worker to try now, whatever its backoff, open circuit or pause; returns the request
    time (the worker's next ``last_attempt_at`` after it answers the request)."""
    at = to_rfc3339(now)
    conn.execute("UPDATE uplink_state SET sync_requested_at = ? WHERE id = 1", (at,))
    audit.record(conn, actor, "uplink.sync", request_id=request_id)
    return at


def retry_quarantined(
    conn: sqlite3.Connection, record_ids: list[str] | None, actor: str, request_id: str | None = None
) -> int:
    """Put quarantined records (all, or the ones named) back in the send queue, audited."""
    requeued = outbox.retry_quarantined(conn, record_ids)
    audit.record(conn, actor, "uplink.retry", {"requeued": requeued}, request_id)
    return requeued


def uplink_view(conn: sqlite3.Connection, config: Config, now: datetime) -> UplinkView:
    """The uplink as the tech sees it: state, target (no secrets), backlog and oldest age,
    quarantine, last success, last error in plain words, next attempt."""
    return _view(UplinkView, conn, config, now)


def uplink_answer(conn: sqlite3.Connection, config: Config, now: datetime, quarantined: int) -> UplinkAnswer:
    """``uplink_view`` plus the first ``quarantined`` quarantined records (none for 0): what
    ``GET /admin/v1/uplink`` answers and `venuebox uplink status` prints."""
    records = outbox.quarantined(conn, quarantined) if quarantined else []
    return _view(UplinkAnswer, conn, config, now, quarantine=records)


def _view(kind: type[V], conn: sqlite3.Connection, config: Config, now: datetime, **more: Any) -> V:
    """A ``kind`` of uplink view at ``now``: ``UplinkView``'s fields, and ``more``."""
    target = resolve_target(conn, config)
    state = get_state(conn)
    backlog = outbox.backlog(conn, now)
    next_at = state["next_attempt_at"]
    batch = UplinkBatch(id=state["batch_id"], records=state["batch_records"]) if state["batch_id"] else None
    return kind(
        state=state["state"] if target is not None else "not configured",
        configured=target is not None,
        target=target.view() if target is not None else None,
        breaker=state["breaker"],
        backlog=backlog.records,
        oldest_created_at=backlog.oldest_created_at,
        oldest_age_s=backlog.oldest_age_s,
        quarantined=backlog.quarantined,
        acked_retained=backlog.acked_retained,
        records_acked=state["records_acked"],
        batch=batch,
        consecutive_failures=state["consecutive_failures"],
        last_attempt_at=state["last_attempt_at"],
        last_success_at=state["last_success_at"],
        last_error=state["last_error"],
        last_error_at=state["last_error_at"],
        paused_reason=state["paused_reason"],
        next_attempt_at=next_at,
        next_attempt_in_s=(
            None if next_at is None else round(max(0.0, (parse_rfc3339(next_at) - now).total_seconds()), 1)
        ),
        sync_requested_at=state["sync_requested_at"],
        **more,
    )


# -- alerts ---------------------------------------------------------------------------------------

REFUSED_FINGERPRINT = "uplink-refused"
FORK_FINGERPRINT = "uplink-fork"
BACKLOG_FINGERPRINT = "uplink-backlog"
QUARANTINE_FINGERPRINT = "uplink-quarantine"
BAD_ANSWER_FINGERPRINT = "uplink-bad-answer"


def raise_bad_answer(conn: sqlite3.Connection, answer: str, tries: int, now: datetime) -> None:
    """The receiver answered ``tries`` times in a row with a 2xx the box cannot use as an ack
    (``answer`` says what it was, in the worker's words): warning alert ``uplink-bad-answer``,
    until an ack settles a whole batch again (``clear_bad_answer``)."""
    alerts.raise_alert(
        conn,
        BAD_ANSWER_FINGERPRINT,
        "warning",
        "The cloud receiver answers with something that is not an ack",
        f"{tries} answers in a row were not what the uplink protocol says: {printable(answer)}. The box "
        "sends the records again under a new batch id (safe: the receiver stores each record id "
        "once) and keeps every record queued until an ack names it; nothing is lost. Tell whoever runs "
        'the receiver (docs/protocol.md, uplink, "The answer"). This clears at the next good ack.',
        now,
    )


def clear_bad_answer(conn: sqlite3.Connection, now: datetime) -> None:
    alerts.clear_alert(conn, BAD_ANSWER_FINGERPRINT, now)


def pause(
    conn: sqlite3.Connection,
    config: Config,
    now: datetime,
    reason: str,
    target_fingerprint: str | None,
    fork_seq: int | None = None,
    fork_chain: str = "sheets",
) -> None:
    """Stop sending until a person acts (inside the writer's transaction): the state "paused" with
    ``reason`` for ``target_fingerprint`` (a new target, or a sync, ends it), and its critical alert:
    ``uplink-fork`` when the receiver refused a record as a fork of its copy of the box's chain
    ``fork_chain`` ("sheets": the ledger, "audit": the audit log) at ``fork_seq``, else
    ``uplink-refused``."""
    update_state(
        conn,
        now,
        state="paused",
        paused_reason=reason,
        paused_target=target_fingerprint,
        last_error=reason,
        last_error_at=to_rfc3339(now),
        next_attempt_at=None,
    )
    if fork_seq is None:
        alerts.clear_alert(conn, FORK_FINGERPRINT, now)
    else:
        thing, place, chain, runbook = (
            ("audit-log entry", "audit-log position", "audit log", "on a fork at the cloud")
            if fork_chain == "audit"
            else ("sheet", "ledger position", "ledger", '"The cloud holds a different sheet"')
        )
        alerts.raise_alert(
            conn,
            FORK_FINGERPRINT,
            "critical",
            f"Uplink stopped: the cloud holds a different {thing}",
            f"The cloud already holds a different {thing} at {place} {fork_seq} of this box: "
            f"this box's {chain} and the cloud's copy disagree (usually this box was restored from a "
            "snapshot older than what the cloud received, or two boxes run with the same box id). "
            f"The uplink is paused so the cloud never holds two {thing}s for one position; every score "
            "stays safe on this box. Do not reconfigure the uplink or point it at another receiver "
            f"blindly: follow the runbook (operations, section 10, {runbook}). `venuebox uplink sync` "
            "tries once more.",
            now,
        )
    check_alerts(conn, config, now)


def check_alerts(conn: sqlite3.Connection, config: Config, now: datetime) -> None:
    """Raise or clear the uplink's alerts from its state (inside the writer's transaction):
    refused credentials (critical, the uplink is paused), a fork (critical, paused; raised by
    ``pause``, cleared here once the pause ends), a backlog older than ``uplink_backlog_alert_s``
    (warning), records the receiver rejected (warning)."""
    view = uplink_view(conn, config, now)
    fork = alerts.get_alert(conn, FORK_FINGERPRINT)
    forked = fork is not None and fork.active
    if view.state != "paused":
        alerts.clear_alert(conn, FORK_FINGERPRINT, now)
    if view.state == "paused" and forked:
        alerts.clear_alert(conn, REFUSED_FINGERPRINT, now)  # the fork alert says it all
    elif view.state == "paused":
        alerts.raise_alert(
            conn,
            REFUSED_FINGERPRINT,
            "critical",
            "Uplink paused: it needs a person",
            f"{view.paused_reason} Nothing is lost: scores stay queued on the box. After fixing it, "
            "`venuebox uplink configure` (or `venuebox uplink sync` if the receiver side was fixed) "
            "resumes sending.",
            now,
        )
    else:
        alerts.clear_alert(conn, REFUSED_FINGERPRINT, now)
    age = view.oldest_age_s
    if view.configured and age is not None and age > config.uplink_backlog_alert_s:
        minutes = round(age / 60)
        why = f" Last error: {view.last_error}" if view.last_error else ""
        alerts.raise_alert(
            conn,
            BACKLOG_FINGERPRINT,
            "warning",
            "Uplink backlog is growing old",
            f"{view.backlog} records wait to reach the cloud, the oldest for {minutes} min; the uplink "
            f"is {view.state}.{why} Scores are safe on the box; they go out when the network allows "
            "(`venuebox uplink sync` tries now).",
            now,
        )
    else:
        alerts.clear_alert(conn, BACKLOG_FINGERPRINT, now)
    if view.quarantined:
        alerts.raise_alert(
            conn,
            QUARANTINE_FINGERPRINT,
            "warning",
            "The cloud rejected some records",
            f"{view.quarantined} records were refused by the receiver and set aside (the rest keep "
            "flowing). `venuebox uplink status` shows why; `venuebox uplink retry` sends them again.",
            now,
        )
    else:
        alerts.clear_alert(conn, QUARANTINE_FINGERPRINT, now)
