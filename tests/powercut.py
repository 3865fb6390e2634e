"""The power-cut harness: the box on a LazyFS mount, its power cut at random moments, started
again as systemd would, and everything it promised checked after every cut.

LazyFS (``../shared/tools/lazyfs``, built by `.ci/run` into ``.cache/lazyfs``) keeps every write in
its own page cache until the writer fsyncs it; ``lazyfs::clear-cache`` drops whatever was never
synced, which is what a power cut does to a real disk's cache. A cut here is: SIGKILL every process
writing under the mount (the daemon, a command), then clear-cache. The tablets and the cloud
receiver live outside the mount: they are other machines and keep their power.

The restart is exactly the unit's: ``venuebox run`` with no flags, the data dir from
``$STATE_DIRECTORY``, ``$NOTIFY_SOCKET`` to hear READY=1, nobody touching the data dir in between.

Used by tests/integration/test_power_cuts.py (a few cuts, every command) and bench/powercut.py
(hundreds of cuts, figures).
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from appliance.core.config import Config, load_config
from appliance.storage.db import UNSAFE_SYNCHRONOUS_ENV
from tests.conftest import NotifySocket, box_id_of, venuebox

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_EVENT = ROOT / "provisioning" / "sample_event"
LAZYFS_BUILD = ROOT / ".cache" / "lazyfs" / "lazyfs"
TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def lazyfs_binary() -> Path | None:
    """The LazyFS build `.ci/run` makes (or $VENUEBOX_LAZYFS), if it is there and FUSE is usable."""
    found = Path(os.environ.get("VENUEBOX_LAZYFS") or LAZYFS_BUILD)
    usable = found.is_file() and os.access("/dev/fuse", os.R_OK | os.W_OK) and shutil.which("fusermount3")
    return found if usable else None


class LazyFS:
    """A LazyFS mount: ``real`` holds the files, ``mnt`` is where the box writes."""

    def __init__(self, workdir: Path, binary: Path) -> None:
        self.workdir = workdir
        self.binary = binary
        self.real = workdir / "real"
        self.mnt = workdir / "mnt"
        self.fifo = workdir / "faults.fifo"
        self.log = workdir / "lazyfs.log"
        self.process: subprocess.Popen[bytes] | None = None

    def mount(self) -> LazyFS:
        self.real.mkdir(parents=True, exist_ok=True)
        self.mnt.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "lazyfs.toml"
        config.write_text(
            f'[faults]\nfifo_path="{self.fifo}"\n[cache]\napply_eviction=false\n'
            '[cache.simple]\ncustom_size="1gb"\nblocks_per_page=1\n'
            '[filesystem]\nlog_all_operations=false\nlogfile=""\n'
        )
        self.process = subprocess.Popen(
            [
                str(self.binary),
                str(self.mnt),
                "--config-path",
                str(config),
                "-o",
                "allow_other",
                "-o",
                "modules=subdir",
                "-o",
                f"subdir={self.real}",
                "-f",
            ],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while not (os.path.ismount(self.mnt) and self.fifo.exists()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"LazyFS did not mount:\n{self.log.read_text()}")
            time.sleep(0.05)
        return self

    def _command(self, command: str, done_line: str) -> None:
        before = self._log_text().count(done_line)
        # The fifo is LazyFS's own command channel; it reads one command per line.
        with self.fifo.open("w") as fifo:
            fifo.write(command + "\n")
        deadline = time.monotonic() + 30
        while self._log_text().count(done_line) <= before:
            if time.monotonic() > deadline:
                raise RuntimeError(f"LazyFS did not finish {command}:\n{self._log_text()[-2000:]}")
            time.sleep(0.01)

    def _log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def clear_cache(self) -> None:
        """The power cut's effect on the disk: everything never fsynced is gone."""
        self._command("lazyfs::clear-cache", "cache is cleared")

    def checkpoint(self) -> None:
        """Write everything cached to the disk (a box that has been idle for a while)."""
        self._command("lazyfs::cache-checkpoint", "checkpoint is done")

    def unmount(self) -> None:
        if self.process is None:
            return
        subprocess.run(["fusermount3", "-u", str(self.mnt)], capture_output=True, check=False)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> LazyFS:
        return self.mount()

    def __exit__(self, *exc: object) -> None:
        self.unmount()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_event_package(folder: Path, entries: int) -> Path:
    """The sample event scaled to ``entries`` entries over its sessions (its criteria, judges and
    panels), so a long run of cuts never runs out of entries to score."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(SAMPLE_EVENT / "event.json", folder / "event.json")
    shutil.copy(SAMPLE_EVENT / "judges.csv", folder / "judges.csv")
    with (SAMPLE_EVENT / "entries.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    with (folder / "entries.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for n in range(entries):
            row = dict(rows[n % len(rows)])
            row["entry_id"] = str(5000 + n)
            row["order"] = str(n // len(rows) * 100 + int(row["order"]))
            # A participant dances once per copy of the sample, so copies are a day apart.
            day = datetime.fromisoformat(row["scheduled_at"]) + timedelta(days=n // len(rows))
            row["scheduled_at"] = day.isoformat()
            writer.writerow(row)
    return folder


# -- what must be whole after a cut ---------------------------------------------------------------


def box_file_problems(data_dir: Path) -> list[str]:
    """Every file the box needs, checked as the box would read it: [] when all are whole. A file
    the box makes when missing (at start) may be missing; none may be empty or half-written."""
    from appliance.core import keys, personal, tls
    from appliance.shared.secrets_files import read_secret

    problems: list[str] = []

    def check(name: str, read: Any, required: bool = True) -> None:
        path = data_dir / name
        if not path.exists():
            if required:
                problems.append(f"{name} is missing")
            return
        try:
            if path.stat().st_size == 0:
                raise ValueError("empty")
            read(path)
        except Exception as exc:  # any failure to read it as the box does
            problems.append(f"{name} is damaged: {exc!r}"[:300])

    check("admin.token", lambda p: _non_empty(read_secret(p)))
    check("personal-data.key", personal.load_key)
    check(keys.SIGNING_KEY, lambda p: _non_empty(read_secret(p)))
    check(keys.IDENTITY, lambda p: _identity(read_secret(p)))
    check("tls/box.pem", lambda p: tls.load_identity(data_dir))
    check("daemon.json", lambda p: json.loads(p.read_text()), required=False)
    for token in sorted(data_dir.glob("uplink*.token")):
        check(token.name, lambda p: _non_empty(read_secret(p)))
    check(keys.RECIPIENTS, lambda p: p.read_text(encoding="utf-8"), required=False)
    check("venuebox.toml", lambda p: load_config(data_dir, environ={}))
    return problems


def _non_empty(text: str) -> None:
    if not text:
        raise ValueError("empty")


def _identity(text: str) -> None:
    from pyrage import x25519

    x25519.Identity.from_str(text)


def snapshot_problems(config: Config) -> list[str]:
    """Every snapshot the database lists as kept: its file is there, whole (the recorded SHA-256),
    with its keys file beside it, written with it (its ledger and audit heads)."""
    import pyrage

    from appliance.core import keys, keys_bundle
    from appliance.core.backup import sha256_file

    conn = sqlite3.connect(config.db_path)
    try:
        rows = conn.execute(
            "SELECT name, sha256, ledger_head, audit_head FROM snapshots WHERE deleted_at IS NULL"
        ).fetchall()
    finally:
        conn.close()
    problems = []
    for name, digest, ledger_head, audit_head in rows:
        path = config.backup_path / name
        bundle = config.backup_path / keys_bundle.bundle_name(name)
        if not path.exists():
            problems.append(f"snapshot {name} is recorded but its file is gone")
        elif sha256_file(path) != digest:
            problems.append(f"snapshot {name} differs from the SHA-256 recorded for it")
        elif not bundle.exists():
            problems.append(f"snapshot {name} has no keys file beside it")
        else:
            opened = keys_bundle.decode(
                pyrage.decrypt(bundle.read_bytes(), [keys.box_identity(config)]), bundle.name
            )
            mark = opened.database
            if mark is None or (mark.ledger_head, mark.audit_head) != (ledger_head, audit_head):
                problems.append(f"{bundle.name} was not written with snapshot {name}")
    return problems


def ledger_sheet_ids(config: Config) -> set[str]:
    conn = sqlite3.connect(config.db_path)
    try:
        return {row[0] for row in conn.execute("SELECT sheet_id FROM sheets")}
    finally:
        conn.close()


# -- the box, powered and cut ---------------------------------------------------------------------


@dataclass
class PoweredBox:
    """A venue box whose data dir is on LazyFS, run as its systemd unit runs it."""

    fs: LazyFS
    config: Config
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    notify: NotifySocket | None = None
    starts: list[float] = field(default_factory=list)  # seconds from exec to READY=1, per start

    @property
    def tablet_url(self) -> str:
        return f"https://127.0.0.1:{self.config.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.config.admin_port}"

    def admin_token(self) -> str:
        return self.config.admin_token_path.read_text().strip()

    def fingerprint(self) -> str:
        from appliance.core import tls

        return tls.load_identity(self.config.data_dir).fingerprint

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def power_on(self, wait: bool = True, timeout: float = 60.0) -> subprocess.Popen[bytes]:
        """`ExecStart=venuebox run`, as the unit has it: no flags, the data dir from systemd."""
        if self.notify is None:
            self.notify = NotifySocket(self.workdir / "notify.sock")
        self.notify.messages(0)  # what an earlier run said is not this start's READY=1
        env = {
            **os.environ,
            "STATE_DIRECTORY": str(self.config.data_dir),
            "NOTIFY_SOCKET": str(self.notify.path),
            "WATCHDOG_USEC": "30000000",
            **self.env,
        }
        env.pop("VENUEBOX_DATA_DIR", None)
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "appliance", "run"],
            stdout=(self.workdir / "daemon.log").open("ab"),
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
        )
        if wait:
            if not self.notify.wait_ready(self.process, timeout):
                code = self.process.poll()
                self.kill()
                raise RuntimeError(f"the box did not come up by itself (exit {code}):\n{self.log_tail()}")
            self.starts.append(time.monotonic() - started)
        return self.process

    def log_tail(self, chars: int = 4000) -> str:
        return (self.workdir / "daemon.log").read_text(errors="replace")[-chars:]

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def cut(self, *others: subprocess.Popen[Any]) -> None:
        """The power cut: every writer dies at once (SIGKILL: no shutdown code runs), then the disk
        loses what was never fsynced."""
        for process in (self.process, *others):
            if process is not None and process.poll() is None:
                process.kill()
        for process in (self.process, *others):
            if process is not None:
                process.wait()
        self.fs.clear_cache()

    def shut_down(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return venuebox(self.config, *args, timeout=timeout, env=self.env)

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.admin_url,
            timeout=TIMEOUT,
            headers={"Authorization": f"Bearer {self.admin_token()}"},
        )

    def close(self) -> None:
        self.kill()
        if self.notify is not None:
            self.notify.close()


def new_box(fs: LazyFS, workdir: Path, entries: int = 60, **settings: Any) -> PoweredBox:
    """A box initialised and given an event on the LazyFS mount by its own CLI, then everything
    checkpointed to the disk (it has been sitting there since the day before)."""
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = fs.mnt / "box"
    data_dir.mkdir()
    defaults = {
        "host": "127.0.0.1",
        "port": free_port(),
        "admin_port": free_port(),
        "mdns_enabled": False,
        "status_interval_s": 1.0,
        "device_rate_per_s": 1000.0,
        "device_burst": 1000,
        "address_rate_per_s": 1e6,
        "address_burst": 1_000_000,
        "uplink_poll_s": 0.2,
        "uplink_backoff_base_s": 0.2,
        "uplink_backoff_cap_s": 1.0,
        "backup_interval_s": 10.0,
        "backup_verify_interval_s": 5.0,
    }
    text = "".join(f"{k} = {json.dumps(v)}\n" for k, v in {**defaults, **settings}.items())
    (data_dir / "venuebox.toml").write_text(text)
    config = load_config(data_dir, environ={})
    box = PoweredBox(fs, config, workdir)
    for args in (("init", "--name", "power-cut box"),):
        done = box.cli(*args)
        if done.returncode != 0:
            raise RuntimeError(f"{args}: {done.stderr}")
    package = write_event_package(workdir / "package", entries) if entries != 60 else SAMPLE_EVENT
    done = box.cli("event", "import", str(package))
    if done.returncode != 0:
        raise RuntimeError(f"import: {done.stderr}")
    fs.checkpoint()
    return box


# -- judges scoring while the power goes --------------------------------------------------------


class Judges:
    """Simulated judge tablets (the project's own client, through `appliance.tablet_client.simulator`)
    scoring in a thread of their own: singles, batches after a dropout, corrections, heartbeats. Their queues
    live outside the mount, so they survive the box's power cuts and send again when it is back."""

    def __init__(self, box: PoweredBox, tablets: int, state_dir: Path, pace_s: float, seed: int) -> None:
        from appliance.tablet_client.simulator import SimulationReport

        self.box = box
        self.report = SimulationReport()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._args = (tablets, state_dir, pace_s, seed)
        self._thread = threading.Thread(target=self._run, name="judges", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        from appliance.tablet_client.simulator import run_simulation

        tablets, state_dir, pace_s, seed = self._args

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._started.set()
            await run_simulation(
                self.box.admin_url,
                self.box.admin_token(),
                tablets,
                tablet_url=self.box.tablet_url,
                pace_s=pace_s,
                dropout=0.08,
                state_dir=state_dir,
                seed=seed,
                stop=self._stop,
                fingerprint=self.box.fingerprint(),
                report=self.report,
            )

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def start(self) -> Judges:
        self._thread.start()
        self._started.wait(10)
        return self

    def acknowledged(self) -> set[str]:
        return set(list(self.report.acknowledged_sheet_ids))

    def wait_for_acks(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.report.acknowledged_sheet_ids) < count:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(
                    f"the judges got {len(self.report.acknowledged_sheet_ids)} acknowledgements, "
                    f"not {count} ({self.report.errors[-3:] if self.report.errors else 'no errors'}):\n"
                    f"{self.box.log_tail()}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        if self.error is not None:
            raise self.error


# -- one run of cuts ------------------------------------------------------------------------------


@dataclass
class CutReport:
    cuts: int = 0
    acknowledged: int = 0
    lost: list[str] = field(default_factory=list)  # acknowledged sheet ids the ledger does not hold
    problems: list[str] = field(default_factory=list)  # anything else the box promised and broke
    receiver_records: int = 0
    box_records: int = 0
    receiver_sheets: int = 0
    ledger_sheets: int = 0
    acknowledged_at_receiver: int = 0
    restart_s: list[float] = field(default_factory=list)

    def add(self, other: CutReport) -> None:
        self.cuts += other.cuts
        self.acknowledged += other.acknowledged
        self.lost += other.lost
        self.problems += other.problems
        self.receiver_records += other.receiver_records
        self.box_records += other.box_records
        self.receiver_sheets += other.receiver_sheets
        self.ledger_sheets += other.ledger_sheets
        self.acknowledged_at_receiver += other.acknowledged_at_receiver
        self.restart_s += other.restart_s


def run_cuts(
    fs: LazyFS,
    workdir: Path,
    receiver: Any,
    cuts: int,
    *,
    seed: int,
    tablets: int = 6,
    pace_s: float = 0.05,
    entries: int = 600,
    unsafe: bool = False,
    stop_at_first_loss: bool = False,
) -> CutReport:
    """One box, ``cuts`` power cuts while judges score and the uplink sends, then the promise
    checked: nothing acknowledged lost, verify passes, each record at the receiver exactly once.
    ``unsafe`` runs the database with synchronous=NORMAL (the harness's self-check)."""
    from tests.receiver_process import add_box

    rng = random.Random(seed)
    report = CutReport()
    box = new_box(fs, workdir, entries=entries)
    if unsafe:
        box.env[UNSAFE_SYNCHRONOUS_ENV] = "NORMAL"
    box_id = box_id_of(box.config)
    token_file = workdir / "cloud.token"
    token_file.write_text(add_box(receiver.data_dir, box_id) + "\n")
    token_file.chmod(0o600)
    done = box.cli("uplink", "configure", "--url", receiver.url, "--token-file", str(token_file))
    if done.returncode != 0:
        raise RuntimeError(f"uplink configure: {done.stderr}")
    fs.checkpoint()
    box.power_on()
    judges = Judges(box, tablets, workdir / "tablets", pace_s, seed).start()
    try:
        for _ in range(cuts):
            judges.wait_for_acks(len(judges.report.acknowledged_sheet_ids) + 5)
            # Mostly while scoring runs; one cut in five lands during the box's own start-up.
            if rng.random() < 0.2:
                box.cut()
                box.power_on(wait=False)
                time.sleep(rng.uniform(0.0, 1.5))
            else:
                time.sleep(rng.uniform(0.05, 2.0))
            box.cut()
            report.cuts += 1
            acknowledged = judges.acknowledged()
            report.problems += [
                f"after cut {report.cuts}: {p}" for p in box_file_problems(box.config.data_dir)
            ]
            box.power_on()
            report.restart_s.append(box.starts[-1])
            lost = sorted(acknowledged - ledger_sheet_ids(box.config))
            report.lost += [s for s in lost if s not in report.lost]
            report.problems += [f"after cut {report.cuts}: {p}" for p in snapshot_problems(box.config)]
            if lost and stop_at_first_loss:
                break
    finally:
        judges.stop()
    report.acknowledged = len(judges.acknowledged())
    report.lost = sorted(judges.acknowledged() - ledger_sheet_ids(box.config))
    verified = box.cli("verify")
    if verified.returncode != 0:
        report.problems.append(f"venuebox verify failed: {verified.stdout}{verified.stderr}".strip())
    report.problems += exactly_once_problems(box, receiver, box_id, report, judges.acknowledged())
    box.shut_down()
    box.close()
    return report


def exactly_once_problems(
    box: PoweredBox, receiver: Any, box_id: str, report: CutReport, acknowledged: set[str]
) -> list[str]:
    """The uplink drained, then: the receiver holds exactly the box's records, each once, and each
    sheet the ledger holds arrived with the same content."""
    deadline = time.monotonic() + 120
    while True:
        with box.admin() as admin:
            view = admin.get("/admin/v1/uplink").raise_for_status().json()
        if view["quarantined"]:
            return [f"the receiver refused {view['quarantined']} records: {view['last_error']}"]
        if view["state"] == "paused":  # e.g. a chain fork: the box lost what the cloud holds
            return [f"the uplink paused: {view['last_error']}"]
        if view["backlog"] == 0 and view["batch"] is None:
            break
        if time.monotonic() > deadline:
            return [f"the uplink did not drain: {view}"]
        box.cli("uplink", "sync", "--wait", "10")
    conn = sqlite3.connect(box.config.db_path)
    try:
        box_records = {
            r[0] for r in conn.execute("SELECT record_id FROM outbox WHERE quarantined_at IS NULL")
        }
        ledger = {r[0]: r[1] for r in conn.execute("SELECT sheet_id, hash FROM sheets")}
    finally:
        conn.close()
    cloud = sqlite3.connect(receiver.data_dir / "receiver.sqlite")
    try:
        rows = cloud.execute(
            "SELECT record_id, kind, payload FROM records WHERE box_id = ?", (box_id,)
        ).fetchall()
    finally:
        cloud.close()
    problems = []
    cloud_records = [r[0] for r in rows]
    report.box_records, report.receiver_records = len(box_records), len(cloud_records)
    report.ledger_sheets = len(ledger)
    if len(cloud_records) != len(set(cloud_records)):
        problems.append("the receiver holds a record twice")
    if set(cloud_records) != box_records:
        only_cloud = len(set(cloud_records) - box_records)
        only_box = len(box_records - set(cloud_records))
        problems.append(
            f"receiver and box disagree: {only_cloud} records only at the receiver, "
            f"{only_box} only on the box"
        )
    sheets = [json.loads(r[2]) for r in rows if r[1] == "sheet"]
    report.receiver_sheets = len(sheets)
    seen: dict[str, int] = {}
    for payload in sheets:
        seen[payload["sheet_id"]] = seen.get(payload["sheet_id"], 0) + 1
        if payload["sheet_id"] not in ledger:
            problems.append(f"the receiver holds sheet {payload['sheet_id']}, which the box lost")
        elif payload.get("hash") not in (None, ledger[payload["sheet_id"]]):
            problems.append(f"sheet {payload['sheet_id']} differs between the receiver and the box")
    report.acknowledged_at_receiver = len(acknowledged & set(seen))
    problems += [f"sheet {s} arrived {n} times" for s, n in seen.items() if n > 1]
    problems += [f"sheet {s} never reached the receiver" for s in ledger if s not in seen]
    return problems[:50]


# -- a cut inside a command -----------------------------------------------------------------------


def _cutpoint(under: Path, report: Path, step: int, args: list[str]) -> list[str]:
    """The command line of tests/cutpoint.py: stop before ``step`` (0: count) of the steps under
    ``under``, reporting to ``report``."""
    return [
        sys.executable,
        "-m",
        "tests.cutpoint",
        "--under",
        str(under),
        "--report",
        str(report),
        "--at",
        str(step),
        "--",
        *args,
    ]


def count_steps(box: PoweredBox, args: tuple[str, ...], twin_args: tuple[str, ...] | None = None) -> int:
    """How many steps (tests/cutpoint.py) ``args`` takes, counted on a twin of the box's data dir
    (a copy made while the box is powered off, on the same mount), so the box itself is untouched."""
    data_dir = box.config.data_dir
    twin = data_dir.with_name(data_dir.name + "-twin")
    shutil.rmtree(twin, ignore_errors=True)
    shutil.copytree(data_dir, twin, ignore=shutil.ignore_patterns("daemon.lock", "daemon.json"))
    report = box.workdir / "count.txt"
    done = subprocess.run(
        _cutpoint(box.fs.mnt, report, 0, ["--data-dir", str(twin), *(twin_args or args)]),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, **box.env},
    )
    shutil.rmtree(twin, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"{args} failed on the twin: {done.stderr}")
    return int(report.read_text())


def start_cut_at(
    box: PoweredBox,
    args: tuple[str, ...],
    step: int,
    *,
    data_dir_flag: bool = True,
    under: Path | None = None,
) -> subprocess.Popen[str]:
    """Start ``venuebox ARGS`` (or, without ``data_dir_flag``, the daemon as systemd runs it) set
    to stop dead before its ``step``-th step (counted under ``under``, by default the mount)."""
    report = box.workdir / "cut.txt"
    report.unlink(missing_ok=True)
    where = ["--data-dir", str(box.config.data_dir)] if data_dir_flag else []
    env = {**os.environ, **box.env}
    if not data_dir_flag:
        env["STATE_DIRECTORY"] = str(box.config.data_dir)
    return subprocess.Popen(
        _cutpoint(under or box.fs.mnt, report, step, [*where, *args]),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=env,
    )


def wait_for_cut_point(box: PoweredBox, process: subprocess.Popen[str], timeout: float = 120) -> str:
    """The step the process stopped at ("cut N: ..."); raises if it ended without reaching it."""
    report = box.workdir / "cut.txt"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if report.exists() and report.read_text().endswith("\n"):
            return report.read_text().strip()
        if process.poll() is not None:
            raise RuntimeError(
                f"the command ended before its cut point:\n{process.stdout.read() if process.stdout else ''}"
            )
        time.sleep(0.01)
    raise RuntimeError("the command never reached its cut point")


def cut_inside(
    box: PoweredBox, args: tuple[str, ...], rng: random.Random, twin_args: tuple[str, ...] | None = None
) -> str:
    """Power cut at a random step inside ``venuebox ARGS``, run while the daemon serves; the box
    is then started again as systemd would. Returns the step, for the test's message."""
    box.shut_down()
    steps = count_steps(box, args, twin_args)
    if steps == 0:
        raise RuntimeError(f"{args} takes no step a cut could land in")
    step = rng.randint(1, steps)
    box.fs.checkpoint()
    box.power_on()
    command = start_cut_at(box, args, step)
    try:
        where = wait_for_cut_point(box, command)
    finally:
        box.cut(command)
    return f"{' '.join(args)}: cut before step {step} of {steps} ({where})"
