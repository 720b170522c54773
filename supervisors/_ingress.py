"""The thread-safe ingress: how `tell` and `ask` from other threads reach the loop.

A foreign thread appends to a deque (atomic under the GIL) and wakes the loop
only if no drain is already scheduled, so a thread sending a burst costs one
wake-up per batch, not one per message. The loop drains everything queued in
one callback, in arrival order.

This is also the seam for entries that come from elsewhere (a Redis stream
read by the node that owns the key): anything that can call `submit` from any
thread feeds the same per-key mailboxes.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

__all__ = ["Ingress", "Submission"]


class Submission(NamedTuple):
    """One `tell`/`ask` made off the loop thread, validated at its call site."""

    key: str | int
    message: Any
    priority: int
    interrupt: bool
    clear: bool
    reply_to: Any


class Ingress:
    """A multi-producer, single-consumer hand-off onto the loop thread."""

    __slots__ = ("_consume", "_drained", "_items", "_loop", "_scheduled")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        consume: Callable[[Submission], None],
        drained: Callable[[], None] | None = None,
    ) -> None:
        self._loop = loop
        self._consume = consume
        self._drained = drained  # told after each batch (quiescence waiters re-check)
        self._items: deque[Submission] = deque()
        self._scheduled = False

    def __len__(self) -> int:
        return len(self._items)

    def submit(self, item: Submission) -> None:
        """Queue `item` for the loop (any thread). Raises `RuntimeError` if the loop is closed."""
        self._items.append(item)
        # Racy read on purpose: if the loop has not yet cleared the flag, its drain
        # has not started and will see the item; a duplicate wake-up is harmless.
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon_threadsafe(self.drain)

    def drain(self) -> None:
        """Hand every queued item to the consumer, in order (loop thread)."""
        self._scheduled = False
        items = self._items
        consume = self._consume
        while items:
            consume(items.popleft())
        if self._drained is not None:
            self._drained()

    def take_all(self) -> list[Submission]:
        """Remove and return whatever is queued (shutdown)."""
        taken = list(self._items)
        self._items.clear()
        return taken
