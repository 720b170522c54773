"""The ``pykka-thread`` peer: one pykka ``ThreadingActor`` (one thread) per user.

This is what pykka offers out of the box, and what inorder replaces: every
actor owns an OS thread, so it is only run at sizes up to 1,000 users. The
handler is the plain-function twin of the scenario's async handler. ``ask``
bridges the reply to the event loop with ``call_soon_threadsafe``, which is
what an asyncio application has to do with a thread actor.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pykka

from benchmarks._peers import Handler, Key, Peer, SyncHandler, _fail, _resolve


class _UserThreadActor(pykka.ThreadingActor):
    """Runs the sync handler for one user, one message at a time."""

    def __init__(self, key: Key, handler: SyncHandler) -> None:
        super().__init__()
        self._key = key
        self._handler = handler

    def on_receive(self, message: Any) -> Any:
        payload, reply = message
        try:
            result = self._handler(self._key, payload)
        except Exception as exc:
            if reply is not None:
                loop, fut = reply
                loop.call_soon_threadsafe(_fail, fut, exc)
            return None
        if reply is not None:
            loop, fut = reply
            loop.call_soon_threadsafe(_resolve, fut, result)
        return None


class PykkaThreadPeer(Peer):
    """A pykka ``ThreadingActor`` per user, started on its first message."""

    name = "pykka-thread"
    description = "pykka ThreadingActor (a thread) per user"
    capabilities = frozenset()
    max_users = 1_000

    def __init__(self, handler: Handler, **options: Any) -> None:
        super().__init__(handler, **options)
        if self._sync_handler is None:
            raise ValueError("the pykka peer needs a sync_handler")
        self._sync: SyncHandler = self._sync_handler
        self._refs: dict[Key, pykka.ActorRef[Any]] = {}

    def _ref(self, key: Key) -> pykka.ActorRef[Any]:
        ref = self._refs.get(key)
        if ref is None:
            ref = self._refs[key] = _UserThreadActor.start(key, self._sync)
        return ref

    def tell(self, key: Key, message: Any, *, priority: int = 0, interrupt: bool = False) -> None:
        self._ref(key).tell((message, None))

    def tell_threadsafe(self, key: Key, message: Any) -> None:
        """pykka's ``tell`` is thread-safe already (the actor must exist)."""
        self._refs[key].tell((message, None))

    def ask(
        self, key: Key, message: Any, *, priority: int = 0, interrupt: bool = False
    ) -> asyncio.Future[Any]:
        fut = self.loop.create_future()
        self._ref(key).tell((message, (self.loop, fut)))
        return fut

    def live(self) -> int:
        return len(self._refs)

    async def close(self) -> None:
        futures = [ref.stop(block=False) for ref in self._refs.values()]
        self._refs.clear()

        def join() -> None:
            for fut in futures:
                fut.get(timeout=30)

        await asyncio.to_thread(join)
