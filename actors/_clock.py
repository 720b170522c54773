"""Time as an injected dependency.

Every timer of the runtime (idle shutdown, restart backoff, handler timeouts,
cool-downs) goes through a `Clock`, so tests can replace real time with
`actors.testing.FakeClock` and assert exact virtual times.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Protocol, final

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Clock", "LoopClock", "TimerHandle"]


class TimerHandle(Protocol):
    """What `Clock.call_at` returns: something that can be cancelled."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """The runtime's only source of time."""

    def now(self) -> float:
        """Return the current time in seconds (monotonic)."""
        ...

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run `callback(*args)` on the loop thread at time `when`."""
        ...


@final
class LoopClock:
    """The production clock: the asyncio loop's own time and timers."""

    __slots__ = ("_loop", "now")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # `now()` is the loop's `time()`. asyncio's own loops read `time.monotonic`:
        # then call it directly, two Python frames less per reading (the router and
        # the drain read the time three times per message).
        self.now: Callable[[], float] = (
            time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time
        )

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        return self._loop.call_at(when, callback, *args)
