"""The runtime under test, ``inorder``, behind the same interface as the peers.

The scenario's handler becomes the ``on_message`` of a ``UserActor``
subclass; everything else is the public API (``Runtime.tell``, ``ask``,
``stats``, ``stop``). The runtime is imported lazily so that the harness and
the peers work, and report ``n/a``, while the runtime cannot be imported.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable
from typing import Any

from benchmarks._peers import IDLE, INTERRUPT, PRIORITY, Handler, Key, Peer

#: Large enough that no benchmark meets the per-key bound (P5 queues 100k).
MAX_PENDING = 1_000_000


@functools.cache
def import_error() -> str | None:
    """Why the runtime cannot be imported, or None if it can."""
    try:
        import actors
        import supervisors

        actors.UserActor  # noqa: B018 - the names the harness needs
        supervisors.Runtime  # noqa: B018
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


class InorderPeer(Peer):
    """``supervisors.Runtime`` with a ``UserActor`` that calls the handler.

    ``idle_timeout`` is passed through (``None`` disables idle shutdown);
    ``runtime_options`` may add any other ``Runtime`` keyword argument.
    """

    name = "inorder"
    description = "inorder Runtime (pykka actors on one asyncio loop)"
    capabilities = frozenset({PRIORITY, INTERRUPT, IDLE})

    def __init__(
        self,
        handler: Handler,
        *,
        runtime_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(handler, **options)
        self._options: dict[str, Any] = {"max_pending": MAX_PENDING}
        self._options.update(runtime_options or {})
        self._rt: Any = None

    @classmethod
    def missing(cls, *needs: str, users: int | None = None) -> str | None:
        if import_error() is not None:  # the detail is in the JSON's meta
            return "n/a (runtime not importable)"
        return super().missing(*needs, users=users)

    async def start(self) -> None:
        await super().start()
        from actors import UserActor
        from supervisors import Runtime

        handler = self._handler

        class BenchActor(UserActor):
            """Hands every message to the scenario's handler."""

            async def on_message(self, message: Any, ctx: Any) -> Any:
                return await handler(self.key, message)

        self._rt = Runtime(BenchActor, idle_timeout=self._idle, **self._options)
        await self._rt.__aenter__()
        # The scenarios call what a user calls: Runtime.tell and Runtime.ask, not a
        # wrapper (the peers' tell and ask *are* their implementations). The
        # signatures are the same, with Runtime's `clear` on top.
        self.tell = self._rt.tell  # type: ignore[method-assign]
        self.ask = self._rt.ask  # type: ignore[method-assign]
        self.tell_threadsafe = self._rt.tell  # type: ignore[method-assign]

    @property
    def runtime(self) -> Any:
        """The ``Runtime`` instance (for ``stats()``)."""
        return self._rt

    def tell(self, key: Key, message: Any, *, priority: int = 0, interrupt: bool = False) -> None:
        """``Runtime.tell`` (replaced by it once started)."""
        self._rt.tell(key, message, priority=priority, interrupt=interrupt)

    def ask(
        self, key: Key, message: Any, *, priority: int = 0, interrupt: bool = False
    ) -> Awaitable[Any]:
        """``Runtime.ask`` (replaced by it once started)."""
        return self._rt.ask(key, message, priority=priority, interrupt=interrupt)  # type: ignore[no-any-return]

    def tell_threadsafe(self, key: Key, message: Any) -> None:
        """``Runtime.tell`` is thread-safe; it batches the hand-off to the loop."""
        self._rt.tell(key, message)

    def live(self) -> int:
        return int(self._rt.stats()["live_actors"])

    async def close(self) -> None:
        if self._rt is None:
            return
        try:
            await self._rt.stop(drain=False, timeout=10.0)
        finally:
            await self._rt.__aexit__(None, None, None)
            self._rt = None
