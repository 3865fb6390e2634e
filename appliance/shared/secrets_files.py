"""Files the box must find whole after a power cut: written atomically and durably.

``atomic_write`` is the one way the box writes a file it needs again (keys, tokens, the TLS pair,
daemon.json, settings): a temporary file created with its final mode, written, fsynced, renamed over
the target, then the directory fsynced so the rename itself survives a power cut. A reader sees the
old file or the new one, never an empty or half-written one. Secrets are created 0600 and refused
when readable by others.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path


class InsecureSecretFile(Exception):
    pass


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (the directory entry itself is fsynced)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably (see the module's docstring); the
    directory is made if there is none.

    The temporary file is made with O_EXCL and ``mode`` (fchmod too, whatever the umask), so a
    secret is never, even briefly, readable by anyone else."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _replacing(path, mode) as (fd, _):
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]


def atomic_write_from(path: Path, fill: Callable[[Path], None], mode: int = 0o600) -> None:
    """As ``atomic_write``, for content a library writes to a path itself: ``fill(temporary path)``
    writes it (into the file already made with ``mode``). The directory must exist: a backup disk
    that is not mounted is an error, not a folder to make on the box's own disk."""
    with _replacing(path, mode) as (_, tmp):
        fill(tmp)


@contextlib.contextmanager
def _replacing(path: Path, mode: int) -> Iterator[tuple[int, Path]]:
    """The temporary file beside ``path`` (its descriptor and name) to write; then it is fsynced,
    renamed over ``path`` and the directory fsynced. Removed instead when the write fails."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # a leftover of a write a crash interrupted
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        yield fd, tmp
        os.fsync(fd)  # the file's data, whichever descriptor wrote it
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_secret(path: Path, value: str) -> None:
    atomic_write(path, (value + "\n").encode("ascii"), 0o600)


def read_secret(path: Path) -> str:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InsecureSecretFile(
            f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}): run `chmod 600 {path}`"
        )
    return path.read_text(encoding="ascii").strip()
