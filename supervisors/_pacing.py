"""The router's pacing: resolved knobs per class, held keys, shared limiters, room.

A part of `_Core` (supervisors/_core.py, `core.pacing`), for what the cells and the
facade ask of the router about time and room rather than about messages (the router's
`Host` methods hand these over):

* `knobs_for`: an actor class's busy, overflow, rate and debounce settings,
  resolved against the runtime's once per class (actors/_knobs.py);
* `hold`: a key whose gate says "not yet" is woken at its time by `Holds`, one
  timer for every held key (supervisors/_holds.py);
* `limiter`: the shared limiters of `Runtime(limits=...)` (`ctx.limit(name)`);
* `join_line` / `wait_turn` / `leave_line` / `room_made`: an awaited `send` that
  found its key's mailbox full waits in the key's line of senders until a message
  leaves it, and the line gets in in the order it came (a new send to a key with a
  line joins it rather than try: `in_line`).

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

__all__ = ["Pacing", "Place"]


class Place:
    """A sender's place in a key's line for room: `turn` resolves when it may try."""

    __slots__ = ("turn",)

    def __init__(self, turn: asyncio.Future[None]) -> None:
        self.turn = turn


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
        self.room_waiters: dict[Any, deque[Place]] = {}  # the lines, by key

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

    # -- the line of senders waiting for a key's room (Runtime.send) ---------------------
    #
    # Only the head of a key's line tries: it gets in, or finds the mailbox full and
    # waits for room again, still at the head; when it leaves (in, or given up) the
    # next one is the head. So a line gets in in the order it came, whatever the loop
    # runs first, and one that gives up never holds the others up.

    def in_line(self, key: Any) -> bool:
        """Whether senders wait for `key`'s room: a new one then joins behind them."""
        return key in self.room_waiters

    def join_line(self, key: Any) -> Place:
        """A new sender at the end of `key`'s line; its `turn` resolves when it is the
        head and the mailbox has room."""
        place = Place(self.loop.create_future())
        line = self.room_waiters.get(key)
        if line is None:
            line = self.room_waiters[key] = deque()
        line.append(place)
        if line[0] is place:
            self._signal(key)
        return place

    def wait_turn(self, key: Any, place: Place) -> asyncio.Future[None]:
        """The head found the mailbox full after all: a new turn, when room comes."""
        if place.turn.done():
            place.turn = self.loop.create_future()
        self._signal(key)  # room came meanwhile (a drop, a clear, a thread's call)
        return place.turn

    def leave_line(self, key: Any, place: Place) -> None:
        """The sender got in, or gave up: out of the line; the next one is the head."""
        line = self.room_waiters.get(key)
        if line is None:
            return
        head = line[0] is place
        try:
            line.remove(place)
        except ValueError:
            return
        if not line:
            del self.room_waiters[key]
        elif head:
            self._signal(key)

    def room_made(self, cell: Cell) -> None:
        """A message left `cell`'s mailbox: the head of its line tries again."""
        self._signal(cell.key)

    def transit_done(self, key: Any) -> None:
        """A thread's message for `key` reached the loop: its reserved room is released
        (and, if the message was not taken in, a duplicate or refused, room is made)."""
        self._signal(key)

    def _signal(self, key: Any) -> None:
        line = self.room_waiters.get(key)
        if not line:
            return
        # Room as `_Core.accept` counts it: the mailbox plus what threads have in transit
        # for the key. Counting less would wake the head into a `MailboxFull` it retries
        # at once, without yielding, so the loop would spin and never drain the transit.
        core = self._core
        cell = core.cells.get(key)
        tokens = core.transit.get(key)
        size = (len(cell) if cell is not None else 0) + (len(tokens) if tokens else 0)
        if size >= core.max_pending:
            return
        turn = line[0].turn
        if not turn.done():
            turn.set_result(None)

    def close(self) -> None:
        """The runtime stops: no more wake-ups; senders waiting for room are let go."""
        self.holds.close()
        for limiter in self.limiters.values():
            limiter.close()
        for line in self.room_waiters.values():
            for place in line:
                if not place.turn.done():
                    place.turn.set_result(None)  # they try again, and hear RuntimeStopped
        self.room_waiters.clear()
