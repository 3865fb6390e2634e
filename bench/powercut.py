"""Power-cut bench: hundreds of simulated power cuts (LazyFS) while judges score and the uplink
sends, and a cut before every step of every command that writes; prints what survived.

What it does, in one run (the harness is tests/powercut.py; see its docstring):

* **Baseline**: the box started cleanly (after a normal stop) ``--baseline`` times: seconds from
  exec to READY=1. The restarts after a cut are printed against it, as a ratio.
* **Scoring cuts**: ``--cuts`` cuts (default 200) over boxes of ``--per-box`` cuts each (a fresh box
  on the mount for each group, its own tablets and receiver account). Six simulated tablets (the
  project's own client) score, heartbeat, drop off and send batches, correct sheets; the uplink
  sends to a reference receiver outside the mount. A cut lands at a random moment, one in five
  during the box's own start-up. After every cut: the files the box needs are whole, the box comes
  up by itself (READY=1), every acknowledged sheet is in the ledger, every snapshot it lists is
  whole; after each box's last cut, `venuebox verify` passes and the receiver holds exactly the
  box's records, each once, with the ledger's content.
* **Command cuts** (``--commands``, on by default): every writing command, cut before each of its
  steps in turn (tests/cutpoint.py): each must leave a box that comes up, verifies and holds
  whole files.

Prints: cuts, acknowledged sheets, lost (must be 0), records at the receiver vs on the box, sheets
at the receiver vs in the ledger, restart-to-READY seconds (median, max) and their ratio to the
clean start, command cuts and their failures.

    .venv/bin/python bench/powercut.py                 # 200 scoring cuts + every command step
    .venv/bin/python bench/powercut.py --cuts 20 --no-commands
    .venv/bin/python bench/powercut.py --unsafe        # synchronous=NORMAL: must report losses

Needs root, /dev/fuse and the LazyFS build (`.ci/run` makes it in .cache/lazyfs). Exit status 0
when nothing was lost and every check held (with ``--unsafe``: when losses were seen), 1 otherwise,
2 when the harness could not be set up.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import loadgen

sys.path.insert(0, str(loadgen.ROOT))

from tests.powercut import (
    CutReport,
    LazyFS,
    box_file_problems,
    count_steps,
    lazyfs_binary,
    new_box,
    run_cuts,
    snapshot_problems,
    start_cut_at,
    wait_for_cut_point,
    write_event_package,
)
from tests.receiver_process import RunningReceiver

COMMANDS: list[tuple[str, ...]] = [
    ("event", "import", "{package}"),
    ("pair", "new", "--judge", "J1"),
    ("tls", "rotate"),
    ("keys", "rotate-data-key"),
    ("backup", "now"),
    ("export", "--to", "{usb}"),
    ("freeze", "--reason", "bench: dispute on entry 142"),
    ("unfreeze",),
    ("uplink", "configure", "--url", "http://127.0.0.1:9/bench", "--token-file", "{token}"),
]


def clean_starts(fs: LazyFS, workdir: Path, count: int) -> list[float]:
    box = new_box(fs, workdir)
    try:
        for _ in range(count):
            box.power_on()
            box.shut_down()
        return box.starts
    finally:
        box.close()


def init_cuts(fs: LazyFS, workdir: Path) -> tuple[int, list[str]]:
    """`venuebox init` cut before each of its steps, each on a new data dir: after the cut there is
    no box (and init run again finishes it) or a whole one; then it comes up."""
    import sqlite3

    from appliance.core.config import load_config
    from tests.powercut import PoweredBox

    failures: list[str] = []
    probe_dir = fs.mnt / "init-probe"
    probe_dir.mkdir()
    (probe_dir / "venuebox.toml").write_text('host = "127.0.0.1"\nmdns_enabled = false\n')
    probe = PoweredBox(fs, load_config(probe_dir, environ={}), workdir)
    steps = count_steps(probe, ("init",))
    for step in range(1, steps + 1):
        data_dir = fs.mnt / f"init-{step}"
        data_dir.mkdir()
        (data_dir / "venuebox.toml").write_text(
            'host = "127.0.0.1"\nport = 0\nadmin_port = 0\nmdns_enabled = false\n'
        )
        fs.checkpoint()
        box = PoweredBox(fs, load_config(data_dir, environ={}), workdir)
        command = start_cut_at(box, ("init",), step)
        try:
            where = f"init step {step}/{steps} ({wait_for_cut_point(box, command)})"
        except RuntimeError as exc:
            where = f"init step {step}/{steps}: {exc}"
        box.cut(command)
        has_box = False
        if box.config.db_path.exists():
            conn = sqlite3.connect(box.config.db_path)
            try:
                has_box = bool(conn.execute("SELECT count(*) FROM box").fetchone()[0])
            except sqlite3.Error:
                has_box = False  # cut before the schema committed: no box
            finally:
                conn.close()
        problems = box_file_problems(data_dir) if has_box else []
        if not has_box:
            again = box.cli("init")
            if again.returncode != 0:
                problems.append(f"init again failed: {again.stderr.strip()}")
            problems += box_file_problems(data_dir)
        try:
            box.power_on()
        except RuntimeError as exc:
            problems.append(f"did not come up: {str(exc)[-300:]}")
        box.close()
        failures += [f"{where}: {p}" for p in problems]
    return steps, failures


def command_cuts(fs: LazyFS, workdir: Path, seed: int) -> tuple[int, list[str]]:
    """Every step of every command, one cut each, on one box; returns (cuts, failures)."""
    rng = random.Random(seed)
    box = new_box(fs, workdir / "commands")
    package = write_event_package(workdir / "bigger", 61)
    usb, twin_usb = fs.mnt / "usb", fs.mnt / "usb-twin"
    usb.mkdir()
    twin_usb.mkdir()
    token = workdir / "bench.token"
    token.write_text("a-token-for-the-bench-0123456789abcdef\n")
    token.chmod(0o600)
    cuts, failures = init_cuts(fs, workdir)
    try:
        for template in COMMANDS:
            args = tuple(a.format(package=package, usb=usb, token=token) for a in template)
            twin = tuple(a.format(package=package, usb=twin_usb, token=token) for a in template)
            box.shut_down()
            steps = count_steps(box, args, twin)
            for step in range(1, steps + 1):
                fs.checkpoint()
                if not box.running:
                    box.power_on()
                command = start_cut_at(box, args, step)
                try:
                    where = f"{' '.join(template)} step {step}/{steps} ({wait_for_cut_point(box, command)})"
                except RuntimeError as exc:
                    where = f"{' '.join(template)} step {step}/{steps}: {exc}"
                box.cut(command)
                cuts += 1
                problems = box_file_problems(box.config.data_dir)
                try:
                    box.power_on()
                except RuntimeError as exc:
                    problems.append(f"did not come up: {str(exc)[-300:]}")
                else:
                    verified = box.cli("verify")
                    if verified.returncode != 0:
                        problems.append(f"verify: {verified.stdout}{verified.stderr}")
                    problems += snapshot_problems(box.config)
                failures += [f"{where}: {p}" for p in problems]
                if rng.random() < 0.5:
                    box.shut_down()  # half the time the next cut starts from a clean stop
    finally:
        box.close()
    return cuts, failures


def run(args: Any, workdir: Path) -> int:
    binary = lazyfs_binary()
    if binary is None:
        raise RuntimeError("LazyFS is not built or FUSE is unusable: see ../shared/tools/lazyfs/README.md")
    print(f"load average before the run: {args.load_before:.2f}")
    receiver = RunningReceiver(workdir / "receiver").start()
    total = CutReport()
    started = time.monotonic()
    try:
        with LazyFS(workdir / "fs-baseline", binary) as fs:
            baseline = clean_starts(fs, workdir / "baseline", args.baseline)
        group = 0
        while total.cuts < args.cuts:
            group += 1
            cuts = min(args.per_box, args.cuts - total.cuts)
            with LazyFS(workdir / f"fs-{group}", binary) as fs:
                report = run_cuts(
                    fs,
                    workdir / f"run-{group}",
                    receiver,
                    cuts,
                    seed=args.seed + group,
                    entries=2000,
                    unsafe=args.unsafe,
                )
            total.add(report)
            print(
                f"box {group}: {report.cuts} cuts, {report.acknowledged} acknowledged, "
                f"{len(report.lost)} lost, {len(report.problems)} problems "
                f"({time.monotonic() - started:.0f} s)",
                flush=True,
            )
        command_total = 0
        command_failures: list[str] = []
        if args.commands:
            with LazyFS(workdir / "fs-commands", binary) as fs:
                command_total, command_failures = command_cuts(fs, workdir, args.seed)
    finally:
        receiver.stop()

    clean = statistics.median(baseline)
    restart = sorted(total.restart_s) or [float("nan")]
    print()
    print(f"scoring cuts                    {total.cuts}")
    print(f"acknowledged sheets             {total.acknowledged}")
    print(f"lost                            {len(total.lost)}  (must be 0)")
    print(f"acknowledged, at the receiver   {total.acknowledged_at_receiver} of {total.acknowledged}")
    print(f"records at the receiver / box   {total.receiver_records} / {total.box_records}")
    print(f"sheets at the receiver / ledger {total.receiver_sheets} / {total.ledger_sheets}")
    print(f"clean start to READY (median)   {clean:.2f} s over {len(baseline)} starts (baseline)")
    print(
        f"restart after a cut to READY    median {statistics.median(restart):.2f} s "
        f"({statistics.median(restart) / clean:.2f}x the clean start), max {restart[-1]:.2f} s "
        f"({restart[-1] / clean:.2f}x)"
    )
    print(f"command cuts                    {command_total}, {len(command_failures)} failed")
    for problem in (total.problems + command_failures)[:20]:
        print(f"  problem: {problem}")
    print(f"wall time                       {time.monotonic() - started:.0f} s")
    if args.unsafe:
        return 0 if total.lost else 1
    return 0 if not total.lost and not total.problems and not command_failures else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cuts", type=int, default=200)
    parser.add_argument("--per-box", type=int, default=20)
    parser.add_argument("--baseline", type=int, default=5)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--unsafe", action="store_true", help="synchronous=NORMAL: the harness's self-check")
    parser.add_argument("--commands", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    print(f"seed {args.seed}")
    return loadgen.run_in_workdir("powercut", args, run, "work folder")


if __name__ == "__main__":
    sys.exit(main())
