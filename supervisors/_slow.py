"""Slow handlers: a WARNING for a handler that has run `slow_handler` seconds.

A handler that never returns (an LLM call without a timeout, a lock that is
never released) blocks its key for good, and without `handler_timeout` nothing
else would say so. `SlowWatch` logs `handler_slow` once per message whose
handler has run `slow_handler` seconds, and `stats()["running_by_key"]` lists
the longest-running handlers.

What happens when:

1. The first task of a busy period starts (the runtime's task set goes from
   empty to one: `_Core.task_started`): one timer is armed, `slow_handler`
   seconds ahead.
2. When it fires, the check looks at the cells of the running tasks only,
   logs every handler in flight for `slow_handler` seconds or more that it
   has not reported yet, and re-arms for the next handler that will be due
   (at most `SLOW_CHECK_INTERVAL` seconds ahead, for handlers that start in
   the meantime).
3. When the last task ends (the set is empty again), the timer is cancelled.

So the check costs nothing per message: one timer per busy period and one
pass over the running tasks every few seconds while any runs. A handler that
started in the meantime is reported at most `min(slow_handler,
SLOW_CHECK_INTERVAL)` seconds late.

`_Core` is named here as a type only (under TYPE_CHECKING): this module is a
part of the router and is given the router it serves, which imports it in turn.
A deliberate circle inside the core room, for the type checker alone; at run
time the import goes one way (supervisors/_core.py explains).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from actors._cell import Cell
    from actors._clock import TimerHandle
    from actors._mailbox import Envelope
    from supervisors._core import _Core

__all__ = ["SLOW_CHECK_INTERVAL", "SlowWatch"]

#: Seconds between two checks for slow handlers while handlers run (at most).
SLOW_CHECK_INTERVAL = 5.0


@final
class SlowWatch:
    """Reports the handlers of one runtime that run past `threshold` seconds (loop thread)."""

    __slots__ = ("_closed", "_core", "_interval", "_reported", "_timer", "threshold")

    def __init__(self, core: _Core, threshold: float) -> None:
        self._core = core
        self.threshold = threshold
        self._interval = min(threshold, SLOW_CHECK_INTERVAL)
        self._timer: TimerHandle | None = None
        # The message each reported cell was running: once per message, and no
        # more entries than handlers in flight (pruned at every check).
        self._reported: dict[Cell, Envelope] = {}
        self._closed = False

    def busy(self) -> None:
        """The first task of a busy period started: check once it could be slow."""
        if self._timer is None and not self._closed:
            core = self._core
            self._timer = core.clock.call_at(core.now() + self.threshold, self._check)

    def quiet(self) -> None:
        """No task runs any more: nothing can be slow until one starts."""
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()
        self._reported.clear()

    def close(self) -> None:
        """The runtime has stopped: no more checks."""
        self._closed = True
        self.quiet()

    def _check(self) -> None:
        self._timer = None
        core = self._core
        if self._closed or not core.tasks:
            return
        now = core.now()
        threshold = self.threshold
        reported = self._reported
        still: dict[Cell, Envelope] = {}
        then = now + self._interval
        for cell in core.tasks.values():
            envelope = cell.current
            if envelope is None:
                continue
            if reported.get(cell) is envelope:
                still[cell] = envelope
                continue
            started = cell._started
            due = started + threshold
            if due <= now:
                still[cell] = envelope
                core.log.warning(
                    "handler_slow",
                    key=cell.key,
                    running_s=round(now - started, 3),
                    incarnation=cell.incarnation,
                )
            elif due < then:
                then = due
        self._reported = still
        self._timer = core.clock.call_at(then, self._check)
