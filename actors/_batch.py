"""`Batch` and `Item`: what a turn receives when it handles several messages at once.

A turn gets a `Batch` under `busy="collect"` (everything that waited when it
started) or a `Debounce` window (a burst, coalesced); `ctx.take_new()` and
`ctx.next_message()` hand a steering turn `Item`s. Each item is one accepted
message, in mailbox order, and gets its outcome with the turn that holds it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, final, overload

if TYPE_CHECKING:
    from actors._mailbox import Envelope

__all__ = ["Batch", "Item"]


@final
class Item:
    """One message of a batch (or taken by a steering turn), as it was accepted."""

    __slots__ = ("accepted_at", "message", "msg_id", "priority")

    def __init__(self, message: Any, msg_id: str | None, accepted_at: float, priority: int) -> None:
        self.message = message
        """The message, as sent."""
        self.msg_id = msg_id
        """Its `msg_id=` (a platform's update id), or None."""
        self.accepted_at = accepted_at
        """When it was accepted, in seconds of the runtime's clock (the one `ctx.now()` reads)."""
        self.priority = priority
        """The priority it was sent with."""

    @classmethod
    def of(cls, envelope: Envelope) -> Item:
        return cls(envelope.message, envelope.msg_id, envelope.accepted_at, envelope.priority)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Item):
            return NotImplemented
        return (self.message, self.msg_id, self.accepted_at, self.priority) == (
            other.message,
            other.msg_id,
            other.accepted_at,
            other.priority,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Item({self.message!r}, msg_id={self.msg_id!r}, priority={self.priority})"


@final
class Batch(Sequence[Item]):
    """The messages one turn handles, oldest first: a sequence of `Item`s.

    `batch.messages` is the plain list of the messages. Every message in it gets
    its outcome with the turn: handled when the handler returns (an ask of any of
    them resolves with the handler's result), failed or interrupted with it.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Sequence[Item]) -> None:
        self._items = tuple(items)

    @property
    def messages(self) -> list[Any]:
        """The messages themselves, oldest first."""
        return [item.message for item in self._items]

    @overload
    def __getitem__(self, index: int) -> Item: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Item]: ...

    def __getitem__(self, index: int | slice) -> Item | Sequence[Item]:
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Batch):
            return NotImplemented
        return self._items == other._items

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Batch({list(self.messages)!r})"
