"""`UserActor`, the class users subclass, and `Context`, what a handler receives.

A user actor is a pykka actor (same hook names and meanings: `on_start`,
`on_stop`, `on_failure`) whose receive loop is not a thread but a task on the
runtime's asyncio loop, driven by the key's `Cell` (see `actors/_cell.py`).
The runtime creates it with `factory(key)`; the constructor must be cheap,
since a chat backend activates thousands of these per second.

What happens when, for one incarnation:

1. `factory(key)` builds the instance (`__init__`).
2. `on_start()` runs on the loop (awaited if async) before any message.
3. `on_message(message, ctx)` runs once per message, one at a time, in
   mailbox order. Its return value is the ask result.
4. When the incarnation ends (idle, restart, stop, shutdown),
   `on_stop(reason)` runs once. See `supervisors` for the reasons.
5. If the class defines `snapshot()`, it is called right after `on_stop`,
   and the next incarnation of the key gets the state through `restore(state)`
   between `__init__` and `on_start` (kept in memory, or in the runtime's
   durable store, where it also survives a process restart).
"""

from __future__ import annotations

import asyncio
import inspect
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, Protocol, TypeAlias, cast

import pykka
import structlog

from actors._errors import RetryAfter
from actors._future import LoopFuture
from actors._knobs import (
    check_busy,
    check_debounce,
    check_interval,
    check_overflow,
    check_rate,
)
from actors._mailbox import Mailbox

if TYPE_CHECKING:
    from collections.abc import Callable

    from pykka._actor import ActorInbox

    from actors._batch import Item
    from actors._knobs import Debounce, Rate

__all__ = ["Context", "UserActor"]

HANDLER_SYNC = 0
HANDLER_ASYNC = 1
HANDLER_BLOCKING = 2

# What `decider = staticmethod(fn)` (or a plain function) in a subclass body is.
_DeciderAttr: TypeAlias = "Callable[[BaseException], Any] | staticmethod[[BaseException], Any]"

_START_BY_RUNTIME = (
    "user actors are started by a Runtime on their key's first message; "
    "use Runtime(ActorClass).tell(key, message)"
)


