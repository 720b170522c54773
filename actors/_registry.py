"""The registry actor: the key -> cell map.

The registry owns the map and is its only writer. Two kinds of access:

* **Data plane.** The router reads `cells` directly and calls `open(key)` on
  a miss. Both run on the loop thread, the registry's own thread, so they
  never interleave with the registry's message handling. A first message
  must be accepted (and its order fixed) at the call, which an actor round
  trip could not do.
* **Control plane.** Releasing a passivated key is a `Release` message, sent
  by the supervisor once the incarnation has stopped; the registry checks
  that nothing arrived meanwhile before it forgets the key.

`owner(key)` is the seam for running on several nodes: it answers where a key
lives. In one process every key is local (`None`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from actors._cell import Cell
from actors._host import CLOSED, EMPTY
from actors._kernel import LoopActor

if TYPE_CHECKING:
    from actors._host import Host

__all__ = ["RegistryActor", "Release"]


class Release(NamedTuple):
    """Forget `cell` if it is still empty and stopped."""

    cell: Cell


class RegistryActor(LoopActor):
    """Owns the map from user key to `Cell` (mailbox, incarnation, state)."""

    def __init__(self, host: Host) -> None:
        super().__init__()
        self.host = host
        self.cells: dict[str | int, Cell] = {}
        self.released = 0

    def open(self, key: str | int) -> Cell:
        """Return the key's cell, creating it on first use (loop thread only)."""
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = Cell(key, self.host)
        return cell

    def owner(self, key: str | int) -> str | None:
        """The node that owns `key`, or `None` when it is this one."""
        return None

    def _process_inbox(self) -> None:
        super()._process_inbox()
        self.host.notify()  # a release may be the last step before quiescence

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Release):
            return self._release(message.cell)
        return super().on_receive(message)

    def _release(self, cell: Cell) -> bool:
        if (
            self.cells.get(cell.key) is cell
            and cell.state is EMPTY
            and cell.mailbox.empty()
            and cell.current is None
            # A rate-limited key's bucket outlives its incarnations: kept until full.
            and (cell.gate is None or cell.gate.settled(cell.knobs, self.host.now()))
        ):
            del self.cells[cell.key]
            cell.state = CLOSED
            self.released += 1
            return True
        return False
