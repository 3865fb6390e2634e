"""Secret files (admin token, data key): created 0600 atomically, refused if readable by others."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class InsecureSecretFile(Exception):
    pass


def write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # O_EXCL + 0600 at creation: the secret is never, even briefly, readable by anyone else.
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (value + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (the directory entry itself is fsynced)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_secret(path: Path) -> str:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InsecureSecretFile(
            f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}): run `chmod 600 {path}`"
        )
    return path.read_text(encoding="ascii").strip()
