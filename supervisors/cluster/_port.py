"""How the `Runtime` facade sends in cluster mode: every message goes through Redis.

With `cluster=`, `tell`, `ask`, `send` and a handler's `ctx.tell` do not
enqueue locally: they are checked and encoded at the call site (G9: a bad
argument or an unencodable message raises there, nothing is sent), then the
node's outbox writes them to the key's shard stream, and whichever node owns
the shard runs them (this one included). An ask carries this node's reply
list and a correlation id; its reply comes back through Redis. With tracing on,
the trace context of the call site goes with it, as text in the entry's `t` field
(beside the envelope, so that a node that does not know the field ignores it).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from threading import get_ident
from typing import TYPE_CHECKING, Any

from actors._errors import CodecError, RuntimeStopped
from supervisors._checks import check_call

if TYPE_CHECKING:
    from actors._future import LoopFuture
    from actors._outcomes import TraceHook
    from actors.journal._codec import Codec
    from supervisors.cluster._node import ClusterNode

__all__ = ["ClusterPort", "check_msg_id"]

_MSG_ID_MAX = 200


def check_msg_id(msg_id: Any) -> None:
    """Raise unless `msg_id` is None or a non-empty str of at most 200 characters."""
    if msg_id is None:
        return
    if not isinstance(msg_id, str):
        msg = f"msg_id must be a str or None, got {type(msg_id).__name__}"
        raise TypeError(msg)
    if not 0 < len(msg_id) <= _MSG_ID_MAX:
        msg = f"msg_id must be 1 to {_MSG_ID_MAX} characters, got {len(msg_id)}"
        raise ValueError(msg)


class ClusterPort:
    """The facade's sending side in cluster mode (any thread; the node runs on the loop)."""

    __slots__ = (
        "_codec",
        "_loop",
        "_loop_thread",
        "_max_payload",
        "_node",
        "ask_timeout",
        "open",
        "tracer",
    )

    def __init__(
        self,
        node: ClusterNode,
        codec: Codec,
        loop: asyncio.AbstractEventLoop,
        tracer: TraceHook | None = None,
    ) -> None:
        self._node = node
        self.tracer = tracer  # with tracing on: the runtime's (observers attach first)
        self._codec = codec
        self._loop = loop
        self._loop_thread = get_ident()
        self.ask_timeout = node.config.ask_timeout
        self._max_payload = node.config.max_payload
        self.open = True

    def _encode(
        self,
        key: Any,
        message: Any,
        priority: Any,
        interrupt: Any,
        clear: Any,
        ttl: Any,
        msg_id: Any,
        ask: bool,
    ) -> tuple[bytes, int, str | None]:
        if not self.open:
            msg = "the runtime is stopping or stopped: it accepts no more messages"
            raise RuntimeStopped(msg)
        check_call(key, priority, interrupt, clear, ttl)
        check_msg_id(msg_id)
        now = time.time()
        deadline = None if ttl is None else now + ttl
        if ask:  # the owner drops a request nobody waits for any more
            deadline = min(deadline or now + self.ask_timeout, now + self.ask_timeout)
        data = self._codec.encode_envelope(
            key, message, priority=priority, accepted_at=now, msg_id=msg_id, expires_at=deadline
        )
        if len(data) > self._max_payload:
            msg = (
                f"message too large for the cluster: {len(data)} bytes encoded, "
                f"max_payload is {self._max_payload}"
            )
            raise CodecError(msg)
        tracer = self.tracer  # the call site's trace context, taken here (any thread)
        trace = None if tracer is None else tracer.wire(tracer.capture())
        return data, (1 if interrupt else 0) | (2 if clear else 0), trace

    def accept(
        self,
        key: Any,
        message: Any,
        priority: Any,
        interrupt: Any,
        clear: Any,
        reply_to: LoopFuture[Any] | None,
        ttl: Any = None,
        msg_id: Any = None,
        waiter: asyncio.Future[None] | None = None,
    ) -> None:
        """`tell`/`ask` on the loop thread (the facade's `_accept` in cluster mode)."""
        data, flags, trace = self._encode(
            key, message, priority, interrupt, clear, ttl, msg_id, reply_to is not None
        )
        reply = None if reply_to is None else (reply_to, uuid.uuid4().hex)
        self._node.enqueue(key, data, priority, flags, reply, msg_id, waiter, trace)

    def submit(
        self,
        key: Any,
        message: Any,
        priority: Any,
        interrupt: Any,
        clear: Any,
        reply_to: LoopFuture[Any] | None,
        ttl: Any = None,
        msg_id: Any = None,
    ) -> None:
        """The same from any thread: checked and encoded here, queued on the loop."""
        if get_ident() == self._loop_thread:
            self.accept(key, message, priority, interrupt, clear, reply_to, ttl, msg_id)
            return
        data, flags, trace = self._encode(
            key, message, priority, interrupt, clear, ttl, msg_id, reply_to is not None
        )
        reply = None if reply_to is None else (reply_to, uuid.uuid4().hex)
        try:
            self._loop.call_soon_threadsafe(
                self._node.enqueue, key, data, priority, flags, reply, msg_id, None, trace
            )
        except RuntimeError as exc:
            msg = "the runtime has stopped: it accepts no messages"
            raise RuntimeStopped(msg) from exc

    async def send(
        self,
        key: Any,
        message: Any,
        priority: Any,
        interrupt: Any,
        clear: Any,
        ttl: Any,
        msg_id: Any,
    ) -> None:
        """`send`: returns once Redis has the message (its XADD was acknowledged)."""
        if get_ident() == self._loop_thread:
            waiter: asyncio.Future[None] = self._loop.create_future()
            self.accept(key, message, priority, interrupt, clear, None, ttl, msg_id, waiter)
            await waiter
            return
        data, flags, trace = self._encode(
            key, message, priority, interrupt, clear, ttl, msg_id, False
        )
        done = asyncio.get_running_loop().create_future()
        caller = asyncio.get_running_loop()

        def queue() -> None:
            inner: asyncio.Future[None] = self._loop.create_future()
            inner.add_done_callback(lambda f: caller.call_soon_threadsafe(_copy, f, done))
            self._node.enqueue(key, data, priority, flags, None, msg_id, inner, trace)

        self._loop.call_soon_threadsafe(queue)
        await done


def _copy(source: asyncio.Future[None], target: asyncio.Future[None]) -> None:
    if target.done():
        return
    if source.exception() is not None:
        target.set_exception(source.exception())  # type: ignore[arg-type]
    else:
        target.set_result(None)
