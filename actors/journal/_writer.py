"""The write side of `SQLiteJournal`: the queue of operations and the writer thread.

Every write call queues an operation (kind, payload, future) under the journal's
lock; one thread of the journal's own takes what is queued as a batch, applies it
in one transaction (*group commit*) and then resolves the batch's futures
together. Under load the queue fills while the previous batch commits, so batches
grow by themselves; `max_delay_ms` makes the writer wait for more when the load
is light (a flush or a close cuts the wait short).

Within one batch, work that a later operation undoes is never done: a record
appended and acknowledged in the same batch is never written, and a record both
started and acknowledged costs no update, only its delete (or nothing at all, if
it was also appended in that batch).

If a transaction fails, the journal is broken: that batch's futures fail with a
`JournalError`, every later batch fails the same way without being tried, and
every later call raises it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Final

from actors._errors import JournalClosed, JournalError
from actors._latency import Buckets

if TYPE_CHECKING:
    from actors.journal._seam import Key

__all__ = [
    "ACK",
    "APPEND",
    "BARRIER",
    "DEAD_ADD",
    "DEAD_REMOVE",
    "SNAP",
    "START",
    "JournalWriter",
    "commit_batch",
]

#: The commit-latency histogram's bounds (seconds) and the batch-size one's (operations).
COMMIT_BOUNDS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
BATCH_BOUNDS: Final = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)

# Operations queued for the writer: (kind, payload, future). Kinds:
APPEND: Final = 0  # payload: list[(seq, key, data)]
ACK: Final = 1  # payload: list[seq]
START: Final = 2  # payload: list[seq]
SNAP: Final = 3  # payload: (key, data | None, generation)
DEAD_ADD: Final = 4  # payload: (id, key, data, reason, added_at, ack_seq | None)
DEAD_REMOVE: Final = 5  # payload: list[id]
BARRIER: Final = 6  # payload: None (flush)
SEEN: Final = 7  # payload: (list[(msg_id, at)], forget_before)

_Op = tuple[int, Any, "Future[None] | None"]


class JournalWriter:
    """The queue of a journal's writes and the thread that commits them in batches.

    `SQLiteJournal` extends it with the file and the public calls; this class holds
    the state the two sides share, all of it guarded by `_lock`. The thread is
    created here and started by `_start_writer` once the file is open.
    """

    def __init__(
        self,
        path: str,
        *,
        batch_max: int,
        max_delay: float,
        maintain_every: int,
        max_queued: int,
    ) -> None:
        self._path = path
        self._batch_max = batch_max
        self._max_delay = max_delay  # seconds
        self._maintain_every = maintain_every
        self._max_queued = max_queued

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the writer waits for work
        self._room = threading.Condition(self._lock)  # appends wait for room in the queue
        self._queue: list[_Op] = []
        self._queued_rows = 0  # what the queued operations write, in rows
        self._barriers = 0  # flushes queued
        self._tail: Future[None] | None = None  # the future of the last queued operation
        self._closing = False
        self._busy = False  # the writer holds a batch it has not settled yet
        self._failure: JournalError | None = None
        self._snap_overlay: dict[Key, tuple[int, bytes | None]] = {}
        self._snap_generation = 0
        self._commits = 0
        self._ops_committed = 0
        # Per commit, not per message: what the metrics exporter shows of group commit.
        self._commit_seconds = Buckets(COMMIT_BOUNDS)
        self._batch_sizes = Buckets(BATCH_BOUNDS)
        self._maintenances = 0
        self._thread = threading.Thread(
            target=self._run, name=f"inorder-journal:{os.path.basename(path)}", daemon=True
        )

    def _start_writer(self, db: sqlite3.Connection) -> None:
        """Hand the writer its connection (it closes it when it ends) and start it."""
        self._writer_db = db
        self._thread.start()

    # -- the calling threads' side -------------------------------------------------------

    def _check_open(self) -> None:
        """Raise if no call may be made now; the caller holds the lock."""
        if self._closing:
            raise JournalClosed(f"the journal {self._path!r} is closed")
        if self._failure is not None:
            raise JournalError(f"the journal {self._path!r} is broken: {self._failure}")

    def _enqueue_locked(self, kind: int, payload: Any) -> Future[None]:
        # Operations queued back to back share one future, held by the last of them:
        # it resolves when that one commits, which is when they all have. (A future
        # costs more than the rest of an append.) It is running from the start, so
        # that no caller can cancel it for the others.
        future = self._tail
        if future is None:
            future = self._tail = Future()
            future.set_running_or_notify_cancel()
        else:
            last_kind, last_payload, _ = self._queue[-1]
            self._queue[-1] = (last_kind, last_payload, None)
        self._queue.append((kind, payload, future))
        self._queued_rows += _rows(kind, payload)
        if kind == BARRIER:
            self._barriers += 1  # a flush: no waiting for more operations
            self._wake.notify()
        elif len(self._queue) == 1 or self._queued_rows >= self._batch_max:
            self._wake.notify()
        return future

    # -- the writer thread ---------------------------------------------------------------

    def _take_batch(self) -> list[_Op] | None:
        """The next batch, or None once closing with nothing queued."""
        with self._lock:
            while not self._queue and not self._closing:
                self._wake.wait()
            if not self._queue:
                return None
            if self._max_delay > 0 and not self._closing:
                deadline = time.monotonic() + self._max_delay
                while (
                    self._queued_rows < self._batch_max and not self._closing and not self._barriers
                ):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(left)
            rows = taken = 0
            for kind, payload, _ in self._queue:  # at least one operation, however large
                if taken and rows + _rows(kind, payload) > self._batch_max:
                    break
                rows += _rows(kind, payload)
                taken += 1
                if kind == BARRIER:
                    self._barriers -= 1
            batch = self._queue[:taken]
            del self._queue[:taken]
            # Later operations get a future of their own: one that kept moving to the
            # newest operation would never resolve under a load that never lets up.
            self._tail = None
            self._queued_rows -= rows
            self._busy = True
            self._room.notify_all()
            return batch

    def _run(self) -> None:
        db = self._writer_db
        since_maintenance = 0
        try:
            while True:
                batch = self._take_batch()
                if batch is None:
                    break
                if self._failure is not None:
                    self._fail(batch, self._failure)
                    continue
                began = time.perf_counter()
                try:
                    committed = commit_batch(db, batch)
                except Exception as exc:
                    error = JournalError(
                        f"a transaction on the journal {self._path!r} failed: {exc!r}"
                    )
                    error.__cause__ = exc
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    with self._lock:
                        self._failure = error
                        self._room.notify_all()
                    self._fail(batch, error)
                    continue
                self._settle(batch, committed, time.perf_counter() - began)
                since_maintenance += committed
                if since_maintenance >= self._maintain_every:
                    since_maintenance = 0
                    self._maintain(db)
            if self._failure is None:
                self._maintain(db)
        finally:
            db.close()

    def _settle(self, batch: list[_Op], committed: bool, seconds: float) -> None:
        """After a commit: count it, retire committed snapshot overlays, resolve futures."""
        with self._lock:
            self._busy = False
            self._commits += committed
            ops = sum(1 for op in batch if op[0] != BARRIER)
            self._ops_committed += ops
            if committed:
                self._commit_seconds.add(seconds)
                self._batch_sizes.add(ops)
            for kind, payload, _ in batch:
                if kind == SNAP:
                    key, _, generation = payload
                    current = self._snap_overlay.get(key)
                    if current is not None and current[0] == generation:
                        del self._snap_overlay[key]
        for _, _, future in batch:
            if future is not None:
                future.set_result(None)

    def _fail(self, batch: list[_Op], error: JournalError) -> None:
        with self._lock:
            self._busy = False
        for _, _, future in batch:
            if future is not None:
                future.set_exception(error)

    def _maintain(self, db: sqlite3.Connection) -> None:
        """Return free pages to the file system and truncate the WAL (best effort: a
        checkpoint that a reader holds back simply happens next time)."""
        try:
            free = db.execute("PRAGMA freelist_count").fetchone()[0]
            if free > 64:
                # Through sqlite3_exec, which steps it to the end: a plain execute()
                # frees a single page.
                db.executescript("PRAGMA incremental_vacuum;")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error:
            return
        with self._lock:
            self._maintenances += 1


def commit_batch(db: sqlite3.Connection, batch: list[_Op]) -> bool:
    """Apply `batch` in one transaction; False if there was nothing to write.

    The operations are first folded together, in call order, so that the
    transaction does only what their sum does.
    """
    inserts: dict[int, list[Any]] = {}  # seq -> [seq, key, data, attempts]
    acked: set[int] = set()  # every seq acknowledged in this batch
    deletes: list[int] = []  # of those, the ones written before this batch
    starts: dict[int, int] = {}  # seq of a row written before -> handlers started on it
    snapshots: dict[Key, bytes | None] = {}
    dead_adds: dict[int, tuple[Any, ...]] = {}
    dead_removes: list[int] = []
    seen: dict[str, float] = {}
    forget_before: float | None = None
    max_seq = 0
    max_dead = 0

    def acknowledge(seq: int) -> None:
        if seq in acked:
            return
        acked.add(seq)
        if inserts.pop(seq, None) is None:
            deletes.append(seq)
            # The row goes: counting its attempts first would be an UPDATE for nothing.
            starts.pop(seq, None)

    for kind, payload, _ in batch:
        if kind == APPEND:
            for seq, key, data in payload:
                inserts[seq] = [seq, key, data, 0]
                max_seq = seq
        elif kind == ACK:
            for seq in payload:
                acknowledge(seq)
        elif kind == START:
            for seq in payload:
                row = inserts.get(seq)
                if row is not None:
                    row[3] += 1
                elif seq not in acked:  # a start after the ack: the row is gone already
                    starts[seq] = starts.get(seq, 0) + 1
        elif kind == SNAP:
            snapshots[payload[0]] = payload[1]
        elif kind == DEAD_ADD:
            dead_id, key, data, reason, added_at, ack_seq = payload
            dead_adds[dead_id] = (dead_id, key, data, reason, added_at)
            max_dead = dead_id
            if ack_seq is not None:
                acknowledge(ack_seq)
        elif kind == DEAD_REMOVE:
            dead_removes.extend(i for i in payload if dead_adds.pop(i, None) is None)
        elif kind == SEEN:
            ids, before = payload
            seen.update(ids)
            if before is not None:
                forget_before = before if forget_before is None else max(forget_before, before)

    if (
        not (max_seq or starts or deletes or snapshots or max_dead or dead_removes or seen)
        and forget_before is None
    ):
        return False  # only barriers (flush), or starts that their acks cancelled
    db.execute("BEGIN IMMEDIATE")
    if inserts:
        db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?)", inserts.values())
    if starts:
        db.executemany(
            "UPDATE messages SET attempts = attempts + ? WHERE seq = ?",
            [(n, seq) for seq, n in starts.items()],
        )
    if deletes:
        db.executemany("DELETE FROM messages WHERE seq = ?", [(seq,) for seq in deletes])
    if max_seq:
        db.execute("UPDATE meta SET value = ? WHERE name = 'next_seq'", (max_seq + 1,))
    if snapshots:
        saved = [(k, d) for k, d in snapshots.items() if d is not None]
        dropped = [(k,) for k, d in snapshots.items() if d is None]
        if saved:
            db.executemany("INSERT OR REPLACE INTO snapshots VALUES (?, ?)", saved)
        if dropped:
            db.executemany("DELETE FROM snapshots WHERE key = ?", dropped)
    if dead_adds:
        db.executemany("INSERT INTO dead_letters VALUES (?, ?, ?, ?, ?)", dead_adds.values())
    if dead_removes:
        db.executemany("DELETE FROM dead_letters WHERE id = ?", [(i,) for i in dead_removes])
    if max_dead:
        db.execute("UPDATE meta SET value = ? WHERE name = 'next_dead_letter'", (max_dead + 1,))
    if forget_before is not None:
        db.execute("DELETE FROM seen WHERE at < ?", (forget_before,))
    if seen:
        db.executemany("INSERT OR REPLACE INTO seen VALUES (?, ?)", seen.items())
    db.execute("COMMIT")
    return True


def _rows(kind: int, payload: Any) -> int:
    """How many rows an operation writes, roughly: what `batch_max` counts."""
    if kind in (APPEND, ACK, START, DEAD_REMOVE):
        return max(len(payload), 1)
    if kind == SEEN:
        return max(len(payload[0]), 1)
    return 1
