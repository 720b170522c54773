"""What `Runtime(..., observe=[...])` takes: things that watch a runtime run.

An observer (the Prometheus exporter, the tracer, the admin endpoint of
`supervisors.observe`, or the application's own) is told three things, each
once, in this order:

1. `await open(runtime)` first thing in `start()`, before the journal is opened
   or Redis reached, so that an observer that cannot start (a port in use) fails
   `start()` with nothing else started. Observers open in the order given; when
   one fails, those already open are closed, newest first.
2. `attached(runtime)` once the runtime's parts exist, before a journal's
   messages are replayed and before anything new is accepted, on the loop.
3. `await close()` once the runtime has stopped (every message has its outcome,
   the journal is closed), newest first. An error there is logged
   (`observer_close_failed`), never raised from the stop.

The runtime does not import any observer: they live above it (`tests/test_exports.py`).
This module and `_runtime.py` import each other, deliberately and for types only:
an observer is handed the `Runtime` it watches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from supervisors._runtime import Runtime

__all__ = ["Observer", "check_observers", "close_observers", "open_observers"]


@runtime_checkable
class Observer(Protocol):
    """Something that watches a runtime: see the module's docstring for when each runs."""

    async def open(self, runtime: Runtime) -> None:
        """The runtime is starting: bind, register, or fail the start."""

    def attached(self, runtime: Runtime) -> None:
        """The runtime's parts exist; nothing is accepted or replayed yet."""

    async def close(self) -> None:
        """The runtime has stopped: release what `open` took."""


def check_observers(observe: object) -> tuple[Observer, ...]:
    """`observe` as a tuple of observers; a clear TypeError at the call for anything else."""
    if isinstance(observe, str | bytes) or not isinstance(observe, Sequence):
        msg = f"observe must be a list of observers, got {observe!r}"
        raise TypeError(msg)
    for item in observe:
        if not isinstance(item, Observer):
            msg = f"observe[...] must be observers (open, attached and close methods), got {item!r}"
            raise TypeError(msg)
    if len({id(item) for item in observe}) != len(observe):
        msg = "observe lists the same observer twice"
        raise ValueError(msg)
    return tuple(observe)


async def open_observers(observers: Sequence[Observer], runtime: Runtime, log: Any) -> None:
    """Open each in order; when one fails, close those open (newest first) and raise."""
    for i, observer in enumerate(observers):
        try:
            await observer.open(runtime)
        except BaseException:
            await close_observers(observers[:i], log)
            raise


async def close_observers(observers: Sequence[Observer], log: Any) -> None:
    """Close each, newest first; a failure is logged and the others still close."""
    for observer in reversed(observers):
        try:
            await observer.close()
        except Exception as exc:  # a stop never raises an observer's error
            log.error("observer_close_failed", observer=repr(observer), error=repr(exc))
