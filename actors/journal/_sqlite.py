"""`SQLiteJournal`: the embedded `Journal`, an SQLite file written by a thread of its own.

It uses the stdlib `sqlite3`, WAL mode, and a writer thread doing *group commit*
(`_writer.py`): the writer takes everything queued (up to `batch_max`
rows, after waiting up to `max_delay_ms` for more), applies it in one transaction
and resolves all of its futures together. Under load the queue fills while the
previous batch commits, so batches grow by themselves; `max_delay_ms` trades
latency for larger batches when the load is light (`flush` and `close` cut it
short). Within one batch, a record appended and acknowledged (handled fast) is
never written at all.

Measured on a 2-core VM with 200-byte records (one record per `append` call): about
150,000 appends/s committed with group commit, against about 50,000/s (`"normal"`)
and 3,300/s (`"full"`) for one SQLite transaction per message written inline; the
commit latency at 1,000 appends/s is about 0.1 ms at p50 and 1 ms at p99.

Durability, with `sync`:

* `"normal"` (the default, `PRAGMA synchronous=NORMAL`): a committed batch is in
  the WAL file in the operating system's cache. It survives the process being
  killed (`kill -9`, an OOM kill, a crash), not a power loss or a kernel crash,
  which may lose the last batches committed before it (never corrupt the file).
* `"full"` (`PRAGMA synchronous=FULL`): every commit is fsynced before its futures
  resolve; a committed batch survives a power loss too. Each commit costs an fsync
  (milliseconds on most disks), which group commit shares among a batch.

The file stays bounded: acknowledged rows are deleted (their pages reused), and
every `maintain_every` commits (and at `close`) the writer frees unused pages
(`auto_vacuum=INCREMENTAL`) and truncates the WAL (`wal_checkpoint(TRUNCATE)`);
`journal_size_limit` caps what the WAL keeps between checkpoints.

A file that is not a journal this version reads (not SQLite, a corrupted or
truncated one, another SQLite database, another schema version) raises
`JournalError` at open, naming the file and the recovery path; a journal is never
silently started empty over one. A new file is created complete or not at all (it
is written aside and renamed into place). See `_file.py`.

One `SQLiteJournal` at a time uses a file: it holds a lock on `<path>-lock` (on
POSIX systems), and a second one, in this process or another, gets `JournalError`.
When moving a journal aside, move its `-wal` file with it (`-shm` and `-lock` are
rebuilt).

Thread safety: every method may be called from any thread. Futures resolve, and
their callbacks run, on the writer thread: keep callbacks short, and hand results
to an event loop with `asyncio.wrap_future` or `loop.call_soon_threadsafe`. After
`close`, every call raises `JournalClosed`. If a transaction fails (disk full, an
I/O error), its futures fail and so does every later call: the journal is broken,
and must be closed and reopened.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any, Final, final

from actors._errors import JournalError
from actors.journal._file import (
    SCHEMA_VERSION,
    Sync,
    claim,
    connect,
    create,
    open_checked,
    read_counters,
)
from actors.journal._seam import Accepted, DeadLetterRecord, PendingRecord
from actors.journal._writer import (
    ACK,
    APPEND,
    BARRIER,
    DEAD_ADD,
    DEAD_REMOVE,
    SEEN,
    SNAP,
    START,
    JournalWriter,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from concurrent.futures import Future

    from actors.journal._seam import Key

__all__ = ["SCHEMA_VERSION", "SQLiteJournal"]

_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**63 - 1
_PAGE_CHUNK: Final = 1000  # rows per query when `pending` streams the journal


@final
class SQLiteJournal(JournalWriter):
    """The embedded journal: an SQLite file in WAL mode, written by a thread of its own.

    `path` is the journal file; it is created if it does not exist (its directory
    must). `sync` is `"normal"` (survives a process crash) or `"full"` (survives a
    power loss too); see the module documentation. `batch_max` bounds the rows one
    transaction writes (records appended, started or acknowledged, one for any
    other operation), except that an operation larger than that still goes alone
    in one transaction; 1 makes one transaction per operation. `max_delay_ms` is
    how long the writer waits for more operations after the first of a batch (0,
    the default: commit at once, batches grow with the load by themselves).
    `maintain_every` is how many commits pass between two maintenance runs (free
    pages returned to the file system, the WAL truncated). `max_queued` bounds the
    rows waiting for the writer: an `append` made while that many wait blocks until
    the writer takes a batch (back-pressure when the disk cannot keep up, instead
    of memory growing without bound; never in a commit callback, which runs on the
    writer). The other writes never block.

    Raises `JournalError` if the file is not a journal this version reads.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sync: Sync = "normal",
        batch_max: int = 2048,
        max_delay_ms: float = 0.0,
        maintain_every: int = 512,
        max_queued: int = 100_000,
    ) -> None:
        if sync not in ("normal", "full"):
            raise ValueError(f"sync must be 'normal' or 'full', got {sync!r}")
        if type(batch_max) is not int or batch_max < 1:
            raise ValueError(f"batch_max must be an int >= 1, got {batch_max!r}")
        if not max_delay_ms >= 0:
            raise ValueError(f"max_delay_ms must be >= 0, got {max_delay_ms!r}")
        if type(max_queued) is not int or max_queued < 1:
            raise ValueError(f"max_queued must be an int >= 1, got {max_queued!r}")
        if type(maintain_every) is not int or maintain_every < 1:
            raise ValueError(f"maintain_every must be an int >= 1, got {maintain_every!r}")
        super().__init__(
            os.fspath(path),
            batch_max=batch_max,
            max_delay=max_delay_ms / 1000.0,
            maintain_every=maintain_every,
            max_queued=max_queued,
        )
        self._sync: Sync = sync
        self._closed = False

        self._lock_fd = claim(self._path)
        try:
            if not os.path.exists(self._path):
                create(self._path)
            writer_db = open_checked(self._path, sync)
        except BaseException:
            os.close(self._lock_fd)
            raise
        try:
            self._reader_db = connect(self._path, sync)
            self._reader_lock = threading.Lock()
            self._next_seq, self._next_dead = read_counters(writer_db, self._path)
        except BaseException:
            writer_db.close()
            os.close(self._lock_fd)
            raise
        self._start_writer(writer_db)

    @property
    def path(self) -> str:
        """The journal file."""
        return self._path

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"SQLiteJournal({self._path!r}, sync={self._sync!r}, {state})"

    # -- writes --------------------------------------------------------------------------

    def append(self, records: Sequence[tuple[Key, bytes]]) -> Accepted:
        """Accept `records`, (key, data) pairs: seqs now, durable when `committed` resolves.

        The seqs are consecutive and larger than any given before, by this journal or
        an earlier one on the same file. Raises `ValueError` (before anything is
        accepted) for a key that is not a non-empty str or a 64-bit signed int, or
        data that is not bytes.
        """
        rows = records if type(records) is list else list(records)
        for key, data in rows:  # the common case costs two type checks per record
            if type(data) is not bytes:
                raise ValueError(f"journal records are bytes, got {type(data).__name__}")
            if type(key) is not str or not key:
                _check_key(key)
        with self._lock:
            self._check_open()
            if self._queued_rows >= self._max_queued and threading.current_thread() is not (
                self._thread
            ):
                while self._queued_rows >= self._max_queued and self._failure is None:
                    self._room.wait()
                    self._check_open()
                self._check_open()
            first = self._next_seq
            self._next_seq += len(rows)
            payload = [(first + i, key, data) for i, (key, data) in enumerate(rows)]
            future = self._enqueue_locked(APPEND, payload)
        return Accepted(list(range(first, first + len(rows))), future)

    def ack(self, seqs: Sequence[int]) -> Future[None]:
        """Remove the messages `seqs` (they got their outcome). Unknown seqs are ignored.

        A message acknowledged in the batch that appends it is never written.
        """
        items = list(seqs)
        with self._lock:
            self._check_open()
            return self._enqueue_locked(ACK, items)

    def mark_started(self, seqs: Sequence[int]) -> Future[None]:
        """Record that a handler started on each of the messages `seqs`: `pending` then
        reports each with one more attempt (it was in flight, its replay is a
        redelivery). Unknown seqs are ignored.

        A message started and acknowledged in one batch costs no update.
        """
        items = list(seqs)
        with self._lock:
            self._check_open()
            return self._enqueue_locked(START, items)

    def save_snapshot(self, key: Key, data: bytes) -> Future[None]:
        """Replace the snapshot of `key`; `load_snapshot` returns it at once."""
        _check_key(key)
        if type(data) is not bytes:
            raise ValueError(f"snapshots are bytes, got {type(data).__name__}")
        return self._snapshot_op(key, data)

    def drop_snapshot(self, key: Key) -> Future[None]:
        """Forget the snapshot of `key`, if any; `load_snapshot` returns None at once."""
        _check_key(key)
        return self._snapshot_op(key, None)

    def _snapshot_op(self, key: Key, data: bytes | None) -> Future[None]:
        with self._lock:
            self._check_open()
            self._snap_generation += 1
            generation = self._snap_generation
            self._snap_overlay[key] = (generation, data)
            return self._enqueue_locked(SNAP, (key, data, generation))

    def add_dead_letter(
        self, key: Key, data: bytes, reason: str, *, ack_seq: int | None = None
    ) -> tuple[int, Future[None]]:
        """Keep a dead letter; returns its id and the commit future.

        With `ack_seq`, message `ack_seq` is acknowledged in the same transaction, so
        a crash never leaves a message both pending and dead-lettered.
        """
        _check_key(key)
        if type(data) is not bytes:
            raise ValueError(f"dead letters are bytes, got {type(data).__name__}")
        with self._lock:
            self._check_open()
            dead_id = self._next_dead
            self._next_dead += 1
            payload = (dead_id, key, data, str(reason), time.time(), ack_seq)
            return dead_id, self._enqueue_locked(DEAD_ADD, payload)

    def remove_dead_letters(self, ids: Sequence[int]) -> Future[None]:
        """Forget the dead letters `ids` (redelivered, or discarded). Unknown ids are ignored."""
        items = list(ids)
        with self._lock:
            self._check_open()
            return self._enqueue_locked(DEAD_REMOVE, items)

    def remember_ids(
        self, ids: Sequence[tuple[str, float]], *, forget_before: float | None = None
    ) -> Future[None]:
        """Keep message ids of the deduplication window, each with its wall-clock time;
        with `forget_before`, forget those older than that (in the same commit)."""
        items = [(str(i), float(at)) for i, at in ids]
        with self._lock:
            self._check_open()
            return self._enqueue_locked(SEEN, (items, forget_before))

    def remembered_ids(self, since: float, limit: int) -> list[tuple[str, float]]:
        """The newest `limit` ids kept at `since` or later, oldest first (waits for the
        queued writes first)."""
        self.flush()
        rows = self._read(
            "SELECT msg_id, at FROM seen WHERE at >= ? ORDER BY at DESC LIMIT ?", (since, limit)
        )
        return [(str(i), float(at)) for i, at in reversed(rows)]

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued before this call is committed.

        Raises `TimeoutError` after `timeout` seconds, `JournalError` if the journal
        broke.
        """
        with self._lock:
            self._check_open()
            if not self._queue and not self._busy:
                return
            future = self._enqueue_locked(BARRIER, None)
        future.result(timeout)

    # -- reads ---------------------------------------------------------------------------

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self._reader_lock:
            try:
                return self._reader_db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise JournalError(f"cannot read the journal {self._path!r}: {exc}") from exc

    def pending(self) -> Iterator[PendingRecord]:
        """The unacknowledged messages in seq (acceptance) order, hence per key in order.

        Waits for the writes queued before the call first. The records are read in
        chunks as the iterator advances; meant for replay at start, before new messages
        are accepted (a record appended or acknowledged meanwhile may or may not be
        listed).
        """
        self.flush()
        return self._pending_from(0)

    def _pending_from(self, after: int) -> Iterator[PendingRecord]:
        while True:
            rows = self._read(
                "SELECT seq, key, data, attempts FROM messages WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, _PAGE_CHUNK),
            )
            for seq, key, data, attempts in rows:
                yield PendingRecord(seq, key, bytes(data), attempts)
            if len(rows) < _PAGE_CHUNK:
                return
            after = rows[-1][0]

    def pending_count(self) -> int:
        """How many messages are unacknowledged (waits for the queued writes first)."""
        self.flush()
        return int(self._read("SELECT count(*) FROM messages")[0][0])

    def load_snapshot(self, key: Key) -> bytes | None:
        """The last snapshot saved for `key` (committed or still queued), or None."""
        with self._lock:
            self._check_open()
            overlay = self._snap_overlay.get(key)
        if overlay is not None:
            return overlay[1]
        rows = self._read("SELECT data FROM snapshots WHERE key = ?", (key,))
        return bytes(rows[0][0]) if rows else None

    def dead_letters(self) -> list[DeadLetterRecord]:
        """The dead letters kept, oldest first (waits for the queued writes first)."""
        self.flush()
        rows = self._read("SELECT id, key, data, reason, added_at FROM dead_letters ORDER BY id")
        return [DeadLetterRecord(i, k, bytes(d), r, a) for i, k, d, r, a in rows]

    def stats(self) -> dict[str, int]:
        """Counters: `commits` (transactions committed), `ops` (operations they held),
        `maintenances` (vacuum and WAL truncations run), `queued` (waiting now)."""
        with self._lock:
            return {
                "commits": self._commits,
                "ops": self._ops_committed,
                "maintenances": self._maintenances,
                "queued": len(self._queue),
            }

    def histograms(self) -> dict[str, tuple[tuple[float, ...], list[int], float]]:
        """Per commit since the open: `commit_seconds` (how long each transaction took)
        and `batch_size` (operations per transaction), as (bounds, counts per bucket with
        +Inf last, sum): what a metrics exporter turns into histograms."""
        with self._lock:
            return {
                "commit_seconds": (self._commit_seconds.bounds, *self._commit_seconds.copy()),
                "batch_size": (self._batch_sizes.bounds, *self._batch_sizes.copy()),
            }

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Commit everything queued, truncate the WAL and release the file. Idempotent;
        every later call raises `JournalClosed`."""
        if threading.current_thread() is self._thread:
            raise JournalError("close() cannot be called from a commit callback")
        with self._lock:
            already = self._closing
            self._closing = True
            self._wake.notify()
            self._room.notify_all()
        self._thread.join()
        if not already:
            with self._reader_lock:
                self._reader_db.close()
            os.close(self._lock_fd)  # after SQLite's connections: that releases the claim
            self._closed = True

    def __enter__(self) -> SQLiteJournal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _check_key(key: object) -> None:
    if type(key) is str:
        if key:
            return
    elif type(key) is int and _INT_MIN <= key <= _INT_MAX:
        return
    raise ValueError(
        f"journal keys are non-empty str or int in -2**63..2**63-1, got {type(key).__name__} "
        f"{key!r:.60}"
    )
