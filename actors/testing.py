"""Test helpers: virtual time for the runtime.

`FakeClock` replaces the loop's clock for every timer of the runtime (idle
shutdown, restart backoff, handler timeouts, cool-downs). Time moves only when
a test calls `advance()`, and timers fire in deadline order at their exact
virtual times::

    clock = FakeClock()
    async with Runtime(Bot, idle_timeout=30, clock=clock) as rt:
        await rt.ask("telegram:1", "hi")
        await clock.advance(29.999)
        assert rt.stats()["live_actors"] == 1
        await clock.advance(0.001)
        assert rt.stats()["live_actors"] == 0
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import TYPE_CHECKING, Any, final

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["FakeClock", "wait_all_tasks_blocked"]


@final
class _FakeTimer:
    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


@final
class FakeClock:
    """Virtual time that moves only when `advance()` is called.

    Prior art: trio's `MockClock.jump()`; twisted's `task.Clock`.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._seq = itertools.count()  # equal deadlines fire in the order they were set
        self._timers: list[tuple[float, int, _FakeTimer]] = []

    def now(self) -> float:
        """The current virtual time."""
        return self._now

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> _FakeTimer:
        """Schedule `callback(*args)` at virtual time `when` (next advance, if already past)."""
        timer = _FakeTimer(when, callback, args)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    def pending_timers(self) -> list[float]:
        """Deadlines of the timers not yet fired or cancelled, soonest first."""
        return sorted(when for when, _, timer in self._timers if not timer.cancelled)

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, firing due timers in deadline order.

        After each timer the loop runs until every task is blocked, so what a
        timer starts (a restart, an idle stop) happens at that timer's virtual time,
        while a handler hanging on something that never comes does not stall time.
        """
        if seconds < 0:
            msg = "time can't go backwards"
            raise ValueError(msg)
        target = self._now + seconds
        await self._settle()  # work already due runs at the current time, before the jump
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, when)
            timer.callback(*timer.args)
            await self._settle()
        self._now = target
        await self._settle()

    async def _settle(self) -> None:
        await wait_all_tasks_blocked()


async def wait_all_tasks_blocked() -> None:
    """Return once no callback or task of the running loop is ready to run (or after 64 turns).

    The asyncio analogue of trio's `wait_all_tasks_blocked`: everything else is
    waiting on a future, a timer or I/O. Handlers awaiting an event that never
    comes count as blocked, so virtual time can pass them (a handler timeout).
    """
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)  # CPython's ready queue; private but long-stable
    quiet_rounds = 0
    # Bounded: a task that spins on sleep(0) (a test polling for a condition) keeps the
    # ready queue non-empty forever. 64 turns are far more than any chain of the
    # runtime's own hops (timer -> supervisor -> cell -> registry) needs.
    for _ in range(64):
        await asyncio.sleep(0)
        if ready is None or len(ready) == 0:
            quiet_rounds += 1
        else:
            quiet_rounds = 0
        if quiet_rounds >= 3:
            return
