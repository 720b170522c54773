"""The durable store as the runtime uses it: accept, acknowledge, replay (DESIGN §3 G11).

With `Runtime(store=...)`, a `Durable` sits between the router and the
`actors.Journal` (loop thread only, except `encode`):

* **accept**: `tell`/`ask` encode the message with the codec at the call site
  (`encode`: an unencodable or oversized message is refused there, G9); the
  router then `record`s it. The records of one loop pass go to the journal in
  one `append`, at the end of the pass (`flush`), so durability costs one
  journal call per pass, not one per message. The journal's writer thread
  group-commits them; `receipt` is the future an awaitable `send` waits for.
* **acknowledge**: a handler starting on a message marks it started (so that a
  replay knows it ran: `ctx.attempt`); every outcome acknowledges it (`ack`),
  and a failed or dropped message becomes a journaled dead letter, acknowledged
  in the same commit (`dead_letter`). These are batched per pass too.
  Messages that the runtime's own stop drops or cuts short (reason
  "shutdown") are *not* acknowledged: they stay, and the next start runs them.
* **replay**: at start, `replay` hands the journal's unacknowledged messages
  to their keys in acceptance order, before any new message is accepted.

An envelope's `seq` is -1 from its acceptance until its pass is flushed; any
step that needs the number before then (a handler starting on it in the same
pass) flushes first. A journal that breaks (disk full, an I/O error) is
logged once (`journal_failed`); later `tell`s raise `JournalError` at the
call site, and the messages already accepted are still handled in memory.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from actors._errors import CodecError, Dropped, JournalError, RecordedError
from actors._mailbox import Envelope
from actors._outcomes import DeadLetter
from supervisors._admission import open_window

if TYPE_CHECKING:
    import asyncio
    from concurrent.futures import Future

    from actors.journal._codec import Codec
    from actors.journal._seam import Journal
    from supervisors._core import _Core
    from supervisors._dedup import Dedup

__all__ = ["Durable"]


# Wall-clock time: what a journaled record keeps (a ttl's deadline must still mean
# something after a restart). A module attribute so that tests can move it.
_wall = time.time


class Durable:
    """The runtime's side of one journal (see the module documentation).

    The router's `Journaling` and `Tracker` (supervisors/_modes.py).
    """

    __slots__ = (
        "_acks",
        "_last",
        "_loop",
        "_records",
        "_scheduled",
        "_seen",
        "_seen_since_trim",
        "_starts",
        "_waiting",
        "_window",
        "broken",
        "closed",
        "codec",
        "journal",
        "log",
        "max_deliveries",
        "replayed",
    )

    def __init__(
        self, journal: Journal, codec: Codec, loop: asyncio.AbstractEventLoop, log: Any
    ) -> None:
        self.journal = journal
        self.codec = codec
        self.log = log
        self._loop = loop
        self._records: list[tuple[str | int, bytes]] = []
        self._waiting: list[Envelope | None] = []  # who gets each record's seq (None: kept)
        self._starts: list[int] = []
        self._acks: list[int] = []
        self._seen: list[tuple[str, float]] = []  # msg_ids that got their outcome
        self._seen_since_trim = 0
        self._window = 3600.0
        self._scheduled = False
        self._last: Future[None] | None = None  # the commit of the last append
        self.broken: BaseException | None = None
        self.closed = False
        self.replayed = 0
        self.max_deliveries = 5  # started this often without an outcome: poison

    # -- accepting ---------------------------------------------------------------------

    def encode(
        self,
        key: str | int,
        message: Any,
        priority: int,
        ttl: float | None,
        msg_id: str | None = None,
    ) -> bytes:
        """The journal record of a message about to be accepted (any thread).

        Raises `CodecError` for a message the codec cannot encode or that is too
        large, `JournalError` once the journal is broken: nothing is accepted.
        """
        if self.broken is not None:
            msg = f"the durable store is broken, no message can be accepted: {self.broken}"
            raise JournalError(msg) from self.broken
        now = _wall()
        return self.codec.encode_envelope(
            key,
            message,
            priority=priority,
            accepted_at=now,
            msg_id=msg_id,
            expires_at=None if ttl is None else now + ttl,
        )

    def record(self, envelope: Envelope, key: str | int, data: bytes) -> None:
        """Journal an accepted envelope at the end of this loop pass."""
        envelope.seq = -1
        self._records.append((key, data))
        self._waiting.append(envelope)
        self._schedule()

    def keep(self, key: str | int, data: bytes) -> None:
        """Journal a message accepted too late for this run (after the stop's drain):
        it ends `Dropped("shutdown")` here and is handled after the next start."""
        self._records.append((key, data))
        self._waiting.append(None)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> Future[None] | None:
        """Hand this pass's records, start marks and acks to the journal, in that order.

        Returns the commit future of everything journaled so far (None if nothing
        ever was).
        """
        self._scheduled = False
        if self.closed:
            return self._last
        journal = self.journal
        try:
            if self._records:
                records, waiting = self._records, self._waiting
                self._records, self._waiting = [], []
                try:
                    accepted = journal.append(records)
                except BaseException:
                    for envelope in waiting:  # not journaled: handled in memory only
                        if envelope is not None:
                            envelope.seq = 0
                    raise
                for envelope, seq in zip(waiting, accepted.seqs, strict=True):
                    if envelope is not None and envelope.seq < 0:
                        envelope.seq = seq
                self._last = accepted.committed
                accepted.committed.add_done_callback(self._committed)
            if self._starts:
                starts, self._starts = self._starts, []
                journal.mark_started(starts)
            if self._seen:
                # Before the acks: a crash between the two leaves an id remembered and its
                # message pending (replayed, as ever), never a message gone and its id not.
                seen, self._seen = self._seen, []
                self._seen_since_trim += len(seen)
                forget = None
                if self._seen_since_trim >= 1000:  # trim the table now and then, not per pass
                    self._seen_since_trim = 0
                    forget = _wall() - self._window
                journal.remember_ids(seen, forget_before=forget)  # type: ignore[attr-defined]
            if self._acks:
                acks, self._acks = self._acks, []
                journal.ack(acks)
        except Exception as exc:  # a store's own failure, in a loop callback: contained
            self._broke(exc)
        return self._last

    def receipt(self) -> Future[None] | None:
        """The commit future covering every message accepted so far (for `send`)."""
        return self.flush()

    def chain(self, receipt: Future[None]) -> None:
        """Resolve `receipt` (a `send` from another thread) once this pass is committed."""
        committed = self.flush()
        if committed is None:
            receipt.set_exception(self._failure())
            return

        def copy(done: Future[None]) -> None:
            error = done.exception()
            if error is None:
                receipt.set_result(None)
            else:
                receipt.set_exception(error)

        committed.add_done_callback(copy)

    # -- outcomes ----------------------------------------------------------------------

    def started(self, envelope: Envelope) -> bool:
        """A handler starts on `envelope`: one more recorded attempt. Always True."""
        if envelope.seq < 0:
            self.flush()
        if envelope.seq > 0:
            self._starts.append(envelope.seq)
            self._schedule()
        return True

    def ack(self, envelope: Envelope) -> None:
        """`envelope` got its outcome: it leaves the journal."""
        if envelope.seq < 0:
            self.flush()
        seq = envelope.seq
        envelope.seq = 0
        if seq > 0:
            self._acks.append(seq)
            self._schedule()

    def dead_letter(
        self,
        key: str | int,
        envelope: Envelope,
        reason: str,
        error: BaseException | None,
        cause: BaseException | None,
    ) -> int | None:
        """Move a failed or dropped message to the journal's dead letters; their id.

        A "shutdown" drop stays pending instead (None): the next start runs it.
        """
        if reason == "shutdown":
            return None
        if envelope.seq < 0:
            self.flush()
        seq = envelope.seq
        envelope.seq = 0
        if seq <= 0 or self.closed:
            return None
        try:
            data = self._letter_data(key, envelope, error, cause)
        except CodecError as exc:  # the handler made the message unencodable: ack only
            self.log.error("dead_letter_not_journaled", key=key, reason=reason, error=str(exc))
            self._acks.append(seq)
            self._schedule()
            return None
        try:
            dead_id, _ = self.journal.add_dead_letter(key, data, reason, ack_seq=seq)
        except JournalError as exc:
            self._broke(exc)
            return None
        return dead_id

    def _letter_data(
        self,
        key: str | int,
        envelope: Envelope,
        error: BaseException | None,
        cause: BaseException | None,
    ) -> bytes:
        record = self.codec.encode_envelope(
            key,
            envelope.message,
            priority=envelope.priority,
            attempt=envelope.attempt,
            accepted_at=_wall(),
        )
        return self.codec.dumps((record, *_described(error), *_described(cause)))

    def forget_dead_letters(self, ids: list[int | str]) -> None:
        """Remove journaled dead letters (redelivered, or evicted past the limit)."""
        if self.closed:
            return
        self.flush()  # a redelivered message is journaled before its letter goes
        try:
            self.journal.remove_dead_letters([i for i in ids if isinstance(i, int)])
        except JournalError as exc:
            self._broke(exc)

    # -- deduplication -----------------------------------------------------------------

    def load_window(self, dedup: Dedup) -> None:
        """Give the runtime's new dedup window the ids this journal remembers, and journal
        the ids that get their outcome from now on. A journal without the optional
        `remember_ids`/`remembered_ids` keeps no window across restarts."""
        if not hasattr(self.journal, "remembered_ids"):
            return
        self._window = dedup.window
        now_wall = _wall()
        now = dedup._now()
        try:
            kept = self.journal.remembered_ids(now_wall - dedup.window, dedup.max_ids)
        except JournalError as exc:
            self._broke(exc)
            return
        for msg_id, at in kept:
            if msg_id not in dedup._pending:  # a replayed message still pending stays so
                dedup.remember(msg_id, now - (now_wall - at))
        dedup.keep = self.seen

    def seen(self, msg_id: str) -> None:
        """A message with `msg_id` got its outcome: journal its id with this pass."""
        if not self.closed:
            self._seen.append((msg_id, _wall()))
            self._schedule()

    # -- replay ------------------------------------------------------------------------

    def restore_dead_letters(self, limit: int) -> list[DeadLetter]:
        """The journaled dead letters, oldest first, at most `limit` (older ones are removed)."""
        records = self.journal.dead_letters()
        if len(records) > limit:
            self.journal.remove_dead_letters([r.id for r in records[:-limit]])
            records = records[-limit:]
        letters = []
        for record in records:
            try:
                envelope_data, etype, etext, ctype, ctext = self.codec.loads(record.data)
                envelope = self.codec.decode_envelope(envelope_data)
            except (CodecError, TypeError, ValueError) as exc:
                letters.append(
                    DeadLetter(record.key, record.data, record.reason, exc, 0, 0, None, record.id)
                )
                continue
            cause = RecordedError(ctype, ctext) if ctype is not None else None
            error: BaseException
            if record.reason == "failed" and etype is not None:
                error = RecordedError(etype, etext)
            else:
                error = Dropped(record.key, record.reason, cause)
            attempts = envelope.attempt
            letters.append(
                DeadLetter(
                    record.key,
                    envelope.message,
                    record.reason,
                    error,
                    envelope.priority,
                    attempts,
                    error if record.reason == "failed" else cause,
                    record.id,
                )
            )
        return letters

    def replay(self, core: _Core) -> int:
        """Give every unacknowledged message back to its key, in acceptance order.

        Called by `Runtime.start` before anything else is accepted, so a key's
        replayed messages come before its new ones. A record that no longer
        decodes (a type not registered any more) becomes a dead letter
        ("undecodable"), logged; it is never dropped silently.
        """
        count = 0
        now_wall = _wall()
        now = core.now()
        outcomes = core.outcomes
        # The window first, loaded from the journal: a replayed message's later copies
        # are duplicates of it.
        dedup = open_window(core) if self.remembers() else None
        for pending in self.journal.pending():
            try:
                record = self.codec.decode_envelope(pending.data)
            except CodecError as exc:
                self._undecodable(core, pending.key, pending.seq, pending.data, exc)
                continue
            envelope = Envelope(record.message, None, record.priority, now)
            envelope.seq = pending.seq
            envelope.attempt = pending.attempts + 1
            envelope.redelivered = True
            envelope.trace = record.trace  # the sender's trace context (tracing on there)
            if record.msg_id is not None:
                envelope.msg_id = record.msg_id
            core.accepted += 1
            count += 1
            key = record.key
            if pending.attempts >= self.max_deliveries:
                # Its handler started that often and the process died each time (a message
                # that kills its process): skipped, so that the key and the runtime go on.
                core.log.error(
                    "message_poisonous", key=key, seq=pending.seq, starts=pending.attempts
                )
                outcomes.on_dropped(key, envelope, "poison", pending.attempts)
                continue
            if record.expires_at is not None and record.expires_at <= now_wall:
                outcomes.on_dropped(key, envelope, "expired", pending.attempts)
                continue
            cell = core.cells.get(key)
            if cell is None:
                cell = core.registry.open(key)
            if record.expires_at is not None:
                due = now + (record.expires_at - now_wall)
                envelope.expiry = core.clock.call_at(due, cell.expire, envelope)
            core.pending += 1
            if envelope.msg_id is not None and dedup is not None:
                dedup.accepted(key, envelope.msg_id)
            cell.deliver(envelope)
        self.replayed += count
        if count:
            core.log.info("messages_replayed", count=count)
        return count

    def remembers(self) -> bool:
        """Whether the journal keeps the dedup window's ids across restarts."""
        return hasattr(self.journal, "remembered_ids")

    def _undecodable(
        self, core: _Core, key: str | int, seq: int, data: bytes, error: CodecError
    ) -> None:
        core.log.error("message_undecodable", key=key, seq=seq, error=str(error))
        dead_id: int | None = None
        letter_data = self.codec.dumps((data, "CodecError", str(error), None, None))
        try:
            dead_id, _ = self.journal.add_dead_letter(key, letter_data, "undecodable", ack_seq=seq)
        except JournalError as exc:
            self._broke(exc)
        core.accepted += 1
        core.outcomes.dropped += 1
        core.outcomes.dead_letter_count += 1
        core.outcomes.retain(DeadLetter(key, data, "undecodable", error, 0, 0, error, dead_id))

    # -- the end -----------------------------------------------------------------------

    def close(self) -> None:
        """Flush what this pass holds, then close the journal (it commits what is queued)."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        try:
            self.journal.close()
        except JournalError as exc:
            self.log.error("journal_close_failed", error=str(exc))

    def stats(self) -> dict[str, Any]:
        """The journal's own counters (if it has any), plus replayed messages."""
        counters = getattr(self.journal, "stats", None)
        out: dict[str, Any] = dict(counters()) if callable(counters) and not self.closed else {}
        out["replayed"] = self.replayed
        out["broken"] = self.broken is not None
        return out

    def _committed(self, done: Future[None]) -> None:
        # On the journal's writer thread: only a failure needs the loop.
        error = done.exception()
        if error is not None and self.broken is None:
            self.broken = error
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to tell
                self._loop.call_soon_threadsafe(self._report, error)

    def _broke(self, error: BaseException) -> None:
        if self.broken is None:
            self.broken = error
            self._report(error)

    def _report(self, error: BaseException) -> None:
        self.log.error("journal_failed", error=str(error))

    def _failure(self) -> BaseException:
        return self.broken or JournalError("the durable store is closed")


def _described(error: BaseException | None) -> tuple[str | None, str]:
    if error is None:
        return None, ""
    if isinstance(error, RecordedError):
        return error.type_name, error.text
    return type(error).__qualname__, str(error)
