"""The store: SQLite connections and the concurrency model, in one place.

Concurrency model
-----------------
* **One writer per process, serialised.** A single writer thread owns the only write connection of
  the process. Every write is a function ``fn(conn)`` queued to it (``write`` from asyncio,
  ``write_sync`` from plain code). The thread takes whatever is queued (up to ``GROUP_MAX`` jobs),
  opens one ``BEGIN IMMEDIATE`` transaction, runs each job inside its own SAVEPOINT (a job that
  raises is rolled back alone and gets its exception), then COMMITs once and only then resolves the
  callers. One fsync covers the whole group ("group commit"), and nobody hears "stored" before the
  commit that stores it.
* **Across processes** (the CLI writing while the server runs) SQLite's write lock serialises the
  writers; ``BEGIN IMMEDIATE`` with a busy timeout waits for it instead of failing half-way.
* **Readers never block the writer**: WAL mode, each reading thread has its own connection.
  ``query`` runs a short indexed lookup on the caller's thread; ``read`` runs longer reads on a small
  thread pool so the event loop keeps serving.
* Durability: ``journal_mode=WAL`` with ``synchronous=FULL``: a committed transaction survives a
  power cut.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils import Database

from appliance.errors import NotInitialised, Unavailable
from appliance.storage.schema import migrate

T = TypeVar("T")
# A group closes at this many sheets' worth of work (a batch job weighs its sheet count), so a big
# batch never holds single sheets behind it for long.
GROUP_WEIGHT = 600
BUSY_TIMEOUT_MS = 5000
_STOP = object()


def connect(path: Path | str, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection with the box's pragmas. Autocommit mode: transactions are always explicit."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    # A 32 MB page cache (the default is 2 MB): the ledger's unique sheet_id index takes random
    # inserts, and a cache that holds the index keeps an insert from reading pages back from disk.
    conn.execute("PRAGMA cache_size = -32768")
    if readonly:
        # Readers are ordinary connections (a read-only URI cannot open a WAL database whose
        # -shm file is gone) that refuse writes, so a read path can never write by mistake.
        conn.execute("PRAGMA query_only = ON")
    return conn


def create_database(path: Path, schema: Callable[[Database], int] = migrate) -> int:
    """Create or upgrade the database file with ``schema`` (the box's by default); returns the
    schema version."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path)
    try:
        return schema(Database(conn))
    finally:
        conn.close()


class _Job:
    __slots__ = ("deadline", "fn", "future", "weight")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], weight: int, deadline: float | None) -> None:
        self.fn = fn
        self.weight = weight
        self.deadline = deadline
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()


class Store:
    """The data dir's database, with the single-writer model described above."""

    def __init__(
        self,
        path: Path | str,
        *,
        read_threads: int = 2,
        schema: Callable[[Database], int] = migrate,
        create: bool = False,
    ) -> None:
        """The box's database at ``path`` (it must exist: `venuebox init` makes it), or, with
        ``schema`` and ``create``, another service's (the reference uplink receiver's)."""
        self.path = Path(path)
        if not create and not self.path.exists():
            raise NotInitialised(f"no database at {self.path}: run `venuebox init` first")
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._local = threading.local()
        self._read_pool = concurrent.futures.ThreadPoolExecutor(
            read_threads, thread_name_prefix="venuebox-read"
        )
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._closed = False
        # Upgrade the schema before anyone reads or writes.
        create_database(self.path, schema)
        self._writer = threading.Thread(target=self._write_loop, name="venuebox-writer", daemon=True)
        self._writer.start()

    # -- writes -------------------------------------------------------------------------------

    def submit(
        self, fn: Callable[[sqlite3.Connection], T], weight: int = 1, timeout: float | None = None
    ) -> concurrent.futures.Future[T]:
        """Queue ``fn``; with ``timeout``, a job the writer has not started by then never runs and
        fails with Unavailable, so "not stored, retry" is a true answer."""
        if self._closed:
            raise Unavailable("the box is shutting down; try again in a moment")
        job = _Job(fn, weight, None if timeout is None else time.monotonic() + timeout)
        self._queue.put(job)
        return job.future

    async def write(
        self, fn: Callable[[sqlite3.Connection], T], weight: int = 1, timeout: float | None = None
    ) -> T:
        """Run ``fn(conn)`` in the writer's transaction; returns once it is committed."""
        return await asyncio.wrap_future(self.submit(fn, weight, timeout))

    def write_sync(self, fn: Callable[[sqlite3.Connection], T], timeout: float | None = 30.0) -> T:
        return self.submit(fn).result(timeout)

    def _write_loop(self) -> None:
        conn = connect(self.path)
        try:
            while True:
                first = self._queue.get()
                if first is _STOP:
                    return
                group = [first]
                weight = first.weight
                while weight < GROUP_WEIGHT:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        self._queue.put(_STOP)
                        break
                    group.append(nxt)
                    weight += nxt.weight
                self._run_group(conn, group)
        finally:
            conn.close()

    @staticmethod
    def _run_group(conn: sqlite3.Connection, group: list[_Job]) -> None:
        # A caller that gave up (timeout, disconnect) before its job started cancelled it: such a
        # job never runs, so "not stored" was a true answer. Once running, it can't be cancelled.
        group = [job for job in group if job.future.set_running_or_notify_cancel()]
        now = time.monotonic()
        late = [job for job in group if job.deadline is not None and now > job.deadline]
        for job in late:
            job.future.set_exception(
                Unavailable("the box was too busy to store this in time; nothing was stored, retry")
            )
        group = [job for job in group if job not in late] if late else group
        if not group:
            return
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            error = Unavailable(f"the database is busy or unavailable ({exc}); try again shortly")
            for job in group:
                job.future.set_exception(error)
            return
        for job in group:
            conn.execute("SAVEPOINT job")
            try:
                result = job.fn(conn)
            except BaseException as exc:
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append((job, None, exc))
            else:
                conn.execute("RELEASE job")
                outcomes.append((job, result, None))
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = Unavailable(f"the database could not commit ({exc}); nothing was stored, try again")
            for job in group:
                job.future.set_exception(error)
            return
        for job, result, exc in outcomes:
            if exc is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(exc)

    # -- reads --------------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True)
            self._local.conn = conn
            with self._reader_lock:
                self._reader_conns.append(conn)
        return conn

    def query(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A short read on the calling thread (point lookups by primary key or index)."""
        return _in_read_transaction(self._reader(), fn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A longer read on the reader pool, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_pool, self.query, fn)

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Finish queued writes, checkpoint the WAL and close every connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._writer.join()
        self._read_pool.shutdown(wait=True)
        with self._reader_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
        conn = connect(self.path)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError:
            pass  # another process holds the database; its own close will checkpoint
        finally:
            conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _in_read_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    # A read transaction gives the function one consistent snapshot across its queries.
    conn.execute("BEGIN")
    try:
        return fn(conn)
    finally:
        conn.execute("COMMIT")
