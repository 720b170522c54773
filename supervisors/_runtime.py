"""`Runtime`: the facade users hold.

It starts the control actors on a loop, exposes `tell`/`ask` (thread-safe),
`stats`, `dead_letters`, `redeliver`, `wait_idle` and `stop`, and can run its
loop on a background thread for code that is not async.

What happens when, for `async with Runtime(Bot) as rt:`:

1. `start()` (on the running loop): the durable store is opened if there is
   one, then the outcome book, the core (router), the registry actor and the
   supervisor actor are created (supervisors/_assembly.py); with a store, its
   dead letters are restored and its pending messages replayed, before anything
   new is accepted (supervisors/durable/_journaling.py).
2. `rt.tell(key, msg)` on the loop thread goes straight to the router; from
   another thread it is validated and its room reserved at the call site,
   then handed to the loop through the batched ingress.
3. Leaving the block calls `stop(drain=True)`: no new messages are accepted
   (but handlers' own), what waits is handled until `timeout`, the rest is
   dropped("shutdown"), handlers still in flight are cancelled (their
   messages end `Interrupted` with reason "shutdown"), `on_stop("shutdown")`
   runs for every live actor, and a `ShutdownSummary` is returned within
   `timeout + SHUTDOWN_GRACE` (supervisors/_shutdown.py).
4. If the loop ends without `stop()` (`asyncio.run` returned), asyncio
   cancels the runtime's watch task, and the runtime settles every message
   it holds before the loop goes (`_abort`); the same if the loop ends while
   a stop is still under way.

There is one stop per runtime, shared by every `stop()` call: each call gets a
future of its own (`StopFuture`), resolved from that one stop, so a caller that
gives up its wait (a cancelled task, `asyncio.wait_for`) cancels only its wait.
A handler may call `stop()` (an admin `/shutdown`), but not wait for it there.

`_observers.py` names `Runtime` in its types: a deliberate circle of two modules.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any, Self, final

from actors._clock import LoopClock
from actors._errors import AlreadyStarted, RuntimeStopped
from actors._future import LoopFuture
from actors._logging import check_level, library_logger
from supervisors._assembly import assemble
from supervisors._background import LoopThread
from supervisors._checks import check_flag
from supervisors._core import CLOSING, DRAINING, _Core
from supervisors._ingress import Ingress
from supervisors._introspection import Introspection
from supervisors._messaging import not_started
from supervisors._observers import Observer, check_observers, close_observers, open_observers
from supervisors._options import RuntimeOptions
from supervisors._policy import Directive, RestartPolicy
from supervisors._shutdown import ShutdownSummary, StopFuture, abort, shutdown
from supervisors.cluster._node import ClusterNode
from supervisors.cluster._options import check_cluster
from supervisors.cluster._port import ClusterPort
from supervisors.durable._store import check_store, open_store

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Sequence
    from types import TracebackType

    from actors._clock import Clock
    from actors._knobs import Rate
    from actors._outcomes import DeadLetter
    from actors._user_actor import UserActor
    from actors.journal._codec import Codec
    from actors.journal._seam import Journal
    from supervisors.cluster._options import RedisCluster
    from supervisors.durable._journaling import Durable

__all__ = ["Runtime", "ShutdownSummary"]


def _stop_on_escalate(_: BaseException) -> Directive:
    return Directive.STOP


@final
class Runtime(Introspection):
    """Per-user mailbox actors on one asyncio loop.

    Args:
        actor_factory: a `UserActor` subclass or any callable `key -> UserActor`.
        max_pending: waiting messages per key; past it `tell`/`ask` raise `MailboxFull`.
        max_total_pending: optional bound on waiting messages across all keys.
        idle_timeout: seconds an actor may sit idle before it stops (None: never).
        max_active: optional cap on live actors; the least recently used idle ones stop first.
        restart: the `RestartPolicy` (restart budget, backoff, retries, handler timeout).
        on_escalate: the root supervisor's decider for escalated failures (default: stop the key).
        dead_letter_limit: how many dead letters `dead_letters()` retains.
        on_dead_letter: called with every new `DeadLetter` (on the loop thread).
        clock: where time comes from (default: the loop's); tests pass `actors.testing.FakeClock`.
        log_level: the level of the library's structlog events; default: the application's
            structlog configuration, or WARNING if structlog is not configured.
        max_workers: threads for `blocking = True` handlers (default: the executor's default).
        batch: messages one actor handles before yielding the loop to others.
        store: a durable store: an `actors.Journal` (e.g. `SQLiteJournal(path, sync="full")`)
            or the path of an SQLite journal, opened at `start()`. Accepted messages are
            journaled, replayed after a restart, and actor snapshots and dead letters
            kept in it (README, "Durability"). The runtime closes it when it stops.
        max_deliveries: with a store, a message whose handler started this many times
            without an outcome (the process died running it each time: a message that
            kills its process) is dead-lettered ("poison") at the next start, not run again.
        codec: the `actors.Codec` that encodes messages and snapshots for the store (and
            the cluster), with the application's types registered (default: plain values).
        cluster: a `RedisCluster`: this runtime is one node of several on Redis (README,
            "Scaling out"); every message goes through the key's shard stream.
        slow_handler: seconds after which a handler still running is logged (WARNING
            `handler_slow`, once per message) and shown first in `stats()["running_by_key"]`;
            `None` turns the log off. No effect with a `handler_timeout` that is not longer.
        busy: what a normal message that arrives while its key's handler runs does:
            `"queue"` (one turn each, in order), `"collect"` (the next turn gets all that
            waited as one `Batch`), `"interrupt"` (the running turn is cut short, the
            newest runs, older waiting ones end `Dropped("superseded")`), `"reject"`
            (`tell`/`ask` raise `KeyBusy`). A class's `busy` attribute overrides it.
        overflow: a full mailbox (`max_pending`): `"reject"` (`MailboxFull`),
            `"drop_oldest"` or `"drop_newest"` (the dropped message ends
            `Dropped("overflow")`, never a priority one to make room for a normal one).
        rate: a per-key `Rate` (token bucket) for normal messages' turns: a limited key's
            next turn waits, no other key does. `min_interval`: seconds between two turns
            of a key. A class's `rate` / `min_interval` attributes override them.
        limits: named shared `Rate`s, for platform-wide limits: `await ctx.limit(name)`.
        dedup_window, dedup_max: how long (seconds) and how many handled `msg_id`s are
            remembered; a message whose id is remembered is a duplicate, not accepted.
        observe: observers of the running runtime (`supervisors.observe`: `Metrics`,
            `Tracing`, `AdminServer`; or the application's own `Observer`s), opened at
            `start()` before anything else and closed once the runtime has stopped.
    """

    def __init__(
        self,
        actor_factory: Callable[[str | int], UserActor],
        *,
        max_pending: int = 10_000,
        max_total_pending: int | None = None,
        idle_timeout: float | None = 300.0,
        max_active: int | None = None,
        restart: RestartPolicy | None = None,
        on_escalate: Callable[[BaseException], Directive] | None = None,
        dead_letter_limit: int = 10_000,
        on_dead_letter: Callable[[DeadLetter], None] | None = None,
        clock: Clock | None = None,
        log_level: int | str | None = None,
        max_workers: int | None = None,
        batch: int = 64,
        max_deliveries: int = 5,
        store: Journal | str | os.PathLike[str] | None = None,
        codec: Codec | None = None,
        cluster: RedisCluster | None = None,
        slow_handler: float | None = 60.0,
        busy: str = "queue",
        overflow: str = "reject",
        rate: Rate | None = None,
        min_interval: float | None = None,
        limits: dict[str, Rate] | None = None,
        dedup_window: float = 3600.0,
        dedup_max: int = 100_000,
        observe: Sequence[Observer] = (),
    ) -> None:
        self._options = RuntimeOptions(
            actor_factory,
            max_pending=max_pending,
            max_total_pending=max_total_pending,
            idle_timeout=idle_timeout,
            max_active=max_active,
            restart=restart,
            dead_letter_limit=dead_letter_limit,
            max_workers=max_workers,
            batch=batch,
            max_deliveries=max_deliveries,
            slow_handler=slow_handler,
            busy=busy,
            overflow=overflow,
            rate=rate,
            min_interval=min_interval,
            limits=limits,
            dedup_window=dedup_window,
            dedup_max=dedup_max,
        )
        self._policy = restart if restart is not None else RestartPolicy()
        self._on_escalate = on_escalate or _stop_on_escalate
        self._on_dead_letter = on_dead_letter
        self._clock = clock
        self._log_level = check_level(log_level)
        self._core: _Core | None = None
        self._accept: Callable[..., None] = not_started
        self._ingress: Ingress | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._state = "new"  # new -> running -> stopping -> stopped
        self._stop_future: LoopFuture[ShutdownSummary] | None = None  # the one shared stop
        self._stop_lock = threading.Lock()  # stop() may race from several threads
        self._thread: LoopThread | None = None  # the `with` mode's
        self._done: asyncio.Event | None = None
        self._watch: asyncio.Task[None] | None = None
        self._store, self._codec = check_store(store, codec)
        self._durable: Durable | None = None
        self._cluster = check_cluster(cluster, store)
        self._node: ClusterNode | None = None
        self._port: ClusterPort | None = None
        self._observers = check_observers(observe)

    def __repr__(self) -> str:
        return f"<Runtime {self._state}>"

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> Self:
        """Start on the running loop.

        Raises:
            AlreadyStarted: this runtime was started before (it runs, or it has
                stopped: a runtime starts once).
        """
        self._check_new()
        loop = asyncio.get_running_loop()
        clock = self._clock if self._clock is not None else LoopClock(loop)
        log = library_logger(self._log_level)
        # Before all else, so that an observer that cannot start (its port is taken)
        # leaves nothing started.
        await open_observers(self._observers, self, log)
        try:
            return await self._start(loop, clock, log)
        except BaseException:
            await close_observers(self._observers, log)
            raise

    async def _start(self, loop: asyncio.AbstractEventLoop, clock: Clock, log: Any) -> Self:
        # First, so that a journal that cannot be opened (or a Redis that cannot be
        # reached) leaves nothing started.
        durable = (
            None
            if self._store is None
            else open_store(self._store, self._codec, loop, log, self._options.max_deliveries)
        )
        node = None
        if self._cluster is not None:
            node = ClusterNode(self._cluster, self._codec, loop, log)
            await node.connect()
        core = assemble(
            loop,
            clock,
            log,
            self._options,
            self._policy,
            self._on_escalate,
            self._on_dead_letter,
            durable,
        )
        outcomes = core.outcomes
        core.context_tell = self._context_tell
        core.ending = self._loop_ending
        self._durable = durable
        self._ingress = Ingress(loop, core, core.notify)
        core.ingress_size = self._ingress.__len__
        self._core = core
        self._accept = core.accept
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._done = asyncio.Event()
        for observer in self._observers:
            observer.attached(self)
        if node is not None:
            self._join(node, core)
        if durable is not None:
            # Before anything new is accepted: a key's replayed messages come first.
            for letter in durable.restore_dead_letters(self._options.dead_letter_limit):
                outcomes.retain(letter)
            durable.replay(core)
        self._state = "running"
        # Notices a loop that ends without stop() (asyncio.run returned): asyncio then
        # cancels every task, this one included, and the runtime settles what it holds.
        self._watch = loop.create_task(self._watch_loop(), name="inorder-watch")
        opts = self._options
        log.info("runtime_started", max_pending=opts.max_pending, idle_timeout=opts.idle_timeout)
        return self

    def _check_new(self) -> None:
        state = self._state
        if state == "new":
            return
        if state == "running":
            msg = "this runtime is already running: a runtime starts once"
        else:
            msg = (
                f"this runtime is {state}: a runtime starts once; create a new Runtime to run again"
            )
        raise AlreadyStarted(msg)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def stop(self, *, drain: bool = True, timeout: float = 10.0) -> LoopFuture[ShutdownSummary]:
        """Stop the runtime; returns a future of the `ShutdownSummary`.

        Await it on the loop, or `.get(timeout=...)` it from another thread. The
        summary arrives within `timeout` plus `SHUTDOWN_GRACE` (1 s) seconds.
        With `drain=False`, waiting messages are dropped at once.

        Idempotent: the first call begins the one stop, later calls' options
        are ignored, and every call's future gets the same summary. Each call
        has a future of its own: a caller that stops waiting (its task
        cancelled, `asyncio.wait_for` timing out) cancels only its own wait;
        the stop goes on, and a later `stop()` waits for it again.

        A handler may call it (an admin `/shutdown`): the stop begins, and the
        handler's own turn is part of the drain. It must not wait for it there:
        the stop waits for that very handler, so `await rt.stop()` in a handler
        or hook of this runtime (or `.get()` in a blocking one) raises
        `StopFromHandler` at once. Hand the future to a task of its own if
        something must happen after the stop.
        """
        check_flag("drain", drain)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0:
            msg = f"timeout must be a number of seconds >= 0, got {timeout!r}"
            raise ValueError(msg)
        if self._state == "new":
            msg = "this runtime was never started"
            raise RuntimeStopped(msg)
        loop: asyncio.AbstractEventLoop = self._loop  # type: ignore[assignment]
        on_loop = threading.get_ident() == self._loop_thread
        with self._stop_lock:
            shared = self._stop_future
            first = shared is None
            if shared is None:
                shared = self._stop_future = LoopFuture(loop)
        if first:
            if on_loop:
                self._begin_stop(shared, drain, timeout)
            else:
                try:
                    loop.call_soon_threadsafe(self._begin_stop, shared, drain, timeout)
                except RuntimeError:  # the loop closed without cancelling our watch
                    self._abort()
        if shared.done():
            return shared  # resolved: nothing left to wait for, nor to cancel
        mine = StopFuture(loop, self._core)

        def relay(stopped: LoopFuture[ShutdownSummary]) -> None:
            try:
                summary = stopped.get()
            except BaseException as exc:
                mine.set_exception(exc)
            else:
                mine.set(summary)

        if on_loop:
            shared.add_done_callback(relay)
        else:
            try:
                loop.call_soon_threadsafe(shared.add_done_callback, relay)
            except RuntimeError:  # the loop closed: settled here (or already)
                self._abort()
                return shared
        return mine

    def _begin_stop(self, future: LoopFuture[ShutdownSummary], drain: bool, timeout: float) -> None:
        if self._state != "running":
            return  # the loop ended first (see _abort), which resolved the future
        self._state = "stopping"
        core: _Core = self._core  # type: ignore[assignment]
        core.accepting = False
        core.phase = DRAINING if drain else CLOSING
        # A task of its own: no caller's cancellation reaches it.
        task = core.loop.create_task(self._shutdown(drain, timeout), name="inorder-stop")
        task.add_done_callback(lambda t: self._stop_done(future, t))

    def _stop_done(self, future: LoopFuture[ShutdownSummary], task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            # Cancelled before it even ran (else `_shutdown` settled it already): the
            # loop is going; settle at once, so the waiters get a summary.
            self._abort()
        _resolve(future, task)

    def _join(self, node: ClusterNode, core: _Core) -> None:
        """Cluster mode: run this node, and send every message through Redis."""
        node.dead_letter_limit = self._options.dead_letter_limit
        if node.config.role == "node":
            core.tracker = core.outcomes.journal = node
        node.run(core if node.config.role == "node" else None)
        self._node = node
        self._port = ClusterPort(node, self._codec, core.loop, core.tracer)
        self._accept = self._port.accept

    async def _shutdown(self, drain: bool, timeout: float) -> ShutdownSummary:
        core: _Core = self._core  # type: ignore[assignment]
        ingress: Ingress = self._ingress  # type: ignore[assignment]
        started = time.monotonic()
        try:
            if self._node is not None:  # hand the shards off first: drained, nothing redelivered
                self._port.open = False  # type: ignore[union-attr]
                await self._node.stop(timeout if drain else 0.0)
                timeout = max(0.0, timeout - (time.monotonic() - started))
            return await shutdown(core, ingress, drain=drain, timeout=timeout, started=started)
        except asyncio.CancelledError:
            # The loop is being torn down under the stop (asyncio.run returning, every task
            # cancelled): settle everything at once, as for a loop that ends without stop(),
            # so the callers' futures get a summary rather than this cancellation.
            self._abort()
            raise
        finally:
            if self._durable is not None:
                self._durable.close()  # commits what is queued: at most a few milliseconds
            self._state = "stopped"
            await close_observers(self._observers, core.log)
            self._done.set()  # type: ignore[union-attr]

    async def _stopped(self) -> None:
        await self._done.wait()  # type: ignore[union-attr]

    async def _watch_loop(self) -> None:
        try:
            await self._done.wait()  # type: ignore[union-attr]
        except asyncio.CancelledError:
            self._abort()
            raise

    def _loop_ending(self) -> bool:
        """A cell's task was cancelled from outside: is the whole loop going (see _watch_loop)?"""
        watch = self._watch
        if watch is None or not (watch.done() or watch.cancelling()):
            return False
        self._abort()
        return True

    def _abort(self) -> None:
        """The loop ended without `stop()`: settle everything at once, refuse what follows."""
        core = self._core
        if core is None or self._state == "stopped":
            return
        self._state = "stopped"
        summary = abort(core, self._ingress)  # type: ignore[arg-type]
        if self._durable is not None:
            self._durable.close()
        with self._stop_lock:
            if self._stop_future is None:
                self._stop_future = LoopFuture(self._loop)
        self._stop_future.set(summary)
        if self._done is not None:
            self._done.set()

    # -- background-thread mode (supervisors/_background.py) -----------------------------

    def __enter__(self) -> Self:
        """Run the runtime's loop on a background thread (for code that is not async)."""
        self._check_new()  # AlreadyStarted, before a thread is started for nothing
        self._thread = LoopThread(self.start, self._stopped, lambda: self.stop().get())
        self._thread.enter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop (draining), and leave without waiting for handlers the stop abandoned."""
        if self._thread is not None:
            self._thread.leave()


def _resolve(future: LoopFuture[ShutdownSummary], task: asyncio.Task[ShutdownSummary]) -> None:
    if task.cancelled():
        future.set_exception(asyncio.CancelledError())
    elif task.exception() is not None:
        future.set_exception(task.exception())
    else:
        future.set(task.result())
