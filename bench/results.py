"""Results bench: how long the results of an event of 2,000 entries x 7 judges take
(``appliance.core.results``: ``load`` then ``compute``), against the time to read its current sheets
alone.

What it does, in one run:

* **Fill** (not measured): a fresh data dir (``tests.conftest.make_box`` with no event), then an
  event package written for the run and imported through the real import
  (``provisioning.event_import.load_package`` + ``import_package``): ``--entries`` entries (default
  2,000) in sessions of 200, in 6 categories x 4 divisions x 3 levels, ``--judges`` judges
  (default 7) on every session, three criteria (technique weighted 2, artistry, a ``falls``
  deduction) and a scoring block with every rule at work (a trimmed mean dropping the highest and
  the lowest, ``rank_within`` category, division, level, ties on technique then the highest single
  sheet, three award bands, an override for one category). One really paired device per judge
  stores a sheet for every (entry, judge) pair through the real ledger path
  (``appliance.core.ledger.submit_sheets`` in the writer's transaction, 2,000 sheets a
  transaction), and ``--corrections`` of the pairs (default 10 %) get a correction, so the current
  sheet is not always the original. Values are on their criteria's steps, drawn from a seeded
  random generator, so scores tie now and then as they do at a venue.
* **Timed**, each ``--reps`` times (default 7) on the warm database, best and median printed:
  (a) reading the current sheets alone (``results.current_sheet_rows``: the ledger query every
  results read starts from, rows fetched, nothing decoded); (b) ``results.load`` (the rules, entries,
  panels, and every current sheet decoded to exact decimals); (c) ``results.compute`` on (b)'s inputs
  (pure: totals, scores, ranks, ties, awards); (d) both in one read, as a results screen would ask.
* The ratio (d) / (a) and the target: (d) "well under a second", reported against 1 s as "target
  met" / "target NOT met" (the median of (d)), with checks that every entry has a result and
  every complete entry a rank.

Run from the repo root (never run as a test)::

    .venv/bin/python bench/results.py                    # 2,000 entries x 7 judges
    .venv/bin/python bench/results.py --entries 200      # a quick run

Exit status: 0 when the checks pass (the target is reported, not enforced), 1 when a check fails,
2 when the box could not be set up.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import loadgen

sys.path.insert(0, str(loadgen.ROOT))

TARGET_S = 1.0
SESSION_SIZE = 200
FILL_CALL_SHEETS = 2000  # sheets per submit_sheets call (one transaction each)
CATEGORIES = ("Solo", "Duet", "Trio", "Small Group", "Large Group", "Line")
DIVISIONS = ("Mini", "Junior", "Teen", "Senior")
LEVELS = ("Recreational", "Competitive", "Elite")
T = TypeVar("T")


def event_json(judges: int) -> dict[str, Any]:
    return {
        "id": "bench-results",
        "name": "Results bench",
        "timezone": "America/Toronto",
        "criteria": [
            {"key": "technique", "label": "Technique", "min": 0, "max": 10, "step": 0.1, "weight": 2},
            {"key": "artistry", "label": "Artistry", "min": 0, "max": 10, "step": 0.1},
            {"key": "falls", "label": "Falls", "min": 0, "max": 3, "step": 0.25, "kind": "deduction"},
        ],
        "scoring": {
            "judges": "trimmed_mean",
            "drop_highest": 1,
            "drop_lowest": 1,
            "precision": 2,
            "rank_within": ["category", "division", "level"],
            "ties": ["criterion:technique", "highest_single"],
            "ranks": "skip",
            "awards": [
                {"label": "Platinum", "min": 27},
                {"label": "High Gold", "min": 25.5},
                {"label": "Gold", "min": 24},
            ],
            "overrides": [{"match": {"category": "Solo"}, "judges": "mean", "awards": []}],
        },
    }


def write_package(folder: Path, entries: int, judges: int) -> None:
    """An event package of ``entries`` entries in sessions of SESSION_SIZE, every judge on all."""
    sessions = (entries + SESSION_SIZE - 1) // SESSION_SIZE
    event = event_json(judges)
    event["sessions"] = [{"id": f"S{n + 1}", "name": f"Session {n + 1}"} for n in range(sessions)]
    folder.mkdir(parents=True)
    (folder / "event.json").write_text(json.dumps(event, indent=2), encoding="utf-8")
    lines = ["entry_id,session_id,order,title,category,division,level,studio"]
    for n in range(entries):
        category = CATEGORIES[n % len(CATEGORIES)]
        division = DIVISIONS[(n // len(CATEGORIES)) % len(DIVISIONS)]
        level = LEVELS[(n // 7) % len(LEVELS)]
        lines.append(
            f"{1000 + n},S{n // SESSION_SIZE + 1},{n % SESSION_SIZE + 1},Routine {n},{category},{division},"
            f"{level},Studio {n % 40}"
        )
    (folder / "entries.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    judge_lines = ["judge_id,name,sessions", *(f"J{n + 1},Judge {n + 1},*" for n in range(judges))]
    (folder / "judges.csv").write_text("\n".join(judge_lines) + "\n", encoding="utf-8")


@dataclass
class FilledBox:
    config: Any
    entries: int
    judges: int
    sheets: int
    current: int
    seconds: float


def fill_box(workdir: Path, entries: int, judges: int, corrections: float, seed: int) -> FilledBox:
    """A real box with the bench's event imported and a sheet per (entry, judge), some corrected."""
    make_box, _ = loadgen.load_fixtures()
    from appliance.core import personal
    from appliance.core.ledger import SheetReceipt, SheetSubmission, submit_sheets
    from appliance.core.storage import Store
    from appliance.shared.times import now_rfc3339
    from provisioning.event_import import import_package, load_package
    from tests.conftest import paired_device

    started = time.perf_counter()
    package = workdir / "package"
    write_package(package, entries, judges)
    config = make_box(workdir / "box", package=None)
    key = personal.load_key(config.data_key_path)
    rng = random.Random(seed)
    submitted_at = now_rfc3339()

    def values() -> dict[str, float]:
        return {
            "technique": rng.randint(70, 98) / 10,
            "artistry": rng.randint(70, 98) / 10,
            "falls": rng.choice((0.0, 0.0, 0.0, 0.0, 0.25, 0.5)),
        }

    with Store(config.db_path) as store:
        loaded = load_package(package)
        store.write_sync(lambda conn: import_package(conn, loaded, key, "bench"))
        devices = {f"J{n + 1}": paired_device(store, f"J{n + 1}") for n in range(judges)}
        items = [
            (devices[judge], SheetSubmission(str(uuid.uuid4()), str(1000 + n), values(), submitted_at))
            for n in range(entries)
            for judge in devices
        ]
        items += [
            (
                device,
                SheetSubmission(
                    str(uuid.uuid4()), sheet.entry_id, values(), submitted_at, None, sheet.sheet_id
                ),
            )
            for device, sheet in rng.sample(items, int(len(items) * corrections))
        ]

        def submit(batch: list[tuple[Any, SheetSubmission]]) -> list[Any]:
            return store.write_sync(lambda conn: submit_sheets(conn, batch), timeout=120)

        for start in range(0, len(items), FILL_CALL_SHEETS):
            outcomes = submit(items[start : start + FILL_CALL_SHEETS])
            refused = [o for o in outcomes if not (isinstance(o, SheetReceipt) and o.status == 201)]
            if refused:
                raise RuntimeError(f"the ledger refused {len(refused)} bench sheets, e.g. {refused[0]!r}")
    return FilledBox(config, entries, judges, len(items), entries * judges, time.perf_counter() - started)


