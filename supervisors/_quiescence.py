"""Waiting for quiescence: nothing runs and nothing is runnable.

A coroutine, so it lives outside the compiled modules (`setup.py`): mypyc's
coroutines use the deprecated `throw(type, value, tb)` signature, which
Python 3.12+ warns about when such a coroutine is cancelled.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from supervisors._core import _Core

__all__ = ["wait_idle"]


async def wait_idle(core: _Core) -> None:
    """Return once every mailbox is drained or waiting on a timer, and nothing runs."""
    while True:
        # Let callbacks already scheduled (ingress drains, control messages) run first.
        for _ in range(3):
            await asyncio.sleep(0)
        if core.quiet():
            return
        waiter = core.loop.create_future()
        core.add_idle_waiter(waiter)
        await waiter
