"""The uplink as a venue tech sees it: a real daemon, a real receiver process and, between them, the
fault proxy; states read from the admin API, /metrics, the alerts and the `venuebox uplink` CLI."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import shutil
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.core.config import Config, load_config
from tests.conftest import RunningBox, box_id_of, make_box, venuebox, wait_for
from tests.faultproxy import FaultProxy, Faults
from tests.receiver_process import RunningReceiver, add_box, record


class Cloud:
    """A receiver process with the fault proxy in front of it."""

    def __init__(self, tmp_path: Path) -> None:
        self.receiver = RunningReceiver(tmp_path / "receiver")
        self.proxy: FaultProxy | None = None

    def start(self, *extra: str) -> Cloud:
        self.receiver.start(*extra)
        host, port = self.receiver.url.split("//")[1].rsplit(":", 1)
        self.proxy = FaultProxy(host, int(port), Faults()).start()
        return self

    @property
    def url(self) -> str:
        assert self.proxy is not None
        return self.proxy.url

    def issue(self, box_id: str, *extra: str) -> str:
        return add_box(self.receiver.data_dir, box_id, *extra)

    def stored(self, kind: str | None = None) -> list[str]:
        conn = sqlite3.connect(self.receiver.data_dir / "receiver.sqlite")
        try:
            sql = "SELECT record_id FROM records" + (" WHERE kind = ?" if kind else "") + " ORDER BY seq"
            return [row[0] for row in conn.execute(sql, (kind,) if kind else ())]
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        self.receiver.stop()


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    c = Cloud(tmp_path).start()
    yield c
    c.stop()


def uplinked_box(tmp_path: Path, cloud: Cloud, token: str | None = None, **settings: Any) -> RunningBox:
    """A box whose uplink points at ``cloud`` through config keys, with quick retries."""
    token_file = tmp_path / "uplink.token"
    quick = {
        "uplink_poll_s": 0.1,
        "uplink_backoff_base_s": 0.2,
        "uplink_backoff_cap_s": 2.0,
        "uplink_breaker_failures": 3,
        "uplink_read_timeout_s": 3.0,
        "status_interval_s": 0.5,
        "device_rate_per_s": 1000.0,
        "device_burst": 1000,
    }
    config = make_box(
        tmp_path / "box", uplink_url=cloud.url, uplink_token_file=str(token_file), **(quick | settings)
    )
    token_file.write_text((token or cloud.issue(box_id_of(config))) + "\n")
    token_file.chmod(0o600)
    return RunningBox(config)


def uplink(box: RunningBox) -> dict[str, Any]:
    with box.admin() as admin:
        return admin.get("/admin/v1/uplink").raise_for_status().json()


def active_alerts(box: RunningBox) -> dict[str, dict[str, Any]]:
    with box.admin() as admin:
        return {a["fingerprint"]: a for a in admin.get("/admin/v1/alerts").raise_for_status().json()}


def score(box: RunningBox, count: int, judge_id: str = "J1") -> list[str]:
    """Pair a tablet and store ``count`` sheets (originals, then corrections); their sheet ids."""
    from tests.conftest import panel_entries

    tablet = box.pair(judge_id)
    entries = panel_entries(tablet.event())
    heads: dict[str, str] = {}
    stored = []
    with tablet.client() as client:
        for i in range(count):
            entry = entries[i % len(entries)]
            sheet = tablet.sheet_for(entry, **({"supersedes": heads[entry]} if entry in heads else {}))
            answer = client.post("/api/v1/sheets", json=sheet)
            assert answer.status_code == 201, answer.text
            heads[entry] = sheet["sheet_id"]
            stored.append(sheet["sheet_id"])
    return stored


def metric(box: RunningBox, line_start: str) -> float:
    with box.admin() as admin:
        text = admin.get("/metrics").text
    [value] = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
    return value


def test_a_box_without_uplink_says_not_configured(running_box: RunningBox) -> None:
    with running_box.admin() as admin:
        status = admin.get("/admin/v1/status").raise_for_status().json()
        assert status["uplink"]["state"] == "not configured"
        assert status["uplink"]["backlog"] > 0  # the box's own set-up is queued, waiting for a target
        refused = admin.post("/admin/v1/uplink/sync")
        assert refused.status_code == 409
        assert refused.json()["type"].endswith("/uplink-not-configured")
    assert metric(running_box, 'venuebox_uplink_state{state="not configured"}') == 1.0
    shown = venuebox(running_box.config, "uplink", "status")
    assert shown.returncode == 0 and "not configured" in shown.stdout
    sync = venuebox(running_box.config, "uplink", "sync")
    assert sync.returncode == 1
    assert sync.stderr.strip().splitlines() == [
        "venuebox: error: the uplink is not configured: "
        "`venuebox uplink configure --url URL --token-file FILE`"
    ]


def test_receiver_down_then_up_drains_without_anyone_touching_anything(tmp_path: Path, cloud: Cloud) -> None:
    assert cloud.proxy is not None
    cloud.proxy.refuse(True)
    box = uplinked_box(tmp_path, cloud, uplink_backlog_alert_s=1.0, uplink_breaker_failures=5).start()
    try:
        seen: list[dict[str, Any]] = []

        def circuit_open() -> dict[str, Any] | None:
            seen.append(uplink(box))
            return seen[-1] if seen[-1]["state"] == "circuit open" else None

        view = wait_for("backing off", lambda: (v := uplink(box))["state"] == "backing off" and v)
        assert "connection refused" in view["last_error"]
        assert view["next_attempt_at"] and view["consecutive_failures"] < 5
        sheets = score(box, 12)
        view = wait_for("circuit open", circuit_open)
        assert view["breaker"] in ("open", "half-open") and view["consecutive_failures"] >= 5
        assert view["backlog"] >= 12
        backlog_alert = wait_for("backlog alert", lambda: active_alerts(box).get("uplink-backlog"))
        assert backlog_alert["severity"] == "warning" and "records wait" in backlog_alert["detail"]
        wait_for("metrics", lambda: metric(box, 'venuebox_uplink_state{state="circuit open"}') == 1.0)
        assert metric(box, "venuebox_uplink_backlog_records") >= 12
        assert metric(box, "venuebox_uplink_oldest_record_age_seconds") > 0

        cloud.proxy.refuse(False)
        back_up = time.monotonic()
        wait_for("the backlog to drain", lambda: uplink(box)["backlog"] == 0, timeout=10)
        took = time.monotonic() - back_up
        cap = box.config.uplink_backoff_cap_s
        assert took <= cap + 1.0, f"drained {took:.1f} s after the receiver came back (cap {cap} s)"
        view = uplink(box)
        assert view["state"] == "idle" and view["breaker"] == "closed" and view["last_success_at"]
        assert "uplink-backlog" not in active_alerts(box)
        assert set(sheets) <= {json.loads(p)["sheet_id"] for p in cloud_payloads(cloud, "sheet")}
        assert len(cloud.stored()) == len(set(cloud.stored()))
    finally:
        box.stop()


def cloud_payloads(cloud: Cloud, kind: str) -> list[str]:
    conn = sqlite3.connect(cloud.receiver.data_dir / "receiver.sqlite")
    try:
        return [
            r[0] for r in conn.execute("SELECT payload FROM records WHERE kind = ? ORDER BY seq", (kind,))
        ]
    finally:
        conn.close()


def test_a_stored_sheet_is_sent_at_once_not_at_the_next_poll(tmp_path: Path, cloud: Cloud) -> None:
    box = uplinked_box(tmp_path, cloud, uplink_poll_s=30.0).start()
    try:
        wait_for("the set-up records delivered", lambda: uplink(box)["backlog"] == 0)
        [sheet_id] = score(box, 1)
        # Well under the 30 s poll: the write that queued the record woke the worker.
        wait_for("the sheet at the receiver", lambda: sheet_id in sheets_in(cloud), timeout=10)
    finally:
        box.stop()


def sheets_in(cloud: Cloud) -> set[str]:
    return {json.loads(p)["sheet_id"] for p in cloud_payloads(cloud, "sheet")}


def test_a_batch_in_flight_shows_as_sending(tmp_path: Path, cloud: Cloud) -> None:
    assert cloud.proxy is not None
    cloud.proxy.set_faults(Faults(delay=1.0, delay_s=1.5))
    box = uplinked_box(tmp_path, cloud).start()
    try:
        view = wait_for("sending", lambda: (v := uplink(box))["state"] == "sending" and v["batch"] and v)
        assert view["batch"]["records"] >= 1
        cloud.proxy.set_faults(Faults())
        wait_for("idle", lambda: uplink(box)["state"] == "idle")
    finally:
        box.stop()


def test_a_refused_token_pauses_with_a_critical_alert_until_reconfigured(
    tmp_path: Path, cloud: Cloud
) -> None:
    config = make_box(tmp_path / "box", uplink_poll_s=0.1, status_interval_s=0.5)
    good = tmp_path / "good.token"
    good.write_text(cloud.issue(box_id_of(config)) + "\n")
    wrong = tmp_path / "wrong.token"
    wrong.write_text("a-token-nobody-issued\n")
    configured = venuebox(config, "uplink", "configure", "--url", cloud.url, "--token-file", str(wrong))
    assert configured.returncode == 0, configured.stderr
    (stored,) = config.data_dir.glob("uplink-*.token")
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    box = RunningBox(config).start()
    try:
        view = wait_for("paused", lambda: (v := uplink(box))["state"] == "paused" and v)
        assert "refused the uplink credentials (401)" in view["paused_reason"]
        alert = wait_for("the critical alert", lambda: active_alerts(box).get("uplink-refused"))
        assert alert["severity"] == "critical"
        shown = venuebox(config, "uplink", "status")
        assert "paused" in shown.stdout and "refused the uplink credentials" in shown.stdout
        backlog = uplink(box)["backlog"]
        time.sleep(1.0)
        assert cloud.stored() == [] and uplink(box)["backlog"] >= backlog  # nothing retried meanwhile

        again = venuebox(config, "uplink", "configure", "--url", cloud.url, "--token-file", str(good))
        assert again.returncode == 0, again.stderr
        wait_for("idle", lambda: (v := uplink(box))["state"] == "idle" and v["backlog"] == 0)
        assert "uplink-refused" not in active_alerts(box)
        check = venuebox(config, "uplink", "check")
        assert check.returncode == 0 and check.stdout.startswith("ok: ")
    finally:
        box.stop()
    token = good.read_text().strip()
    assert box.log_path is not None
    for text in (
        box.log_path.read_text(),
        configured.stdout,
        again.stdout,
        shown.stdout,
        json.dumps(uplink_dump(config)),
    ):
        assert token not in text and "a-token-nobody-issued" not in text


def test_a_fork_at_the_cloud_pauses_with_a_critical_alert_and_is_not_retried(
    tmp_path: Path, cloud: Cloud
) -> None:
    first = uplinked_box(tmp_path, cloud)
    # The same box again (same box id, same token) from before any sheet was scored, as a box
    # restored from an early snapshot is: its sheets take ledger positions the cloud holds already,
    # and so do its audit-log entries. The audit log forks first: the twin's start is audited
    # (the next audit-log position) before any sheet is scored.
    shutil.copytree(first.config.data_dir, tmp_path / "twin")
    twin = RunningBox(load_config(tmp_path / "twin", environ={}))
    with contextlib.closing(sqlite3.connect(twin.config.db_path)) as conn:
        forked_at = conn.execute("SELECT max(seq) FROM audit_log").fetchone()[0] + 1
    first.start()
    try:
        score(first, 3)
        wait_for(
            "the first box delivered", lambda: (v := uplink(first))["state"] == "idle" and not v["backlog"]
        )
    finally:
        first.stop()
    at_the_cloud = cloud.stored("sheet")
    assert len(at_the_cloud) == 3
    forks = "venuebox_receiver_chain_forks_total"

    twin.start()
    try:
        score(twin, 2)
        view = wait_for("paused", lambda: (v := uplink(twin))["state"] == "paused" and v)
        where = f"audit-log position {forked_at} of this box"
        assert f"different audit-log entry at {where}" in view["paused_reason"]
        alert = wait_for("the fork alert", lambda: active_alerts(twin).get("uplink-fork"))
        assert alert["severity"] == "critical"
        assert where in alert["detail"] and "runbook" in alert["detail"]
        assert alert["title"] == "Uplink stopped: the cloud holds a different audit-log entry"
        for text in (view["paused_reason"], alert["title"], alert["detail"]):
            assert "sheet" not in text and "ledger" not in text
        assert "uplink-refused" not in active_alerts(twin)
        assert cloud.receiver.metric(forks) == 1
        # Polling every 0.1 s with 0.2 s backoffs, a retry loop would have sent many batches by now.
        time.sleep(2.0)
        assert cloud.receiver.metric(forks) == 1
        still = uplink(twin)
        assert still["state"] == "paused" and still["records_acked"] == view["records_acked"]
        assert still["backlog"] >= view["backlog"] >= 2  # (an audit line may join the queue)
        assert cloud.stored("sheet") == at_the_cloud
        shown = venuebox(twin.config, "uplink", "status")
        assert shown.stdout.startswith("state     paused") and "different audit-log entry" in shown.stdout

        # A sync tries once: refused again, paused again, nothing stored.
        synced = venuebox(twin.config, "uplink", "sync", "--wait", "20")
        assert synced.returncode == 1
        assert "did not get through: the cloud holds a different audit-log entry" in synced.stderr
        assert cloud.receiver.metric(forks) == 2
        time.sleep(1.0)
        assert cloud.receiver.metric(forks) == 2
        assert uplink(twin)["state"] == "paused" and "uplink-fork" in active_alerts(twin)
        assert cloud.stored("sheet") == at_the_cloud
    finally:
        twin.stop()


def test_a_sheet_fork_at_the_cloud_names_the_ledger_position(tmp_path: Path, cloud: Cloud) -> None:
    box = uplinked_box(tmp_path, cloud)
    box_id = box_id_of(box.config)
    token = (tmp_path / "uplink.token").read_text().strip()
    # The cloud holds other sheets at this box's first ledger positions (sent by another box under
    # this box id), and nothing of its audit log: the audit log goes through, the ledger forks.
    held = [record("elsewhere-1", seq=1), record("elsewhere-2", seq=2)]
    assert cloud.receiver.post(token, held, box_id=box_id).status_code == 200
    box.start()
    try:
        wait_for(
            "the audit log delivered", lambda: (v := uplink(box))["state"] == "idle" and not v["backlog"]
        )
        audit_at_the_cloud = cloud.stored("audit")
        assert audit_at_the_cloud
        score(box, 2)
        view = wait_for("paused", lambda: (v := uplink(box))["state"] == "paused" and v)
        assert "different sheet at ledger position 1 of this box" in view["paused_reason"]
        alert = wait_for("the fork alert", lambda: active_alerts(box).get("uplink-fork"))
        assert alert["title"] == "Uplink stopped: the cloud holds a different sheet"
        assert (
            "ledger position 1" in alert["detail"]
            and '"The cloud holds a different sheet"' in alert["detail"]
        )
        assert "audit" not in view["paused_reason"] and "audit" not in alert["detail"]
        assert cloud.stored("sheet") == ["elsewhere-1", "elsewhere-2"]
        assert cloud.stored("audit")[: len(audit_at_the_cloud)] == audit_at_the_cloud
    finally:
        box.stop()


def uplink_dump(config: Config) -> Any:
    return json.loads(venuebox(config, "uplink", "status", "--json").stdout)


def test_a_rejected_record_is_quarantined_shown_and_retried_by_command(tmp_path: Path, cloud: Cloud) -> None:
    box = uplinked_box(tmp_path, cloud).start()
    try:
        wait_for("idle", lambda: uplink(box)["state"] == "idle")
        # A record the receiver will never take (a kind it does not know), queued as a bug would.
        conn = sqlite3.connect(box.config.db_path)
        with conn:
            conn.execute(
                "INSERT INTO outbox (record_id, kind, created_at, payload)"
                " VALUES ('poison-1', 'mystery', '2026-03-14T10:00:00.000000Z', '{}')"
            )
        conn.close()
        sheets = score(box, 3)
        view = wait_for(
            "quarantine", lambda: (v := uplink(box))["quarantined"] == 1 and v["backlog"] == 0 and v
        )
        [held] = view["quarantine"]
        assert held["record_id"] == "poison-1" and "kind" in held["quarantine_reason"]
        assert set(sheets) <= {json.loads(p)["sheet_id"] for p in cloud_payloads(cloud, "sheet")}
        assert "uplink-quarantine" in wait_for("alert", lambda: active_alerts(box))
        status = venuebox(box.config, "uplink", "status")
        assert "quarantined poison-1 (mystery)" in status.stdout
        retried = venuebox(box.config, "uplink", "retry")
        assert retried.returncode == 0 and retried.stdout.startswith("1 quarantined record(s) back")
        # Sent again, refused again: still set aside, never blocking the rest.
        wait_for("quarantined again", lambda: (v := uplink(box))["quarantined"] == 1 and v["backlog"] == 0)
    finally:
        box.stop()


def test_uplink_sync_sends_now_instead_of_waiting_for_the_backoff(tmp_path: Path, cloud: Cloud) -> None:
    assert cloud.proxy is not None
    cloud.proxy.refuse(True)
    box = uplinked_box(tmp_path, cloud, uplink_backoff_base_s=120.0, uplink_backoff_cap_s=300.0).start()
    try:
        score(box, 2)
        view = wait_for("backing off", lambda: (v := uplink(box))["state"] == "backing off" and v)
        cloud.proxy.refuse(False)
        started = time.monotonic()
        synced = venuebox(box.config, "uplink", "sync", "--wait", "20")
        assert synced.returncode == 0, synced.stderr
        assert time.monotonic() - started < 15
        assert "backlog   0 records" in synced.stdout
        assert uplink(box)["backlog"] == 0
        # Full jitter: the wait drawn is anywhere in [0, min(cap, base * 2^(failures - 1))], so it may
        # be short; what the design guarantees is that bound (and the sync's not waiting for it).
        if view["next_attempt_in_s"] is not None:
            ceiling = min(300.0, 120.0 * 2 ** (view["consecutive_failures"] - 1))
            assert 0 <= view["next_attempt_in_s"] <= ceiling
    finally:
        box.stop()


def test_uplink_sync_without_a_daemon_sends_from_the_command(tmp_path: Path, cloud: Cloud) -> None:
    box = uplinked_box(tmp_path, cloud)  # never started
    synced = venuebox(box.config, "uplink", "sync")
    assert synced.returncode == 0, synced.stderr
    assert "backlog   0 records" in synced.stdout
    conn = sqlite3.connect(box.config.db_path)
    try:
        box_ids = {r[0] for r in conn.execute("SELECT record_id FROM outbox")}
    finally:
        conn.close()
    assert set(cloud.stored()) == box_ids


def test_configure_refuses_a_url_with_credentials_and_a_bad_ca_in_one_line(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box")
    token = tmp_path / "t"
    token.write_text("tok\n")
    bad_url = venuebox(
        config, "uplink", "configure", "--url", "https://user:pw@cloud.test", "--token-file", str(token)
    )
    assert bad_url.returncode == 1
    assert (
        len(bad_url.stderr.strip().splitlines()) == 1 and "must not hold a user or password" in bad_url.stderr
    )
    assert "pw" not in bad_url.stderr.replace("password", "")
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("hello\n")
    bad_ca = venuebox(
        config,
        "uplink",
        "configure",
        "--url",
        "https://cloud.test",
        "--token-file",
        str(token),
        "--ca-file",
        str(not_pem),
    )
    assert bad_ca.returncode == 1 and "CA bundle" in bad_ca.stderr
    assert venuebox(config, "uplink", "status", "--json").stdout.count('"not configured"') == 1


def uplink_rows(config: Config) -> tuple[int, int]:
    """(stored uplink targets, `uplink.configure` audit records) in the box's database."""
    conn = sqlite3.connect(config.db_path)
    try:
        targets = conn.execute("SELECT count(*) FROM uplink_target").fetchone()[0]
        audited = conn.execute("SELECT count(*) FROM audit_log WHERE action = 'uplink.configure'").fetchone()
        return targets, audited[0]
    finally:
        conn.close()


