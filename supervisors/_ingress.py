"""The thread-safe ingress: how `tell` and `ask` from other threads reach the loop.

A foreign thread appends to a deque and wakes the loop only if no drain is
already scheduled, so a thread sending a burst costs one wake-up per batch,
not one per message. The loop drains everything queued in one callback, in
arrival order.

Backpressure holds at the thread's call site (G8): a submission checks the
key's mailbox plus what is already in transit for that key (and the
runtime-wide bound), and reserves its place. The loop releases the
reservation as it accepts the message, which then never meets a full
mailbox: a thread's `tell` that returned is never dropped for lack of room.
A mailbox can at most exceed `max_pending` by the few messages accepted in
the same instant (see `Ingress`).

`close()` (the end of a shutdown, or a loop that ended without one) refuses
every later submission; one racing it is either taken back (the caller gets
`RuntimeStopped`) or settled by the close (`Dropped("shutdown")`), never lost.

This is also the seam for entries that come from elsewhere (a Redis stream
read by the node that owns the key): anything that can call `submit` from any
thread feeds the same per-key mailboxes.

`_Core` is named here as a type only (under TYPE_CHECKING): this module is a
part of the router and is given the router it serves, which imports it in turn.
A deliberate circle inside the core room, for the type checker alone; at run
time the import goes one way (supervisors/_core.py explains).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

from actors._errors import MailboxFull, RuntimeStopped

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable
    from concurrent.futures import Future

    from supervisors._core import _Core

__all__ = ["Ingress", "Submission"]

_new = tuple.__new__
_CLOSED = "the runtime has stopped: it accepts no messages"


class Submission(NamedTuple):
    """One `tell`/`ask` made off the loop thread, validated at its call site."""

    key: str | int
    message: Any
    priority: int
    interrupt: bool
    clear: bool
    reply_to: Any
    ttl: float | None
    internal: bool  # a handler's `ctx.tell`: accepted while the runtime drains for a stop
    record: bytes | None  # its journal record (encoded at the call site), with a durable store
    receipt: Future[None] | None  # an awaitable `send`'s: resolved once it is durable
    msg_id: str | None  # deduplicated on the loop
    trace: Any  # with tracing on: the trace context of the call site (else None)


class Ingress:
    """A multi-producer, single-consumer hand-off onto the loop thread.

    Lock-free: every step a producer takes is one operation that the GIL makes
    atomic (a dict lookup, `setdefault`, a deque's `append` or `len`), because
    a lock taken per message by several producers and the loop costs more than
    the whole rest of a `tell` (measured: 4 producer threads at a quarter of the
    throughput). The price is a narrow race, and it only ever errs one way: a
    mailbox may pass `max_pending` by the few messages that threads reserve in
    the same instant, or that the loop releases as a key's reservations empty.
    """

    __slots__ = (
        "_closed",
        "_consume",
        "_core",
        "_drained",
        "_items",
        "_loop",
        "_scheduled",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        core: _Core,
        drained: Callable[[], None] | None = None,
    ) -> None:
        self._loop = loop
        self._core = core
        self._consume = core.accept_submission
        self._drained = drained  # told after each batch (quiescence waiters re-check)
        self._items: deque[Submission] = deque()
        self._scheduled = False
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def submit(
        self,
        key: str | int,
        message: Any,
        priority: int,
        interrupt: bool,
        clear: bool,
        reply_to: Any,
        ttl: float | None,
        internal: bool,
        record: bytes | None = None,
        receipt: Future[None] | None = None,
        msg_id: str | None = None,
        trace: Any = None,
    ) -> None:
        """Reserve room for one validated call and queue it for the loop (any thread).

        Raises:
            MailboxFull: the key's mailbox (or the runtime-wide bound) is full,
                counting what other threads have in transit.
            RuntimeStopped: the ingress is closed, or the loop is.
        """
        if self._closed:
            raise RuntimeStopped(_CLOSED)
        core = self._core
        transit = core.transit
        tokens = transit.get(key)
        reserved = len(tokens) if tokens is not None else 0
        cell = core.cells.get(key)
        if cell is not None:
            reserved += len(cell)
        if reserved >= core.max_pending:
            knobs = cell.knobs if cell is not None else core.default_knobs
            if knobs.overflow == "reject":  # a drop policy makes room on the loop
                raise MailboxFull(key, core.max_pending)
        limit = core.max_total_pending
        if limit is not None and core.pending + len(self._items) >= limit:
            raise MailboxFull(key, limit, scope="runtime")
        if tokens is None:
            tokens = transit.setdefault(key, deque())
        tokens.append(None)
        # tuple.__new__: a NamedTuple's own constructor is a Python function, 5x slower.
        item = _new(
            Submission,
            (
                key,
                message,
                priority,
                interrupt,
                clear,
                reply_to,
                ttl,
                internal,
                record,
                receipt,
                msg_id,
                trace,
            ),
        )
        self._items.append(item)
        if self._closed:  # close() ran meanwhile: did it take this item, or not?
            self._take_back(item)
        # Racy read on purpose: if the loop has not yet cleared the flag, its drain
        # has not started and will see the item; a duplicate wake-up is harmless.
        if not self._scheduled:
            self._scheduled = True
            try:
                self._loop.call_soon_threadsafe(self.drain)
            except RuntimeError as exc:  # the loop has closed
                self._take_back(item)
                raise RuntimeStopped(_CLOSED) from exc

    def _take_back(self, item: Submission) -> None:
        """Remove `item` if still queued and raise `RuntimeStopped`; else `close()` settled it."""
        items = self._items
        for i, queued in enumerate(items):
            if queued is item:
                del items[i]
                raise RuntimeStopped(_CLOSED)

    def drain(self) -> None:
        """Hand every queued item to the core, in order (loop thread).

        An item's reservation is released once the core has accepted it, so for
        that instant the message counts twice (waiting and in transit): a thread
        may get `MailboxFull` a message early, never a mailbox overfilled.
        """
        self._scheduled = False
        items = self._items
        consume = self._consume
        core = self._core
        transit = core.transit
        waiters = core.room_waiters
        while items:
            item = items.popleft()
            consume(item)
            key = item[0]
            tokens = transit.get(key)
            if tokens:
                tokens.pop()
                if not tokens:
                    del transit[key]
                if waiters and key in waiters:  # its reserved room counted for the line
                    core.pacing.transit_done(key)
        if self._drained is not None:
            self._drained()

    def close(self) -> list[Submission]:
        """Refuse every later submission; remove and return what is queued (loop thread)."""
        self._closed = True
        taken = list(self._items)
        self._items.clear()
        self._core.transit.clear()
        return taken
