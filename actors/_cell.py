"""The cell: the per-key state of the runtime, and the loop that drains a mailbox.

The registry maps each key to a `Cell`. The cell owns the key's `Mailbox`
(so waiting messages outlive incarnations, G5), the current `UserActor`
incarnation if any, and the message in flight. It never decides anything
about failures or lifetimes: it reports them to its `Host` (the supervisor
side of the runtime) and does what it is told.

States and who moves a cell between them::

    EMPTY --deliver--> ACTIVATING --start()--> STARTING --on_start ok--> RUNNING
    RUNNING --mailbox empty--> IDLE --deliver--> RUNNING
    STARTING/RUNNING --failure--> SUSPENDED --(supervisor) resume()/start()/stop()
    IDLE/SUSPENDED --stop()--> STOPPING --on_stop done--> EMPTY (or CLOSED)
    any --(supervisor) park()--> PARKED --unpark()--> EMPTY

A `resume()` or `stop()` asked for while a late handler still runs (one that
outlived its outcome: see `Cell`) waits for it: the cell never runs two things
of one key at once (G2), whatever a handler does with its cancellation.

A burst is one task (`actors._burst.drain`) that runs `on_start` if needed,
then drains the mailbox until it is empty, yielding to other cells every
`batch` messages (fairness, P5). An idle cell has no task at all, so an idle
user costs a few slots. The burst coroutine only awaits; what happens before
and after each handler (`take`, `finish`, `cancelled`, `failed`) is here, in
plain methods, which is what lets this module be compiled (see `setup.py`).
"""

from __future__ import annotations

import asyncio
import inspect
from abc import ABC, abstractmethod
from collections import deque
from typing import TYPE_CHECKING, Any

from actors._burst import END, FINISH, RERAISE, drain, stop_async
from actors._errors import HandlerTimeout
from actors._mailbox import Mailbox
from actors._user_actor import HANDLER_ASYNC, Context

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Executor

    from actors._clock import Clock, TimerHandle
    from actors._latency import Latencies
    from actors._mailbox import Envelope
    from actors._outcomes import Outcomes
    from actors._user_actor import UserActor

__all__ = ["Cell", "Host"]

EMPTY = "empty"
ACTIVATING = "activating"
STARTING = "starting"
RUNNING = "running"
IDLE = "idle"
SUSPENDED = "suspended"
STOPPING = "stopping"
PARKED = "parked"
CLOSED = "closed"


#: Seconds a handler may still run after its timeout settled its message before
#: it is reported as overrunning (`handler_overran`, `stats()["overruns"]`).
OVERRUN_GRACE = 1.0

_RESUME = "resume"  # a deferred `resume()` (any other deferred action is a stop reason)


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