def test_configure_refuses_plain_http_off_this_machine_unless_told_and_stores_nothing(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box")
    token = tmp_path / "t"
    token.write_text("tok\n")
    for url in ("http://cloud.example.org", "http://192.168.1.20:9090", "http://[fd00::20]/uplink"):
        refused = venuebox(config, "uplink", "configure", "--url", url, "--token-file", str(token))
        assert refused.returncode == 1
        assert refused.stderr.splitlines() == [
            f"venuebox: error: uplink URL '{url}' is plain HTTP to another machine: the uplink token and "
            "every score would cross the network readable by anyone on the way; use https:// (or pass "
            "--insecure-http to send in the clear anyway)"
        ]
        # Nothing stored: no copy of the token, no target, no audit record.
        assert list(config.data_dir.glob("uplink-*.token")) == []
        assert uplink_rows(config) == (0, 0)
    assert json.loads(venuebox(config, "uplink", "status", "--json").stdout)["target"] is None

    # A receiver on this machine (loopback) may be plain HTTP: the demo's, a test's.
    for url in (
        "http://127.0.0.1:9090",
        "http://127.8.9.10:9090",
        "http://[::1]:9090",
        "http://localhost:9090",
    ):
        done = venuebox(config, "uplink", "configure", "--url", url, "--token-file", str(token))
        assert done.returncode == 0, done.stderr
        assert f"uplink configured: {url}" in done.stdout

    # Told, it takes plain HTTP to another machine.
    told = venuebox(
        config,
        "uplink",
        "configure",
        "--url",
        "http://cloud.example.org",
        "--insecure-http",
        "--token-file",
        str(token),
    )
    assert told.returncode == 0, told.stderr
    status = json.loads(venuebox(config, "uplink", "status", "--json").stdout)
    assert status["target"]["url"] == "http://cloud.example.org"
    assert uplink_rows(config) == (1, 5)


def test_uplink_url_in_settings_follows_the_same_rule(tmp_path: Path) -> None:
    config = make_box(tmp_path / "box")
    settings = config.data_dir / "venuebox.toml"
    settings.write_text(settings.read_text() + 'uplink_url = "http://cloud.example.org"\n')
    for args in (("uplink", "status"), ("run", "--port", "0", "--admin-port", "0")):
        refused = venuebox(config, *args)
        assert refused.returncode == 1
        assert refused.stderr.splitlines() == [
            "venuebox: error: uplink URL 'http://cloud.example.org' is plain HTTP to another machine: the "
            "uplink token and every score would cross the network readable by anyone on the way; use "
            "https:// (or set uplink_insecure_http = true to send in the clear anyway)"
        ]
    from_environment = venuebox(
        config, "uplink", "status", env={"VENUEBOX_UPLINK_URL": "http://cloud.example.org:9090"}
    )
    assert from_environment.returncode == 1 and "uplink_insecure_http = true" in from_environment.stderr

    settings.write_text(settings.read_text() + "uplink_insecure_http = true\n")
    status = venuebox(config, "uplink", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["target"] == {
        "url": "http://cloud.example.org",
        "source": "config",
        "ca_file": None,
    }


# -- TLS -------------------------------------------------------------------------------------------


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1 it signed: (ca.pem, cert.pem, key.pem)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "venuebox test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


def test_tls_is_verified_and_a_private_ca_can_be_trusted(tmp_path: Path) -> None:
    ca, cert, key = _certificates(tmp_path)
    receiver = RunningReceiver(tmp_path / "receiver").start("--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert receiver.url.startswith("https://127.0.0.1:")
        config = make_box(tmp_path / "box")
        token = tmp_path / "uplink.token"
        token.write_text(add_box(receiver.data_dir, box_id_of(config)) + "\n")
        plain = venuebox(config, "uplink", "configure", "--url", receiver.url, "--token-file", str(token))
        assert plain.returncode == 0, plain.stderr
        untrusted = venuebox(config, "uplink", "check")
        assert untrusted.returncode == 1
        assert "TLS certificate" in untrusted.stderr and "not trusted" in untrusted.stderr
        assert "--ca-file" in untrusted.stderr
        with_ca = venuebox(
            config,
            "uplink",
            "configure",
            "--url",
            receiver.url,
            "--token-file",
            str(token),
            "--ca-file",
            str(ca),
        )
        assert with_ca.returncode == 0, with_ca.stderr
        trusted = venuebox(config, "uplink", "check")
        assert trusted.returncode == 0, trusted.stderr
        synced = venuebox(config, "uplink", "sync")
        assert synced.returncode == 0, synced.stderr
        assert len(receiver.stored_ids(box_id_of(config))) > 0
    finally:
        receiver.stop()
