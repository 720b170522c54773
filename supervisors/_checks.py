"""What a call checks before it accepts anything: the clear errors at the call site (G9).

`tell`, `ask` and `send` (any thread, every mode) and a handler's `ctx.tell`
run `check_call` first: a bad key, priority, flag or ttl raises here, in the
caller's frame, and nothing is enqueued, journaled or sent to Redis. The
common case costs one type check per argument (this module is compiled:
setup.py); the other functions say what exactly is wrong.

Pure functions: no state, no I/O, no clock.
"""

from __future__ import annotations

import math
from typing import Any

from actors._errors import InvalidKey, InvalidPriority

__all__ = [
    "check_call",
    "check_flag",
    "check_interrupt",
    "check_key",
    "check_priority",
    "check_ttl",
]


def check_key(key: Any) -> None:
    """Raise `InvalidKey` unless `key` is a non-empty `str` or an `int` (not `bool`)."""
    if isinstance(key, bool) or not isinstance(key, str | int) or key == "":
        raise InvalidKey(key)


def check_priority(priority: Any) -> None:
    """Raise `InvalidPriority` unless `priority` is an `int` >= 0 (not `bool`)."""
    if isinstance(priority, bool) or not isinstance(priority, int) or priority < 0:
        raise InvalidPriority(priority)


def check_call(key: Any, priority: Any, interrupt: Any, clear: Any, ttl: Any) -> None:
    """Raise the clear error for a bad argument of `tell`/`ask` (G9), nothing enqueued.

    The common case costs one type check per argument; the helpers below say
    what is wrong.
    """
    if (type(key) is not str and type(key) is not int) or key == "":
        check_key(key)
    if type(priority) is not int or priority < 0:
        check_priority(priority)
    if interrupt is not False:
        if interrupt is not True:
            check_flag("interrupt", interrupt)
        elif priority == 0:
            check_interrupt(priority)
    if clear is not False and clear is not True:
        check_flag("clear", clear)
    if ttl is not None:
        check_ttl(ttl)


def check_interrupt(priority: int) -> None:
    """Raise `InvalidPriority` for `interrupt=True` at priority 0, which never interrupts.

    A handler in flight is cut short only by a higher priority (G3), and 0 is the
    lowest: such a `/stop` would silently wait its turn behind the reply it meant
    to stop.
    """
    if priority == 0:
        reason = (
            "with interrupt=True the priority must be above that of the handler to cut "
            "short, and 0 is the lowest: this could never interrupt anything. Send it "
            "with priority >= 1, e.g. tell(key, '/stop', priority=1, interrupt=True)"
        )
        raise InvalidPriority(priority, reason)


def check_flag(name: str, value: Any) -> None:
    """Raise `TypeError` unless `value` is a `bool` (`interrupt="yes"` is a mistake)."""
    if value is not True and value is not False:
        msg = f"{name} must be a bool, got {value!r}"
        raise TypeError(msg)


def check_ttl(ttl: Any) -> None:
    """Raise `ValueError` unless `ttl` is `None` or a finite number of seconds > 0."""
    if ttl is None:
        return
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf:
        msg = f"ttl must be a number of seconds > 0 or None, got {ttl!r}"
        raise ValueError(msg)
