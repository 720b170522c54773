"""How messages get into a runtime: `tell`, `ask`, `send`, and a handler's `ctx.tell`.

`Messaging` is the part of `Runtime` that takes messages (a mixin: the facade's
other parts: supervisors/_introspection.py, supervisors/_runtime.py). Which way a
message goes:

* on the loop thread, to the router at once (`_accept`: `_Core.accept`, which
  checks, encodes with a store, and enqueues);
* from another thread, checked (and encoded) at its call site, its room
  reserved, then handed to the loop in batches (`_submit`, supervisors/_ingress.py);
* in cluster mode, to Redis: `_accept` is then the cluster port's
  (supervisors/cluster/_port.py), and so is every other path.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from threading import get_ident
from typing import TYPE_CHECKING, Any, TypeVar

from actors._errors import MailboxFull, RuntimeStopped
from actors._future import LoopFuture
from supervisors._admission import check_busy_key
from supervisors._checks import check_call
from supervisors.cluster._port import check_msg_id

if TYPE_CHECKING:
    from collections.abc import Callable

    from supervisors._core import _Core
    from supervisors._ingress import Ingress
    from supervisors._pacing import Place
    from supervisors.cluster._port import ClusterPort
    from supervisors.durable._journaling import Durable

__all__ = ["Messaging", "not_started"]

T = TypeVar("T")


def not_started(*_: Any) -> None:
    msg = (
        "this runtime is not started: use `async with Runtime(...) as rt:` (or "
        "`await rt.start()`) on a running event loop, or `with Runtime(...) as rt:` "
        "to run it on a background thread"
    )
    raise RuntimeStopped(msg)


class Messaging:
    """`tell`, `ask`, `send`: the message-taking part of `Runtime`."""

    # Set by `Runtime` (see its __init__ and start()).
    _accept: Callable[..., None]
    _loop: asyncio.AbstractEventLoop | None
    _loop_thread: int
    _state: str
    _core: _Core | None
    _ingress: Ingress | None
    _durable: Durable | None
    _port: ClusterPort | None

    def tell(
        self,
        key: str | int,
        message: Any,
        *,
        priority: int = 0,
        interrupt: bool = False,
        clear: bool = False,
        ttl: float | None = None,
        msg_id: str | None = None,
    ) -> None:
        """Send `message` to `key`'s actor; returns once accepted. Thread-safe.

        `priority` (int >= 0, higher first) picks the lane; `interrupt=True`
        cancels the handler in flight if its priority is lower (else it has no
        effect); `clear=True` drops the waiting messages of lower priority;
        `ttl` (seconds) drops the message as `Dropped("expired")` if its handler
        has not started by then.

        Raises:
            InvalidKey, InvalidPriority, TypeError, ValueError: bad input (nothing
                is enqueued).
            MailboxFull: the key's mailbox (or the runtime-wide bound) is full,
                counting messages other threads have in transit.
            RuntimeStopped: the runtime is not running.

        `msg_id` (a str of 1 to 200 characters, e.g. the platform's update id)
        makes a duplicate a no-op: a message whose id is still waiting, running,
        or got its outcome within the dedup window is not accepted again (in
        every mode; see the README, "Deduplication").

        Raises `KeyBusy` (nothing enqueued) for a normal message to a busy key
        whose class says `busy="reject"`.
        """
        if msg_id is None and get_ident() == self._loop_thread:
            self._accept(key, message, priority, interrupt, clear, None, ttl)
        else:
            self._route(key, message, priority, interrupt, clear, None, ttl, msg_id)

    async def send(
        self,
        key: str | int,
        message: Any,
        *,
        priority: int = 0,
        interrupt: bool = False,
        clear: bool = False,
        ttl: float | None = None,
        msg_id: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Like `tell`, and return only once the message is durable (its batch committed).

        For a webhook that must not answer its platform before the update is
        safe. Without a store it returns once the message is accepted. Await it
        on any event loop, in any thread. Raises what `tell` raises, and
        `JournalError` if the journal could not commit it (the message may
        still be handled by this process, but will not survive it). In cluster mode it
        returns once Redis has the message.

        A full mailbox does not raise here (in one process): `send` waits for room,
        for a producer that prefers to slow down, and raises `MailboxFull` only if
        there is still none after `timeout` seconds (`None`: wait as long as it takes).
        """
        if self._port is not None:
            await self._port.send(key, message, priority, interrupt, clear, ttl, msg_id)
            return
        check_msg_id(msg_id)
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0
        ):
            msg = f"timeout must be a number of seconds >= 0 or None, got {timeout!r}"
            raise ValueError(msg)
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        # Senders waiting for a key's room form a line (core.pacing), and get in in the
        # order they came: a new send to a key with a line joins it rather than take a
        # place that comes free first, so that per-key order holds for concurrent sends
        # (a framework's handlers, one task per update). A priority message tries at
        # once, without queueing behind a line of normal ones (if it finds no room, it
        # joins the line's end). From another thread a send joins the line once it
        # found the mailbox full: sends from threads have no order between them to keep.
        core = self._core
        place: Place | None = None
        try:
            if (
                priority == 0
                and core is not None
                and get_ident() == self._loop_thread
                and core.pacing.in_line(key)
            ):
                place = core.pacing.join_line(key)
                await self._turn(place.turn, deadline, MailboxFull(key, core.max_pending))
            while True:
                try:
                    receipt = self._send_once(key, message, priority, interrupt, clear, ttl, msg_id)
                except MailboxFull as full:
                    if full.scope != "key" or core is None:
                        raise
                    if place is None:
                        place = await self._line(core.pacing.join_line, key)
                        turn = place.turn
                    else:
                        turn = await self._line(core.pacing.wait_turn, key, place)
                    await self._turn(turn, deadline, full)
                    continue
                if place is not None:  # in: the next one's turn, before the commit
                    self._leave(key, place)
                    place = None
                if receipt is not None:
                    await asyncio.wrap_future(receipt)
                return
        finally:
            if place is not None:  # gave up: out of the line
                self._leave(key, place)

    async def _line(self, act: Callable[..., T], *args: Any) -> T:
        """`act(*args)` on the loop thread (the line is the loop's), from any thread."""
        loop = self._loop
        if get_ident() == self._loop_thread or loop is None:
            return act(*args)
        done: Future[T] = Future()

        def run() -> None:
            try:
                done.set_result(act(*args))
            except BaseException as error:  # handed to the caller, not lost
                done.set_exception(error)

        loop.call_soon_threadsafe(run)
        return await asyncio.wrap_future(done)

    def _leave(self, key: Any, place: Place) -> None:
        core, loop = self._core, self._loop
        if core is None or loop is None:
            return
        if get_ident() == self._loop_thread:
            core.pacing.leave_line(key, place)
        else:
            loop.call_soon_threadsafe(core.pacing.leave_line, key, place)

    async def _turn(
        self, turn: asyncio.Future[None], deadline: float | None, full: MailboxFull
    ) -> None:
        """Wait for `turn` (a future of the loop's); past `deadline`, raise `full`."""
        remaining = None
        if deadline is not None:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise full
        if get_ident() == self._loop_thread:
            waited: asyncio.Future[None] = turn
        else:
            mine: Future[None] = Future()
            loop = self._loop
            assert loop is not None

            def relay(_: asyncio.Future[None]) -> None:
                if not mine.done():
                    mine.set_result(None)

            loop.call_soon_threadsafe(turn.add_done_callback, relay)
            waited = asyncio.wrap_future(mine)
        try:
            await asyncio.wait_for(asyncio.shield(waited), remaining)
        except TimeoutError:
            raise full from None

    def _send_once(
        self,
        key: Any,
        message: Any,
        priority: Any,
        interrupt: Any,
        clear: Any,
        ttl: Any,
        msg_id: Any,
    ) -> Future[None] | None:
        """Accept the message now (raising what `tell` raises); the receipt of its commit."""
        if get_ident() == self._loop_thread:
            self._accept(key, message, priority, interrupt, clear, None, ttl, msg_id)
            durable = self._durable
            return durable.receipt() if durable is not None else None
        receipt: Future[None] | None = Future() if self._durable is not None else None
        self._submit(key, message, priority, interrupt, clear, None, ttl, False, receipt, msg_id)
        return receipt

    def ask(
        self,
        key: str | int,
        message: Any,
        *,
        priority: int = 0,
        interrupt: bool = False,
        clear: bool = False,
        ttl: float | None = None,
        msg_id: str | None = None,
    ) -> LoopFuture[Any]:
        """Like `tell`, and return a future of the handler's result. Thread-safe.

        The future is awaitable on the loop and has pykka's blocking
        `get(timeout=...)` for other threads (past it: `FutureTimeout`). It
        raises the handler's exception (`HandlerCrashed` wrapping one that is
        not an `Exception`), `Interrupted`, or `Dropped` (with a `reason`).
        `future.cancel()`, or cancelling a task that awaits it, withdraws the
        message if its handler has not started (`Dropped("withdrawn")`).
        """
        future: LoopFuture[Any] = LoopFuture(self._loop)
        if msg_id is None and get_ident() == self._loop_thread:
            self._accept(key, message, priority, interrupt, clear, future, ttl)
        else:
            self._route(key, message, priority, interrupt, clear, future, ttl, msg_id)
        return future

    def _route(
        self,
        key: Any,
        message: Any,
        priority: Any,
        interrupt: Any,
        clear: Any,
        reply_to: Any,
        ttl: Any,
        msg_id: Any,
    ) -> None:
        """A call with a `msg_id`, or from another thread."""
        if self._port is not None:
            self._port.submit(key, message, priority, interrupt, clear, reply_to, ttl, msg_id)
            return
        check_msg_id(msg_id)
        if get_ident() == self._loop_thread:
            self._accept(key, message, priority, interrupt, clear, reply_to, ttl, msg_id)
        else:
            self._submit(
                key, message, priority, interrupt, clear, reply_to, ttl, False, None, msg_id
            )

    def _submit(
        self,
        key: Any,
        message: Any,
        priority: Any,
        interrupt: Any,
        clear: Any,
        reply_to: Any,
        ttl: Any,
        internal: bool,
        receipt: Future[None] | None = None,
        msg_id: str | None = None,
    ) -> None:
        """A call from another thread: validated (and encoded, with a store) here, room
        reserved, handed to the loop."""
        check_call(key, priority, interrupt, clear, ttl)
        ingress = self._ingress
        if ingress is None:
            not_started()
        core: _Core = self._core  # type: ignore[assignment]
        if core.pacing.rejecting:  # a racy read of the loop's cell, the best a thread can do
            check_busy_key(core.cells.get(key), priority)
        # A handler's own messages still go in while the runtime stops (see _Core.handler_tell).
        if self._state != "running" and not (internal and self._state == "stopping"):
            msg = f"the runtime is {self._state}: it accepts no messages"
            raise RuntimeStopped(msg)
        durable = self._durable
        record = None if durable is None else durable.encode(key, message, priority, ttl, msg_id)
        # Tracing on: the context is this thread's, so it is taken here, not on the loop.
        trace = None if core.tracer is None else core.tracer.capture()
        ingress.submit(  # type: ignore[union-attr]
            key,
            message,
            priority,
            interrupt,
            clear,
            reply_to,
            ttl,
            internal,
            record,
            receipt,
            msg_id,
            trace,
        )

    def _context_tell(
        self,
        key: Any,
        message: Any,
        *,
        priority: int = 0,
        interrupt: bool = False,
        clear: bool = False,
        ttl: float | None = None,
    ) -> None:
        """`Context.tell`: on the loop, or from a blocking handler's pool thread."""
        if self._port is not None:
            self._port.submit(key, message, priority, interrupt, clear, None, ttl)
            return
        if get_ident() == self._loop_thread:
            core: _Core = self._core  # type: ignore[assignment]
            core.handler_tell(key, message, priority, interrupt, clear, ttl)
        else:
            self._submit(key, message, priority, interrupt, clear, None, ttl, True)
