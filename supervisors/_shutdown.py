"""Clean shutdown (G10), step by step, and the settling of a loop that ended without one.

`shutdown`, for `stop(drain=..., timeout=T)`:

1. Whatever other threads handed over before the stop is accepted.
2. With `drain=True`, the runtime keeps working (restarts included) until
   nothing waits or `T` seconds have passed. Handlers may still send their
   own follow-ups (`ctx.tell`), which are drained too.
3. The supervisor stops creating incarnations; every waiting message is
   dropped("shutdown") (a handler's later `ctx.tell` is accepted and dropped
   the same way); handlers still running are cancelled, and their messages
   end `Interrupted("shutdown")`. A blocking handler cannot be cancelled: it
   sees `ctx.interrupted` and is waited for.
4. `on_stop("shutdown")` runs for every live actor (an idle stop already in
   progress finishes instead). An incarnation whose handler is still running
   gets its `on_stop` only once that handler has returned (G2).
5. The control actors, the ingress and the thread pool stop; the summary is
   returned.

Steps 3 and 4 share what is left of `T + SHUTDOWN_GRACE`, half of the grace
at least for each. A handler still running when its share runs out is
abandoned: its message ends `Interrupted("shutdown")` now (logged at ERROR),
and nothing waits for it any more. So `stop` returns within `T` plus the grace.

`abort` is the same settling, done at once and synchronously, for a loop that
is ending without `stop()` (an `asyncio.run` that returned).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

from actors._errors import StopFromHandler
from actors._future import LoopFuture
from actors._host import HELD, STOPPING
from supervisors._core import CLOSING, STOPPED
from supervisors._quiescence import wait_idle

if TYPE_CHECKING:
    from collections.abc import Generator

    from supervisors._core import _Core
    from supervisors._ingress import Ingress

__all__ = ["SHUTDOWN_GRACE", "ShutdownSummary", "StopFuture", "abort", "shutdown"]

#: Seconds `stop(timeout=T)` may take past `T`: for cancelled handlers and `on_stop` hooks.
SHUTDOWN_GRACE = 1.0


@final
@dataclass(frozen=True, slots=True)
class ShutdownSummary:
    """What `Runtime.stop` did, and the lifetime totals at the end."""

    drained: bool
    """True if everything that waited was handled before the timeout."""
    dropped_on_stop: int
    """Waiting messages dropped with reason "shutdown"."""
    interrupted_on_stop: int
    """Messages in flight whose handler was cancelled (or abandoned)."""
    actors_stopped: int
    """Live actors whose `on_stop("shutdown")` ran."""
    elapsed_s: float
    accepted: int
    handled: int
    failed: int
    interrupted: int
    dropped: int


@final
class StopFuture(LoopFuture[ShutdownSummary]):
    """One caller's wait for the shared stop: `Runtime.stop()` returns one per call.

    Each is resolved from the one shutdown, so a caller that gives up (a
    cancelled task, `asyncio.wait_for` timing out) cancels its own wait, never
    the shutdown nor anyone else's wait.

    Waiting for it (`await`, `get()`) inside a handler or hook of the same
    runtime raises `StopFromHandler` at once: the shutdown waits for that very
    handler to return, so the wait could only end when the shutdown gives up on
    the handler. `stop()` itself, without the wait, is fine there.
    """

    __slots__ = ("_core",)

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, core: Any = None) -> None:
        super().__init__(loop)
        self._core: _Core | None = core

    def __await__(self) -> Generator[Any, None, ShutdownSummary]:
        if not self.done():
            self._refuse_waiting_for_itself()
        return (yield from super().__await__())

    __iter__ = __await__

    def get(self, *, timeout: float | None = None) -> ShutdownSummary:
        if not self.done():
            self._refuse_waiting_for_itself()
        return super().get(timeout=timeout)

    def _refuse_waiting_for_itself(self) -> None:
        core = self._core
        if core is None:
            return
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no loop running in this thread
            task = None
        if (task is not None and task in core.tasks) or core.on_pool_thread():
            msg = (
                "a handler (or on_start/on_stop) cannot wait for its runtime's stop: the "
                "stop waits for that handler to return. Call rt.stop() without awaiting "
                "it (or .get()): the stop begins, and this handler's turn is part of it"
            )
            raise StopFromHandler(msg)


async def shutdown(
    core: _Core, ingress: Ingress, *, drain: bool, timeout: float, started: float
) -> ShutdownSummary:
    end = started + timeout + SHUTDOWN_GRACE
    ingress.drain()  # hand-overs that returned before the stop: accepted (or dropped)
    if drain:
        _flush_windows(core)
    drained = await _drain(core, timeout) if drain else core.pending == 0
    core.phase = CLOSING
    core.supervisor.close()
    interrupted_before = core.outcomes.interrupted
    dropped = _drop_everything(core)
    await _settle_tasks(core, max(end - SHUTDOWN_GRACE / 2, time.monotonic() + SHUTDOWN_GRACE / 2))
    stopped = 0
    for cell in list(core.cells.values()):
        if cell.actor is not None and cell.state is not STOPPING:
            core.supervisor.begin_stop(cell, "shutdown")
            stopped += cell.late is None  # else on_stop waits for its handler to return
    await _settle_tasks(core, max(end, time.monotonic() + SHUTDOWN_GRACE / 2))
    dropped += _drop_everything(core)  # anything a hook added meanwhile
    for item in ingress.close():
        core.accept_submission(item)  # the phase is CLOSING: dropped ("shutdown")
        dropped += 1
    _close(core, "the runtime has stopped: it accepts no messages")
    out = core.outcomes
    summary = ShutdownSummary(
        drained=drained,
        dropped_on_stop=dropped,
        interrupted_on_stop=out.interrupted - interrupted_before,
        actors_stopped=stopped,
        elapsed_s=time.monotonic() - started,
        accepted=core.accepted,
        handled=out.handled,
        failed=out.failed,
        interrupted=out.interrupted,
        dropped=out.dropped,
    )
    if dropped:
        core.log.warning("messages_dropped_on_stop", count=dropped, drained=drained)
    core.log.info(
        "runtime_stopped",
        drained=drained,
        dropped=dropped,
        actors_stopped=stopped,
        elapsed_s=round(summary.elapsed_s, 3),
    )
    return summary


def abort(core: _Core, ingress: Ingress) -> ShutdownSummary:
    """Settle everything now: the loop is ending without `stop()` (loop thread, no awaits).

    Waiting messages end `Dropped("shutdown")`, messages in flight
    `Interrupted("shutdown")`, failures still awaiting the supervisor's verdict
    `failed`; later calls raise `RuntimeStopped`. No `on_stop` runs: there is
    no loop left to run it on.
    """
    core.phase = CLOSING
    core.accepting = False
    core.supervisor.close()
    interrupted_before = core.outcomes.interrupted
    dropped = 0
    for item in ingress.close():
        core.accept_submission(item)  # the phase is CLOSING: dropped ("shutdown")
        dropped += 1
    dropped += _drop_everything(core, cancel=False)
    for cell in list(core.cells.values()):
        cell.abandon()
    core.supervisor._process_inbox()  # verdicts of failures already reported: failed
    _close(core, "the runtime's event loop ended without stop(): it accepts no messages")
    out = core.outcomes
    core.log.warning("runtime_abandoned", dropped=dropped, reason="the loop ended without stop()")
    return ShutdownSummary(
        drained=False,
        dropped_on_stop=dropped,
        interrupted_on_stop=out.interrupted - interrupted_before,
        actors_stopped=0,
        elapsed_s=0.0,
        accepted=core.accepted,
        handled=out.handled,
        failed=out.failed,
        interrupted=out.interrupted,
        dropped=out.dropped,
    )


def _close(core: _Core, refusal: str) -> None:
    core.phase = STOPPED
    core.accepting = False
    core.refusal = refusal
    if core.slow is not None:
        core.slow.close()
    core.pacing.close()
    core.supervisor.actor_ref.stop(block=False)
    core.registry.actor_ref.stop(block=False)
    core.shutdown_executor()


async def _drain(core: _Core, timeout: float) -> bool:
    """Let the runtime work until nothing waits; False if `timeout` ran out first."""

    async def until_empty() -> None:
        while True:
            await wait_idle(core)
            if core.pending == 0:
                return
            await asyncio.sleep(0.005)  # messages wait on a restart backoff timer

    try:
        await asyncio.wait_for(until_empty(), timeout)
    except TimeoutError:
        return False
    return True


def _flush_windows(core: _Core) -> None:
    """The drain begins: open debounce windows are delivered now, not at their time (a
    rate limit or a Retry-After pause is still honoured, within the drain's timeout)."""
    core.flushing = True
    for cell in list(core.cells.values()):
        if cell.state is HELD:
            cell.release()


def _drop_everything(core: _Core, *, cancel: bool = True) -> int:
    """Drop what waits in the mailboxes, cancel timers and (if `cancel`) running bursts."""
    dropped = 0
    for cell in list(core.cells.values()):
        if cell.timer is not None:
            cell.timer.cancel()
            cell.timer = None
        waiting = cell.mailbox.take_all()
        core.pending -= len(waiting)
        for envelope in waiting:
            core.outcomes.on_dropped(
                cell.key, envelope, "shutdown", envelope.attempt - 1, log=core.trace
            )
        dropped += len(waiting)
        if cancel:
            cell.cancel()
    return dropped


async def _settle_tasks(core: _Core, deadline: float) -> None:
    """Wait for the cells' tasks until `deadline`; then abandon what still runs."""
    while core.tasks:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _abandon(core)
            return
        await asyncio.wait(set(core.tasks), timeout=remaining)
    for _ in range(3):  # let the control actors handle the last notices
        await asyncio.sleep(0)


def _abandon(core: _Core) -> None:
    for cell in list(core.cells.values()):
        if cell.abandon() is not None:
            core.log.error(
                "handler_abandoned",
                key=cell.key,
                reason="still running when the shutdown's time ran out",
            )
    for task in list(core.tasks):
        task.cancel()
    core.tasks.clear()
