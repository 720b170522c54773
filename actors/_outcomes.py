"""Outcomes: the single place where an accepted message ends (G4).

Every accepted message ends in exactly one of handled(result), failed(error),
interrupted or dropped(reason). `Outcomes` resolves the ask future, counts the
outcome, records latency samples, and sends failed and dropped messages to the
dead letters (a bounded record plus an optional callback). Nothing else in the
runtime resolves a message, so "exactly one" is checked in one place: an
envelope's `reply_to` is resolved first-wins and each method counts once.

With tracing on, a `TraceHook` (supervisors/observe/_tracing.py implements it)
is told of every handler run and of every drop; off, `Outcomes.tracer` is None
and nothing is asked of it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, final

from actors._errors import Dropped, HandlerCrashed, Interrupted
from actors._latency import Latencies
from actors._logging import debug_enabled

if TYPE_CHECKING:
    from collections.abc import Callable

    from structlog.typing import FilteringBoundLogger

    from actors._mailbox import Envelope

__all__ = ["DeadLetter", "DedupHook", "JournalHook", "Outcomes", "TraceHook"]

# Drops the application asked for: a /clear, a shutdown, a ttl, a withdrawn ask.
_REQUESTED = frozenset({"cleared", "shutdown", "expired", "withdrawn"})
# Not a dead letter at all: the message lives on elsewhere (a cluster node that lost its
# shard's lease lets go of what waits for it here; the shard's next owner runs it).
_HANDED_OVER = frozenset({"fenced"})


@final
@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that was accepted but not handled: it failed or was dropped."""

    key: str | int
    """The user key the message was sent to."""
    message: Any
    """The message itself, as accepted."""
    reason: str
    """`"failed"`, or the drop reason: `"cleared"`, `"shutdown"`, `"stopped"`, `"gave_up"`, ..."""
    error: BaseException | None
    """The handler's exception for a failed message, else the `Dropped` error."""
    priority: int = 0
    """The priority it was sent with."""
    attempts: int = 1
    """How many times a handler ran on it (0 if it never ran)."""
    cause: BaseException | None = None
    """For a failed message, the handler's exception; for a drop that a failure caused
    (the key stopped, its restarts gave up), that failure; else None."""
    journal_id: int | str | None = None
    """Where the letter is kept beyond this process: with a durable store, the id of its
    journaled record (int); in cluster mode, its id in Redis (str); else None. A letter
    restored from either carries `RecordedError`s."""


class JournalHook(Protocol):
    """What outcomes tell the durable store (`supervisors.durable._journaling.Durable`)."""

    def ack(self, envelope: Envelope) -> None:
        """The journaled message got its outcome and is not kept."""

    def dead_letter(
        self,
        key: str | int,
        envelope: Envelope,
        reason: str,
        error: BaseException | None,
        cause: BaseException | None,
    ) -> int | str | None:
        """Journal a dead letter (acknowledging the message in the same commit); its id.

        None if nothing was journaled: a "shutdown" drop stays pending instead.
        """

    def forget_dead_letters(self, ids: list[int | str]) -> None:
        """Remove journaled dead letters (evicted from the retained ones)."""


class DedupHook(Protocol):
    """What outcomes tell the deduplication window (`supervisors._dedup.Dedup`)."""

    def settled(self, msg_id: str, result: Any, error: BaseException | None) -> None:
        """The message sent with `msg_id` got its outcome (`error` None: handled)."""


class TraceHook(Protocol):
    """What the runtime tells a tracer (`supervisors.observe.Tracing`), with tracing on.

    The kernel holds what `capture` returns as an opaque value (`Envelope.trace`)
    and each `begin`'s result until its `end`: it never looks inside either.
    """

    def capture(self) -> Any:
        """The trace context of the caller (never None: a marker for none), at a call site."""

    def carry(self, envelope: Envelope, trace: Any, record: bytes | None) -> bytes | None:
        """An accepted message keeps its trace context: what `capture` gave off the loop,
        or None to capture it now (on the loop, in the caller's context). Returns its
        journal record (`record`, with a store), the context added to it."""

    def wire(self, trace: Any) -> str | None:
        """What `capture` gave, as text for Redis (None: no trace context)."""

    def begin(self, key: str | int, envelope: Envelope, wait: float) -> Any:
        """A handler starts on `envelope` after `wait` seconds in the mailbox: its span."""

    def end(self, span: Any, outcome: str, error: BaseException | None) -> None:
        """The handler run that `begin` returned `span` for ended with `outcome`."""

    def dropped(self, key: str | int, envelope: Envelope, reason: str) -> None:
        """`envelope` was dropped without (another) run of its handler."""


