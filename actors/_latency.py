"""Latency samples of handled messages: a ring of the latest (wait, run) pairs.

Recorded once per handled message, so it is part of the compiled per-message
path (setup.py); `Runtime.stats()` turns it into percentiles.
"""

from __future__ import annotations

import math
from typing import final

__all__ = ["Latencies"]


@final
class Latencies:
    """The latest 8,192 (wait, run) samples of handled messages, for percentiles.

    One call and two list stores per message: the ring is preallocated and
    indexed with a mask, so recording never allocates.
    """

    __slots__ = ("_count", "_run", "_wait")

    SIZE = 8192  # a power of two: the index is a mask, not a modulo

    def __init__(self) -> None:
        self._wait = [0.0] * self.SIZE
        self._run = [0.0] * self.SIZE
        self._count = 0

    def record(self, wait: float, run: float) -> None:
        """Record one message's wait and run time, in seconds."""
        i = self._count
        self._wait[i & 8191] = wait
        self._run[i & 8191] = run
        self._count = i + 1

    def summary(self) -> tuple[dict[str, float], dict[str, float]]:
        """Return the (wait, run) summaries: count and p50/p90/p99/max in milliseconds."""
        kept = min(self._count, self.SIZE)
        return (
            _summary(self._wait[:kept], self._count),
            _summary(self._run[:kept], self._count),
        )


def _summary(samples: list[float], count: int) -> dict[str, float]:
    data = sorted(samples)
    if not data:
        return {"count": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}

    def pct(q: float) -> float:
        return data[min(len(data) - 1, math.ceil(q * len(data)) - 1)] * 1000.0

    return {
        "count": count,
        "p50": pct(0.50),
        "p90": pct(0.90),
        "p99": pct(0.99),
        "max": data[-1] * 1000.0,
    }
