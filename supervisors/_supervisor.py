"""The supervisor actor: activation, failures, restarts, idle shutdown.

Every change in a key's lifetime is a message to this actor, handled one at a
time on the loop: `Activate` (first message, or a message after a stop),
`ChildFailed`, `ChildStopped`, `RestartDue`, `Unpark`, and `Sweep` (idle
shutdown). The decisions themselves come from the pure functions of
`supervisors._policy`; this module applies them with the runtime's clock.

Failure handling, step by step, for a failure of `on_message`:

1. The cell stops draining (state SUSPENDED) and sends `ChildFailed`.
2. The decider (the actor class's, else the policy's) picks a directive.
3. If the directive is RESUME or RESTART and the message has retries left,
   it goes back to the head of its lane with `attempt + 1`; otherwise it
   ends failed (the ask raises the error; a tell's error is logged).
4. RESUME: the same instance goes on. RESTART: the budget is charged; within
   budget, the instance's `on_stop("restart")` runs and a new instance starts
   after the backoff delay (messages keep queueing meanwhile); over budget,
   "gave up" (below). STOP: the mailbox is dead-lettered ("stopped") and the
   instance stopped. ESCALATE: the root supervisor (`on_escalate`) picks
   again; its RESTART obeys the same budget, and an ESCALATE there stops.
5. Gave up: the error is logged, the mailbox dead-lettered ("gave_up"), the
   instance stopped with `on_stop("gave_up")`. Then the key starts afresh on
   its next message, with a new budget, unless `park_for` parks it: for that
   long its messages are dropped ("parked").

Failures of `on_start` follow the same steps (there is no message to retry), and
so do failures of the actor factory ("init") and of `restore(state)` ("restore").
A failure of `on_stop` is logged and counted; the incarnation ends anyway, and
only an ESCALATE changes anything (the key is then stopped).

`_Core` is named here as a type only (under TYPE_CHECKING): this module is a
part of the router and is given the router it serves, which imports it in turn.
A deliberate circle inside the core room, for the type checker alone; at run
time the import goes one way (supervisors/_core.py explains).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any, NamedTuple

from actors._host import ACTIVATING, CLOSED, EMPTY, IDLE, PARKED, STOPPING, SUSPENDED
from actors._kernel import LoopActor
from actors._registry import Release
from actors._user_actor import UserActor
from supervisors._policy import (
    Directive,
    RestartState,
    decide,
    plan_restart,
    should_retry,
)

if TYPE_CHECKING:
    from actors._cell import Cell
    from actors._clock import TimerHandle
    from actors._mailbox import Envelope
    from supervisors._core import _Core

__all__ = ["Activate", "ChildFailed", "ChildStopped", "SupervisorActor"]


class Activate(NamedTuple):
    """Start incarnations for these cells (batched: one message per loop turn)."""

    cells: list[Cell]


class ChildFailed(NamedTuple):
    cell: Cell
    phase: str
    error: BaseException
    envelope: Envelope | None
    actor_type: type | None
    """The failed instance's class (its `decider` applies), captured when it failed."""


class ChildStopped(NamedTuple):
    cell: Cell
    reason: str


class RestartDue(NamedTuple):
    cell: Cell


class Unpark(NamedTuple):
    cell: Cell


class Sweep(NamedTuple):
    pass


