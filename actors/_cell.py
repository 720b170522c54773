"""The cell: the per-key state of the runtime, and what happens to a key over its life.

The registry maps each key to a `Cell`. The cell owns the key's `Mailbox`
(so waiting messages outlive incarnations, G5), the current `UserActor`
incarnation if any, and the message in flight (its `Turn`, actors/_turn.py). It
never decides anything about failures or lifetimes: it reports them to its `Host`
(actors/_host.py, which also draws the states a cell moves through) and does what
it is told.

A `resume()` or `stop()` asked for while a late handler still runs (one that
outlived its outcome: see `Cell`) waits for it: the cell never runs two things
of one key at once (G2), whatever a handler does with its cancellation.

A burst is one task (`actors._burst.drain`) that runs `on_start` if needed,
then drains the mailbox until it is empty, yielding to other cells every
`batch` messages (fairness, P5). An idle cell has no task at all, so an idle
user costs a few slots. The burst coroutine only awaits; what happens before
and after each handler is in plain methods (`Turn`'s), which is what lets these
modules be compiled (see `setup.py`).

`Cell`, `Turn` (actors/_turn.py), `Host` (actors/_host.py) and the burst
(actors/_burst.py) name each other, deliberately: they are one concept split
for the reader and the compiler. Every back reference is a type only (under
TYPE_CHECKING); at run time the imports go one way, to this module.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from typing import TYPE_CHECKING, Any

from actors._burst import drain, stop_async
from actors._gate import Gate
from actors._host import ACTIVATING, EMPTY, HELD, IDLE, RUNNING, STARTING, STOPPING, Host
from actors._knobs import INTERRUPT
from actors._turn import Turn
from actors._user_actor import Context

if TYPE_CHECKING:
    from actors._clock import TimerHandle
    from actors._mailbox import Envelope, Mailbox
    from actors._user_actor import UserActor

__all__ = ["Cell"]

_RESUME = "resume"  # a deferred `resume()` (any other deferred action is a stop reason)


class Cell(Turn):
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
        "_worker",
        "clear_mark",
        "idle_since",
        "policy_state",
        "restart_at",
        "restart_cancelled",
        "timer",
    )

    def __init__(self, key: str | int, host: Host) -> None:
        super().__init__(key, host, EMPTY)
        self.idle_since = 0.0
        self.policy_state: Any = None  # the supervisor's restart bookkeeping
        self.restart_at = 0.0  # when a restart in backoff is due
        self.restart_cancelled = False  # a failing on_stop("restart") escalated to STOP
        self.clear_mark = -1  # highest clear priority seen while a failure awaits its verdict
        self.timer: TimerHandle | None = None  # backoff or cool-down, owned by the supervisor
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
        if not self.plain:
            self._arrive(envelope)
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
        elif state is HELD and (envelope.priority or self._batch_full()):
            self._begin(RUNNING)  # `take` asks the gate again
        steer = self._steer
        if steer is not None:
            current = self.current
            if current is not None and envelope.priority <= current.priority and not steer.done():
                steer.set_result(None)

    def _arrive(self, envelope: Envelope) -> None:
        """A message for a class with a busy policy, a gate or a drop policy, before it waits."""
        knobs = self.knobs
        host = self.host
        if envelope.priority == 0:
            if knobs.busy is INTERRUPT:
                # The newest message is the one to run: the turn in flight is cut short and
                # what still waits is superseded by it.
                superseded = self.take_lane(0)
                host.pending -= len(superseded)
                for old in superseded:
                    host.outcomes.on_dropped(self.key, old, "superseded", old.attempt - 1)
                self.interrupt(1)
            if knobs.gated:
                gate = self.gate
                if gate is None:
                    gate = self.gate = Gate(knobs, host.now())
                if knobs.debounce is not None:
                    gate.arrived(host.now())
        elif (
            self.gate is not None
            and knobs.debounce is not None
            and knobs.debounce.flush_on_priority
        ):
            self.gate.flush()

    def _batch_full(self) -> bool:
        debounce = self.knobs.debounce
        return (
            debounce is not None
            and debounce.max_batch is not None
            and self._size >= debounce.max_batch
        )

    def _open_gate(self) -> None:
        """A gated class's first incarnation of the key (a factory's class is known only
        now): what waits already counts, as if the gate had seen it arrive."""
        gate = self.gate = Gate(self.knobs, self.host.now())
        if self.knobs.debounce is not None:
            self._reopen_window(gate)

    def release(self) -> None:
        """The host's wake-up for a held key: its gate's time has come (the gate decides)."""
        if self.state is HELD:
            self._begin(RUNNING)

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
        knobs = self.knobs = self.host.knobs_for(type(actor))
        self.plain = knobs.plain
        if knobs.gated and self.gate is None:
            self._open_gate()
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
            self._traced("interrupted", None)
            self.host.outcomes.on_interrupted(self.key, envelope, "shutdown")
        return envelope

    # -- the burst's task ------------------------------------------------------------

    def _begin(self, state: str) -> None:
        self.state = state
        task = self.host.loop.create_task(drain(self, state is STARTING))
        self.task = task
        self.host.task_started(self, task)

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
        self.payload = None  # the last Batch: not kept alive by an idle key
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
