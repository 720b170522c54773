"""Outcomes: the single place where an accepted message ends (G4).

Every accepted message ends in exactly one of handled(result), failed(error),
interrupted or dropped(reason). `Outcomes` resolves the ask future, counts the
outcome, records latency samples, and sends failed and dropped messages to the
dead letters (a bounded record plus an optional callback). Nothing else in the
runtime resolves a message, so "exactly one" is checked in one place: an
envelope's `reply_to` is resolved first-wins and each method counts once.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

from actors._errors import Dropped, Interrupted

if TYPE_CHECKING:
    from collections.abc import Callable

    from structlog.typing import FilteringBoundLogger

    from actors._mailbox import Envelope

__all__ = ["DeadLetter", "Latencies", "Outcomes"]

_REQUESTED = frozenset({"cleared", "shutdown"})


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


@final
class Latencies:
    """The latest 8,192 (wait, run) samples of handled messages, for percentiles.

    One call and two list stores per message: the ring is preallocated and
    indexed with a mask, so recording never allocates.
    """

    __slots__ = ("_count", "_run", "_wait")

    SIZE = 8192  # a power of two: the index is a mask, not a modulo

    def __init__(self) -> None:
        self._wait = [0.0] * self.SIZE
        self._run = [0.0] * self.SIZE
        self._count = 0

    def record(self, wait: float, run: float) -> None:
        """Record one message's wait and run time, in seconds."""
        i = self._count
        self._wait[i & 8191] = wait
        self._run[i & 8191] = run
        self._count = i + 1

    def summary(self) -> tuple[dict[str, float], dict[str, float]]:
        """Return the (wait, run) summaries: count and p50/p90/p99/max in milliseconds."""
        kept = min(self._count, self.SIZE)
        return (
            _summary(self._wait[:kept], self._count),
            _summary(self._run[:kept], self._count),
        )


def _summary(samples: list[float], count: int) -> dict[str, float]:
    data = sorted(samples)
    if not data:
        return {"count": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}

    def pct(q: float) -> float:
        return data[min(len(data) - 1, math.ceil(q * len(data)) - 1)] * 1000.0

    return {
        "count": count,
        "p50": pct(0.50),
        "p90": pct(0.90),
        "p99": pct(0.99),
        "max": data[-1] * 1000.0,
    }


class Outcomes:
    """Counts, resolves and dead-letters the outcome of every accepted message."""

    __slots__ = (
        "_dead",
        "_on_dead_letter",
        "dead_letter_count",
        "dropped",
        "failed",
        "handled",
        "interrupted",
        "latency",
        "log",
    )

    def __init__(
        self,
        log: FilteringBoundLogger,
        *,
        dead_letter_limit: int = 10_000,
        on_dead_letter: Callable[[DeadLetter], None] | None = None,
    ) -> None:
        self.log = log
        self.handled = 0
        self.failed = 0
        self.interrupted = 0
        self.dropped = 0
        self.dead_letter_count = 0
        self.latency = Latencies()
        self._dead: deque[DeadLetter] = deque(maxlen=dead_letter_limit)
        self._on_dead_letter = on_dead_letter

    def total(self) -> int:
        """How many messages have an outcome."""
        return self.handled + self.failed + self.interrupted + self.dropped

    def on_handled(self, envelope: Envelope, result: Any) -> None:
        """The handler returned `result`."""
        self.handled += 1
        reply_to = envelope.reply_to
        if reply_to is not None:
            reply_to.set(result)

    def on_failed(self, key: str | int, envelope: Envelope, error: BaseException) -> None:
        """The handler raised `error` and no retry is left."""
        self.failed += 1
        reply_to = envelope.reply_to
        if reply_to is not None:
            reply_to.set_exception(_exc_info(error))
        else:
            # No caller will see it: this is the only trace besides the dead letter.
            self.log.error(
                "message_failed",
                key=key,
                error=repr(error),
                attempts=envelope.attempt,
                exc_info=error,
            )
        self._dead_letter(
            DeadLetter(key, envelope.message, "failed", error, envelope.priority, envelope.attempt)
        )

    def on_interrupted(self, key: str | int, envelope: Envelope, reason: str) -> None:
        """The handler in flight was cancelled (by an interrupt or a shutdown)."""
        self.interrupted += 1
        reply_to = envelope.reply_to
        if reply_to is not None:
            reply_to.set_exception(_exc_info(Interrupted(key, reason)))

    def on_dropped(
        self, key: str | int, envelope: Envelope, reason: str, attempts: int = 0
    ) -> None:
        """The message was discarded without (another) run of the handler."""
        self.dropped += 1
        error = Dropped(key, reason)
        reply_to = envelope.reply_to
        if reply_to is not None:
            reply_to.set_exception(_exc_info(error))
        self._dead_letter(
            DeadLetter(key, envelope.message, reason, error, envelope.priority, attempts)
        )

    def _dead_letter(self, letter: DeadLetter) -> None:
        self.dead_letter_count += 1
        self._dead.append(letter)
        # Drops the application asked for (a /clear, a shutdown) are expected: one line
        # each at DEBUG (the shutdown logs its total once). The rest is news: WARNING.
        log = self.log.debug if letter.reason in _REQUESTED else self.log.warning
        log("message_dead_lettered", key=letter.key, reason=letter.reason, priority=letter.priority)
        if self._on_dead_letter is not None:
            try:
                self._on_dead_letter(letter)
            except Exception as exc:
                self.log.error(
                    "dead_letter_callback_failed", key=letter.key, error=repr(exc), exc_info=exc
                )

    def dead_letters(self) -> list[DeadLetter]:
        """The retained dead letters, oldest first."""
        return list(self._dead)

    def forget(self, letter: DeadLetter) -> bool:
        """Remove one retained dead letter (after it was redelivered)."""
        try:
            self._dead.remove(letter)
        except ValueError:
            return False
        return True


def _exc_info(error: BaseException) -> tuple[type[BaseException], BaseException, Any]:
    """pykka's `Future.set_exception` takes an exc_info triple."""
    return (type(error), error, error.__traceback__)
