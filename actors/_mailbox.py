"""The per-key mailbox: priority lanes, FIFO within a lane.

A mailbox belongs to the registry entry of its key, not to an actor
incarnation, so restarts and idle stops never lose or reorder what waits
(G5). It holds only *waiting* messages: the one in flight has been popped.

Lanes are created on demand and the lane map is released when the mailbox
empties, so an idle key costs a few slots, not a dict and a deque.
"""

from __future__ import annotations

from bisect import insort
from collections import deque
from typing import TYPE_CHECKING, Any, TypeVar

try:
    from mypy_extensions import mypyc_attr
except ImportError:  # mypyc reads the decorator at build time; pure Python needs nothing

    def mypyc_attr(*attrs: str, **kwattrs: object) -> Callable[[_T], _T]:
        return lambda cls: cls


if TYPE_CHECKING:
    from collections.abc import Callable

    from pykka import Future
    from pykka._envelope import Envelope as PykkaEnvelope

__all__ = ["Envelope", "Mailbox"]

_T = TypeVar("_T")


@mypyc_attr(acyclic=True)
class Envelope:
    """A message plus what the runtime needs to deliver it.

    pykka's envelope fields (`message`, `reply_to`) with the priority, the
    acceptance time (for wait latency), the attempt number (for retries),
    with a durable store the journal's sequence number, and with tracing on the
    sender's trace context (`trace`: opaque here, see supervisors/observe/_tracing.py).
    Not a subclass of pykka's `Envelope`, which is generic: a compiled class
    cannot extend it (see `setup.py`), and nothing in pykka checks the type.

    Compiled, envelopes are not tracked by the cyclic garbage collector
    (`acyclic`): a backlog of 100k envelopes would otherwise be rescanned by
    every full collection. That is safe because the runtime never leaves an
    envelope in a cycle: only its cell's mailbox or the handler in flight
    holds it, and every way out (handled, failed, dropped, the shutdown)
    lets go of it. A message that refers back to its own cell (a `Context`
    inside a message) lives until then, as in pure Python.
    """

    __slots__ = (
        "accepted_at",
        "attempt",
        "expiry",
        "message",
        "msg_id",
        "priority",
        "redelivered",
        "reply_to",
        "riders",
        "seq",
        "trace",
    )

    def __init__(
        self,
        message: Any,
        reply_to: Future[Any] | None,
        priority: int,
        accepted_at: float,
    ) -> None:
        self.message = message
        self.reply_to = reply_to
        self.priority = priority
        self.accepted_at = accepted_at
        self.attempt = 1
        self.expiry: Any = None  # the timer of a `ttl`, cancelled when the message starts
        # With a durable store: its journal sequence number (-1 until its loop pass's
        # records are appended; 0 for a message that is not journaled).
        self.seq = 0
        self.redelivered = False  # replayed from the journal after a restart
        self.msg_id: str | None = None  # the caller's `msg_id=` (deduplication, `Item.msg_id`)
        # Messages whose outcome is this one's: the rest of a `Batch`, or what a steering
        # turn took (`ctx.take_new()`). They left the mailbox; they are settled with it.
        self.riders: list[Envelope] | None = None
        # With tracing on: the trace context active where it was sent (an OpenTelemetry
        # context, or its W3C `traceparent` text once it crossed a journal or Redis).
        self.trace: Any = None

    def __repr__(self) -> str:
        return f"Envelope({self.message!r}, priority={self.priority}, attempt={self.attempt})"


