"""What the router asks of a mode: the two seams between the core and its modes.

The core (supervisors/_core.py) runs the same way in every mode; what differs is
who it tells about messages. In memory nobody: both fields below stay `None`.
With a durable store (supervisors/durable/) `_Core.durable` encodes and
journals what is accepted, and `_Core.tracker` hears when a tracked message
(`envelope.seq != 0`) starts and ends. In cluster mode (supervisors/cluster/)
the node is the tracker, and the messages come from Redis already journaled.

Protocols, so that the core names no mode: the modes build on the core, and the
facade (supervisors/_runtime.py) plugs them in at `start()`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from concurrent.futures import Future

    from actors._mailbox import Envelope
    from supervisors._dedup import Dedup

__all__ = ["Journaling", "Tracker"]


class Tracker(Protocol):
    """What the router tells about a tracked message (`envelope.seq != 0`): the durable
    store, or the cluster node."""

    def started(self, envelope: Envelope) -> bool:
        """A handler is about to start on it: True if it may (False: it was settled)."""

    def ack(self, envelope: Envelope) -> None:
        """It was handled (or otherwise ended and is not kept)."""


class Journaling(Protocol):
    """How the router journals what it accepts, with a durable store."""

    def encode(
        self,
        key: str | int,
        message: Any,
        priority: int,
        ttl: float | None,
        msg_id: str | None = None,
    ) -> bytes:
        """The journal record of a message about to be accepted (any thread); raises
        `CodecError` for one the codec cannot encode, and the message is refused."""

    def load_window(self, dedup: Dedup) -> None:
        """Fill a new dedup window with the ids kept across restarts; keep the new ones."""

    def record(self, envelope: Envelope, key: str | int, data: bytes) -> None:
        """Journal an accepted envelope (with the loop pass's batch)."""

    def keep(self, key: str | int, data: bytes) -> None:
        """Journal a message accepted too late for this run: handled after the next start."""

    def chain(self, receipt: Future[None]) -> None:
        """Resolve `receipt` (a thread's `send`) once what was accepted so far is committed."""
