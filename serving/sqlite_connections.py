"""SQLite files shared by threads and processes: one connection per thread, one writer.

The history store and the decision log (serving/store.py, serving/decision_log.py) are
SQLite files in WAL mode, so readers never wait.  Writers do: SQLite lets one write at a
time, and a writer that finds the lock taken *polls* for it, sleeping 1, 2, 5, 10, ... ms
between tries (its busy handler).  With two service workers appending ~450 decisions a
second each to one log, 5-6% of the appends found the lock taken and slept ~1-3 ms for
a lock held ~50 µs (p99 of an append 3.4-3.6 ms against a median of ~190 µs; an ad-hoc
timing of every append in both workers, one 20 s run at concurrency 8).

So writers also queue on an advisory ``flock`` of a lock file next to the database
(``<name>-writer.lock``, beside SQLite's own ``-wal`` and ``-shm``): the kernel wakes
the next writer the moment the lock is released, and SQLite's lock is then free.  A
process that does not take it (another program writing to the file) is still excluded
by SQLite, through the busy handler as before.  Where ``fcntl`` does not exist
(Windows), only SQLite's lock is used.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["SQLiteConnections"]


class SQLiteConnections:
    """One SQLite connection per thread (WAL, so readers never wait), one writer at a time
    across threads and processes.

    With ``checkpoint_seconds``, the WAL is copied back into the database by a background
    thread at that interval instead of by whichever commit crosses SQLite's 1000-page
    mark: that commit then also waits for an fsync, which made one decision-log append in
    ~300 take ~14 ms instead of ~50 µs (a p99 spike for every request queued behind it).

    ``durable``: every commit is on disk when it returns (``synchronous=FULL``: an fsync of
    the WAL per commit), for writes that must survive a power loss or an OS crash.
    Otherwise ``synchronous=NORMAL``: no fsync per commit, so a process crash loses
    nothing committed but a power loss may lose the last commits before a checkpoint.

    Open one instance per process: the writer lock is a ``flock``, which a forked child
    shares with its parent when it inherits the same open file.
    """

    def __init__(
        self,
        path: str | Path,
        schema: str,
        *,
        checkpoint_seconds: float | None = None,
        durable: bool = False,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock_path = self.path.with_name(self.path.name + "-writer.lock")
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.write_lock = threading.Lock()  # this process's threads
        self._lock_fd: int | None = None  # other processes (None: not POSIX, or closed)
        if fcntl is not None:
            self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        self._autocheckpoint = checkpoint_seconds is None
        self._synchronous = "FULL" if durable else "NORMAL"
        with self.writing() as conn:
            conn.executescript(schema)
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if checkpoint_seconds is not None:
            self._checkpointer = threading.Thread(
                target=self._checkpoint_every,
                args=(checkpoint_seconds,),
                name=f"checkpoint-{self.path.name}",
                daemon=True,
            )
            self._checkpointer.start()

    def _checkpoint_every(self, seconds: float) -> None:
        # PASSIVE: copies what no reader still needs, never blocks readers or writers.
        conn = sqlite3.connect(self.path, timeout=30.0)
        try:
            while not self._stop.wait(seconds):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:  # the file went away under us (a test's tmp dir): stop
            pass
        finally:
            conn.close()

    def connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA busy_timeout=30000")
            if not self._autocheckpoint:
                conn.execute("PRAGMA wal_autocheckpoint=0")  # the background thread does it
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """A transaction on this thread's connection, serialized with other writers."""
        conn = self.connection()
        with self.write_lock, self._other_processes(), conn:
            yield conn

    @contextmanager
    def _other_processes(self) -> Iterator[None]:
        """The lock file's exclusive ``flock`` (blocking; the GIL is released meanwhile)."""
        fd = self._lock_fd
        if fd is None or fcntl is None:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
            self._checkpointer = None
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
        with self.write_lock:  # not while this process writes
            if self._lock_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._lock_fd)
                self._lock_fd = None
