"""The gate of a key: when may its next turn start? Rate, spacing, debounce, Retry-After.

A cell has a `Gate` only when its class is gated (a `rate`, a `min_interval`, a
`Debounce`) or a handler raised `RetryAfter`; every other cell's gate is `None`,
and its turns never ask. Before a turn starts the cell asks `Gate.due`: a wait
> 0 means the key is *held* (state `HELD`) and its host wakes it at that time,
through one timer shared by every held key (supervisors/_holds.py): no task and
no timer per waiting key.

What waits and what does not:

* rate, spacing and debounce gate normal messages (priority 0) only: a priority
  message (a command, the control lane) runs as soon as its turn comes;
* a Retry-After pause holds the paused message and everything of its priority
  or lower; a higher priority still runs.

The gate outlives the key's incarnations (a restart does not refill a bucket);
the registry keeps an idle key's cell while its gate still matters.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from actors._knobs import Bucket

if TYPE_CHECKING:
    from actors._knobs import Knobs

__all__ = ["EPSILON", "Gate"]

#: A wait shorter than this is none: timers may fire a hair early.
EPSILON = 1e-6


class Gate(Bucket):
    """The token bucket and spacing of a key (`Bucket`), its open debounce window, and a
    Retry-After pause."""

    __slots__ = ("first", "latest", "retry_at", "retry_priority")

    def __init__(self, knobs: Knobs, now: float) -> None:
        super().__init__(knobs.rate, now)
        self.first = -1.0  # when the open debounce window's first message came (-1: none)
        self.latest = 0.0  # when its latest message came
        self.retry_at = -math.inf  # a Retry-After pause ends then
        self.retry_priority = -1  # and holds what is of this priority or lower

    def arrived(self, now: float) -> None:
        """A normal message arrived (debounce: open the window, or restart it)."""
        if self.first < 0:
            self.first = now
        self.latest = now

    def flush(self) -> None:
        """Close the open debounce window now (a priority message with `flush_on_priority`)."""
        if self.first >= 0:
            self.latest = -math.inf

    def due(
        self, knobs: Knobs, priority: int, waiting: int, now: float, flushing: bool = False
    ) -> float:
        """Seconds before the next message (of `priority`; `waiting` normal ones wait) may
        start; <= EPSILON: now. `flushing` (the stop's drain): no debounce window."""
        wait = 0.0
        if priority <= self.retry_priority:
            if now < self.retry_at:
                wait = self.retry_at - now
            else:
                self.retry_priority = -1
        if priority:
            return wait
        if knobs.rate is not None or knobs.interval is not None:
            wait = max(wait, self.wait(knobs.rate, knobs.interval, now))
        debounce = knobs.debounce
        if debounce is not None and self.first >= 0 and not flushing:
            if debounce.max_batch is not None and waiting >= debounce.max_batch:
                return wait
            closes = self.latest + debounce.window  # -inf once flushed
            if debounce.max_wait is not None:
                closes = min(closes, self.first + debounce.max_wait)
            wait = max(wait, closes - now)
        return wait

    def started(self, knobs: Knobs, priority: int, now: float) -> None:
        """A turn starts now: a normal one takes a token and closes the debounce window."""
        if priority == 0:
            self.first = -1.0
            if knobs.rate is not None or knobs.interval is not None:
                self.spend(knobs.rate, now)

    def pause(self, seconds: float, priority: int, now: float) -> None:
        """A handler raised `RetryAfter(seconds)` on a message of `priority`."""
        self.retry_at = max(self.retry_at, now + seconds)
        self.retry_priority = max(self.retry_priority, priority)

    def settled(self, knobs: Knobs, now: float) -> bool:
        """Whether the gate could go (an idle key's cell may be released)."""
        return (
            self.retry_priority < 0
            and self.first < 0
            and self.full(knobs.rate, knobs.interval, now)
        )
