"""The door of a mailbox: deduplication, a busy key's refusal, overflow (G8).

The router (`_Core.accept`, and its thread and cluster paths) asks these before it
accepts a message, in this order:

1. a `msg_id` already in the deduplication window is a duplicate: nothing is
   accepted, an ask resolves like the original (supervisors/_dedup.py);
2. `busy="reject"`: a normal message for a key that is running or has messages
   waiting raises `KeyBusy` (priority messages always go in);
3. a full mailbox (`max_pending`): `overflow="reject"` raises `MailboxFull`;
   `"drop_oldest"` drops the oldest waiting message of the lowest priority, if that
   priority is no higher than the newcomer's, to make room; `"drop_newest"` (or a
   drop_oldest with nothing it may drop) accepts the newcomer and drops it. A
   dropped message ends `Dropped("overflow")`, with a dead letter: never a priority
   message to make room for a normal one.

Everything here runs only for a class that set one of these, or a message with a
`msg_id`: the plain path pays one attribute read.

It names `_Core` as a type only (its functions are given the router): a deliberate
circle, the router's door read in a file of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors._errors import KeyBusy, MailboxFull
from actors._host import SUSPENDED
from actors._knobs import REJECT
from actors._mailbox import Envelope
from supervisors._dedup import Dedup

if TYPE_CHECKING:
    from actors._cell import Cell
    from supervisors._core import _Core

__all__ = [
    "check_busy_key",
    "clear_below",
    "drop_incoming",
    "duplicate",
    "make_room",
    "open_window",
    "refused_remote",
]


def open_window(core: _Core) -> Dedup:
    """The runtime's dedup window, created on first use (loaded from a durable store)."""
    dedup = core.dedup
    if dedup is None:
        dedup = core.dedup = core.outcomes.dedup = Dedup(
            core.dedup_window, core.dedup_max, core.now
        )
        if core.durable is not None:
            core.durable.load_window(dedup)
    return dedup


def duplicate(core: _Core, key: Any, msg_id: str, reply_to: Any) -> bool:
    """Whether `msg_id` is a duplicate (then `reply_to` resolves like the original)."""
    dedup = core.dedup
    if dedup is None:
        dedup = open_window(core)
    return dedup.duplicate(key, msg_id, reply_to)


def check_busy_key(cell: Cell | None, priority: int) -> None:
    """`busy="reject"`: raise `KeyBusy` for a normal message to a busy key."""
    if (
        cell is not None
        and priority == 0
        and cell.knobs.busy is REJECT
        and (cell.current is not None or cell.late is not None or len(cell) > 0)
    ):
        raise KeyBusy(cell.key)


def make_room(core: _Core, cell: Cell | None, key: Any, priority: int) -> bool:
    """The mailbox is full: raise `MailboxFull`, or drop to make room. False: the
    newcomer itself is to be dropped (`drop_incoming`)."""
    knobs = cell.knobs if cell is not None else core.default_knobs
    policy = knobs.overflow
    if policy == "reject":
        raise MailboxFull(key, core.max_pending)
    if policy == "drop_oldest" and cell is not None:
        victim = cell.oldest_at_most(priority)
        if victim is not None and cell.remove(victim):
            core.pending -= 1
            core.overflowed += 1
            core.outcomes.on_dropped(key, victim, "overflow", victim.attempt - 1)
            return True
    return False


def drop_incoming(
    core: _Core, key: Any, message: Any, priority: int, reply_to: Any, record: bytes | None
) -> None:
    """Accept a message and drop it at once ("overflow"): journaled, then dead-lettered."""
    envelope = Envelope(message, reply_to, priority, core.now())
    core.accepted += 1
    core.overflowed += 1
    if record is not None and core.durable is not None:
        core.durable.record(envelope, key, record)
    core.outcomes.on_dropped(key, envelope, "overflow")


def refused_remote(core: _Core, cell: Cell, envelope: Envelope) -> bool:
    """Cluster mode: what the call site could not decide, decided by the key's owner.

    `busy="reject"`: a normal message for a busy key ends `Dropped("busy")` (an ask
    fails with it); a full mailbox under a drop policy makes room, or drops the
    newcomer. True: `envelope` got its outcome here.
    """
    try:
        check_busy_key(cell, envelope.priority)
    except KeyBusy:
        core.outcomes.on_dropped(cell.key, envelope, "busy")
        return True
    full = len(cell) >= core.max_pending and cell.knobs.overflow != "reject"
    if full and not make_room(core, cell, cell.key, envelope.priority):
        core.overflowed += 1
        core.outcomes.on_dropped(cell.key, envelope, "overflow")
        return True
    return False


def clear_below(core: _Core, cell: Cell, priority: int) -> None:
    """`clear=True`: the waiting messages below `priority` end `Dropped("cleared")`."""
    dropped = cell.mailbox.take_below(priority)
    if cell.state is SUSPENDED:  # the failed message may come back for a retry
        cell.clear_mark = max(cell.clear_mark, priority)
    core.pending -= len(dropped)
    for envelope in dropped:
        core.outcomes.on_dropped(cell.key, envelope, "cleared", envelope.attempt - 1)
