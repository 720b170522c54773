"""The contract between a key's cell and the runtime around it: the states, the `Host`.

The registry maps each key to a `Cell` (actors/_cell.py). The cell never decides
anything about failures or lifetimes: it reports them to its `Host` (the
supervisor side of the runtime, `supervisors._core`) and does what it is told.

States and who moves a cell between them::

    EMPTY --deliver--> ACTIVATING --start()--> STARTING --on_start ok--> RUNNING
    RUNNING --mailbox empty--> IDLE --deliver--> RUNNING
    RUNNING --its gate says wait--> HELD --(host) release()--> RUNNING
    STARTING/RUNNING --failure--> SUSPENDED --(supervisor) resume()/start()/stop()
    IDLE/SUSPENDED --stop()--> STOPPING --on_stop done--> EMPTY (or CLOSED)
    any --(supervisor) park()--> PARKED --unpark()--> EMPTY

The states are interned strings compared by identity (`state is RUNNING`): cheap
in the compiled build and readable in a log line.

`Host` and `Cell` name each other, deliberately: a cell reports to its host with
itself as the argument, and the host drives the cell. Here the name `Cell` is a
type only (under TYPE_CHECKING), so neither module imports the other at run time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable
    from concurrent.futures import Executor

    from actors._cell import Cell
    from actors._clock import Clock
    from actors._knobs import Knobs
    from actors._latency import Latencies
    from actors._mailbox import Envelope
    from actors._outcomes import Outcomes
    from actors._user_actor import UserActor

__all__ = [
    "ACTIVATING",
    "CLOSED",
    "EMPTY",
    "HELD",
    "IDLE",
    "OVERRUN_GRACE",
    "PARKED",
    "RUNNING",
    "STARTING",
    "STOPPING",
    "SUSPENDED",
    "Host",
]

EMPTY = "empty"
ACTIVATING = "activating"
STARTING = "starting"
RUNNING = "running"
IDLE = "idle"
HELD = "held"  # messages wait, and its gate (actors/_gate.py) says not yet: woken by the host
SUSPENDED = "suspended"
STOPPING = "stopping"
PARKED = "parked"
CLOSED = "closed"

#: Seconds a handler may still run after its timeout settled its message before
#: it is reported as overrunning (`handler_overran`, `stats()["overruns"]`).
OVERRUN_GRACE = 1.0


class Host(ABC):
    """What a cell needs from the runtime around it: the base class of the router.

    A class rather than a `Protocol` so that, compiled, a cell reaches its
    host's fields and methods directly instead of by name (setup.py). The
    runtime's `supervisors._core._Core` is the one implementation; the
    methods below are what it must provide.
    """

    loop: asyncio.AbstractEventLoop
    clock: Clock
    outcomes: Outcomes
    latency: Latencies  # outcomes.latency, reached directly
    batch: int
    handler_timeout: float | None
    trace: bool
    log: Any
    pending: int
    live: int
    overruns: int
    now: Callable[[], float]
    room_waiters: dict[Any, Any]  # key -> senders waiting for room in its mailbox
    default_knobs: Knobs  # for a key whose class is not known yet
    flushing: bool  # the stop's drain: debounce windows close at once

    @abstractmethod
    def executor(self) -> Executor: ...

    @abstractmethod
    def tell(self, key: str | int, message: Any, **options: Any) -> None: ...

    @abstractmethod
    def task_started(self, cell: Cell, task: asyncio.Task[None]) -> None: ...

    @abstractmethod
    def task_finished(self, task: asyncio.Task[None]) -> None: ...

    @abstractmethod
    def request_activation(self, cell: Cell) -> None: ...

    @abstractmethod
    def cell_idle(self, cell: Cell) -> None: ...

    @abstractmethod
    def cell_failed(
        self, cell: Cell, phase: str, error: BaseException, envelope: Envelope | None
    ) -> None: ...

    @abstractmethod
    def cell_stopped(self, cell: Cell, reason: str) -> None: ...

    @abstractmethod
    def notify(self) -> None: ...

    @abstractmethod
    def hold(self, cell: Cell, due: float) -> None:
        """Wake `cell` (`Cell.release`) at `due`: its gate holds its next turn until then."""

    @abstractmethod
    def knobs_for(self, actor_type: type) -> Knobs:
        """An actor class's busy, overflow, rate and debounce settings, resolved."""

    @abstractmethod
    def room_made(self, cell: Cell) -> None:
        """A message left `cell`'s mailbox while senders wait for room (`Runtime.send`)."""

    @abstractmethod
    def journal_started(self, envelope: Envelope) -> bool:
        """A handler is about to start on a tracked message (`envelope.seq != 0`), just
        taken from the mailbox: True if it may. False (a cluster node that lost the
        message's shard, or that is past its fence point) means it must not run here;
        the host has given it its outcome, and the cell takes the next one."""

    @abstractmethod
    def journal_handled(self, envelope: Envelope) -> None:
        """A journaled message was handled: acknowledge it."""

    @abstractmethod
    def save_snapshot(self, cell: Cell, actor: UserActor) -> None:
        """An incarnation whose class has snapshot hooks ended: keep its state."""

    @abstractmethod
    def loop_ending(self) -> bool:
        """Whether the loop is being torn down (every task cancelled); if so, settle all."""
