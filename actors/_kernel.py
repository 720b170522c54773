"""The kernel: pykka actors whose receive loop is a callback on an asyncio loop.

pykka ships one runtime, `ThreadingActor`, which gives every actor a thread.
`LoopActor` is a second runtime built on pykka's documented extension points:

* `_create_actor_inbox()` returns a `LoopInbox`, a deque drained by a callback
  scheduled on the loop (once per batch, not once per message);
* `_create_future()` returns a `LoopFuture`, awaitable on the loop and
  blockable (`get(timeout=...)`) from other threads;
* `_start_actor_loop()` binds the inbox to the running loop.

The runtime's control actors (registry, supervisor) are `LoopActor`s; their
`on_receive` is synchronous and short, so a whole batch of messages is handled
in one loop callback. `LoopActor.spawn()` starts one without pykka's global
`ActorRegistry` (a list scanned linearly, shared by the whole process).
User actors are different: their inbox is the key's priority `Mailbox` and
their receive loop is a task driven by the key's `Cell`.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Self

import pykka
import structlog
from pykka import messages
from pykka._envelope import Envelope as _Envelope

from actors._future import LoopFuture

if TYPE_CHECKING:
    from pykka._actor import ActorInbox
    from pykka._envelope import Envelope

__all__ = ["LoopActor", "LoopInbox"]

_log = structlog.get_logger("inorder")


class LoopInbox:
    """A pykka inbox whose consumer is a callback on an asyncio loop.

    `put` is thread-safe: from the loop thread it appends and schedules the
    drain once; from any other thread it hands the envelope to the loop.
    """

    __slots__ = ("_consumer", "_loop", "_queue", "_scheduled", "_thread")

    def __init__(self) -> None:
        self._queue: deque[Envelope[Any]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer: Any = None
        self._scheduled = False
        self._thread = 0

    def bind(self, loop: asyncio.AbstractEventLoop, consumer: Any) -> None:
        """Attach the inbox to its loop and to the callback that drains it."""
        self._loop = loop
        self._consumer = consumer
        self._thread = threading.get_ident()
        if self._queue:
            self._schedule()

    def put(self, envelope: Envelope[Any], /) -> None:
        loop = self._loop
        reply_to = envelope.reply_to
        if isinstance(reply_to, LoopFuture) and reply_to._loop is None:
            reply_to._loop = loop
        if loop is None or threading.get_ident() == self._thread:
            self._queue.append(envelope)
            if loop is not None and not self._scheduled:
                self._schedule()
        else:
            loop.call_soon_threadsafe(self.put, envelope)

    def put_local(self, envelope: Envelope[Any]) -> None:
        """`put` for callers known to be on the loop thread (the runtime itself)."""
        self._queue.append(envelope)
        if not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        self._scheduled = True
        self._loop.call_soon(self._consumer)  # type: ignore[union-attr]

    def get(self) -> Envelope[Any]:
        return self._queue.popleft()

    def empty(self) -> bool:
        return not self._queue

    def __len__(self) -> int:
        return len(self._queue)


class LoopActor(pykka.Actor):
    """A pykka actor that runs on an asyncio loop instead of a thread of its own.

    What happens when:

    1. `spawn(*args)` (on the loop thread) builds the actor: pykka's
       `__init__` gives it an URN, a `LoopInbox` and an `ActorRef`.
    2. `_start_actor_loop()` binds the inbox to the running loop and calls
       `on_start()` at once.
    3. Each `ref.tell()`/`ref.ask()` appends to the inbox; one loop callback
       then handles every queued message in order with pykka's
       `_handle_receive` (plain messages go to `on_receive`, proxy calls work).
    4. An exception from a told message, whatever its class, is logged at
       ERROR and the actor carries on with the rest of the batch (the control
       actors' state changes are atomic per message); an asked message's
       exception goes to its future.
    5. `ref.stop()` runs `on_stop()`; messages still queued then fail with
       `pykka.ActorDeadError`.
    """

    @staticmethod
    def _create_actor_inbox() -> ActorInbox:
        return LoopInbox()

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return LoopFuture()

    @classmethod
    def spawn(cls, *args: Any, **kwargs: Any) -> pykka.ActorRef[Self]:
        """Start the actor on the running loop, outside pykka's global registry."""
        obj = cls(*args, **kwargs)
        obj._start_actor_loop()
        return obj.actor_ref

    def post(self, message: Any) -> None:
        """Tell this actor `message` from the loop thread: `actor_ref.tell` minus its checks."""
        self.actor_inbox.put_local(_Envelope(message))  # type: ignore[attr-defined]

    def _start_actor_loop(self) -> None:
        inbox: LoopInbox = self.actor_inbox  # type: ignore[assignment]
        inbox.bind(asyncio.get_running_loop(), self._process_inbox)
        self.on_start()

    def _process_inbox(self) -> None:
        inbox: LoopInbox = self.actor_inbox  # type: ignore[assignment]
        inbox._scheduled = False
        while inbox._queue and not self.actor_stopped.is_set():
            envelope = inbox.get()
            try:
                response = self._handle_receive(envelope.message)
            except BaseException as exc:  # one message's failure must not strand the batch
                if envelope.reply_to is not None:
                    envelope.reply_to.set_exception(exc)  # type: ignore[arg-type]
                else:
                    _log.error(
                        "control_actor_failed",
                        actor=type(self).__name__,
                        error=repr(exc),
                        exc_info=exc,
                    )
            else:
                if envelope.reply_to is not None:
                    envelope.reply_to.set(response)
        if self.actor_stopped.is_set():
            self._fail_queued()

    def _fail_queued(self) -> None:
        inbox: LoopInbox = self.actor_inbox  # type: ignore[assignment]
        while not inbox.empty():
            envelope = inbox.get()
            if envelope.reply_to is None:
                continue
            if isinstance(envelope.message, messages._ActorStop):
                envelope.reply_to.set(None)
            else:
                envelope.reply_to.set_exception(
                    pykka.ActorDeadError(f"{self} stopped before handling the message")  # type: ignore[arg-type]
                )

    def _stop(self) -> None:
        self.actor_stopped.set()
        try:
            self.on_stop()
        except BaseException as exc:
            _log.error(
                "control_actor_failed", actor=type(self).__name__, error=repr(exc), exc_info=exc
            )
