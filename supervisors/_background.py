"""Background-thread mode: `with Runtime(Bot) as rt:` for code that is not async.

What happens when:

1. `enter` starts a daemon thread that runs `asyncio.run`, starts the
   runtime on that loop and waits there until the runtime has stopped; it
   returns once the runtime runs (or re-raises why it could not start).
2. Calls from the caller's thread go through the runtime's thread-safe paths
   (the ingress for `tell`/`ask`, the loop for `stats`).
3. `leave` stops the runtime (draining, within `timeout + SHUTDOWN_GRACE`)
   and waits for the loop thread to finish, but never longer than the grace:
   a handler the stop abandoned (one that swallows every cancellation, a
   blocking one stuck in a call) must not hold the caller. Such a thread is
   left behind; the daemon loop thread does not keep the process alive.

Whatever ends the loop, the runtime settles what it holds before it goes
(`Runtime._abort`), so `leave` finds a summary either way. A handler may call
`rt.stop()` (not wait for it): the loop thread then ends once the stop is done,
and `leave` finds its summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING

from supervisors._shutdown import SHUTDOWN_GRACE

if TYPE_CHECKING:
    from supervisors._runtime import Runtime

__all__ = ["enter", "leave"]


def enter(runtime: Runtime) -> None:
    """Start `runtime` on a loop of its own, in a background thread."""
    runtime._check_new()  # AlreadyStarted, before a thread is started for nothing
    ready = threading.Event()
    thread = threading.Thread(
        target=_serve, args=(runtime, ready), name="inorder-loop", daemon=True
    )
    runtime._thread = thread
    thread.start()
    ready.wait()
    if runtime._thread_error is not None:
        raise runtime._thread_error


def leave(runtime: Runtime) -> None:
    """Stop `runtime` and let its loop thread go, without waiting for abandoned handlers."""
    runtime.stop().get()
    thread = runtime._thread
    if thread is not None:
        # asyncio.run waits for every task at exit, an abandoned one too: not us.
        thread.join(SHUTDOWN_GRACE)


def _serve(runtime: Runtime, ready: threading.Event) -> None:
    async def main() -> None:
        try:
            await runtime.start()
        except BaseException as exc:
            runtime._thread_error = exc
            raise
        finally:
            ready.set()
        await runtime._done.wait()  # type: ignore[union-attr]

    # A start failure is re-raised by `enter` from _thread_error; anything else that
    # ends the loop was settled by the runtime's watch (Runtime._abort).
    with contextlib.suppress(BaseException):
        asyncio.run(main())
