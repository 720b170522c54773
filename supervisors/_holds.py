"""Held keys and shared limiters: waiting for time to pass, on one timer each.

A key whose gate says "not yet" (a rate limit, a spacing, a debounce window, a
Retry-After pause: actors/_gate.py) is *held*. `Holds` wakes every held key at
its time through a heap and one clock timer armed for the earliest, so a
thousand rate-limited keys cost a thousand heap entries, not a thousand timers.
A key held again before its time (its window restarted) just gets a newer entry;
a stale one wakes a key whose gate then says "not yet" once more (or finds it no
longer held), which is cheaper than removing entries from the heap.

`SharedLimiter` is a named token bucket every key shares (`ctx.limit("telegram")`):
waiters queue in arrival order and are served on one timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
from collections import deque
from typing import TYPE_CHECKING

from actors._knobs import Bucket

if TYPE_CHECKING:
    from actors._cell import Cell
    from actors._clock import Clock, TimerHandle
    from actors._knobs import Rate

__all__ = ["Holds", "SharedLimiter"]


class Holds:
    """When each held key is due (loop thread only)."""

    __slots__ = ("_armed", "_clock", "_heap", "_order", "_timer")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Cell]] = []
        self._order = 0  # ties break by arrival, never by comparing cells
        self._timer: TimerHandle | None = None
        self._armed = math.inf

    def __len__(self) -> int:
        return len(self._heap)

    def hold(self, cell: Cell, due: float) -> None:
        """Wake `cell` at `due` (`Cell.release`)."""
        self._order += 1
        heapq.heappush(self._heap, (due, self._order, cell))
        if due < self._armed:
            self._arm(due)

    def _arm(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed = due
        self._timer = self._clock.call_at(due, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._armed = math.inf
        heap = self._heap
        now = self._clock.now()
        while heap and heap[0][0] <= now:
            _, _, cell = heapq.heappop(heap)
            cell.release()
        if heap:
            self._arm(heap[0][0])

    def close(self) -> None:
        """The runtime stops: no more wake-ups."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed = math.inf
        self._heap.clear()


class SharedLimiter:
    """A token bucket shared by every key: `await acquire()` takes a token, in FIFO order."""

    __slots__ = ("_bucket", "_clock", "_loop", "_rate", "_timer", "_waiters", "name")

    def __init__(
        self, name: str, rate: Rate, clock: Clock, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.name = name
        self._rate = rate
        self._clock = clock
        self._loop = loop
        self._bucket = Bucket(rate, clock.now())
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._timer: TimerHandle | None = None

    def __len__(self) -> int:
        """How many wait."""
        return len(self._waiters)

    async def acquire(self) -> None:
        """Return once a token is this caller's (at once if one is left and nobody waits)."""
        if not self._waiters and self._bucket.wait(self._rate, None, self._clock.now()) <= 0:
            self._bucket.spend(self._rate, self._clock.now())
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append(waiter)
        self._serve()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Granted as it was cancelled: the token goes to the next waiter.
                self._bucket.tokens += 1.0
                self._serve()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def _serve(self) -> None:
        """Grant tokens to the waiters at the head while there are any; else wait for one."""
        waiters = self._waiters
        rate = self._rate
        while waiters:
            if waiters[0].done():  # cancelled
                waiters.popleft()
                continue
            now = self._clock.now()
            wait = self._bucket.wait(rate, None, now)
            if wait > 1e-6:
                if self._timer is None:
                    self._timer = self._clock.call_at(now + wait, self._tick)
                return
            self._bucket.spend(rate, now)
            waiters.popleft().set_result(None)

    def _tick(self) -> None:
        self._timer = None
        self._serve()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