class SupervisorActor(LoopActor):
    """Creates, restarts and passivates the user actors of one runtime."""

    def __init__(self, core: _Core) -> None:
        super().__init__()
        self.core = core
        self.policy = core.policy
        # Idle cells, least recently idle first; stale entries are skipped lazily.
        self.idle: OrderedDict[str | int, Cell] = OrderedDict()
        self._sweep_timer: TimerHandle | None = None
        self._sweep_queued = False
        self.stopping = 0  # incarnations whose on_stop is running
        self.closing = False  # set by the runtime's shutdown: no new incarnations
        # Restart histories of released keys that failed recently (see _keep_history).
        self.histories: OrderedDict[str | int, RestartState] = OrderedDict()

    def _handle_receive(self, message: Any) -> Any:
        # Our own messages first, by type; pykka's (stop, proxy calls) after.
        handler = self._handlers.get(type(message))
        if handler is None:
            return super()._handle_receive(message)
        handler(self, message)
        return None

    def _process_inbox(self) -> None:
        super()._process_inbox()
        self.core.notify()

    # -- activation ---------------------------------------------------------------

    def _on_activate(self, message: Activate) -> None:
        self.core.activation_batch_taken(message.cells)
        for cell in message.cells:
            self._activate(cell, restarting=False)

    def _activate(self, cell: Cell, *, restarting: bool) -> None:
        if cell.state is not ACTIVATING:
            return
        if self.closing:
            cell.state = EMPTY
            return
        if cell.policy_state is None and self.histories:
            cell.policy_state = self.histories.pop(cell.key, None)
        try:
            actor = self.core.factory(cell.key)
            if not isinstance(actor, UserActor):
                msg = f"the actor factory returned {actor!r}, not a UserActor instance"
                raise TypeError(msg)
            if getattr(actor, "key", None) is None:
                actor.key = cell.key
        except BaseException as exc:  # the application's code: a failure of this key only
            cell.state = SUSPENDED
            self._on_failed(ChildFailed(cell, "init", exc, None, None))
            return
        if actor._snapshots and not self._restore(cell, actor):
            return
        cell.start(actor)
        self.core.activations += 1
        if restarting:
            self.core.log.info("actor_restarted", key=cell.key, incarnation=cell.incarnation)
        elif self.core.trace:
            self.core.log.debug("actor_started", key=cell.key, incarnation=cell.incarnation)

    def _restore(self, cell: Cell, actor: UserActor) -> bool:
        """Give a new incarnation the state its key kept (supervisors.durable._snapshots)."""
        snapshots = self.core.snapshots
        if snapshots is None:
            return True
        try:
            state = snapshots.get(cell.key)
            if state is not None:
                actor.restore(state)
        except BaseException as exc:  # a state that no longer decodes, or restore() raised
            cell.state = SUSPENDED
            self._on_failed(ChildFailed(cell, "restore", exc, None, type(actor)))
            return False
        return True

    # -- failures -----------------------------------------------------------------

    def _on_failed(self, message: ChildFailed) -> None:
        cell, phase, error, envelope, actor_type = message
        core = self.core
        actor = cell.actor
        decider = getattr(actor_type, "decider", None)
        directive = decide(decider or self.policy.decider, error)
        core.actor_failures += 1
        shown = directive.value
        if phase == "on_stop":
            # The incarnation ends as it was going to; only a stop (the decider's, or the
            # root's after an escalation) changes anything: say what is applied.
            if directive is Directive.ESCALATE:
                directive = self._escalate(cell, error)
            shown = "stop" if directive is Directive.STOP else "none"
        core.log.warning(
            "actor_failed",
            key=cell.key,
            phase=phase,
            error=repr(error),
            directive=shown,
            incarnation=cell.incarnation,
            attempt=envelope.attempt if envelope is not None else None,
        )
        if directive is Directive.ESCALATE:
            directive = self._escalate(cell, error)
        cleared_below, cell.clear_mark = cell.clear_mark, -1
        if envelope is not None:
            if self.closing or not should_retry(self.policy, envelope.attempt, directive):
                core.outcomes.on_failed(cell.key, envelope, error)
            elif envelope.priority < cleared_below:
                # A clear arrived while this failure waited for us: no retry, it is cleared.
                core.outcomes.on_dropped(cell.key, envelope, "cleared", envelope.attempt)
            else:
                envelope.attempt += 1
                cell.mailbox.put_front(envelope)
                core.pending += 1
        if phase == "on_stop":
            if directive is Directive.STOP:
                # The incarnation is ending anyway; STOP also cancels a restart it was for.
                self._drop_waiting(cell, "stopped", error)
                cell.restart_cancelled = True
            return
        if cell.state is not SUSPENDED or self.closing:
            return
        if directive is Directive.RESUME and actor is not None:
            cell.resume()
        elif directive is Directive.STOP:
            self._drop_waiting(cell, "stopped", error)
            self._stop_cell(cell, "stopped")
        else:
            self._restart(cell, error)

    def _escalate(self, cell: Cell, error: BaseException) -> Directive:
        directive = decide(self.core.on_escalate, error)
        self.core.log.error(
            "supervisor_escalated",
            key=cell.key,
            error=repr(error),
            directive=directive.value,
            exc_info=error,
        )
        return Directive.STOP if directive is Directive.ESCALATE else directive

    def _restart(self, cell: Cell, error: BaseException) -> None:
        core = self.core
        state = cell.policy_state or RestartState()
        plan = plan_restart(self.policy, state, core.clock.now(), self.policy.rng.random())
        cell.policy_state = plan.state
        if plan.gave_up:
            core.gave_up += 1
            core.log.error(
                "supervisor_gave_up",
                key=cell.key,
                error=repr(error),
                restarts=len(plan.state.restarts),
                within=self.policy.within,
            )
            self._drop_waiting(cell, "gave_up", error)
            self._stop_cell(cell, "gave_up")
            return
        core.restarts += 1
        core.log.info(
            "actor_restart_scheduled",
            key=cell.key,
            delay_s=round(plan.delay, 6),
            restarts=len(plan.state.restarts),
            incarnation=cell.incarnation,
        )
        due = core.clock.now() + plan.delay
        if cell.actor is None:
            cell.timer = core.clock.call_at(due, self._tell, RestartDue(cell))
        else:
            cell.timer = None
            cell.restart_at = due  # used once the old instance has stopped
            self._stop_cell(cell, "restart")

    def _on_restart_due(self, message: RestartDue) -> None:
        cell = message.cell
        cell.timer = None
        if cell.state is not SUSPENDED or self.closing:
            return
        cell.state = ACTIVATING
        self._activate(cell, restarting=True)

    # -- stopping -------------------------------------------------------------------

    def _stop_cell(self, cell: Cell, reason: str) -> None:
        if cell.actor is None:
            cell.state = EMPTY
            self._on_stopped(ChildStopped(cell, reason))
            return
        self.begin_stop(cell, reason)

    def begin_stop(self, cell: Cell, reason: str) -> None:
        """Run the incarnation's `on_stop(reason)`; `cell_stopped` follows."""
        self.stopping += 1
        cell.stop(reason)

    def _drop_waiting(self, cell: Cell, reason: str, cause: BaseException | None = None) -> None:
        dropped = cell.mailbox.take_all()
        self.core.pending -= len(dropped)
        self.core.outcomes.drop_all(cell.key, dropped, reason, cause)

    def _on_stopped(self, message: ChildStopped) -> None:
        cell, reason = message
        # The flag belongs to this stop only (its on_stop failure was handled just before).
        cancelled, cell.restart_cancelled = cell.restart_cancelled, False
        if cell.state is CLOSED or self.closing:
            return
        core = self.core
        if reason == "restart" and cancelled:
            cell.state = EMPTY
            reason = "stopped"
        if reason == "restart":
            due = max(cell.restart_at, core.clock.now())
            cell.timer = core.clock.call_at(due, self._tell, RestartDue(cell))
            return
        if reason == "gave_up":
            cell.policy_state = None  # the next incarnation gets a fresh budget
            park_for = self.policy.park_for
            if park_for is not None:
                cell.state = PARKED
                self._drop_waiting(cell, "parked")
                cell.timer = core.clock.call_at(
                    core.clock.now() + park_for, self._tell, Unpark(cell)
                )
                return
        if cell.state is not EMPTY:
            return
        if cell.mailbox.empty():
            self._keep_history(cell)
            core.registry.post(Release(cell))
        else:
            # A message raced the stop: it goes to a new incarnation, in order.
            cell.state = ACTIVATING
            self._activate(cell, restarting=False)

    def _on_unpark(self, message: Unpark) -> None:
        cell = message.cell
        if cell.state is PARKED:
            cell.timer = None
            cell.state = EMPTY
            self._on_stopped(ChildStopped(cell, "unparked"))

    # -- idle shutdown ----------------------------------------------------------------

    def cell_idle(self, cell: Cell) -> None:
        """Note that `cell` became idle now (direct call from the cell, loop thread)."""
        core = self.core
        timeout = core.idle_timeout
        max_active = core.max_active
        if timeout is None and max_active is None:
            return  # nothing ever passivates: no need to track
        now = cell.idle_since = core.now()
        key = cell.key
        idle = self.idle
        idle[key] = cell
        idle.move_to_end(key)
        if max_active is not None and core.live - self.stopping > max_active:
            self._queue_sweep()
        elif timeout is not None and self._sweep_timer is None:
            self._arm_sweep(now + timeout)

    def close(self) -> None:
        """The runtime is shutting down: no new incarnations, no idle sweep pending.

        The sweep timer is cancelled rather than left to fire on a stopped runtime
        (the loop would keep the whole runtime alive until then).
        """
        self.closing = True
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None

    def _arm_sweep(self, when: float) -> None:
        if self.closing:
            return
        self._sweep_timer = self.core.clock.call_at(when, self._sweep_due)

    def _sweep_due(self) -> None:
        self._sweep_timer = None
        self._queue_sweep()

    def _queue_sweep(self) -> None:
        if not self._sweep_queued:
            self._sweep_queued = True
            self._tell(Sweep())

    def _keep_history(self, cell: Cell) -> None:
        """Keep a released key's recent restarts: passivation must not reset its budget.

        Histories are kept in release order and forgotten from the front once
        expired, so an outage that fails every user once costs O(1) per key, not a
        rescan of every kept history per release.
        """
        state = cell.policy_state
        if state is not None and state.restarts:
            histories = self.histories
            histories[cell.key] = state
            histories.move_to_end(cell.key)
            self._forget_histories(self.core.now())

    def _forget_histories(self, now: float) -> None:
        # Release order is nearly expiry order (a key's last restart precedes its
        # release): stop at the first live one. One kept a little too long is harmless,
        # since `plan_restart` only counts restarts inside the window anyway.
        horizon = max(self.policy.within, self.policy.reset_after)
        histories = self.histories
        while histories:
            key, state = next(iter(histories.items()))
            if state.restarts[-1] + horizon > now:
                return
            del histories[key]

    def _on_sweep(self, _: Sweep) -> None:
        self._sweep_queued = False
        if self.closing:
            return
        core = self.core
        now = core.clock.now()
        if self.histories:
            self._forget_histories(now)
        timeout = core.idle_timeout
        idle = self.idle
        while idle:
            key, cell = next(iter(idle.items()))
            if cell.state is not IDLE:
                del idle[key]
                continue
            over = core.max_active is not None and core.live - self.stopping > core.max_active
            expired = timeout is not None and cell.idle_since + timeout <= now
            if not (over or expired):
                break
            del idle[key]
            self._passivate(cell, "lru" if over and not expired else "idle")
        if idle and timeout is not None and self._sweep_timer is None:
            first = next(iter(idle.values()))
            self._arm_sweep(first.idle_since + timeout)

    def _passivate(self, cell: Cell, why: str) -> None:
        self.core.idle_stops += 1
        if self.core.trace:
            self.core.log.debug(
                "actor_idle_stopped", key=cell.key, incarnation=cell.incarnation, cause=why
            )
        self.begin_stop(cell, "idle")

    def cell_stopped(self, cell: Cell, reason: str) -> None:
        """The cell's `on_stop` finished (direct call, loop thread)."""
        self.stopping -= 1
        if reason == "restart" and not self.closing:
            # Not EMPTY even for a moment: a message arriving now must wait for the
            # backoff, not trigger an activation of its own.
            cell.state = SUSPENDED
        elif cell.state is STOPPING:
            cell.state = EMPTY
        self._tell(ChildStopped(cell, reason))

    def _tell(self, message: Any) -> None:
        self.post(message)

    _handlers: dict[type, Any] = {
        Activate: _on_activate,
        ChildFailed: _on_failed,
        ChildStopped: _on_stopped,
        RestartDue: _on_restart_due,
        Unpark: _on_unpark,
        Sweep: _on_sweep,
    }
