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

import inspect
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeAlias, cast

import pykka
import structlog

from actors._future import LoopFuture
from actors._mailbox import Mailbox

if TYPE_CHECKING:
    from collections.abc import Callable

    from pykka._actor import ActorInbox

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
    """

    blocking: ClassVar[bool] = False
    decider: ClassVar[_DeciderAttr | None] = None
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

    def __repr__(self) -> str:
        return f"<Context key={self.key!r} priority={self.priority} attempt={self.attempt}>"
