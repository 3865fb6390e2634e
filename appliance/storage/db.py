"""The SQLite engine: connections and the concurrency model, in one place. It knows no schema: the
box's store (``appliance.core.storage.Store``) opens it with the box's, the reference receiver with
its own.

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
* **Notices on commit** (SQL's NOTIFY, in one process): a job calls ``notify(conn, channel)`` and,
  once its group commits, the store calls whoever ``listen``s on that channel (on the writer
  thread, so a listener only hands the news on). The outbox notifies when it queues records, and
  the daemon's uplink worker listens, so it sends them at once instead of at its next poll.
* Durability: ``journal_mode=WAL`` with ``synchronous=FULL``: a committed transaction survives a
  power cut.
* **A damaged file** (a bad sector, an SD card going bad) is this module's to recognise
  (``damage_in``): SQLite's "database disk image is malformed" becomes ``DatabaseDamaged`` naming the
  file, the store remembers it (``Store.damaged``, in memory, so it holds even when nothing can be
  written to the file any more), tells its listeners (the watchdog raises the alert and freezes) and
  from then on refuses every write but the ones that record the damage.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self, TypeVar

from sqlite_utils import Database

from appliance.shared.errors import DatabaseDamaged, DomainError, NotInitialised, Unavailable

T = TypeVar("T")
# A group closes at this many sheets' worth of work (a batch job weighs its sheet count), so a big
# batch never holds single sheets behind it for long.
GROUP_WEIGHT = 600
BUSY_TIMEOUT_MS = 5000
_STOP = object()
# The channels the transaction open on each Store's writer connection has notified (``notify``).
_notices: dict[int, set[str]] = {}


def notify(conn: sqlite3.Connection, channel: str) -> None:
    """Tell the store's listeners on ``channel`` (``Store.listen``) once the caller's transaction
    commits; nothing when it rolls back. A no-op on a connection that is not a Store's writer (other
    processes learn of the change by reading)."""
    channels = _notices.get(id(conn))
    if channels is not None:
        channels.add(channel)


# The power-cut harness's self-check (tests/powercut.py) runs the box with synchronous=NORMAL to show
# it catches a setting that loses acknowledged commits. Only an environment variable with this name
# turns it on: no setting, flag or file does, and the daemon logs a warning while it is set.
UNSAFE_SYNCHRONOUS_ENV = "VENUEBOX_TEST_ONLY_UNSAFE_SYNCHRONOUS"


def _synchronous() -> str:
    return "NORMAL" if os.environ.get(UNSAFE_SYNCHRONOUS_ENV) == "NORMAL" else "FULL"


def connect(path: Path | str, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection with the box's pragmas. Autocommit mode: transactions are always explicit."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {_synchronous()}")
    # A 32 MB page cache (the default is 2 MB): the ledger's unique sheet_id index takes random
    # inserts, and a cache that holds the index keeps an insert from reading pages back from disk.
    conn.execute("PRAGMA cache_size = -32768")
    if readonly:
        # Readers are ordinary connections (a read-only URI cannot open a WAL database whose
        # -shm file is gone) that refuse writes, so a read path can never write by mistake.
        conn.execute("PRAGMA query_only = ON")
    return conn


# SQLite's result codes that say the file itself is damaged (extended codes keep them in the low byte).
SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26


def is_damage_error(exc: BaseException) -> bool:
    """Whether an error says outright that the database file is damaged: SQLITE_CORRUPT ("database
    disk image is malformed"), SQLITE_NOTADB ("file is not a database"), or a text value that is not
    UTF-8 (the box writes only UTF-8: its bytes changed on the disk, inside a value, where SQLite's
    own checks do not look)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    if isinstance(exc, sqlite3.OperationalError) and str(exc).startswith("Could not decode to UTF-8"):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def _may_be_damage(exc: BaseException) -> bool:
    # A damaged length field in a page can also make SQLite run out of memory (SQLITE_NOMEM, which
    # Python raises as MemoryError) or fail with a bare DatabaseError; a quick_check decides. Busy,
    # locked, I/O and constraint errors are something else and never cost a check.
    return isinstance(exc, MemoryError) or type(exc) in (sqlite3.DatabaseError, sqlite3.InternalError)


def quick_check(conn: sqlite3.Connection) -> list[str]:
    """``PRAGMA quick_check`` on a connection (not inside a failed transaction): [] when the database
    is sound, else SQLite's problems. A file too damaged for the check to run is a problem too; a
    busy or locked database is not (that error is raised)."""
    try:
        result = [row[0] for row in conn.execute("PRAGMA quick_check")]
    except (sqlite3.DatabaseError, MemoryError) as exc:
        if not (is_damage_error(exc) or _may_be_damage(exc)):
            raise
        return [f"quick_check could not run: {exc}"]
    return [] if result == ["ok"] else result


def database_problems(path: Path | str) -> list[str]:
    """``quick_check`` of the database file at ``path`` on a connection of its own."""
    try:
        conn = connect(path, readonly=True)
    except (sqlite3.DatabaseError, MemoryError) as exc:
        if not (is_damage_error(exc) or _may_be_damage(exc)):
            raise
        return [f"cannot open the database: {exc}"]
    try:
        return quick_check(conn)
    finally:
        conn.close()


def damage_in(
    path: Path | str, exc: BaseException, conn: sqlite3.Connection | None = None
) -> DatabaseDamaged | None:
    """What an error SQLite raised on the database at ``path`` means: ``DatabaseDamaged`` naming the
    file when it says the file is damaged, else None (busy, locked, a constraint, a bug). An error
    that only may mean damage (out of memory, a bare DatabaseError) is decided by a quick_check, on
    ``conn`` (outside any transaction) or a connection of its own."""
    if is_damage_error(exc):
        return DatabaseDamaged(path, [str(exc)])
    if not _may_be_damage(exc):
        return None
    try:
        problems = quick_check(conn) if conn is not None else database_problems(path)
    except sqlite3.Error:
        return None
    return DatabaseDamaged(path, problems) if problems else None


def _create_private(path: Path) -> None:
    """Make a new database file empty and 0600 before SQLite opens it (an empty file is an empty
    database): SQLite gives the -wal and -shm it makes beside it the database file's own mode, so
    this one mode keeps all three private, whatever the process's umask."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def create_database(path: Path, schema: Callable[[Database], int]) -> int:
    """Create or upgrade the database file with ``schema``; returns the schema version."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _create_private(path)
    conn = connect(path)
    try:
        return schema(Database(conn))
    finally:
        conn.close()


class _Job:
    __slots__ = ("damaged_ok", "deadline", "fn", "future", "weight")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        weight: int,
        deadline: float | None,
        damaged_ok: bool = False,
    ) -> None:
        self.fn = fn
        self.weight = weight
        self.deadline = deadline
        self.damaged_ok = damaged_ok
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()


