"""`LoopFuture`: a pykka `Future` that lives on an asyncio loop.

pykka's own `Future.__await__` blocks the loop until the value arrives, and its
`ThreadingFuture` allocates a `threading.Condition` per future. This future
keeps its state in three slots that only the loop thread writes, so:

* `await future` on the loop returns at once when the value is already there,
  and otherwise parks on an `asyncio.Future` created only then;
* `future.get(timeout=...)` from any other thread waits on a
  `threading.Event` created only then (pykka's blocking interface);
* `future.get()` on the loop thread raises `BlockingOnLoop` instead of
  deadlocking the loop that must produce the value;
* `future.cancel()` withdraws an ask whose handler has not started (the
  message ends `Dropped("withdrawn")`), and so does cancelling a task that
  awaits the future (`asyncio.wait_for(rt.ask(...), 5)` giving up).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import pykka
from pykka._future import _Unset

from actors._errors import BlockingOnLoop, FutureTimeout

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from pykka._types import OptExcInfo

__all__ = ["LoopFuture"]

T = TypeVar("T")

_PENDING = 0
_RESULT = 1
_EXCEPTION = 2


class LoopFuture(pykka.Future[T], Generic[T]):
    """The result of an `ask`, awaitable on the loop and blockable from other threads.

    Resolution (`set`, `set_exception`, `set_outcome`) must happen on the
    loop thread; every actor of the runtime runs there, so it always does.
    """

    __slots__ = ("_cell", "_loop", "_state", "_value")

    # pykka's combinators (map, filter, join, reduce) create `self.__class__()`
    # and give it a get hook; class-level defaults keep that working without
    # paying for two attribute writes on every ask.
    _get_hook = None
    _get_hook_result: Any = _Unset()
    # Rarely needed: set on the instance only when someone waits (three stores less per ask).
    _waiter: asyncio.Future[None] | None = None
    _event: threading.Event | None = None
    _callbacks: list[Callable[[LoopFuture[Any]], None]] | None = None

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        # pykka.Future.__init__ is deliberately not called: see _get_hook above.
        self._loop = loop
        self._state = _PENDING
        self._value: Any = None
        self._cell: Any = None  # the key's cell, once an ask is accepted (see cancel)

    def __repr__(self) -> str:
        state = ("pending", "result", "exception")[self._state]
        return f"<LoopFuture {state}>"

    # -- resolution (loop thread) ------------------------------------------

    def done(self) -> bool:
        """Return whether the value (or exception) is set."""
        return self._state != _PENDING

    def set(self, value: Any = None) -> None:
        """Set the value. A second resolution is ignored: the first outcome wins."""
        if self._state == _PENDING:
            self._value = value
            self._state = _RESULT
            self._wake()

    def set_exception(self, exc_info: OptExcInfo | BaseException | None = None) -> None:
        """Set an exception (an instance, or an `exc_info` triple as pykka passes)."""
        if self._state != _PENDING:
            return
        if exc_info is None:
            exc_info = sys.exc_info()
        exc = exc_info if isinstance(exc_info, BaseException) else exc_info[1]
        if exc is None:
            msg = "set_exception() needs an exception"
            raise ValueError(msg)
        self._value = exc
        self._state = _EXCEPTION
        self._wake()

    def add_done_callback(self, callback: Callable[[LoopFuture[Any]], None]) -> None:
        """Call `callback(self)` on the loop thread once the future is resolved."""
        if self._state != _PENDING:
            callback(self)
        elif self._callbacks is None:
            self._callbacks = [callback]
        else:
            self._callbacks.append(callback)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        if self._event is not None:
            self._event.set()
        if self._callbacks is not None:
            callbacks, self._callbacks = self._callbacks, None
            for callback in callbacks:
                try:
                    callback(self)
                except BaseException as exc:  # the caller's code must not derail the runtime
                    _report(self._loop, "LoopFuture done callback failed", exc)

    def cancel(self) -> bool:
        """Withdraw the ask: True if its message had not started; it ends `Dropped("withdrawn")`.

        False if the handler already started it, or it already has its outcome
        (then interrupt it with a higher-priority `interrupt=True` message).
        Thread-safe: from another thread it waits for the loop's answer.
        """
        cell = self._cell
        if self._state != _PENDING or cell is None:
            return False
        loop = self._loop
        if loop is None or _on_loop_thread(loop):
            return bool(cell.withdraw(self))
        answer: list[bool] = []
        done = threading.Event()

        def withdraw() -> None:
            try:
                answer.append(bool(cell.withdraw(self)))
            finally:
                done.set()

        try:
            loop.call_soon_threadsafe(withdraw)
        except RuntimeError:  # the loop has closed
            return False
        done.wait(5.0)
        return bool(answer and answer[0])

    def cancelled(self) -> bool:
        """Whether the ask was withdrawn (its outcome is `Dropped("withdrawn")`)."""
        value = self._value
        return self._state == _EXCEPTION and getattr(value, "reason", None) == "withdrawn"

    # -- consumption ---------------------------------------------------------

    def _outcome(self) -> T:
        if self._state == _EXCEPTION:
            raise cast("BaseException", self._value)
        return cast("T", self._value)

    def __await__(self) -> Generator[Any, None, T]:
        if self._state == _PENDING:
            try:
                yield from self._wait_on_running_loop().__await__()
            except asyncio.CancelledError:
                # The awaiting task gave up (wait_for, a timeout scope, a cancelled task):
                # the message need not run any more if it has not started.
                if self._cell is not None and self._state == _PENDING:
                    self._withdraw_soon()
                raise
        return self._outcome()

    def _withdraw_soon(self) -> None:
        loop = self._loop
        if loop is None or _on_loop_thread(loop):
            self._cell.withdraw(self)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._cell.withdraw, self)

    __iter__ = __await__

    def _wait_on_running_loop(self) -> asyncio.Future[None]:
        running = asyncio.get_running_loop()
        if running is self._loop or self._loop is None:
            if self._waiter is None:
                self._waiter = running.create_future()
            return self._waiter
        # Awaited on another loop (a runtime on a background thread): bridge.
        bridge: asyncio.Future[None] = running.create_future()

        def resolve(_: LoopFuture[T]) -> None:
            running.call_soon_threadsafe(_set_if_pending, bridge)

        self._loop.call_soon_threadsafe(self.add_done_callback, resolve)
        return bridge

    def get(self, *, timeout: float | None = None) -> T:
        """Block the calling thread until the value arrives, as pykka's `Future.get`.

        Raises:
            FutureTimeout: if `timeout` seconds pass first (a `TimeoutError`, and a
                `pykka.Timeout`).
            BlockingOnLoop: if called on the loop thread while still pending.
            Exception: the outcome, if it is an exception.
        """
        if self._get_hook is not None:
            return cast("T", pykka.Future.get(self, timeout=timeout))
        if self._state == _PENDING:
            self._block(timeout)
        return self._outcome()

    def _block(self, timeout: float | None) -> None:
        loop = self._loop
        if loop is not None and _on_loop_thread(loop):
            msg = (
                "Future.get() called on the event loop thread, which would deadlock: "
                "use `await future` there"
            )
            raise BlockingOnLoop(msg)
        if self._event is None:
            event = threading.Event()
            if loop is None or loop.is_closed():
                self._event = event
            else:
                # Attach on the loop thread so resolution and attachment never race.
                loop.call_soon_threadsafe(self._attach_event, event)
        else:
            event = self._event
        if not event.wait(timeout) and self._state == _PENDING:
            msg = f"no value within {timeout} seconds"
            raise FutureTimeout(msg)

    def _attach_event(self, event: threading.Event) -> None:
        self._event = event
        if self._state != _PENDING:
            event.set()


def _set_if_pending(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _report(loop: asyncio.AbstractEventLoop | None, message: str, exc: BaseException) -> None:
    context = {"message": message, "exception": exc}
    if loop is not None and not loop.is_closed():
        loop.call_exception_handler(context)
    else:
        asyncio.get_event_loop_policy().get_event_loop().call_exception_handler(context)


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