class Mailbox:
    """Waiting messages of one key: the oldest of the highest priority comes out first (G1, G3).

    Not thread-safe: only the loop thread touches it. The capacity check is the
    caller's (the router's), made before an envelope is even built, so a full
    mailbox costs the caller nothing but the exception.
    """

    __slots__ = ("_head", "_lane0", "_lanes", "_order", "_size")

    def __init__(self) -> None:
        # Priority 0 (nearly all traffic): the oldest waits in `_head`, later ones in
        # `_lane0`; so a chat user's usual single message needs no deque at all.
        # Higher priorities live in a dict of lanes. Each structure exists only while
        # it holds something. Invariant: `_lane0` non-empty implies `_head` is set.
        self._head: Envelope | None = None
        self._lane0: deque[Envelope] | None = None
        self._lanes: dict[int, deque[Envelope]] | None = None
        self._order: list[int] | None = None  # priorities > 0 with a non-empty lane, ascending
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return f"<Mailbox {self._size} waiting>"

    def empty(self) -> bool:
        """Return whether nothing waits (pykka's `ActorInbox.empty`)."""
        return self._size == 0

    def put(self, envelope: Envelope | PykkaEnvelope[Any]) -> None:
        """Append an envelope to the end of its priority lane (pykka's `ActorInbox.put`).

        A plain pykka envelope (from `ActorRef.tell`) is carried at priority 0.
        """
        if type(envelope) is not Envelope:
            envelope = Envelope(envelope.message, envelope.reply_to, 0, 0.0)
        self._size += 1
        if envelope.priority:
            self._lane(envelope.priority).append(envelope)
        elif self._head is None:
            self._head = envelope
        elif self._lane0 is None:
            self._lane0 = deque((envelope,))
        else:
            self._lane0.append(envelope)

    def _lane(self, priority: int) -> deque[Envelope]:
        lanes = self._lanes
        if lanes is None:
            lanes = self._lanes = {}
            self._order = []
        lane = lanes.get(priority)
        if lane is None:
            lane = lanes[priority] = deque()
            insort(self._order, priority)  # type: ignore[arg-type]
        return lane

    def put_front(self, envelope: Envelope) -> None:
        """Put an envelope back at the head of its lane (a retried message keeps its place)."""
        self._size += 1
        if envelope.priority:
            self._lane(envelope.priority).appendleft(envelope)
            return
        if self._head is not None:
            if self._lane0 is None:
                self._lane0 = deque()
            self._lane0.appendleft(self._head)
        self._head = envelope

    def pop(self) -> Envelope | None:
        """Remove and return the next envelope, or `None` if nothing waits."""
        if self._size == 0:
            return None
        self._size -= 1
        lanes = self._lanes
        if lanes is None:  # only priority 0 waits
            envelope = self._head
            self._next_head()
            return envelope
        order: list[int] = self._order  # type: ignore[assignment]
        priority = order[-1]
        lane = lanes[priority]
        envelope = lane.popleft()
        if not lane:
            del lanes[priority]
            order.pop()
            if not order:
                self._lanes = self._order = None
        return envelope

    def _next_head(self) -> None:
        """The head of priority 0 leaves: the next one in `_lane0` takes its place."""
        lane0 = self._lane0
        if lane0 is None:
            self._head = None
        else:
            self._head = lane0.popleft()
            if not lane0:
                self._lane0 = None

    def get(self) -> Envelope:
        """pykka's `ActorInbox.get`, without blocking: raises `LookupError` when empty."""
        envelope = self.pop()
        if envelope is None:
            msg = "mailbox is empty"
            raise LookupError(msg)
        return envelope

    def _take_lane0(self) -> list[Envelope]:
        taken: list[Envelope] = []
        if self._head is not None:
            taken.append(self._head)
            if self._lane0 is not None:
                taken.extend(self._lane0)
        self._head = self._lane0 = None
        return taken

    def next_priority(self) -> int:
        """The priority of the envelope `pop` would return (0 when empty)."""
        order = self._order
        return order[-1] if order else 0

    def pop_at_most(self, priority: int) -> Envelope | None:
        """Remove and return the oldest envelope of the highest priority <= `priority`."""
        lanes = self._lanes
        if lanes is not None:
            order: list[int] = self._order  # type: ignore[assignment]
            for p in reversed(order):
                if p <= priority:
                    lane = lanes[p]
                    taken = lane.popleft()
                    self._size -= 1
                    if not lane:
                        self._drop_lane(p)
                    return taken
        head = self._head
        if head is not None:
            self._size -= 1
            self._next_head()
        return head

    def take_lane(self, priority: int, limit: int | None = None) -> list[Envelope]:
        """Remove and return up to `limit` of the oldest envelopes of one priority lane."""
        taken: list[Envelope] = []
        if priority == 0:
            while self._head is not None and (limit is None or len(taken) < limit):
                taken.append(self._head)
                self._next_head()
        elif self._lanes is not None and priority in self._lanes:
            lane = self._lanes[priority]
            while lane and (limit is None or len(taken) < limit):
                taken.append(lane.popleft())
            if not lane:
                self._drop_lane(priority)
        self._size -= len(taken)
        return taken

    def oldest_at_most(self, priority: int) -> Envelope | None:
        """The oldest waiting envelope of the lowest priority, if that priority is <= `priority`
        (what `overflow="drop_oldest"` drops), without removing it."""
        if self._head is not None:
            return self._head
        order = self._order
        if order and order[0] <= priority:
            return self._lanes[order[0]][0]  # type: ignore[index]
        return None

    def take_below(self, priority: int) -> list[Envelope]:
        """Remove and return the waiting envelopes below `priority`, in delivery order."""
        taken: list[Envelope] = []
        if priority <= 0:
            return taken
        lanes = self._lanes
        if lanes is not None:
            order: list[int] = self._order  # type: ignore[assignment]
            for p in [p for p in reversed(order) if p < priority]:
                taken.extend(lanes.pop(p))
                order.remove(p)
            if not order:
                self._lanes = self._order = None
        taken.extend(self._take_lane0())
        self._size -= len(taken)
        return taken

    def find(self, reply_to: object) -> Envelope | None:
        """The waiting envelope whose `reply_to` is `reply_to`, if any (a linear scan)."""
        for envelope in self._waiting():
            if envelope.reply_to is reply_to:
                return envelope
        return None

    def remove(self, envelope: Envelope) -> bool:
        """Remove one waiting envelope, wherever it is (a linear scan of its lane)."""
        if self._head is envelope:
            self._next_head()
            self._size -= 1
            return True
        lane: deque[Envelope] | None = None
        if envelope.priority == 0:
            lane = self._lane0
        elif self._lanes is not None:
            lane = self._lanes.get(envelope.priority)
        if lane is None:
            return False
        for i, candidate in enumerate(lane):
            if candidate is envelope:
                del lane[i]
                self._size -= 1
                if not lane:
                    self._drop_lane(envelope.priority)
                return True
        return False

    def _drop_lane(self, priority: int) -> None:
        if priority == 0:
            self._lane0 = None
            return
        lanes: dict[int, deque[Envelope]] = self._lanes  # type: ignore[assignment]
        order: list[int] = self._order  # type: ignore[assignment]
        del lanes[priority]
        order.remove(priority)
        if not order:
            self._lanes = self._order = None

    def _waiting(self) -> list[Envelope]:
        waiting: list[Envelope] = []
        if self._lanes is not None:
            for p in reversed(self._order):  # type: ignore[arg-type]
                waiting.extend(self._lanes[p])
        if self._head is not None:
            waiting.append(self._head)
            if self._lane0 is not None:
                waiting.extend(self._lane0)
        return waiting

    def take_all(self) -> list[Envelope]:
        """Remove and return everything, in delivery order (highest priority first)."""
        taken: list[Envelope] = []
        if self._lanes is not None:
            for p in reversed(self._order):  # type: ignore[arg-type]
                taken.extend(self._lanes[p])
        taken.extend(self._take_lane0())
        self._lanes = self._order = None
        self._size = 0
        return taken
