"""The coroutines of a cell: the burst that drains a mailbox, an async `on_stop`.

A *burst* is one task per cell that runs an `async def on_start` if this is a
new incarnation, then takes envelopes one at a time (`Cell.take`), awaits the
handler and settles the outcome (`Cell.finish`), until the mailbox is empty
or the cell stops running; every `batch` messages it yields to other cells
(fairness, P5).

Only the awaiting lives here; every decision around it is a plain method of
`Cell`. This module is deliberately never compiled (see `setup.py`): the
cancellation of a handler (interrupt, timeout, shutdown) is delivered into
these coroutines, and CPython's own coroutines are the ones whose exception
handling across `await` is beyond doubt.

`Cell` is named here as a type only: the cell starts its burst with this
module's `drain`, and the turn reads the constants below. A deliberate circle
of one concept (the cell) split in two for the compiler, not two rooms.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import TYPE_CHECKING, Any

from actors._user_actor import HANDLER_ASYNC, HANDLER_SYNC

if TYPE_CHECKING:
    from actors._cell import Cell
    from actors._mailbox import Envelope
    from actors._user_actor import Context, UserActor

# What the burst does after a handler's `CancelledError` (`Cell.cancelled` answers;
# they live here because actors._cell imports this module).
FINISH = 0  # settle it as if the handler returned (`Cell.finish`), then go on
END = 1  # the burst ends here
RERAISE = 2  # re-raise: the burst task itself is being cancelled

__all__ = ["drain", "in_thread", "stop_async"]


async def drain(cell: Cell, starting: bool) -> None:
    """The burst: `on_start` if `starting`, then handle what waits until `take` says stop.

    Anything a handler raises is settled by the cell, whatever its class (G7):
    `Exception`s and other `BaseException`s alike (`SystemExit` and
    `KeyboardInterrupt` included: they end that key's message, not the loop).
    """
    task = cell.task
    try:
        actor: UserActor = cell.actor  # type: ignore[assignment]
        if starting and not (
            await _start_async(cell, actor) if actor._async_start else cell.start_hook()
        ):
            return
        ctx: Context = cell.ctx  # type: ignore[assignment]
        handler = actor.on_message
        mode = actor._handler_mode
        take = cell.take
        finish = cell.finish
        batch = budget = cell.host.batch
        batches = cell.knobs.batches  # the handler gets the turn's Batch (`Cell.payload`)
        while (envelope := take()) is not None:
            message = cell.payload if batches else envelope.message
            try:
                if mode == HANDLER_ASYNC:
                    result = await handler(message, ctx)
                elif mode == HANDLER_SYNC:
                    result = handler(message, ctx)
                else:
                    result = await in_thread(cell, handler, message, ctx)
            except asyncio.CancelledError as error:
                then = cell.cancelled(envelope, error)
                if then == RERAISE:
                    raise
                if then == END:
                    return
                result = None
            except BaseException as error:
                if not cell.failed(envelope, error):
                    return
                continue
            if not finish(envelope, result):
                return
            budget -= 1
            if budget == 0:
                budget = batch
                await asyncio.sleep(0)
    finally:
        cell.burst_ended(task)


async def _start_async(cell: Cell, actor: UserActor) -> bool:
    # Only for an `async def on_start`: a plain one runs in `Cell.start_hook`, no coroutine.
    try:
        await actor.on_start()
    except asyncio.CancelledError as error:
        if cell.start_cancelled(error):
            raise
        return False
    except BaseException as error:
        cell.start_failed(error)
        return False
    cell.start_succeeded()
    return True


async def in_thread(cell: Cell, handler: Any, message: Any, ctx: Context) -> Any:
    """Run a blocking handler in the pool; never leave it running behind our back (G2).

    A cancellation (shutdown) sets `ctx.interrupted` and waits for the thread,
    until the cell says to stop waiting (`Cell.leave_thread`); the cell then
    keeps track of the thread itself, so the key still waits for it.
    """
    host = cell.host
    envelope: Envelope = cell.current  # type: ignore[assignment]
    # In the turn's context, as asyncio.to_thread does: the handler sees its contextvars
    # (the message's span, with tracing on).
    context = contextvars.copy_context()
    future = host.loop.run_in_executor(host.executor(), context.run, handler, message, ctx)
    while True:
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.done():
                raise  # the handler itself raised it in its thread
            ctx.interrupted = True
            if cell.leave_thread(envelope, future):
                raise


async def stop_async(cell: Cell, actor: UserActor, reason: str) -> None:
    """An `async def on_stop(reason)`, in a task of its own; then the cell is told."""
    task = cell.task
    try:
        await actor.on_stop(reason)
    except BaseException as exc:  # reported, and the stop goes on
        cell.host.cell_failed(cell, "on_stop", exc, None)
    finally:
        cell.burst_ended(task)
        cell.stopped(actor, reason)
