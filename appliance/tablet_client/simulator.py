"""Simulated judge tablets against a real box: `venuebox simulate` calls `run_simulation`.

Each simulated tablet is a `TabletClient` with its own on-disk queue. It is paired through the
admin API (judges in round robin, a fresh code per tablet), downloads its event, scores the entries
of its panel in running order at a judge's pace, heartbeats as the box asks, sometimes drops off
the network for a while (it keeps scoring; sheets wait in its queue) and sends them when back,
at once when its first heartbeat gets through after the box could not be reached (the client ends
the backoff the outage grew, as the judge app does), honours a freeze (sheets stay queued until
the box unfreezes) and now and then corrects a sheet.
Tablets of the same judge split the judge's entries, so no two of them score the same entry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import tempfile
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from appliance.shared.errors import DomainError
from appliance.shared.protocol_names import API_PATH
from appliance.tablet_client.client import DEFAULT_TIMEOUT, FlushResult, TabletClient
from appliance.tablet_client.discovery import BoxAddress, async_discover
from appliance.tablet_client.errors import BoxUnreachable, NeedsPairing, RateLimited, TabletError
from appliance.tablet_client.sheet_queue import make_sheet
from appliance.web.retry import Backoff

log = logging.getLogger("venuebox.simulate")

CORRECTION_RATE = 0.05  # chance that a judge's next sheet is a correction of an earlier one
OFFLINE_PACES = (2.0, 6.0)  # a dropout lasts this many sheet paces (uniformly)
APP_VERSION = "simulator-1"
MAX_IDLE_SLEEP_S = 1.0
PAIRING_CONCURRENCY = 8
MAX_ERRORS_KEPT = 50


class SimulationError(DomainError):
    """The simulation could not start (no judges, no box found, pairing impossible): one line on
    the CLI, like every error a person can act on."""


@dataclass
class SimulationReport:
    """What a simulation did. ``acknowledged_sheet_ids`` are the sheets the box answered 200/201."""

    box_url: str = ""
    tablets: int = 0
    paired: int = 0
    sheets_made: int = 0
    corrections: int = 0
    acknowledged: int = 0
    held: int = 0
    still_queued: int = 0
    heartbeats: int = 0
    dropouts: int = 0
    repaired: int = 0
    frozen_seen: bool = False
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    acknowledged_sheet_ids: list[str] = field(default_factory=list)
    _acknowledged: set[str] = field(default_factory=set, repr=False)

    def note_error(self, message: str) -> None:
        # A box that keeps refusing would fill memory with the same line: keep the first ones.
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(message)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}

    def summary(self) -> str:
        """A few lines for a person."""
        lines = [
            f"box {self.box_url}: {self.paired}/{self.tablets} tablets paired, {self.elapsed_s:.1f}s",
            f"sheets made {self.sheets_made} (corrections {self.corrections}), "
            f"acknowledged {self.acknowledged}, held {self.held}, still queued {self.still_queued}",
            f"heartbeats {self.heartbeats}, dropouts {self.dropouts}, re-paired {self.repaired}"
            + (", saw a freeze" if self.frozen_seen else ""),
        ]
        lines += [f"error: {e}" for e in self.errors]
        return "\n".join(lines)


@dataclass
class _Tablet:
    index: int
    judge_id: str
    judge_name: str
    share: tuple[int, int]  # (k, m): this is the k-th of the judge's m tablets
    client: TabletClient
    rng: random.Random
    todo: list[str] = field(default_factory=list)  # entries still to score, running order
    current: dict[str, str] = field(default_factory=dict)  # entry -> this tablet's current sheet
    criteria: list[dict[str, Any]] = field(default_factory=list)
    offline_until: float | None = None
    heartbeats: int = 0
    paired: bool = False  # paired during this run (a reused state dir may hold an old pairing)


async def run_simulation(
    admin_url: str,
    admin_token: str,
    tablets: int,
    tablet_url: str | None = None,
    seconds: float | None = None,
    pace_s: float = 20.0,
    dropout: float = 0.05,
    state_dir: Path | None = None,
    seed: int | None = None,
    *,
    stop: asyncio.Event | None = None,
    fingerprint: str | None = None,
    report: SimulationReport | None = None,
) -> SimulationReport:
    """Run ``tablets`` simulated judge tablets until ``seconds`` of scoring have passed (counted
    once all tablets are paired), ``stop`` is set or the task is cancelled; then return what
    happened (cancelling returns the report too). ``pace_s`` is the mean time between a tablet's
    sheets (randomised ±50%); ``dropout`` the chance, per sheet, that the tablet then goes off the
    network for 2-6 paces. Tablet state (queues, tokens) lives under ``state_dir``, one directory
    per tablet (a temporary directory, removed at the end, when None). Without ``tablet_url`` the
    box is found by mDNS. ``fingerprint`` is the box's TLS certificate fingerprint the tablets pin
    (from the TXT record when the box is found by mDNS). ``seed`` makes the tablets' choices
    repeatable (not the box's timing). ``report``, when given, is filled in as the run goes, so a
    caller (the power-cut harness) can read what was acknowledged while the tablets still score.
    Raises SimulationError when it cannot start (no judges, no box found, box unreachable)."""
    if tablets < 1:
        raise ValueError("tablets must be at least 1")
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline: float | None = None
    stop = stop or asyncio.Event()
    rng = random.Random(seed)
    report = report if report is not None else SimulationReport()
    report.tablets = tablets
    with contextlib.ExitStack() as stack:
        root = (
            Path(state_dir)
            if state_dir is not None
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="venuebox-sim-")))
        )
        admin = httpx.AsyncClient(
            base_url=admin_url, timeout=DEFAULT_TIMEOUT, headers={"Authorization": f"Bearer {admin_token}"}
        )
        sims: list[_Tablet] = []
        tasks: list[asyncio.Task[None]] = []
        try:
            judges = await _judges(admin)
            api = API_PATH
            if tablet_url is None:
                box = await _discover_box(admin)
                tablet_url, api = box.base_url, box.api
                fingerprint = fingerprint or box.fingerprint
                log.info("found %s (%s) at %s", box.name, box.box_id, tablet_url)
            report.box_url = tablet_url
            for index, (judge, share) in enumerate(_assign(judges, tablets)):
                client = TabletClient(
                    tablet_url,
                    root / f"tablet-{index + 1:03d}",
                    api=api,
                    fingerprint=fingerprint,
                    backoff=Backoff(rng=random.Random(rng.random())),
                )
                sims.append(
                    _Tablet(
                        index=index,
                        judge_id=judge["judge_id"],
                        judge_name=judge.get("name") or judge["judge_id"],
                        share=share,
                        client=client,
                        rng=random.Random(rng.random()),
                    )
                )
            report.paired = await _pair_all(admin, sims, stop, tablet_url)
            # The clock of a timed run starts once the tablets are paired, when scoring starts.
            deadline = None if seconds is None else loop.time() + seconds
            tasks = [
                asyncio.create_task(_run_tablet(sim, admin, report, deadline, stop, pace_s, dropout))
                for sim in sims
                if sim.paired
            ]
            if tasks:
                await asyncio.wait(tasks)
        except asyncio.CancelledError:
            # Cancelling is how a person stops the run (Ctrl-C); the report is still the answer.
            log.info("simulation cancelled; reporting what happened")
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    report.note_error(f"tablet task failed: {task.exception()!r}")
            for sim in sims:
                report.held += len(sim.client.queue.held())
                report.still_queued += sim.client.queue.depth()
                await sim.client.aclose()
            await admin.aclose()
            report.elapsed_s = loop.time() - started
    return report


def run_simulation_sync(*args: Any, **kwargs: Any) -> SimulationReport:
    """`run_simulation` for synchronous callers (the CLI); Ctrl-C ends it with a report."""
    return asyncio.run(run_simulation(*args, **kwargs))


async def _judges(admin: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await admin.get("/admin/v1/judges")
    if response.status_code != 200:
        raise SimulationError(f"GET /admin/v1/judges answered {response.status_code}: {response.text[:300]}")
    judges = [j for j in response.json() if j.get("sessions")]
    if not judges:
        raise SimulationError("the box has no judges on a panel: import an event package first")
    return judges


async def _discover_box(admin: httpx.AsyncClient) -> BoxAddress:
    """The box the admin API belongs to, found by mDNS (any v1 box if none matches its id)."""
    response = await admin.get("/admin/v1/status")
    box_id = response.json().get("box", {}).get("id") if response.status_code == 200 else None
    boxes = [b for b in await async_discover(5.0) if b.protocol == "1"]
    mine = [b for b in boxes if b.box_id == box_id] or boxes
    if not mine:
        raise SimulationError("no venuebox found on the network by mDNS: pass the tablet URL")
    return mine[0]


def _assign(judges: list[dict[str, Any]], tablets: int) -> list[tuple[dict[str, Any], tuple[int, int]]]:
    """Round robin over the judges; each tablet also learns its share of its judge's entries."""
    picked = [judges[i % len(judges)] for i in range(tablets)]
    counts: dict[str, int] = {}
    for judge in picked:
        counts[judge["judge_id"]] = counts.get(judge["judge_id"], 0) + 1
    seen: dict[str, int] = {}
    assignment = []
    for judge in picked:
        k = seen.get(judge["judge_id"], 0)
        seen[judge["judge_id"]] = k + 1
        assignment.append((judge, (k, counts[judge["judge_id"]])))
    return assignment


async def _pair_all(
    admin: httpx.AsyncClient, sims: list[_Tablet], stop: asyncio.Event, tablet_url: str
) -> int:
    """Pair every tablet, a few at a time; returns how many paired."""
    gate = asyncio.Semaphore(PAIRING_CONCURRENCY)

    async def pair(sim: _Tablet) -> bool:
        async with gate:
            try:
                return await _pair(admin, sim, None, stop)
            except BoxUnreachable as exc:
                raise SimulationError(f"cannot reach the box at {tablet_url}: {exc}") from exc

    return sum(await asyncio.gather(*(pair(sim) for sim in sims)))


async def _pair(admin: httpx.AsyncClient, sim: _Tablet, deadline: float | None, stop: asyncio.Event) -> bool:
    """A fresh code from the admin API, redeemed by the tablet; waits out pairing rate limits
    (giving up if that would pass ``deadline``)."""
    loop = asyncio.get_running_loop()
    k, m = sim.share
    name = f"Sim tablet {sim.index + 1} ({sim.judge_name}{f', {k + 1}/{m}' if m > 1 else ''})"
    while not stop.is_set():
        response = await admin.post("/admin/v1/pairing-codes", json={"judge_id": sim.judge_id})
        if response.status_code != 201:
            raise SimulationError(
                f"no pairing code for {sim.judge_id}: {response.status_code} {response.text}"
            )
        try:
            pairing = await sim.client.pair(response.json()["code"], name)
        except RateLimited as exc:
            wait = exc.retry_after_s or 1.0
            if deadline is not None and loop.time() + wait >= deadline:
                return False
            log.info("pairing rate-limited; waiting %.0fs", wait)
            await asyncio.sleep(wait)
            continue
        log.info("paired %s as %s (%s)", name, pairing.judge_id, pairing.device_id)
        sim.paired = True
        return True
    return False


def _running_order(event: dict[str, Any]) -> list[str]:
    entries = []
    for session in event.get("sessions", []):
        if session.get("on_panel"):
            ordered = sorted(session.get("entries", []), key=lambda e: e.get("order", 0))
            entries += [str(e["entry_id"]) for e in ordered]
    return entries


def _prepare(sim: _Tablet, event: dict[str, Any]) -> None:
    k, m = sim.share
    mine = _running_order(event)[k::m]
    current = {s["entry_id"]: s["sheet_id"] for s in event.get("sheets", [])}
    # Include what is still in this tablet's own queue (a restart with the same state dir).
    for queued in sim.client.queue.pending():
        sheet = queued.sheet
        current[sheet["entry_id"]] = sheet["sheet_id"]
    sim.criteria = event.get("criteria", [])
    sim.current = {entry: current[entry] for entry in mine if entry in current}
    sim.todo = [entry for entry in mine if entry not in current]


def _values(sim: _Tablet) -> dict[str, float]:
    """Realistic scores: mostly the upper part of each criterion's range, on its step."""
    values = {}
    for criterion in sim.criteria:
        low, high, step = (Decimal(str(criterion[k])) for k in ("min", "max", "step"))
        steps = int((high - low) / step)
        k = round(steps * sim.rng.triangular(0.55, 1.0, 0.8))
        values[criterion["key"]] = float(low + step * min(max(k, 0), steps))
    return values


def _next_sheet(sim: _Tablet, report: SimulationReport) -> dict[str, Any] | None:
    if sim.current and sim.rng.random() < CORRECTION_RATE:
        entry = sim.rng.choice(list(sim.current)[-3:])  # a judge corrects a recent sheet
        sheet = make_sheet(entry, _values(sim), comment="correction", supersedes=sim.current[entry])
        report.corrections += 1
    elif sim.todo:
        entry = sim.todo.pop(0)
        sheet = make_sheet(entry, _values(sim))
    else:
        return None
    sim.current[entry] = sheet["sheet_id"]
    report.sheets_made += 1
    return sheet


def _count(report: SimulationReport, result: FlushResult) -> None:
    # Two flushes of one tablet (a heartbeat's and a submit's) can both carry a sheet and both be
    # answered (201, then a 200 replay): count each sheet once.
    new = [sheet_id for sheet_id in result.acknowledged if sheet_id not in report._acknowledged]
    report._acknowledged.update(new)
    report.acknowledged += len(new)
    report.acknowledged_sheet_ids += new


async def _run_tablet(
    sim: _Tablet,
    admin: httpx.AsyncClient,
    report: SimulationReport,
    deadline: float | None,
    stop: asyncio.Event,
    pace_s: float,
    dropout: float,
) -> None:
    loop = asyncio.get_running_loop()
    client = sim.client

    def over() -> bool:
        return stop.is_set() or (deadline is not None and loop.time() >= deadline)

    def pace() -> float:
        return pace_s * sim.rng.uniform(0.5, 1.5)

    event: dict[str, Any] | None = None
    next_heartbeat = loop.time()
    next_sheet = loop.time() + pace() / 2
    while not over():
        now = loop.time()
        if sim.offline_until is not None and now >= sim.offline_until:
            sim.offline_until = None
            next_heartbeat = now  # a tablet says hello as soon as it is back
            log.info("tablet %d back online with %d queued", sim.index + 1, client.queue.depth())
        online = sim.offline_until is None
        try:
            if online and client.needs_pairing and await _pair(admin, sim, deadline, stop):
                report.repaired += 1
            if online and event is None:
                event = await client.event()
                _prepare(sim, event)
            if online and now >= next_heartbeat:
                battery = max(5, 100 - sim.index % 20 - sim.heartbeats // 6)  # ~1% a minute
                beat = await client.heartbeat(battery=battery, app_version=APP_VERSION)
                sim.heartbeats += 1
                report.heartbeats += 1
                report.frozen_seen = report.frozen_seen or beat.frozen
                next_heartbeat = now + beat.next_heartbeat_s
            if event is not None and now >= next_sheet:
                next_sheet = now + pace()
                sheet = _next_sheet(sim, report)
                if sheet is not None:
                    client.enqueue(sheet)
                if online and dropout > 0 and sim.rng.random() < dropout:
                    sim.offline_until = now + pace_s * sim.rng.uniform(*OFFLINE_PACES)
                    report.dropouts += 1
                    log.info("tablet %d drops off the network", sim.index + 1)
                    online = False
            if online and client.sendable() and client.retry_in_s() == 0 and not client.needs_pairing:
                _count(report, await client.flush())
        except NeedsPairing:
            log.info("tablet %d must pair again", sim.index + 1)
        except BoxUnreachable:
            next_heartbeat = max(next_heartbeat, now + 1.0)
        except RateLimited as exc:
            next_heartbeat = max(next_heartbeat, now + (exc.retry_after_s or 1.0))
        except (TabletError, httpx.HTTPError, SimulationError) as exc:
            report.note_error(f"tablet {sim.index + 1}: {exc}")
            next_heartbeat = max(next_heartbeat, now + client.next_heartbeat_s)
        wake = [now + MAX_IDLE_SLEEP_S]
        if event is not None:
            wake.append(next_sheet)
        if online:
            wake.append(next_heartbeat)
            if client.sendable() and not client.needs_pairing:
                wake.append(now + client.retry_in_s())
        else:
            wake.append(sim.offline_until or now)
        if deadline is not None:
            wake.append(deadline)
        await asyncio.sleep(max(0.005, min(wake) - loop.time()))
    # Time is up: an online tablet sends what it can, once, as a judge would before leaving.
    if sim.offline_until is None and client.sendable() and not client.needs_pairing:
        with contextlib.suppress(TabletError):
            _count(report, await client.flush())
