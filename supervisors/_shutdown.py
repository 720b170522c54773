"""Clean shutdown (G10), step by step.

1. Whatever other threads handed over before the stop is accepted.
2. With `drain=True`, the runtime keeps working (restarts included) until
   nothing waits or `timeout` seconds have passed.
3. The supervisor stops creating incarnations; every waiting message is
   dropped("shutdown"); handlers still running are cancelled, and their
   messages end `Interrupted("shutdown")`. A blocking handler cannot be
   cancelled: it sees `ctx.interrupted` and is waited for, within the
   remaining time; past that its message is resolved interrupted anyway and
   the thread is abandoned (logged at ERROR).
4. `on_stop("shutdown")` runs for every live actor (an idle stop already in
   progress finishes instead).
5. The control actors and the thread pool stop; the summary is returned.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from actors._cell import STOPPING
from supervisors._quiescence import wait_idle

if TYPE_CHECKING:
    from collections.abc import Callable

    from supervisors._core import _Core
    from supervisors._ingress import Ingress, Submission
    from supervisors._runtime import ShutdownSummary

__all__ = ["shutdown"]

_GRACE = 1.0  # seconds granted to on_stop hooks and cancelled handlers even after a drain timeout


async def shutdown(
    core: _Core,
    ingress: Ingress,
    accept_late: Callable[..., None],
    *,
    drain: bool,
    timeout: float,
    started: float,
) -> ShutdownSummary:
    from supervisors._runtime import ShutdownSummary

    for item in ingress.take_all():
        accept_late(item, force=True)
    drained = await _drain(core, timeout) if drain else core.pending == 0
    core.supervisor.close()
    interrupted_before = core.outcomes.interrupted
    dropped = _drop_everything(core, ingress)
    await _settle_tasks(core, max(_GRACE, timeout - (time.monotonic() - started)))
    stopped = 0
    for cell in list(core.cells.values()):
        if cell.actor is not None and cell.state is not STOPPING:
            core.supervisor.begin_stop(cell, "shutdown")
            stopped += 1
    await _settle_tasks(core, max(_GRACE, timeout - (time.monotonic() - started)))
    dropped += _drop_everything(core, ingress)  # anything a hook or a late thread added
    core.supervisor.actor_ref.stop(block=False)
    core.registry.actor_ref.stop(block=False)
    core.shutdown_executor()
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


def _drop_everything(core: _Core, ingress: Ingress) -> int:
    """Drop what waits (mailboxes and ingress), cancel timers and running bursts."""
    dropped = 0
    for item in ingress.take_all():
        _drop_submission(core, item)
        dropped += 1
    for cell in list(core.cells.values()):
        if cell.timer is not None:
            cell.timer.cancel()
            cell.timer = None
        waiting = cell.mailbox.take_all()
        core.pending -= len(waiting)
        for envelope in waiting:
            core.outcomes.on_dropped(cell.key, envelope, "shutdown", envelope.attempt - 1)
        dropped += len(waiting)
        if cell.state is not STOPPING:
            cell.cancel()
    return dropped


def _drop_submission(core: _Core, item: Submission) -> None:
    from actors._mailbox import Envelope

    core.accepted += 1
    core.outcomes.on_dropped(
        item.key, Envelope(item.message, item.reply_to, item.priority, core.now()), "shutdown"
    )


async def _settle_tasks(core: _Core, budget: float) -> None:
    """Wait for the cells' tasks; past `budget`, resolve what is stuck and move on."""
    deadline = time.monotonic() + budget
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
        envelope: Any = cell.current
        if envelope is not None:
            cell.current = None
            core.outcomes.on_interrupted(cell.key, envelope, "shutdown")
            core.log.error(
                "handler_abandoned",
                key=cell.key,
                reason="still running when the shutdown timed out",
            )
    for task in list(core.tasks):
        task.cancel()
    core.tasks.clear()
