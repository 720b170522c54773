"""The router's pacing: resolved knobs per class, held keys, shared limiters, room.

A part of `_Core` (supervisors/_core.py, `core.pacing`), for what the cells and the
facade ask of the router about time and room rather than about messages (the router's
`Host` methods hand these over):

* `knobs_for`: an actor class's busy, overflow, rate and debounce settings,
  resolved against the runtime's once per class (actors/_knobs.py);
* `hold`: a key whose gate says "not yet" is woken at its time by `Holds`, one
  timer for every held key (supervisors/_holds.py);
* `limiter`: the shared limiters of `Runtime(limits=...)` (`ctx.limit(name)`);
* `wait_room` / `room_made`: an awaited `send` that found its key's mailbox full
  waits until a message leaves it.

It names `_Core` as a type only (it is given the router): a deliberate circle, like
the router's other parts.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from actors._knobs import REJECT, Knobs
from supervisors._holds import Holds, SharedLimiter

if TYPE_CHECKING:
    import asyncio

    from actors._cell import Cell
    from actors._clock import Clock
    from actors._knobs import Rate
    from supervisors._core import _Core

__all__ = ["Pacing"]


class Pacing:
    """Knobs, holds, limiters and room waiters of one runtime (loop thread only)."""

    def __init__(
        self,
        core: _Core,
        factory: Any,
        clock: Clock,
        loop: asyncio.AbstractEventLoop,
        knobs: Knobs | None,
        limits: dict[str, Rate] | None,
    ) -> None:
        self._core = core
        self.loop = loop
        default = knobs if knobs is not None else Knobs()
        if isinstance(factory, type):
            default = default.over(factory)  # the factory's class speaks for keys not yet started
        self.default_knobs = default
        self._knobs: dict[type, Knobs] = {}
        self.rejecting = default.busy is REJECT  # some class refuses busy keys
        self.holds = Holds(clock)
        self.limiters = {
            name: SharedLimiter(name, rate, clock, loop) for name, rate in (limits or {}).items()
        }
        self.room_waiters: dict[Any, deque[asyncio.Future[None]]] = {}

    def knobs_for(self, actor_type: type) -> Knobs:
        knobs = self._knobs.get(actor_type)
        if knobs is None:
            knobs = self._knobs[actor_type] = self.default_knobs.over(actor_type)
            if knobs.busy is REJECT:
                self.rejecting = True
        return knobs

    def hold(self, cell: Cell, due: float) -> None:
        self.holds.hold(cell, due)

    def limiter(self, name: str) -> SharedLimiter:
        """The shared limiter `name` (`ctx.limit`); `KeyError` names the ones there are."""
        limiter = self.limiters.get(name)
        if limiter is None:
            known = ", ".join(map(repr, self.limiters)) or "none"
            msg = f"no shared limiter {name!r}: Runtime(limits=...) has {known}"
            raise KeyError(msg)
        return limiter

    def wait_room(self, key: Any) -> asyncio.Future[None]:
        """A future resolved when a message leaves `key`'s mailbox (`Runtime.send`)."""
        waiter: asyncio.Future[None] = self.loop.create_future()
        core = self._core
        cell = core.cells.get(key)
        if cell is None or len(cell) < core.max_pending:  # room came meanwhile (a thread's call)
            waiter.set_result(None)
            return waiter
        waiters = self.room_waiters.get(key)
        if waiters is None:
            waiters = self.room_waiters[key] = deque()
        waiters.append(waiter)
        return waiter

    def room_made(self, cell: Cell) -> None:
        """A message left `cell`'s mailbox: wake its senders waiting for room.

        All of them: each tries again, and those that find it full again wait again.
        Waking only one would lose the wake-up when that sender has given up meanwhile.
        """
        waiters = self.room_waiters.pop(cell.key, None)
        if waiters is not None:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def close(self) -> None:
        """The runtime stops: no more wake-ups; senders waiting for room are let go."""
        self.holds.close()
        for limiter in self.limiters.values():
            limiter.close()
        for waiters in self.room_waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)  # they try again, and hear RuntimeStopped
        self.room_waiters.clear()
