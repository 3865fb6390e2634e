#!/usr/bin/env python3
"""Run venuebox from a fresh clone with nothing but python3 (3.11+).

    python3 dev.py demo     a demo box: sample event, pairing codes, the API on port 8080
    python3 dev.py test     the test suite (extra arguments go to pytest)
    python3 dev.py venuebox ARGS...   any venuebox command

The first run makes .venv/ and installs the project into it; later runs reinstall only when
pyproject.toml changed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".venuebox-installed"


def ensure_env() -> None:
    if not (BIN / "python").exists():
        print("dev.py: creating .venv (first run only)", file=sys.stderr)
        venv.create(VENV, with_pip=True)
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not STAMP.exists() or STAMP.read_text() != wanted:
        print("dev.py: installing venuebox and its dependencies into .venv", file=sys.stderr)
        subprocess.run(
            [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True
        )
        subprocess.run(
            [str(BIN / "python"), "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[test]"], check=True
        )
        STAMP.write_text(wanted)


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - a fresh machine may have an older python3
        print(f"venuebox needs Python 3.11 or newer; this is {sys.version.split()[0]}", file=sys.stderr)
        return 1
    if not argv or argv[0] not in ("demo", "test", "venuebox"):
        print(__doc__.strip())
        return 2
    ensure_env()
    command, rest = argv[0], argv[1:]
    if command == "demo":
        args = [str(BIN / "venuebox"), "demo", *rest]
    elif command == "test":
        args = [str(BIN / "python"), "-m", "pytest", *rest]
    else:
        args = [str(BIN / "venuebox"), *rest]
    os.chdir(ROOT)
    os.execv(args[0], args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
