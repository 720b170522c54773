"""Background-thread mode: `with Runtime(Bot) as rt:` for code that is not async.

What happens when:

1. `LoopThread.enter` starts a daemon thread that runs `asyncio.run`, starts
   the runtime on that loop and waits there until the runtime has stopped; it
   returns once the runtime runs (or re-raises why it could not start).
2. Calls from the caller's thread go through the runtime's thread-safe paths
   (the ingress for `tell`/`ask`, the loop for `stats`).
3. `LoopThread.leave` stops the runtime (draining, within `timeout + SHUTDOWN_GRACE`)
   and waits for the loop thread to finish, but never longer than the grace:
   a handler the stop abandoned (one that swallows every cancellation, a
   blocking one stuck in a call) must not hold the caller. Such a thread is
   left behind; the daemon loop thread does not keep the process alive.

Whatever ends the loop, the runtime settles what it holds before it goes
(`Runtime._abort`), so `leave` finds a summary either way. A handler may call
`rt.stop()` (not wait for it): the loop thread then ends once the stop is done,
and `leave` finds its summary.

The runtime hands `LoopThread` the three calls it needs (start, wait until
stopped, stop): this module knows nothing else of `Runtime`, and imports nothing
of the facade it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING, final

from supervisors._shutdown import SHUTDOWN_GRACE

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["LoopThread"]


@final
class LoopThread:
    """A runtime's own loop, in a daemon thread: from `enter` to `leave`."""

    __slots__ = ("_error", "_start", "_stop", "_stopped", "_thread")

    def __init__(
        self,
        start: Callable[[], Awaitable[object]],
        stopped: Callable[[], Awaitable[None]],
        stop: Callable[[], object],
    ) -> None:
        self._start = start  # Runtime.start
        self._stopped = stopped  # returns once the runtime has stopped, however it did
        self._stop = stop  # Runtime.stop, then waits for its summary
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def enter(self) -> None:
        """Start the runtime on a loop of its own; re-raise why it could not start."""
        ready = threading.Event()
        thread = threading.Thread(
            target=self._serve, args=(ready,), name="inorder-loop", daemon=True
        )
        self._thread = thread
        thread.start()
        ready.wait()
        if self._error is not None:
            raise self._error

    def leave(self) -> None:
        """Stop the runtime and let its loop thread go, without waiting for abandoned handlers."""
        self._stop()
        thread = self._thread
        if thread is not None:
            # asyncio.run waits for every task at exit, an abandoned one too: not us.
            thread.join(SHUTDOWN_GRACE)

    def _serve(self, ready: threading.Event) -> None:
        async def main() -> None:
            try:
                await self._start()
            except BaseException as exc:
                self._error = exc
                raise
            finally:
                ready.set()
            await self._stopped()

        # A start failure is re-raised by `enter` from _error; anything else that
        # ends the loop was settled by the runtime's watch (Runtime._abort).
        with contextlib.suppress(BaseException):
            asyncio.run(main())