class _StoppedFlag:
    """The cheap stand-in for pykka's `actor_stopped` `threading.Event`."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True


if TYPE_CHECKING:
    # For type checkers a UserActor is a plain class: pykka.Actor types on_start() and
    # on_stop() as plain methods without a reason, so every `async def on_start` or
    # `on_stop(self, reason)` in user code would be flagged as a bad override.
    _ActorBase = object
else:
    _ActorBase = pykka.Actor


class UserActor(_ActorBase):
    """Base class of the per-user actors: subclass it and implement `on_message`.

    Class attributes tune the runtime's treatment of the subclass:

    * `blocking = True` runs a plain-`def` `on_message` in the runtime's thread
      pool instead of on the loop (still one message at a time per key);
      interrupts then set `ctx.interrupted`, which the handler should check.
    * `decider`: maps a failure to a directive for this class (overrides the
      runtime's `RestartPolicy.decider`).
    * `busy`, `overflow`, `rate`, `min_interval`, `debounce`: this class's own
      busy policy, overflow policy, per-key rate limit, spacing between turns and
      debounce window (`None`: the runtime's). See `Runtime` and the README.
      Checked when the class is defined.
    """

    blocking: ClassVar[bool] = False
    decider: ClassVar[_DeciderAttr | None] = None
    busy: ClassVar[str | None] = None
    overflow: ClassVar[str | None] = None
    rate: ClassVar[Rate | None] = None
    min_interval: ClassVar[float | None] = None
    debounce: ClassVar[Debounce | None] = None
    _handler_mode: ClassVar[int] = HANDLER_SYNC
    _async_start: ClassVar[bool] = False
    _async_stop: ClassVar[bool] = False
    _snapshots: ClassVar[bool] = False

    key: str | int
    """The user key this actor serves (`"telegram:42"`)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Decided once per class, not per message.
        if inspect.iscoroutinefunction(cls.on_message):
            cls._handler_mode = HANDLER_ASYNC
        elif cls.blocking:
            cls._handler_mode = HANDLER_BLOCKING
        else:
            cls._handler_mode = HANDLER_SYNC
        cls._async_start = inspect.iscoroutinefunction(cls.on_start)
        cls._async_stop = inspect.iscoroutinefunction(cls.on_stop)
        cls._snapshots = cls.snapshot is not UserActor.snapshot
        where = f"{cls.__name__}."
        if cls.busy is not None:
            check_busy(cls.busy, where + "busy")
        if cls.overflow is not None:
            check_overflow(cls.overflow, where + "overflow")
        check_rate(cls.rate, where + "rate")
        check_interval(cls.min_interval, where + "min_interval")
        check_debounce(cls.debounce, where + "debounce")

    def __init__(self, key: str | int) -> None:
        # pykka.Actor.__init__ is deliberately not called: it creates a UUID, a
        # threading.Event and an ActorRef per actor, which activation (P3) and
        # memory per idle actor (P4) cannot afford. The same fields are
        # provided lazily below.
        self.key = key

    # -- the hooks ------------------------------------------------------------

    def on_message(self, message: Any, ctx: Context) -> Any:
        """Handle one message; the return value is the ask result. Override this.

        May be `async def` (runs on the loop; an interrupt cancels it at its next
        `await`) or a plain `def` (runs on the loop, or in the thread pool when
        the class sets `blocking = True`). An exception is a failure of the
        message, handled by the supervisor's policy.
        """
        msg = f"{type(self).__name__} must implement on_message(message, ctx)"
        raise NotImplementedError(msg)

    def on_start(self) -> Any:
        """Run before the first message of this incarnation. May be async.

        An exception here is a failure, handled by the supervisor's policy.
        """

    def on_stop(self, reason: str) -> Any:
        """Run once when this incarnation ends. May be async.

        `reason` is `"idle"`, `"restart"`, `"stopped"`, `"gave_up"` or
        `"shutdown"`. An exception here is logged and reported to the policy,
        and never prevents the incarnation from ending.
        """

    def snapshot(self) -> Any:
        """Return the state to keep when this incarnation ends, or None to keep none.

        Override it (with `restore`) to make a conversation's state outlive its
        incarnation. It is called once, right after `on_stop(reason)`, whenever an
        incarnation ends: idle (or evicted by `max_active`), restart after a
        failure, stop, shutdown. The state is kept per key: in memory, or, with a
        durable store, encoded by the runtime's codec and saved in the journal, so
        it also survives a process restart. Returning None forgets the kept state
        (the next incarnation starts clean). If it raises, or the state cannot be
        encoded, the error is logged (`snapshot_failed`) and the state kept
        before stays. Never called if the class does not override it, and not
        called for an incarnation whose handler never returned (a process killed,
        a handler abandoned by the shutdown): the last state kept stands.
        """
        return None

    def restore(self, state: Any) -> None:
        """Take back the state the key's last incarnation returned from `snapshot()`.

        Called on a new incarnation after `__init__` and before `on_start`, only
        when a state is kept for the key. An exception here is a failure of the
        key (phase "restore"), handled by the supervisor's policy like one of
        `on_start`.
        """

    # -- the pykka runtime seam ------------------------------------------------

    @staticmethod
    def _create_actor_inbox() -> ActorInbox:
        # Duck-typed: pykka reads only `message` and `reply_to` of what `get` returns.
        return cast("ActorInbox", Mailbox())

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return LoopFuture()

    def _start_actor_loop(self) -> None:
        raise TypeError(_START_BY_RUNTIME)

    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> Any:
        """Not for user actors: a `Runtime` starts them on their key's first message."""
        raise TypeError(_START_BY_RUNTIME)

    @property
    def actor_urn(self) -> str:
        return f"urn:inorder:{type(self).__name__}:{self.key}"

    @property
    def actor_stopped(self) -> _StoppedFlag:
        flag: _StoppedFlag | None = self.__dict__.get("_actor_stopped")
        if flag is None:
            flag = self.__dict__["_actor_stopped"] = _StoppedFlag()
        return flag

    def __str__(self) -> str:
        return f"{type(self).__name__} ({self.key!r})"


class _Holder(Protocol):
    """The cell, as its context sees it."""

    key: str | int
    current: Any
    host: Any  # has `tell(key, message, **options)`

    def take_new(self) -> list[Item]: ...

    def take_one(self) -> Item | None: ...


class Context:
    """What a handler receives besides the message.

    One context serves every message of an incarnation; its per-message
    fields (`priority`, `attempt`, `interrupted`) describe the message being
    handled, so read them during the call, not later.
    """

    __slots__ = ("_cell", "_log", "interrupted", "key")

    def __init__(self, cell: _Holder) -> None:
        # Three objects per live actor (cell, actor, context): no bound method kept here,
        # `tell` finds the runtime through the cell when it is called.
        self._cell = cell
        self.key: str | int = cell.key
        """The user key."""
        self.interrupted = False
        """True once an interrupting message (or a timeout, or a shutdown) asks the
        handler to stop. Async handlers are cancelled anyway; blocking ones should check it."""
        self._log: Any = None

    @property
    def priority(self) -> int:
        """The priority of the message being handled."""
        current = self._cell.current
        return current.priority if current is not None else 0

    @property
    def attempt(self) -> int:
        """1 on the first run of this message, 2 on its first retry, ...

        With a durable store, the runs recorded before a restart count too: a
        replayed message whose handler had started once before is at attempt 2.
        """
        current = self._cell.current
        return current.attempt if current is not None else 1

    @property
    def redelivered(self) -> bool:
        """True if the message was replayed from the durable store after a restart.

        Its handler may then have run before, partly or fully, in the process that
        stopped (at-least-once delivery): check an idempotency key before repeating
        an effect. False for every message accepted by this process.
        """
        current = self._cell.current
        return current.redelivered if current is not None else False

    @property
    def message_id(self) -> str | None:
        """Cluster mode: the message's `msg_id` as sent (None if it was sent without one)."""
        return self._about()[0]

    @property
    def epoch(self) -> int | None:
        """Cluster mode: the fencing epoch of this node's lease on the key's shard.

        It increases with every change of owner: an external system can refuse a write
        stamped with an epoch older than the last it saw (a paused node's late write).
        None in one process.
        """
        return self._about()[1]

    def _about(self) -> tuple[str | None, int | None]:
        current = self._cell.current
        if current is None or not current.seq:
            return None, None
        describe = getattr(getattr(self._cell.host, "tracker", None), "describe", None)
        return describe(current.seq) if describe is not None else (None, None)

    @property
    def log(self) -> Any:
        """A structlog logger bound to `key` (created on first use)."""
        if self._log is None:
            self._log = structlog.get_logger("inorder.user").bind(key=self.key)
        return self._log

    def tell(
        self,
        key: str | int,
        message: Any,
        *,
        priority: int = 0,
        interrupt: bool = False,
        clear: bool = False,
        ttl: float | None = None,
    ) -> None:
        """Send a message to another user (or this one), like `Runtime.tell`.

        While the runtime stops, a handler is never refused: during the drain
        its message is accepted and drained; after it, accepted and dropped
        ("shutdown").
        """
        self._cell.host.tell(
            key, message, priority=priority, interrupt=interrupt, clear=clear, ttl=ttl
        )

    # -- steering, rate limits, Retry-After -----------------------------------------

    def take_new(self) -> list[Item]:
        """Steering: take the key's messages that arrived since this turn started.

        Returns the waiting messages of priority <= this turn's, oldest first (an
        empty list if none), and removes them from the mailbox: they are this
        turn's now, and get their outcome with it (handled when it returns, an
        ask of one resolving with the handler's result; failed or interrupted
        with it; with a durable store or a cluster, acknowledged with it, and
        replayed with it after a crash). A retried turn gets back, first, what it
        had taken before. Callable from a blocking handler's thread too.
        """
        cell = self._cell
        loop = cell.host.loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return cell.take_new()
        # A blocking handler's thread: the mailbox is the loop's.
        done: Future[list[Item]] = Future()

        def take() -> None:
            try:
                done.set_result(cell.take_new())
            except BaseException as exc:  # handed to the thread that asked
                done.set_exception(exc)

        loop.call_soon_threadsafe(take)
        return done.result()

    async def next_message(self, timeout: float | None = None) -> Item | None:
        """Steering: wait for the key's next message (of priority <= this turn's) and take it.

        Returns at once if one waits, else when one arrives, or None after
        `timeout` seconds (of the runtime's clock; `None`: no limit). The message
        taken rides with this turn, like `take_new()`'s. For async handlers.
        """
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0
        ):
            msg = f"timeout must be a number of seconds >= 0 or None, got {timeout!r}"
            raise ValueError(msg)
        cell: Any = self._cell
        item: Item | None = cell.take_one()
        if item is not None or timeout == 0 or cell.current is None:
            return item
        host = cell.host
        wake = host.loop.create_future()
        timer = None
        if timeout is not None:
            timer = host.clock.call_at(host.now() + timeout, _wake, wake)
        cell._steer = wake
        try:
            await wake
        finally:
            cell._steer = None
            if timer is not None:
                timer.cancel()
        return cell.take_one()  # type: ignore[no-any-return]

    def retry_after(self, seconds: float) -> NoReturn:
        """Raise `RetryAfter(seconds)`: this message runs again after `seconds`."""
        raise RetryAfter(seconds)

    async def limit(self, name: str) -> None:
        """Wait for a token of the runtime's shared limiter `name` (`Runtime(limits=...)`).

        Waiters are served in arrival order, across every key. Raises `KeyError`
        (at the call) for a name the runtime was not given.
        """
        await self._cell.host.pacing.limiter(name).acquire()

    def now(self) -> float:
        """The runtime's clock (what `Item.accepted_at` and timeouts are measured on)."""
        return self._cell.host.now()  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<Context key={self.key!r} priority={self.priority} attempt={self.attempt}>"


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
