"""Run a venuebox command and stop it dead just before its N-th step, so a power cut lands inside it.

    python -m tests.cutpoint --under DIR --report FILE --at N -- ARGS...

The steps are the command's own file-system writes under DIR, as Python's audit hooks see them
before they happen (PEP 578): a file opened for writing, a rename, a remove, a mkdir, a copy, and
each SQLite connection opened. At the N-th one the process writes "cut N: <step>" to FILE and stops
itself with SIGSTOP, so nothing more of it runs; the harness then kills it and clears LazyFS's cache
(the power cut). With ``--at 0`` it only counts: the number of steps goes to FILE at exit.
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import sys
from typing import Any

WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
EVENTS = {
    "os.rename",
    "os.remove",
    "os.rmdir",
    "os.mkdir",
    "os.truncate",
    "os.link",
    "shutil.copyfile",
    "shutil.rmtree",
    "sqlite3.connect",
}


def _paths(event: str, args: tuple[Any, ...]) -> list[str]:
    found = []
    for arg in args[:2] if event in ("os.rename", "os.link", "shutil.copyfile") else args[:1]:
        if isinstance(arg, (str, bytes, os.PathLike)):
            found.append(os.path.abspath(os.fsdecode(arg)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--under", required=True)
    parser.add_argument("--report", required=True)
    parser.add_argument("--at", type=int, required=True)
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args()
    under = os.path.abspath(options.under)
    args = options.args[1:] if options.args[:1] == ["--"] else options.args
    seen = 0

    def hook(event: str, hook_args: tuple[Any, ...]) -> None:
        nonlocal seen
        if event == "open":
            mode, flags = hook_args[1], hook_args[2]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & WRITING
            )
            if not writing:
                return
        elif event not in EVENTS:
            return
        paths = _paths(event, hook_args)
        if not any(p == under or p.startswith(under + os.sep) for p in paths):
            return
        seen += 1
        if seen == options.at:
            with open(options.report, "w") as report:  # outside DIR: not a step itself
                report.write(f"cut {seen}: {event} {paths}\n")
            os.kill(os.getpid(), signal.SIGSTOP)

    def write_count() -> None:
        with open(options.report, "w") as report:
            report.write(f"{seen}\n")

    if options.at == 0:
        atexit.register(write_count)
    sys.addaudithook(hook)
    from appliance.shell.cli import cli

    cli.main(args, prog_name="venuebox")


if __name__ == "__main__":
    main()
