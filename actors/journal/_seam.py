"""The journal: the storage seam of durable mailboxes.

A durable runtime keeps every message it accepted in a `Journal` until the message
gets its outcome, so that after a crash the messages not yet handled can be replayed
per key in their original order (DESIGN §3 G11, §8). The seam has four parts:

* **accept**: `append` gives every record (an envelope already encoded by the
  `Codec`) a sequence number, at once and in the calling thread, and returns a
  `concurrent.futures.Future` that resolves when the record is durable;
* **acknowledge**: `ack` removes messages that got their outcome;
  `mark_started` records that a handler started on some (so that replay knows
  they were in flight: a redelivery, attempt + 1); `add_dead_letter` keeps a
  message that ended as a dead letter, atomically with its ack if asked;
* **replay**: `pending` lists the unacknowledged messages in acceptance order;
* **snapshot**: `save_snapshot`, `load_snapshot`, `drop_snapshot` keep one blob of
  actor state per key;
* **deduplication** (optional): `remember_ids` and `remembered_ids` keep the ids of
  messages that got their outcome, so that the window outlives a restart. A journal
  without them is used all the same; its runtime's window then starts empty.

Sequence numbers increase strictly in the order of the `append` calls (across
threads: whichever call takes the journal's lock first gets the smaller number), and
never go back, across restarts too. A record's per-key order is therefore its
acceptance order, and `pending` gives it back in that order.

Every write is *asynchronous with a receipt*: it is queued, applied in the order of
the calls, and its future resolves (to `None`) once the transaction that holds it
committed, or fails with `JournalError` if that transaction failed. Operations queued
back to back may share one future (it costs more than the rest of an append), which
is why it is already running and cannot be cancelled: an accepted write cannot be
taken back, only undone by a later one (`ack`). Reads see every
write made before them, committed or not (`load_snapshot` through an overlay of the
queued snapshot writes; `pending` and `dead_letters` by waiting for the queue first).

The embedded implementation is `SQLiteJournal` (`_sqlite.py`: the file and
the public calls; `_file.py`: opening and checking the file;
`_writer.py`: the writer thread and its group commit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol, final

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from concurrent.futures import Future

__all__ = [
    "Accepted",
    "DeadLetterRecord",
    "Journal",
    "Key",
    "PendingRecord",
]

#: A user key as the journal stores it (a str stays TEXT, an int INTEGER).
Key = str | int


class Accepted(NamedTuple):
    """What `Journal.append` returns."""

    seqs: list[int]
    """The sequence numbers given to the records, in the order of the records."""
    committed: Future[None]
    """Resolves when the records are durable (their batch committed)."""


@final
@dataclass(frozen=True, slots=True)
class PendingRecord:
    """An unacknowledged message, as `Journal.pending` lists it."""

    seq: int
    key: Key
    data: bytes
    """The record as appended (an envelope encoded by the codec)."""
    attempts: int
    """How many times `mark_started` listed it: a handler started on it that many
    times without an outcome (> 0: it was in flight, a replay is a redelivery)."""

    @property
    def started(self) -> bool:
        """Whether a handler had started on it (it was in flight at the crash)."""
        return self.attempts > 0


@final
@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A journaled dead letter, as `Journal.dead_letters` lists it."""

    id: int
    key: Key
    data: bytes
    reason: str
    added_at: float
    """Wall-clock time (`time.time()`) when it was added."""


class Journal(Protocol):
    """The storage seam of durable mailboxes: accept, acknowledge, replay, snapshot.

    Writes are queued and applied in call order; each returns a future that resolves
    when it is durable. Reads see all earlier writes. All methods are thread-safe;
    after `close` they raise `JournalClosed`.
    """

    def append(self, records: Sequence[tuple[Key, bytes]]) -> Accepted:
        """Accept records; their seqs now, durable when `committed` resolves."""
        ...

    def ack(self, seqs: Sequence[int]) -> Future[None]:
        """Remove messages that got their outcome (unknown seqs are ignored)."""
        ...

    def mark_started(self, seqs: Sequence[int]) -> Future[None]:
        """Record that a handler started on each of these messages: `pending` then
        reports each with one more attempt (unknown seqs are ignored)."""
        ...

    def pending(self) -> Iterator[PendingRecord]:
        """The unacknowledged messages, in acceptance (seq) order."""
        ...

    def save_snapshot(self, key: Key, data: bytes) -> Future[None]:
        """Replace the snapshot of `key`."""
        ...

    def load_snapshot(self, key: Key) -> bytes | None:
        """The last snapshot saved for `key`, or None."""
        ...

    def drop_snapshot(self, key: Key) -> Future[None]:
        """Forget the snapshot of `key` (if any)."""
        ...

    def add_dead_letter(
        self, key: Key, data: bytes, reason: str, *, ack_seq: int | None = None
    ) -> tuple[int, Future[None]]:
        """Keep a dead letter; with `ack_seq`, acknowledge that message in the same commit."""
        ...

    def dead_letters(self) -> list[DeadLetterRecord]:
        """The dead letters kept, oldest first."""
        ...

    def remove_dead_letters(self, ids: Sequence[int]) -> Future[None]:
        """Forget dead letters (unknown ids are ignored)."""
        ...

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued before this call is durable."""
        ...

    def close(self) -> None:
        """Commit what is queued and release the store; idempotent."""
        ...
