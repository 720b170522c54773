"""Retry pauses while Redis is unreachable: exponential, capped, reset by a success.

Pure (no I/O, no clock, no sleeping): a retry loop asks `Backoff` how long to
pause after a failure and whether to log it, and sleeps and logs itself. So an
outage of any length costs a few log lines and at most one try per `cap`
seconds per loop, and a test can check the schedule without waiting for it.
"""

from __future__ import annotations

import math
from typing import NamedTuple, final

__all__ = ["Backoff", "Retry"]


class Retry(NamedTuple):
    """What to do after a failure: pause this long, log it or not; the failures so far."""

    pause: float
    log: bool
    failures: int


@final
class Backoff:
    """The pauses of one retry loop, and which of its failures to log.

    `failed()` counts a failure and returns the pause before the next try: `first`
    after the first failure, doubled after each further one, never more than `cap`
    (`first` itself is capped too). Only the 1st, 2nd, 4th, 8th... failure of a run
    is to be logged, so an hour-long outage logs about a dozen lines rather than one
    per try. `succeeded()` ends the run: it returns the failures it had (0 if none;
    more: the loop may log the recovery once) and starts the next run at `first`.

    Raises `ValueError` at construction unless `first` and `cap` are finite and > 0.
    """

    __slots__ = ("_next", "cap", "failures", "first")

    def __init__(self, first: float, cap: float) -> None:
        for name, value in (("first", first), ("cap", cap)):
            if not (0 < value < math.inf):
                msg = f"{name} must be a finite number of seconds > 0, got {value!r}"
                raise ValueError(msg)
        self.first = first
        self.cap = cap
        self.failures = 0
        self._next = min(first, cap)

    def failed(self) -> Retry:
        """Count one failure: the pause before the next try, and whether to log this one."""
        self.failures += 1
        pause = self._next
        self._next = min(pause * 2, self.cap)  # doubled, never past cap (no overflow)
        n = self.failures
        return Retry(pause, n & (n - 1) == 0, n)  # n a power of two

    def succeeded(self) -> int:
        """A try succeeded: the failures before it (0: none), and the schedule restarts."""
        failures, self.failures = self.failures, 0
        self._next = min(self.first, self.cap)
        return failures