class Outcomes:
    """Counts, resolves and dead-letters the outcome of every accepted message."""

    __slots__ = (
        "_dead",
        "_debug",
        "_on_dead_letter",
        "dead_letter_count",
        "dedup",
        "dropped",
        "failed",
        "handled",
        "interrupted",
        "journal",
        "latency",
        "log",
        "retry_afters",
        "tracer",
    )

    def __init__(
        self,
        log: FilteringBoundLogger,
        *,
        dead_letter_limit: int = 10_000,
        on_dead_letter: Callable[[DeadLetter], None] | None = None,
    ) -> None:
        self.log = log
        # Decided once: a logger proxy binds on every method access, which a shutdown
        # dropping 100k messages at DEBUG would pay 100k times for nothing.
        self._debug = debug_enabled(log)
        self.handled = 0
        self.failed = 0
        self.interrupted = 0
        self.dropped = 0
        self.dead_letter_count = 0
        self.latency = Latencies()
        self._dead: deque[DeadLetter] = deque(maxlen=dead_letter_limit)
        self._on_dead_letter = on_dead_letter
        # With a durable store: told about every journaled message's outcome.
        self.journal: JournalHook | None = None
        # With deduplication on: told the outcome of every message sent with a msg_id.
        self.dedup: DedupHook | None = None
        self.retry_afters = 0  # handlers that raised RetryAfter (not outcomes)
        # With tracing on (an observer sets it before anything is accepted): the tracer.
        self.tracer: TraceHook | None = None

    def total(self) -> int:
        """How many messages have an outcome."""
        return self.handled + self.failed + self.interrupted + self.dropped

    def on_handled(self, envelope: Envelope, result: Any) -> None:
        """The handler returned `result`."""
        self.handled += 1
        if envelope.seq and self.journal is not None:
            self.journal.ack(envelope)
        reply_to = envelope.reply_to
        if reply_to is not None:
            reply_to.set(result)
        if envelope.msg_id is not None or envelope.riders is not None:
            self.settled(envelope, result)

    def settled(self, envelope: Envelope, result: Any) -> None:
        """After a handled message's own outcome: its `msg_id`'s and its riders' (the rest
        of its batch, what its turn took), handled with it."""
        if envelope.msg_id is not None and self.dedup is not None:
            self.dedup.settled(envelope.msg_id, result, None)
        riders = envelope.riders
        if riders is not None:
            envelope.riders = None
            for rider in riders:
                self.on_handled(rider, result)

    def _riders(self, envelope: Envelope, error: BaseException) -> list[Envelope]:
        if envelope.msg_id is not None and self.dedup is not None:
            self.dedup.settled(envelope.msg_id, None, error)
        riders = envelope.riders
        if riders is None:
            return []
        envelope.riders = None
        return riders

    def on_failed(self, key: str | int, envelope: Envelope, error: BaseException) -> None:
        """The handler raised `error` and no retry is left."""
        self.failed += 1
        reply_to = envelope.reply_to
        if reply_to is not None:
            # An asker never gets a non-Exception: raised in its task, a SystemExit or a
            # CancelledError would end that task, or the loop.
            raised = error if isinstance(error, Exception) else HandlerCrashed(key, error)
            reply_to.set_exception(_exc_info(raised))
        else:
            # No caller will see it: this is the only trace besides the dead letter.
            self.log.error(
                "message_failed",
                key=key,
                error=repr(error),
                attempts=envelope.attempt,
                exc_info=error,
            )
        journal_id = self._journaled(key, envelope, "failed", error, None)
        self._dead_letter(
            DeadLetter(
                key,
                envelope.message,
                "failed",
                error,
                envelope.priority,
                envelope.attempt,
                error,
                journal_id,
            )
        )
        for rider in self._riders(envelope, error):
            self.on_failed(key, rider, error)

    def on_interrupted(self, key: str | int, envelope: Envelope, reason: str) -> None:
        """The handler in flight was cancelled (by an interrupt or a shutdown)."""
        self.interrupted += 1
        # A message cut short by the runtime's own stop stays in the journal: the next
        # start handles it again (at-least-once). Any other interrupt is its outcome.
        if envelope.seq and reason != "shutdown" and self.journal is not None:
            self.journal.ack(envelope)
        reply_to = envelope.reply_to
        error = Interrupted(key, reason)
        if reply_to is not None:
            reply_to.set_exception(_exc_info(error))
        if envelope.msg_id is not None or envelope.riders is not None:
            for rider in self._riders(envelope, error):
                self.on_interrupted(key, rider, reason)

    def on_dropped(
        self,
        key: str | int,
        envelope: Envelope,
        reason: str,
        attempts: int = 0,
        cause: BaseException | None = None,
        *,
        log: bool = True,
    ) -> None:
        """The message was discarded without (another) run of the handler."""
        self.dropped += 1
        if self.tracer is not None:
            self.tracer.dropped(key, envelope, reason)
        if envelope.expiry is not None:
            envelope.expiry.cancel()
            envelope.expiry = None
        error = Dropped(key, reason, cause)
        journal_id = self._journaled(key, envelope, reason, error, cause)
        reply_to = envelope.reply_to
        if reply_to is not None:
            reply_to.set_exception(_exc_info(error))
        if envelope.msg_id is not None or envelope.riders is not None:
            for rider in self._riders(envelope, error):
                self.on_dropped(key, rider, reason, attempts, cause, log=log)
        if reason in _HANDED_OVER:
            return
        self._dead_letter(
            DeadLetter(
                key, envelope.message, reason, error, envelope.priority, attempts, cause, journal_id
            ),
            log,
        )

    def _journaled(
        self,
        key: str | int,
        envelope: Envelope,
        reason: str,
        error: BaseException | None,
        cause: BaseException | None,
    ) -> int | str | None:
        if not envelope.seq or self.journal is None:
            return None
        return self.journal.dead_letter(key, envelope, reason, error, cause)

    def drop_all(
        self,
        key: str | int,
        envelopes: list[Envelope],
        reason: str,
        cause: BaseException | None = None,
    ) -> None:
        """Drop a whole mailbox's worth at once: one log line for all of them, not one each."""
        for envelope in envelopes:
            self.on_dropped(key, envelope, reason, envelope.attempt - 1, cause, log=False)
        if envelopes and (self._debug or reason not in _REQUESTED):
            log = self.log.debug if reason in _REQUESTED else self.log.warning
            log("messages_dead_lettered", key=key, reason=reason, count=len(envelopes))

    def _dead_letter(self, letter: DeadLetter, log: bool = True) -> None:
        self.dead_letter_count += 1
        self.retain(letter)
        # Drops the application asked for (a /clear, a shutdown, a ttl) are expected: one
        # line each at DEBUG (the shutdown logs its total once). The rest is news: WARNING.
        requested = letter.reason in _REQUESTED
        if log and (self._debug or not requested):
            method = self.log.debug if requested else self.log.warning
            method(
                "message_dead_lettered",
                key=letter.key,
                reason=letter.reason,
                priority=letter.priority,
            )
        if self._on_dead_letter is not None:
            try:
                self._on_dead_letter(letter)
            except BaseException as exc:  # the application's code: contained like a handler's
                self.log.error(
                    "dead_letter_callback_failed", key=letter.key, error=repr(exc), exc_info=exc
                )

    def retain(self, letter: DeadLetter) -> None:
        """Keep `letter` among the retained ones; the oldest goes past the limit (and its
        journaled record with it: the journal keeps what `dead_letters()` lists)."""
        dead = self._dead
        if len(dead) == dead.maxlen and self.journal is not None:
            evicted = dead[0].journal_id
            if evicted is not None:
                self.journal.forget_dead_letters([evicted])
        dead.append(letter)

    def dead_letters(self) -> list[DeadLetter]:
        """The retained dead letters, oldest first."""
        return list(self._dead)

    def kept(self) -> int:
        """How many dead letters are retained (`dead_letters()` without the copy)."""
        return len(self._dead)

    def forget(self, letter: DeadLetter) -> bool:
        """Remove one retained dead letter (after it was redelivered).

        Its journaled record is not removed here: the caller does it once the
        redelivered message is journaled, so that a crash in between leaves a
        duplicate, never nothing.
        """
        try:
            self._dead.remove(letter)
        except ValueError:
            return False
        return True


def _exc_info(error: BaseException) -> tuple[type[BaseException], BaseException, Any]:
    """pykka's `Future.set_exception` takes an exc_info triple."""
    return (type(error), error, error.__traceback__)