@dataclass
class Timing:
    key: str
    name: str
    seconds: list[float]

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def repeat(reps: int, fn: Callable[[], T]) -> tuple[T, list[float]]:
    seconds = []
    result: T
    for _ in range(reps):
        started = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - started)
    return result, seconds


def run(args: argparse.Namespace, workdir: Path) -> int:
    from appliance.core import results
    from appliance.core.box import current_event_id
    from appliance.core.storage import Store

    filled = fill_box(workdir, args.entries, args.judges, args.corrections, args.seed)
    print(
        f"bench: {filled.entries:,} entries x {filled.judges} judges, {filled.sheets:,} sheets "
        f"({filled.current:,} current) filled in {filled.seconds:.1f} s; timing {args.reps} reps ...",
        flush=True,
    )
    with Store(filled.config.db_path) as store:
        event_id = store.query(current_event_id)
        assert event_id is not None
        rows, read_s = repeat(
            args.reps, lambda: store.query(lambda c: results.current_sheet_rows(c, event_id))
        )
        inputs, load_s = repeat(args.reps, lambda: store.query(results.load))
        computed, compute_s = repeat(args.reps, lambda: results.compute(inputs))
        _, full_s = repeat(args.reps, lambda: store.query(lambda c: results.compute(results.load(c))))

    timings = [
        Timing("a", "read the current sheets alone", read_s),
        Timing("b", "results.load (inputs, sheets decoded)", load_s),
        Timing("c", "results.compute (pure)", compute_s),
        Timing("d", "load + compute in one read", full_s),
    ]
    print()
    print(
        f"venuebox results bench: {filled.entries:,} entries x {filled.judges} judges, "
        f"{filled.current:,} current sheets of {filled.sheets:,}; {os.cpu_count()} CPUs, load average "
        f"{args.load_before:.2f} before the run; warm page cache"
    )
    header = f"{'step':<44}{'best s':>9}{'median s':>10}"
    print(header)
    print("-" * len(header))
    for t in timings:
        print(f"({t.key}) {t.name:<40}{t.best:>9.3f}{t.median:>10.3f}")
    full, alone = timings[3], timings[0]
    print()
    print(f"ratio (d) / (a), medians: {full.median / alone.median:.1f}")
    print(
        f"target results < {TARGET_S:g} s ({filled.entries:,} x {filled.judges}): median "
        f"{full.median:.3f} s -> {loadgen.verdict(full.median < TARGET_S)}"
    )
    complete = [r for r in computed.entries if r.complete]
    checks = {
        f"current sheets read == {filled.current:,}": len(rows) == filled.current,
        f"a result per entry ({filled.entries:,})": len(computed.entries) == filled.entries,
        "every complete entry ranked": bool(complete) and all(r.rank is not None for r in complete),
        "awards given": any(r.award is not None for r in computed.entries),
    }
    print("checks: " + ", ".join(f"{name}: {'OK' if ok else 'FAILED'}" for name, ok in checks.items()))
    return 0 if all(checks.values()) else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=2000, help="entries in the event (2000)")
    parser.add_argument("--judges", type=int, default=7, help="judges, every one on every session (7)")
    parser.add_argument("--corrections", type=float, default=0.1, help="share of sheets corrected once (0.1)")
    parser.add_argument("--reps", type=int, default=7, help="repetitions of each timed step (7)")
    parser.add_argument("--seed", type=int, default=19, help="seed of the score values (19)")
    parser.add_argument("--keep", action="store_true", help="keep the data dir (path printed)")
    args = parser.parse_args(argv)
    if args.entries < 1 or args.judges < 3 or args.reps < 1 or not 0 <= args.corrections <= 1:
        parser.error("--entries and --reps must be positive, --judges at least 3, --corrections 0..1")
    return args


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    try:
        return loadgen.run_in_workdir("results", parse_args(argv), run, "data dir")
    finally:
        print(f"bench: whole run {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
