"""The runtime core: the router (per-message path) and the host of every cell.

`_Core` lives on the loop thread. It routes `tell`/`ask` to the key's cell
without any actor round trip (DESIGN.md §2), counts what the stats report,
tracks the tasks that are running, and forwards the cells' lifecycle notices
to the supervisor actor.

Its parts are modules of their own, each given the router it serves: the
thread-safe ingress (supervisors/_ingress.py), the supervisor actor
(supervisors/_supervisor.py) and the slow-handler watch (supervisors/_slow.py).
They name `_Core` as a type only, and this module imports them (the supervisor's
messages at run time, the others as types): a deliberate circle, kept because
the router and its parts are one thing read in four files, and the type checker
then follows every call between them. Nothing here names a mode: what the router
asks of the durable and cluster modes is in supervisors/_modes.py.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from actors._errors import MailboxFull, RuntimeStopped
from actors._host import PARKED, Host
from actors._mailbox import Envelope
from supervisors._admission import (
    check_busy_key,
    clear_below,
    drop_incoming,
    duplicate,
    make_room,
    refused_remote,
)
from supervisors._checks import check_call
from supervisors._pacing import Pacing
from supervisors._snapshots import save
from supervisors._supervisor import Activate, ChildFailed

if TYPE_CHECKING:
    import asyncio
    from collections import deque
    from collections.abc import Callable

    from actors._cell import Cell
    from actors._clock import Clock
    from actors._knobs import Knobs, Rate
    from actors._outcomes import Outcomes, TraceHook
    from actors._registry import RegistryActor
    from actors._user_actor import UserActor
    from supervisors._dedup import Dedup
    from supervisors._ingress import Submission
    from supervisors._modes import Journaling, Tracker
    from supervisors._policy import Directive, RestartPolicy
    from supervisors._slow import SlowWatch
    from supervisors._snapshots import Snapshots
    from supervisors._supervisor import SupervisorActor

__all__ = ["CLOSING", "DRAINING", "RUNNING", "STOPPED"]

# The runtime's phases, as the router sees them (`_Core.phase`).
RUNNING = 0  # accepts everything
DRAINING = 1  # stop() was called: only handlers' own messages and earlier thread hand-overs
CLOSING = 2  # the drain is over: handlers' messages are accepted and dropped ("shutdown")
STOPPED = 3  # refuses everything


# Which runtime's thread pool a thread belongs to: set by the pool's initializer, before
# the thread runs anything (the executor's own thread set is filled only after start).
_POOL = threading.local()


def _join_pool(core: _Core) -> None:
    _POOL.core = core


class _Core(Host):
    """Router, counters and cell host of one running runtime (loop thread only)."""

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        clock: Clock,
        factory: Callable[[str | int], UserActor],
        policy: RestartPolicy,
        outcomes: Outcomes,
        log: Any,
        trace: bool,
        max_pending: int,
        max_total_pending: int | None,
        idle_timeout: float | None,
        max_active: int | None,
        on_escalate: Callable[[BaseException], Directive],
        batch: int,
        max_workers: int | None,
        knobs: Knobs | None = None,
        limits: dict[str, Rate] | None = None,
        dedup_window: float = 3600.0,
        dedup_max: int = 100_000,
    ) -> None:
        self.loop = loop
        self.clock = clock
        self.now = clock.now
        self.factory = factory
        self.policy = policy
        self.outcomes = outcomes
        self.latency = outcomes.latency
        self.log = log
        self.trace = trace
        self.max_pending = max_pending
        self.max_total_pending = max_total_pending
        self.idle_timeout = idle_timeout
        self.max_active = max_active
        self.on_escalate = on_escalate
        self.batch = batch
        self.handler_timeout = policy.handler_timeout
        self._max_workers = max_workers
        self._executor: ThreadPoolExecutor | None = None
        self.accepting = True
        self.pending = 0  # waiting in mailboxes
        self.live = 0  # incarnations that exist (started and not yet stopped)
        self.accepted = 0
        self.activations = 0
        self.restarts = 0
        self.idle_stops = 0
        self.gave_up = 0
        self.actor_failures = 0
        # The running tasks (bursts, async on_stop) and their cells.
        self.tasks: dict[asyncio.Task[None], Cell] = {}
        # Reports handlers running past `slow_handler` (set by the assembly, if on).
        self.slow: SlowWatch | None = None
        self._activation_batch: list[Cell] | None = None
        self._idle_waiters: list[asyncio.Future[None]] = []
        # Set by the runtime right after construction (they need the core first).
        self.registry: RegistryActor = None  # type: ignore[assignment]
        self.supervisor: SupervisorActor = None  # type: ignore[assignment]
        self.cells: dict[str | int, Cell] = {}
        self.ingress_size: Callable[[], int] = lambda: 0
        self.context_tell: Callable[..., None] = self._context_tell
        # Room reserved by other threads for messages in transit: a token per message
        # (see supervisors._ingress: deque operations are atomic, a counter's += is not).
        self.transit: dict[str | int, deque[None]] = {}
        self.phase = RUNNING
        self.refusal = "the runtime is stopping or stopped: it accepts no more messages"
        self.overruns = 0
        self.ending: Callable[[], bool] = lambda: False  # set by the runtime
        # With a durable store (set by the runtime): journals what is accepted.
        self.durable: Journaling | None = None
        # The durable store or the cluster node: told when a tracked message (seq != 0)
        # starts and when it is handled.
        self.tracker: Tracker | None = None
        self.tracer: TraceHook | None = None  # tracing on: outcomes.tracer, set before any use
        self.snapshots: Snapshots | None = None
        pacing = self.pacing = Pacing(self, factory, clock, loop, knobs, limits)
        self.default_knobs = pacing.default_knobs
        self.room_waiters = pacing.room_waiters  # the same dict: the turn reads it per message
        self.flushing = False  # the stop's drain: debounce windows close at once
        self.dedup_window = dedup_window
        self.dedup_max = dedup_max
        self.dedup: Dedup | None = None  # created by the first message with a msg_id
        self.overflowed = 0  # messages dropped for room ("overflow")

    def _context_tell(self, key: Any, message: Any, **options: Any) -> None:
        self.handler_tell(
            key,
            message,
            options.get("priority", 0),
            options.get("interrupt", False),
            options.get("clear", False),
            options.get("ttl"),
        )

    # -- the router ---------------------------------------------------------------

    def accept(
        self,
        key: Any,
        message: Any,
        priority: Any,
        interrupt: Any,
        clear: Any,
        reply_to: Any,
        ttl: Any = None,
        msg_id: Any = None,
    ) -> None:
        """Accept one message for `key`, or raise without enqueuing anything."""
        if not self.accepting:
            raise RuntimeStopped(self.refusal)
        check_call(key, priority, interrupt, clear, ttl)
        if msg_id is not None and duplicate(self, key, msg_id, reply_to):
            return
        cell = self.cells.get(key)
        # Messages in transit from other threads hold room they reserved at their call site.
        size = 0
        if self.transit:
            tokens = self.transit.get(key)
            if tokens is not None:
                size = len(tokens)
        room = True
        if cell is not None:
            size += cell._size
            if not cell.plain:
                check_busy_key(cell, priority)
        if size >= self.max_pending:
            room = make_room(self, cell, key, priority)
        if self.max_total_pending is not None:
            self._check_total(key)
        durable = self.durable
        # Encoded before anything is accepted: an unencodable message is refused here.
        record = None if durable is None else durable.encode(key, message, priority, ttl, msg_id)
        if not room:
            drop_incoming(self, key, message, priority, reply_to, record)
            return
        if cell is None:
            cell = self.registry.open(key)
        self.enqueue(cell, message, priority, interrupt, clear, reply_to, ttl, record, msg_id)

    def enqueue(
        self,
        cell: Cell,
        message: Any,
        priority: int,
        interrupt: bool,
        clear: bool,
        reply_to: Any,
        ttl: float | None,
        record: bytes | None = None,
        msg_id: str | None = None,
        trace: Any = None,
    ) -> None:
        """Accept a validated message whose room is known to be there (it may be reserved).

        `record`: its journal record (a store); `trace`: its trace context, if taken off the loop.
        """
        envelope = Envelope(message, reply_to, priority, self.now())
        if self.tracer is not None:  # the sender's trace context, kept (and journaled)
            record = self.tracer.carry(envelope, trace, record)
        self.accepted += 1
        if msg_id is not None:
            envelope.msg_id = msg_id
            self.dedup.accepted(cell.key, msg_id)  # type: ignore[union-attr]
        if record is not None:
            self.durable.record(envelope, cell.key, record)  # type: ignore[union-attr]
        if reply_to is not None:
            reply_to._cell = cell  # so that the asker can withdraw it (LoopFuture.cancel)
        if cell.state is PARKED:
            self.outcomes.on_dropped(cell.key, envelope, "parked")
            return
        self.pending += 1
        if ttl is not None:
            envelope.expiry = self.clock.call_at(envelope.accepted_at + ttl, cell.expire, envelope)
        if clear:
            clear_below(self, cell, priority)
        if interrupt and cell.current is not None and not cell.interrupt(priority) and self.trace:
            self.log.debug(
                "interrupt_ignored",
                key=cell.key,
                priority=priority,
                in_flight_priority=cell.current.priority,
            )
        cell.deliver(envelope)

    def deliver_remote(
        self,
        key: str | int,
        message: Any,
        priority: int,
        interrupt: bool,
        clear: bool,
        reply_to: Any,
        ttl: float | None,
        seq: int,
        attempt: int,
        redelivered: bool,
        msg_id: str | None = None,
        trace: str | None = None,
    ) -> None:
        """Accept a message this node read from its shard's stream (cluster mode).

        Its room was accounted for by the shard's in-flight bound, not `max_pending`:
        the entry is already in Redis, and refusing it would only leave it pending.
        `seq` tags it for the cluster's outcome hooks.
        """
        cell = self.cells.get(key)
        if cell is None:
            cell = self.registry.open(key)
        envelope = Envelope(message, reply_to, priority, self.now())
        envelope.seq = seq
        envelope.attempt = attempt
        envelope.redelivered = redelivered
        envelope.msg_id = msg_id  # for `Item.msg_id`: the cluster deduplicates in Redis
        envelope.trace = trace  # the sender's trace context, as text (tracing on there)
        self.accepted += 1
        if reply_to is not None:
            reply_to._cell = cell
        if cell.state is PARKED:
            self.outcomes.on_dropped(key, envelope, "parked")
            return
        if not cell.plain and refused_remote(self, cell, envelope):
            return
        self.pending += 1
        if ttl is not None:
            envelope.expiry = self.clock.call_at(envelope.accepted_at + ttl, cell.expire, envelope)
        if clear:
            clear_below(self, cell, priority)
        if interrupt and cell.current is not None:
            cell.interrupt(priority)
        cell.deliver(envelope)

    def accept_submission(self, item: Submission) -> None:
        """Accept what another thread handed over (`Ingress`); its room was reserved.

        While the runtime drains for a stop, it is still accepted: its call site
        returned before the stop. Later it ends `Dropped("shutdown")` (and with a
        durable store, stays journaled for the next start).
        """
        phase = self.phase
        if phase <= DRAINING:  # RUNNING or DRAINING
            cell = self.cells.get(item.key)
            if cell is None:
                cell = self.registry.open(item.key)
            full = not cell.plain and cell._size >= self.max_pending  # a drop policy's
            if full and not make_room(self, cell, item.key, item.priority):
                drop_incoming(
                    self, item.key, item.message, item.priority, item.reply_to, item.record
                )
                if item.receipt is not None:
                    self.durable.chain(item.receipt)  # type: ignore[union-attr]
                return
            if item.msg_id is not None and duplicate(self, item.key, item.msg_id, item.reply_to):
                if item.receipt is not None and self.durable is not None:
                    self.durable.chain(item.receipt)
                return
            self.enqueue(
                cell,
                item.message,
                item.priority,
                item.interrupt,
                item.clear,
                item.reply_to,
                item.ttl,
                item.record,
                item.msg_id,
                item.trace,
            )
        else:
            self.drop_late(item.key, item.message, item.priority, item.reply_to, item.record)
        if item.receipt is not None:
            self.durable.chain(item.receipt)  # type: ignore[union-attr]

    def handler_tell(
        self, key: Any, message: Any, priority: Any, interrupt: Any, clear: Any, ttl: Any
    ) -> None:
        """`Context.tell` on the loop thread: a handler is never refused for a stop (G10).

        During the stop's drain its message is accepted and drained like any other;
        after the drain it is accepted and ends `Dropped("shutdown")` at once.
        """
        phase = self.phase
        if phase == RUNNING:
            self.accept(key, message, priority, interrupt, clear, None, ttl)
        elif phase == DRAINING:
            self.accepting = True
            try:
                self.accept(key, message, priority, interrupt, clear, None, ttl)
            finally:
                self.accepting = False
        elif phase == CLOSING:
            check_call(key, priority, interrupt, clear, ttl)
            durable = self.durable
            record = None if durable is None else durable.encode(key, message, priority, ttl)
            self.drop_late(key, message, priority, None, record)
        else:
            raise RuntimeStopped(self.refusal)

    def drop_late(
        self, key: Any, message: Any, priority: int, reply_to: Any, record: bytes | None = None
    ) -> None:
        """Count a message accepted too late for the shutdown, and drop it ("shutdown").

        With a durable store it is journaled all the same (`record`), for the next start.
        """
        self.accepted += 1
        if record is not None and self.durable is not None:
            self.durable.keep(key, record)
        self.outcomes.on_dropped(key, Envelope(message, reply_to, priority, self.now()), "shutdown")

    def _check_total(self, key: str | int) -> None:
        limit = self.max_total_pending
        if limit is not None and self.pending + self.ingress_size() >= limit:
            raise MailboxFull(key, limit, scope="runtime")

    def tell(self, key: Any, message: Any, **options: Any) -> None:
        """`Context.tell`, through the runtime: blocking handlers run on pool threads."""
        self.context_tell(key, message, **options)

    # -- the cells' host ------------------------------------------------------------

    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self._max_workers,
                thread_name_prefix="inorder-blocking",
                initializer=_join_pool,
                initargs=(self,),
            )
        return self._executor

    def on_pool_thread(self) -> bool:
        """Whether the calling thread is one of this runtime's pool threads (blocking handlers)."""
        return getattr(_POOL, "core", None) is self

    def shutdown_executor(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def task_started(self, cell: Cell, task: asyncio.Task[None]) -> None:
        tasks = self.tasks
        if not tasks and self.slow is not None:
            self.slow.busy()  # one timer per busy period, never one per message
        tasks[task] = cell

    def task_finished(self, task: asyncio.Task[None]) -> None:
        tasks = self.tasks
        tasks.pop(task, None)
        if not tasks:
            if self.slow is not None:
                self.slow.quiet()
            if self._idle_waiters:
                self.notify()

    def request_activation(self, cell: Cell) -> None:
        # One Activate message per loop turn carries every key activated in that turn.
        batch = self._activation_batch
        if batch is None:
            batch = self._activation_batch = []
            self.supervisor.post(Activate(batch))
        batch.append(cell)

    def activation_batch_taken(self, batch: list[Cell]) -> None:
        if self._activation_batch is batch:
            self._activation_batch = None

    def cell_idle(self, cell: Cell) -> None:
        self.supervisor.cell_idle(cell)

    def cell_failed(
        self, cell: Cell, phase: str, error: BaseException, envelope: Envelope | None
    ) -> None:
        actor_type = type(cell.actor) if cell.actor is not None else None
        self.supervisor.post(ChildFailed(cell, phase, error, envelope, actor_type))

    def cell_stopped(self, cell: Cell, reason: str) -> None:
        self.supervisor.cell_stopped(cell, reason)

    def journal_started(self, envelope: Envelope) -> bool:
        return self.tracker.started(envelope)  # type: ignore[union-attr]

    def journal_handled(self, envelope: Envelope) -> None:
        self.tracker.ack(envelope)  # type: ignore[union-attr]

    def hold(self, cell: Cell, due: float) -> None:
        self.pacing.holds.hold(cell, due)

    def knobs_for(self, actor_type: type) -> Knobs:
        return self.pacing.knobs_for(actor_type)

    def room_made(self, cell: Cell) -> None:
        self.pacing.room_made(cell)

    def save_snapshot(self, cell: Cell, actor: UserActor) -> None:
        if self.snapshots is not None:
            save(self.snapshots, cell.key, actor, self.log)

    # -- quiescence -------------------------------------------------------------------

    def quiet(self) -> bool:
        """Nothing can happen without a message, a timer or time passing."""
        return (
            not self.tasks
            and self.ingress_size() == 0
            and self.supervisor.actor_inbox.empty()
            and self.registry.actor_inbox.empty()
        )

    def notify(self) -> None:
        """Wake `wait_idle` callers if the runtime is quiet."""
        if self._idle_waiters and self.quiet():
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def loop_ending(self) -> bool:
        return self.ending()

    def add_idle_waiter(self, waiter: asyncio.Future[None]) -> None:
        """Wake `waiter` once the runtime is quiet (see `supervisors._quiescence`)."""
        self._idle_waiters.append(waiter)