class Cell(Mailbox):
    """One key's mailbox, incarnation and in-flight message. Loop thread only.

    The cell *is* the key's mailbox (a subclass, not a field): one object less
    per user, which activation rate and memory per idle user both feel.

    A handler can outlive its message's outcome: one that ignores its
    `handler_timeout` (an async handler that swallows the cancellation, a
    blocking one that never checks `ctx.interrupted`) gets its outcome at the
    timeout, and one still running when the shutdown gives up on it gets
    `Interrupted("shutdown")`. Such a handler is `late`. Until it has really
    returned, nothing else of the key runs (G2): a `resume()` or `stop()` the
    supervisor asks for meanwhile is deferred (`_after`) to that moment.
    """

    __slots__ = (
        "_after",
        "_cut",
        "_flagged",
        "_started",
        "_timer",
        "_worker",
        "actor",
        "clear_mark",
        "ctx",
        "current",
        "host",
        "idle_since",
        "incarnation",
        "key",
        "late",
        "policy_state",
        "restart_at",
        "restart_cancelled",
        "state",
        "task",
        "timer",
    )

    def __init__(self, key: str | int, host: Host) -> None:
        super().__init__()
        self.key = key
        self.host = host
        self.actor: UserActor | None = None
        self.ctx: Context | None = None
        self.state = EMPTY
        self.task: asyncio.Task[None] | None = None
        self.current: Envelope | None = None
        self.late: Envelope | None = None  # settled, but its handler still runs
        self.incarnation = 0
        self.idle_since = 0.0
        self.policy_state: Any = None  # the supervisor's restart bookkeeping
        self.restart_at = 0.0  # when a restart in backoff is due
        self.restart_cancelled = False  # a failing on_stop("restart") escalated to STOP
        self.clear_mark = -1  # highest clear priority seen while a failure awaits its verdict
        self.timer: TimerHandle | None = None  # backoff or cool-down, owned by the supervisor
        self._cut: str | None = None  # why the handler in flight is being cut short
        self._flagged = False  # ctx.interrupted was set for the handler in flight
        self._started = 0.0  # when the handler in flight started
        self._timer: TimerHandle | None = None  # its handler_timeout, then its overrun check
        self._after: str | None = None  # deferred until the late handler returns
        self._worker: Any = None  # a blocking handler's thread the burst stopped waiting for

    def __repr__(self) -> str:
        return f"<Cell {self.key!r} {self.state} waiting={self._size}>"

    @property
    def mailbox(self) -> Mailbox:
        """The key's waiting messages (the cell itself)."""
        return self

    # -- data plane (router) ------------------------------------------------------

    def deliver(self, envelope: Envelope) -> None:
        """Queue an accepted envelope and make sure someone will handle it."""
        # Mailbox.put's priority-0 cases, inlined: this runs once per message.
        if envelope.priority == 0:
            if self._head is None:
                self._head = envelope
            elif self._lane0 is not None:
                self._lane0.append(envelope)
            else:
                self._lane0 = deque((envelope,))
            self._size += 1
        else:
            self.put(envelope)
        state = self.state
        if state is IDLE:
            self._begin(RUNNING)
        elif state is EMPTY:
            self.state = ACTIVATING
            self.host.request_activation(self)

    def interrupt(self, priority: int) -> bool:
        """Cut short the handler in flight if its priority is below `priority`."""
        envelope = self.current
        if envelope is None or envelope.priority >= priority or self._cut is not None:
            return False
        self._cut = "interrupt"
        self._signal()
        return True

    def expire(self, envelope: Envelope) -> None:
        """A waiting message's `ttl` ran out (its timer): it ends `Dropped("expired")`."""
        envelope.expiry = None
        if self.remove(envelope):
            self.host.pending -= 1
            self.host.outcomes.on_dropped(self.key, envelope, "expired")

    def withdraw(self, reply_to: object) -> bool:
        """Withdraw the waiting ask answered by `reply_to`: it ends `Dropped("withdrawn")`."""
        envelope = self.find(reply_to)
        if envelope is None or not self.remove(envelope):
            return False
        self.host.pending -= 1
        self.host.outcomes.on_dropped(self.key, envelope, "withdrawn")
        return True

    # -- control plane (supervisor) -----------------------------------------------

    def start(self, actor: UserActor) -> None:
        """Begin a new incarnation: `on_start`, then drain what waits."""
        self.actor = actor
        self.incarnation += 1
        self.ctx = Context(self)
        self.host.live += 1
        self._begin(STARTING)

    def resume(self) -> None:
        """Go on with the same instance after a failure (once its handler has returned)."""
        if self.busy():
            self._after = _RESUME
            return
        if self.mailbox.empty():
            self.state = IDLE
            self.host.cell_idle(self)
        else:
            self._begin(RUNNING)

    def stop(self, reason: str) -> None:
        """End the incarnation: `on_stop(reason)` runs, then the host is told.

        A plain `on_stop` (the default) runs right here; only an async one gets a
        task. If a late handler still runs, `on_stop` waits for it (G2).
        """
        self.state = STOPPING
        if self.busy():
            self._after = reason
            return
        actor = self.actor
        if actor is not None and actor._async_stop:
            task = self.host.loop.create_task(stop_async(self, actor, reason))
            self.task = task
            self.host.task_started(self, task)
            return
        if actor is not None:
            try:
                actor.on_stop(reason)
            except BaseException as exc:  # reported, and the stop goes on
                self.host.cell_failed(self, "on_stop", exc, None)
        self.stopped(actor, reason)

    def busy(self) -> bool:
        """Whether a burst, an `on_stop` or a late handler's thread is still running."""
        return self.task is not None or self._worker is not None

    def cancel(self) -> None:
        """Shutdown: cut the burst short. The message in flight ends `Interrupted("shutdown")`.

        A running `on_stop` is left alone; a blocking handler is flagged
        (`ctx.interrupted`) and waited for.
        """
        task = self.task
        if task is None or task.done() or (self.state is STOPPING and self._after is None):
            return
        self._cut = "shutdown"
        if self.ctx is not None:
            self.ctx.interrupted = True
            self._flagged = True
        if task is not asyncio.current_task():
            task.cancel()
            coro: Any = task.get_coro()
            if inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
                # Cancelled before its first step, the burst never runs, not even its
                # `finally`: end it here, or the cell would wait for it forever (and
                # its `on_stop` with it).
                self._cut = None
                self.burst_ended(task)

    def abandon(self) -> Envelope | None:
        """Shutdown gives up waiting: the message in flight ends `Interrupted("shutdown")` now."""
        envelope = self.current
        if envelope is not None:
            self._disarm()
            self.current = None
            self._cut = None
            self.late = envelope
            self.host.outcomes.on_interrupted(self.key, envelope, "shutdown")
        return envelope

    # -- the burst ------------------------------------------------------------------
    #
    # The coroutine that awaits handlers lives in `actors._burst` (kept interpreted);
    # everything it does around each await is one of the plain methods below.

    def _begin(self, state: str) -> None:
        self.state = state
        task = self.host.loop.create_task(drain(self, state is STARTING))
        self.task = task
        self.host.task_started(self, task)

    def start_hook(self) -> bool:
        """A plain `on_start` (or none): run it here, no coroutine needed."""
        actor: UserActor = self.actor  # type: ignore[assignment]
        try:
            actor.on_start()
        except BaseException as exc:  # any escape is the key's failure (G7)
            self.start_failed(exc)
            return False
        self.state = RUNNING
        return True

    def start_succeeded(self) -> None:
        self.state = RUNNING

    def start_failed(self, error: BaseException) -> None:
        self.state = SUSPENDED
        self.host.cell_failed(self, "on_start", error, None)

    def start_cancelled(self, error: BaseException) -> bool:
        """An async `on_start` saw `CancelledError`: True if the shutdown sent it (re-raise)."""
        if self._cut == "shutdown":
            return True
        self.start_failed(error)  # nobody in the runtime asked: a failure of on_start
        return False

    def take(self) -> Envelope | None:
        """The next envelope to handle, now in flight; `None` ends the burst.

        `None` when the cell stopped running (a failure, a stop), or when the
        mailbox is empty: then the cell goes idle.
        """
        if self.state is not RUNNING:
            return None
        envelope = self.pop()
        host = self.host
        if envelope is None:
            self.state = IDLE
            host.cell_idle(self)
            return None
        host.pending -= 1
        if envelope.expiry is not None:  # it starts before its ttl ran out
            envelope.expiry.cancel()
            envelope.expiry = None
        if self._flagged:  # a native flag: reading the context's costs more, per message
            self._flagged = False
            self.ctx.interrupted = False  # type: ignore[union-attr]
        if envelope.seq and not host.journal_started(envelope):
            return self.take()  # not to run here (its shard is lost): the host settled it
        self.current = envelope
        started = self._started = host.now()
        timeout = host.handler_timeout
        if timeout is not None:
            self._timer = host.clock.call_at(started + timeout, self._timed_out)
        return envelope

    def finish(self, envelope: Envelope, result: Any) -> bool:
        """The handler returned: settle the outcome. False ends the burst (a timeout)."""
        if self.current is not envelope:  # settled already: it returned late
            self._returned_late(envelope)
            return True  # `take` decides whether the burst goes on
        self._disarm()
        host = self.host
        started = self._started
        ran = host.now() - started
        host.latency.record(started - envelope.accepted_at, ran)
        self.current = None
        cut = self._cut
        timeout = host.handler_timeout
        if cut is None and timeout is not None and ran > timeout:
            # A plain handler on the loop blocks the timer itself: judge it on return.
            cut = "timeout"
        if cut is None:
            host.outcomes.handled += 1
            if envelope.seq:
                host.journal_handled(envelope)
            if envelope.reply_to is not None:
                envelope.reply_to.set(result)
            if host.trace:
                self._trace(envelope, started, ran)
            return True
        self._cut = None
        self._uncancel()
        if cut == "timeout":
            self._fail(envelope, HandlerTimeout(self.key, timeout))  # type: ignore[arg-type]
            return False
        host.outcomes.on_interrupted(self.key, envelope, cut)
        return True

    def cancelled(self, envelope: Envelope, error: BaseException) -> int:
        """The handler raised `CancelledError`: what the burst does next (FINISH, END, RERAISE).

        An interrupt cancels the task too (settled in `finish`); a shutdown's cancel
        ends the message interrupted and the burst. A cancellation that nobody in
        the runtime asked for (an inner task the handler cancelled and awaited, a
        future cancelled by a library) is a failure of the handler (G7).
        """
        if self.current is not envelope:  # its timeout or the shutdown settled it already
            self._uncancel()
            return FINISH
        cut = self._cut
        if cut == "shutdown":
            self._disarm()
            self.current = None
            self._cut = None
            self.host.outcomes.on_interrupted(self.key, envelope, "shutdown")
            return RERAISE
        if cut is not None:
            return FINISH
        task = self.task
        if task is not None and task.cancelling() > 0:
            # Someone cancelled the burst task itself. If the loop is being torn down
            # (asyncio.run returning, an application cancelling every task), the runtime
            # settles everything, this message included; else it is this handler's failure.
            if self.host.loop_ending() or self.current is not envelope:
                return RERAISE
            self._disarm()
            self._fail(envelope, error)
            return RERAISE
        self._disarm()
        self._fail(envelope, error)
        return END

    def failed(self, envelope: Envelope, error: BaseException) -> bool:
        """The handler raised `error`: report it. False ends the burst."""
        if self.current is not envelope:  # settled already: its late error is moot
            self._returned_late(envelope)
            return True
        self._disarm()
        self._fail(envelope, error)
        return False

    def leave_thread(self, envelope: Envelope, future: Any) -> bool:
        """The burst awaiting a blocking handler was cancelled: stop waiting for the thread?

        A shutdown's first cancel waits for it (the handler sees `ctx.interrupted`);
        once the message is settled (abandoned), or for a cancellation nobody in the
        runtime asked for, the burst leaves and the cell keeps track of the thread:
        nothing else of the key runs until it returns (G2).
        """
        if self.current is envelope and self._cut is not None:
            return False
        self._worker = future
        future.add_done_callback(self._thread_done)
        return True

    def _thread_done(self, future: Any) -> None:
        if not future.cancelled():
            future.exception()  # retrieved: it has no caller any more
        self._worker = None
        self._disarm()
        self.late = None
        self._run_after()

    def burst_ended(self, task: asyncio.Task[None] | None) -> None:
        if self._worker is None:
            self._disarm()
            self.late = None
        if self.task is task:
            self.task = None
        self.host.task_finished(task)  # type: ignore[arg-type]
        self._run_after()

    def _run_after(self) -> None:
        after = self._after
        if after is None or self.busy():
            return
        self._after = None
        if after is _RESUME:
            self.resume()
        else:
            self.stop(after)

    def _disarm(self) -> None:
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()

    def _trace(self, envelope: Envelope, started: float, ran: float) -> None:
        self.host.log.debug(
            "message_handled",
            key=self.key,
            priority=envelope.priority,
            wait_ms=round((started - envelope.accepted_at) * 1000, 3),
            run_ms=round(ran * 1000, 3),
            depth=self._size,
        )

    def _fail(self, envelope: Envelope, error: BaseException) -> None:
        self.current = None
        self._cut = None
        self.state = SUSPENDED
        self.host.cell_failed(self, "on_message", error, envelope)

    def _timed_out(self) -> None:
        """`handler_timeout` ran out: settle the message now, whatever the handler does.

        An async handler is cancelled and a blocking one flagged; one that ignores
        that runs on `late`, and the key waits for it (G2), reported once it is
        still running `OVERRUN_GRACE` seconds later.
        """
        self._timer = None
        envelope = self.current
        if envelope is None:
            return
        host = self.host
        cut = self._cut
        self.late = envelope
        self._timer = host.clock.call_at(host.now() + OVERRUN_GRACE, self._overran, envelope)
        if cut is None:
            self._cut = "timeout"
            self._signal()
            self._fail(envelope, HandlerTimeout(self.key, host.handler_timeout))  # type: ignore[arg-type]
        else:  # an interrupt or a shutdown asked it to stop already: that is its outcome
            self.current = None
            self._cut = None
            host.outcomes.on_interrupted(self.key, envelope, cut)

    def _overran(self, envelope: Envelope) -> None:
        self._timer = None
        if self.late is not envelope:
            return
        host = self.host
        host.overruns += 1
        host.log.error(
            "handler_overran",
            key=self.key,
            timeout_s=host.handler_timeout,
            running_s=round(host.now() - self._started, 3),
            incarnation=self.incarnation,
        )

    def _returned_late(self, envelope: Envelope) -> None:
        if self.late is envelope:
            self.late = None
            self._disarm()
        self._uncancel()

    def _signal(self) -> None:
        """Ask the handler in flight to stop: cancel it if async, flag it in any case."""
        ctx: Context = self.ctx  # type: ignore[assignment]
        ctx.interrupted = True
        self._flagged = True
        actor: UserActor = self.actor  # type: ignore[assignment]
        task = self.task
        # A handler that interrupts its own key must not cancel the task it runs in:
        # the cancellation would land on a later, unrelated await.
        if (
            actor._handler_mode == HANDLER_ASYNC
            and task is not None
            and task is not asyncio.current_task()
        ):
            task.cancel()

    def _uncancel(self) -> None:
        """Withdraw the runtime's cancel requests of the burst task (it goes on)."""
        task = self.task
        if task is not None:
            while task.cancelling():
                task.uncancel()

    # -- ending an incarnation ------------------------------------------------------

    def stopped(self, actor: UserActor | None, reason: str) -> None:
        if actor is not None:
            flag = getattr(actor, "_actor_stopped", None)  # only if someone asked for it
            if flag is not None:
                flag.set()
            self.host.live -= 1
            if actor._snapshots:  # after on_stop, which may still change the state
                self.host.save_snapshot(self, actor)
        self.actor = None
        self.ctx = None
        if self.state is STOPPING:
            self.state = EMPTY
        self.host.cell_stopped(self, reason)
