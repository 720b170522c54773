"""The turn: one message in flight on a key, from the mailbox to its outcome.

A burst (`actors._burst.drain`, the coroutine that awaits handlers) asks the cell
for the next message (`take`), awaits the handler, and reports what happened:
it returned (`finish`), raised (`failed`), or saw `CancelledError` (`cancelled`).
These steps, and what cuts a handler short, are the `Turn` part of a cell:

* **take**: the message leaves the mailbox only if it may run here (a tracked
  message is checked with the host first: a cluster node that lost the shard
  leaves it to the new owner); its `handler_timeout` timer is armed.
* **finish**: the outcome is settled (handled, the ask's reply set, the journal
  acknowledged), unless the turn was cut short: then it ends `Interrupted` or,
  for a timeout, fails with `HandlerTimeout`.
* **cut short**: an interrupt (`interrupt`, a higher priority with
  `interrupt=True`), the timeout (`_timed_out`) or the shutdown (`Cell.cancel`)
  sets `ctx.interrupted` and cancels an async handler. A cancellation nobody in
  the runtime asked for is the handler's own failure (G7).
* **late**: a handler that ignores its timeout gets its outcome at the timeout
  and runs on as `late`; still running `OVERRUN_GRACE` seconds later it is
  reported (`handler_overran`). The cell lets nothing else of the key run until
  it returns (G2).
* **traced** (tracing on): `take` begins the run's span, the step that settles
  the run ends it (`_traced`). Off: one `is None` check in `take`, one in `finish`.

Everything here is a plain method (no coroutine), which is what lets it be
compiled (setup.py). `Cell` (actors/_cell.py) adds the key's lifecycle.

It names `Cell` as a type only (the host is told about the cell): a deliberate
back reference, explained in actors/_cell.py.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

from actors._batch import Batch, Item
from actors._burst import END, FINISH, RERAISE
from actors._errors import HandlerTimeout, RetryAfter
from actors._gate import EPSILON, Gate
from actors._host import HELD, IDLE, OVERRUN_GRACE, RUNNING, SUSPENDED
from actors._knobs import COLLECT
from actors._mailbox import Mailbox
from actors._user_actor import HANDLER_ASYNC

if TYPE_CHECKING:
    from actors._cell import Cell
    from actors._clock import TimerHandle
    from actors._host import Host
    from actors._knobs import Knobs
    from actors._mailbox import Envelope
    from actors._outcomes import TraceHook
    from actors._user_actor import Context, UserActor

__all__ = ["Turn"]


class Turn(Mailbox):
    """The message in flight of a key's cell, and what cuts it short. Loop thread only.

    The base class of `Cell`: a cell is its key's mailbox, and its turn.
    """

    __slots__ = (
        "_cut",
        "_flagged",
        "_given",
        "_span",
        "_started",
        "_steer",
        "_timer",
        "_tracer",
        "actor",
        "ctx",
        "current",
        "gate",
        "host",
        "incarnation",
        "key",
        "knobs",
        "late",
        "payload",
        "plain",
        "state",
        "task",
    )

    def __init__(self, key: str | int, host: Host, state: str) -> None:
        super().__init__()
        self.key = key
        self.host = host
        self.state = state
        self.incarnation = 0  # which UserActor of the key this is (1 the first)
        self.actor: UserActor | None = None
        self.ctx: Context | None = None
        self.task: asyncio.Task[None] | None = None
        self.current: Envelope | None = None
        self.late: Envelope | None = None  # settled, but its handler still runs
        self._cut: str | None = None  # why the handler in flight is being cut short
        self._flagged = False  # ctx.interrupted was set for the handler in flight
        self._started = 0.0  # when the handler in flight started
        self._timer: TimerHandle | None = None  # its handler_timeout, then its overrun check
        # The class's busy, overflow, rate and debounce settings; `plain`: all off.
        self.knobs: Knobs = host.default_knobs
        self.plain: bool = self.knobs.plain
        self.gate: Gate | None = None  # when its next turn may start (actors/_gate.py)
        self.payload: Any = None  # what a batching class's handler gets: the turn's Batch
        self._given = 0  # how many of the turn's riders the handler has seen
        self._steer: Any = None  # the future a `ctx.next_message()` awaits
        self._tracer: TraceHook | None = host.outcomes.tracer  # tracing on (set before cells)
        self._span: Any = None  # then: the span of the handler run in flight

    # -- cutting the handler in flight short ------------------------------------

    def interrupt(self, priority: int) -> bool:
        """Cut short the handler in flight if its priority is below `priority`."""
        envelope = self.current
        if envelope is None or envelope.priority >= priority or self._cut is not None:
            return False
        self._cut = "interrupt"
        self._signal()
        return True

    # -- the burst's steps (actors._burst awaits; these decide) -------------------

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
        self.host.cell_failed(cast("Cell", self), "on_start", error, None)

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
        gate = self.gate
        if gate is not None and self._size and self._held(gate):
            return None
        envelope = self.pop()
        host = self.host
        if envelope is None:
            self.state = IDLE
            host.cell_idle(cast("Cell", self))
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
        if host.room_waiters:
            host.room_made(self)  # type: ignore[arg-type]
        if not self.plain or envelope.riders is not None:
            self._boarding(envelope)
        self.current = envelope
        started = self._started = host.now()
        tracer = self._tracer
        if tracer is not None:
            self._span = tracer.begin(self.key, envelope, started - envelope.accepted_at)
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
            if envelope.msg_id is not None or envelope.riders is not None:
                host.outcomes.settled(envelope, result)
            if host.trace:
                self._trace(envelope, started, ran)
            if self._span is not None:
                self._traced("handled", None)
            return True
        self._cut = None
        self._uncancel()
        if cut == "timeout":
            self._fail(envelope, HandlerTimeout(self.key, timeout))  # type: ignore[arg-type]
            return False
        self._traced("interrupted", None)
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
            self._traced("interrupted", None)
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
        if self._cut is None and isinstance(error, RetryAfter):
            self._retry_later(envelope, error.seconds)
            return True  # `take` holds the key
        self._fail(envelope, error)
        return False

    # -- batches, steering, gates ----------------------------------------------------

    def _boarding(self, envelope: Envelope) -> None:
        """A message of a batching or gated class (or one with riders) starts its turn."""
        knobs = self.knobs
        riders = envelope.riders
        if knobs.batches:
            priority = envelope.priority
            debounce = knobs.debounce
            if knobs.busy is COLLECT or (priority == 0 and debounce is not None):
                limit = None
                if priority == 0 and debounce is not None and debounce.max_batch is not None:
                    limit = debounce.max_batch - 1 - (len(riders) if riders else 0)
                more = self._board(self.take_lane(priority, limit)) if limit != 0 else []
                if more:
                    riders = envelope.riders = more if riders is None else riders + more
            items = [Item.of(envelope)]
            if riders:
                items.extend(Item.of(rider) for rider in riders)
            self.payload = Batch(items)
            self._given = len(riders) if riders else 0
        else:
            self._given = 0  # a retried turn's riders: its `take_new()` hands them back
        gate = self.gate
        if gate is not None and knobs.gated:
            gate.started(knobs, envelope.priority, self.host.now())
            if knobs.debounce is not None and envelope.priority == 0:
                self._reopen_window(gate)

    def _reopen_window(self, gate: Gate) -> None:
        """Normal messages still wait (past `max_batch`): their window opens from their
        own arrival, as if the gate had just seen them come."""
        head = self._head
        if head is not None:
            gate.first = head.accepted_at
            lane0 = self._lane0
            gate.latest = lane0[-1].accepted_at if lane0 else head.accepted_at

    def _board(self, envelopes: list[Envelope]) -> list[Envelope]:
        """Envelopes taken from the mailbox to ride with the turn: the ones that may run."""
        host = self.host
        host.pending -= len(envelopes)
        boarded = []
        for envelope in envelopes:
            if envelope.expiry is not None:
                envelope.expiry.cancel()
                envelope.expiry = None
            if envelope.seq and not host.journal_started(envelope):
                continue  # its shard is lost: the host settled it
            boarded.append(envelope)
        if envelopes and host.room_waiters:
            host.room_made(self)  # type: ignore[arg-type]
        return boarded

    def take_new(self) -> list[Item]:
        """`ctx.take_new()`: the key's messages (of priority <= the turn's) that came since
        the turn started, taken from the mailbox to ride with it."""
        envelope = self.current
        if envelope is None:
            return []
        fresh = self._board(self.take_below(envelope.priority + 1))
        riders = envelope.riders
        if riders is None:
            if not fresh:
                return []
            riders = envelope.riders = fresh
            self._given = 0
        else:
            riders.extend(fresh)
        given = self._given
        self._given = len(riders)
        return [Item.of(rider) for rider in riders[given:]]

    def take_one(self) -> Item | None:
        """`ctx.next_message()`'s step: the oldest message the turn may take, if one waits."""
        envelope = self.current
        if envelope is None:
            return None
        riders = envelope.riders
        if riders is not None and self._given < len(riders):
            self._given += 1
            return Item.of(riders[self._given - 1])
        while True:
            taken = self.pop_at_most(envelope.priority)
            if taken is None:
                return None
            boarded = self._board([taken])
            if boarded:
                break
        if riders is None:
            riders = envelope.riders = []
            self._given = 0
        riders.append(taken)
        self._given = len(riders)
        return Item.of(taken)

    def _held(self, gate: Gate) -> bool:
        """Must the next message wait for its gate? Then the key is held until it may."""
        host = self.host
        now = host.now()
        priority = self.next_priority()
        waiting = self._size if priority == 0 else 0
        wait = gate.due(self.knobs, priority, waiting, now, host.flushing)
        if wait <= EPSILON:
            return False
        self.state = HELD
        host.hold(cast("Cell", self), now + wait)
        return True

    def _retry_later(self, envelope: Envelope, seconds: float) -> None:
        """The handler raised `RetryAfter`: the same message (and its riders) runs again
        after `seconds`; the key waits for it."""
        host = self.host
        self._traced("retry_after", None)
        self.current = None
        self.put_front(envelope)
        host.pending += 1
        now = host.now()
        gate = self.gate
        if gate is None:
            gate = self.gate = Gate(self.knobs, now)
        gate.pause(seconds, envelope.priority, now)
        host.outcomes.retry_afters += 1
        if host.trace:
            host.log.debug("message_retry_after", key=self.key, seconds=seconds)

    # -- timeouts, late handlers ---------------------------------------------------

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

    def _traced(self, outcome: str, error: BaseException | None) -> None:
        """The handler run in flight ended with `outcome`: its span ends (tracing on)."""
        span = self._span
        if span is not None:
            self._span = None
            self._tracer.end(span, outcome, error)  # type: ignore[union-attr]

    def _fail(self, envelope: Envelope, error: BaseException) -> None:
        self._traced("failed", error)
        self.current = None
        self._cut = None
        self.state = SUSPENDED
        self.host.cell_failed(cast("Cell", self), "on_message", error, envelope)

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
            self._traced("interrupted", None)
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
