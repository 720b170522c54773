"""The thread-safe ingress: how `tell` and `ask` from other threads reach the loop.

A foreign thread appends to a deque and wakes the loop only if no drain is
already scheduled, so a thread sending a burst costs one wake-up per batch,
not one per message. The loop drains everything queued in one callback, in
arrival order.

Backpressure holds at the thread's call site (G8): under one lock, a
submission checks the key's mailbox plus what is already in transit for that
key (and the runtime-wide bound), and reserves its place. The loop releases
the reservation as it accepts the message, which then never meets a full
mailbox: a thread's `tell` that returned is never dropped for lack of room.
A mailbox can at most exceed `max_pending` by the few messages that a loop
thread call and a thread call accept in the same instant.

`close()` (the end of a shutdown, or a loop that ended without one) refuses
every later submission under the same lock, so none can slip in unseen.

This is also the seam for entries that come from elsewhere (a Redis stream
read by the node that owns the key): anything that can call `submit` from any
thread feeds the same per-key mailboxes.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

from actors._errors import MailboxFull, RuntimeStopped

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from supervisors._core import _Core

__all__ = ["Ingress", "Submission"]


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


class Ingress:
    """A multi-producer, single-consumer hand-off onto the loop thread."""

    __slots__ = (
        "_closed",
        "_consume",
        "_core",
        "_drained",
        "_items",
        "_lock",
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
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def submit(self, item: Submission) -> None:
        """Reserve room for `item` and queue it for the loop (any thread).

        Raises:
            MailboxFull: the key's mailbox (or the runtime-wide bound) is full,
                counting what other threads have in transit.
            RuntimeStopped: the ingress is closed, or the loop is.
        """
        core = self._core
        key = item.key
        with self._lock:
            if self._closed:
                msg = "the runtime has stopped: it accepts no messages"
                raise RuntimeStopped(msg)
            transit = core.transit
            reserved = transit.get(key, 0)
            cell = core.cells.get(key)
            if reserved + (len(cell) if cell is not None else 0) >= core.max_pending:
                raise MailboxFull(key, core.max_pending)
            limit = core.max_total_pending
            if limit is not None and core.pending + core.in_transit >= limit:
                raise MailboxFull(key, limit, scope="runtime")
            if not self._scheduled:
                try:
                    self._loop.call_soon_threadsafe(self.drain)
                except RuntimeError as exc:  # the loop has closed
                    msg = "the runtime's event loop has closed"
                    raise RuntimeStopped(msg) from exc
                self._scheduled = True
            transit[key] = reserved + 1
            core.in_transit += 1
            self._items.append(item)

    def drain(self) -> None:
        """Hand every queued item to the core, in order (loop thread)."""
        items = self._items
        core = self._core
        consume = self._consume
        lock = self._lock
        transit = core.transit
        while True:
            with lock:
                if not items:
                    self._scheduled = False
                    break
                item = items.popleft()
                left = transit[item.key] - 1
                if left:
                    transit[item.key] = left
                else:
                    del transit[item.key]
                core.in_transit -= 1
            consume(item)
        if self._drained is not None:
            self._drained()

    def close(self) -> list[Submission]:
        """Refuse every later submission; remove and return what is queued (loop thread)."""
        with self._lock:
            self._closed = True
            taken = list(self._items)
            self._items.clear()
            self._core.transit.clear()
            self._core.in_transit = 0
        return taken