class _GroupLost(Exception):
    """The group's transaction cannot be committed (SQLite rolled it back, or the file is damaged)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Store:
    """One SQLite database with the single-writer model described above."""

    def __init__(
        self,
        path: Path | str,
        *,
        read_threads: int = 2,
        schema: Callable[[Database], int],
        create: bool = False,
    ) -> None:
        """The database at ``path``, upgraded by ``schema``; it must exist unless ``create``."""
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
        # What this process knows of damage to the file (see ``mark_damaged``); kept in memory so it
        # holds even when the alert and the freeze cannot be written to the file any more.
        self.damaged: DatabaseDamaged | None = None
        self._damage_lock = threading.Lock()
        self._damage_listeners: list[Callable[[DatabaseDamaged], Any]] = []
        self._listeners: dict[str, list[Callable[[], Any]]] = {}
        # Upgrade the schema before anyone reads or writes.
        try:
            create_database(self.path, schema)
        except (sqlite3.DatabaseError, MemoryError) as exc:
            self._read_pool.shutdown(wait=False)
            if (damage := damage_in(self.path, exc)) is not None:
                raise damage from exc
            raise
        self._writer = threading.Thread(target=self._write_loop, name="venuebox-writer", daemon=True)
        self._writer.start()

    # -- writes -------------------------------------------------------------------------------

    def submit(
        self,
        fn: Callable[[sqlite3.Connection], T],
        weight: int = 1,
        timeout: float | None = None,
        *,
        damaged_ok: bool = False,
    ) -> concurrent.futures.Future[T]:
        """Queue ``fn``; with ``timeout``, a job the writer has not started by then never runs and
        fails with Unavailable, so "not stored, retry" is a true answer. Once the file is known to
        be damaged only ``damaged_ok`` jobs run (the watchdog's alert and freeze); every other fails
        with DatabaseDamaged: nothing more is written to a damaged file."""
        if self._closed:
            raise Unavailable("the box is shutting down; try again in a moment")
        job = _Job(fn, weight, None if timeout is None else time.monotonic() + timeout, damaged_ok)
        if self.damaged is not None and not damaged_ok:
            job.future.set_exception(self._damage_error())
            return job.future
        self._queue.put(job)
        return job.future

    async def write(
        self,
        fn: Callable[[sqlite3.Connection], T],
        weight: int = 1,
        timeout: float | None = None,
        *,
        damaged_ok: bool = False,
    ) -> T:
        """Run ``fn(conn)`` in the writer's transaction; returns once it is committed."""
        return await asyncio.wrap_future(self.submit(fn, weight, timeout, damaged_ok=damaged_ok))

    def write_sync(
        self, fn: Callable[[sqlite3.Connection], T], timeout: float | None = 30.0, *, damaged_ok: bool = False
    ) -> T:
        return self.submit(fn, damaged_ok=damaged_ok).result(timeout)

    def listen(self, channel: str, listener: Callable[[], Any]) -> None:
        """Call ``listener()`` after each commit whose jobs ``notify``-ed ``channel``. It runs on the
        writer thread: it must only hand the news on (e.g. ``loop.call_soon_threadsafe``)."""
        self._listeners.setdefault(channel, []).append(listener)

    def _write_loop(self) -> None:
        conn = connect(self.path)
        _notices[id(conn)] = set()
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
            _notices.pop(id(conn), None)
            conn.close()

    def _run_group(self, conn: sqlite3.Connection, group: list[_Job]) -> None:
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
        if self.damaged is not None:  # found damaged while these jobs waited
            for job in group:
                if not job.damaged_ok:
                    job.future.set_exception(self._damage_error())
            group = [job for job in group if job.damaged_ok]
        if not group:
            return
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        notices = _notices[id(conn)]
        notices.clear()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._fail(
                group,
                self._store_error(
                    conn, exc, f"the database is busy or unavailable ({exc}); try again shortly"
                ),
            )
            return
        try:
            for job in group:
                conn.execute("SAVEPOINT job")
                notified = frozenset(notices)
                try:
                    result = job.fn(conn)
                except BaseException as exc:
                    # Some errors end the whole transaction (SQLite rolls it back by itself on a
                    # damaged page, a full disk, out of memory): then no job of the group is stored.
                    # A damaged file is never committed to, whatever SQLite still allows.
                    if not conn.in_transaction or is_damage_error(exc) or _may_be_damage(exc):
                        raise _GroupLost(exc) from exc
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    notices.intersection_update(notified)  # what it notified is rolled back too
                    outcomes.append((job, None, exc))
                else:
                    conn.execute("RELEASE job")
                    outcomes.append((job, result, None))
            conn.execute("COMMIT")
        except (_GroupLost, sqlite3.Error, MemoryError) as exc:
            cause = exc.cause if isinstance(exc, _GroupLost) else exc
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error, MemoryError):
                    conn.execute("ROLLBACK")
            why = f"the database could not store this ({cause}); nothing was stored, try again"
            self._fail(group, self._store_error(conn, cause, why))
            return
        for job, result, error in outcomes:
            if error is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(error)
        for channel in notices:
            for listener in self._listeners.get(channel, ()):
                with contextlib.suppress(Exception):  # a listener's failure is no write's failure
                    listener()

    @staticmethod
    def _fail(group: list[_Job], error: BaseException) -> None:
        for job in group:
            job.future.set_exception(error)

    def _store_error(self, conn: sqlite3.Connection, exc: BaseException, unavailable: str) -> DomainError:
        """DatabaseDamaged when ``exc`` means the file is damaged (the store remembers it and tells
        its listeners), else Unavailable with ``unavailable``."""
        damage = damage_in(self.path, exc, None if conn.in_transaction else conn)
        if damage is None:
            return Unavailable(unavailable)
        return self._detected(damage)

    # -- damage -------------------------------------------------------------------------------

    def on_damage(self, listener: Callable[[DatabaseDamaged], Any]) -> None:
        """Call ``listener(damage)`` (on the thread that met it) the first time a read or a write of
        this store meets damage to the file; the watchdog raises its alert from there at once."""
        self._damage_listeners.append(listener)

    def mark_damaged(self, problems: list[str]) -> DatabaseDamaged:
        """Remember that the file is damaged (``problems``: SQLite's words); returns the error to
        raise. Listeners are not called: whoever marks it (the watchdog) acts on it itself."""
        with self._damage_lock:
            if self.damaged is None:
                self.damaged = DatabaseDamaged(self.path, problems)
        return self._damage_error()

    def _detected(self, damage: DatabaseDamaged) -> DatabaseDamaged:
        with self._damage_lock:
            first = self.damaged is None
            if first:
                self.damaged = damage
        if first:
            for listener in self._damage_listeners:
                with contextlib.suppress(Exception):  # a listener's failure must not hide the damage
                    listener(damage)
        return self._damage_error()

    def _damage_error(self) -> DatabaseDamaged:
        # A new exception each time: one instance raised in many threads would pile up tracebacks.
        assert self.damaged is not None
        return DatabaseDamaged(self.path, self.damaged.problems)

    def ensure_sound(self) -> None:
        """Raise DatabaseDamaged if the file is known to be damaged or ``PRAGMA quick_check`` finds
        problems (a few hundred ms for a venue's database read from disk; see ``venuebox run``)."""
        if self.damaged is not None:
            raise self._damage_error()
        problems = self.query(quick_check)
        if problems:
            raise self.mark_damaged(problems)

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
        """A short read on the calling thread (point lookups by primary key or index). A read that
        meets a damaged page raises DatabaseDamaged (and the store remembers it)."""
        conn = self._reader()
        try:
            return _in_read_transaction(conn, fn)
        except (sqlite3.DatabaseError, MemoryError) as exc:
            damage = damage_in(self.path, exc, conn)
            if damage is None:
                raise
            raise self._detected(damage) from exc

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
        try:
            conn = connect(self.path)
        except (sqlite3.Error, MemoryError):
            return  # a damaged file: whatever was committed stays in the -wal beside it
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except (sqlite3.Error, MemoryError):
            pass  # another process holds the database (its own close will checkpoint), or it is damaged
        finally:
            conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _in_read_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    # A read transaction gives the function one consistent snapshot across its queries.
    if conn.in_transaction:  # an earlier read's end failed (a damaged file): start clean
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
    conn.execute("BEGIN")
    try:
        result = fn(conn)
    except BaseException:
        # The read's own error is the answer; SQLite may have ended the transaction already, so
        # ending it here must not raise over it.
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error, MemoryError):
                conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result
