"""Latency samples of handled messages: a ring of the latest (wait, run) pairs.

Recorded once per handled message, so it is part of the compiled per-message
path (setup.py); `Runtime.stats()` turns it into percentiles. Once
`count_buckets()` is called (the Prometheus exporter does, when it attaches),
every later record is also counted in cumulative histogram buckets
(`BOUNDS`), which percentiles of a ring cannot give a scraper; until then
recording costs nothing more.
"""

from __future__ import annotations

import math
from typing import final

__all__ = ["BOUNDS", "Buckets", "Latencies"]

#: The histograms' upper bounds in seconds (Prometheus `le`), +Inf after the last:
#: from a no-op handler's microseconds to an LLM call's tens of seconds.
BOUNDS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 120.0,
)  # fmt: skip


@final
class Buckets:
    """Counts per bucket of `bounds` (not cumulative: the last is +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = BOUNDS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def add(self, value: float) -> None:
        """Count one value (in the first bucket whose bound is >= it: Prometheus' `le`).

        A scan, not `bisect`: compiled, it is a few native comparisons (most values
        fall in the first buckets), where a call to `bisect` costs more than them all.
        """
        bounds = self.bounds
        i = 0
        n = len(bounds)
        while i < n and value > bounds[i]:
            i += 1
        self.counts[i] += 1
        self.sum += value

    def copy(self) -> tuple[list[int], float]:
        """The counts and the sum as they are now."""
        return list(self.counts), self.sum


@final
class Latencies:
    """The latest 8,192 (wait, run) samples of handled messages, for percentiles.

    One call and two list stores per message: the ring is preallocated and
    indexed with a mask, so recording never allocates.
    """

    __slots__ = ("_count", "_run", "_run_buckets", "_wait", "_wait_buckets")

    SIZE = 8192  # a power of two: the index is a mask, not a modulo

    def __init__(self) -> None:
        self._wait = [0.0] * self.SIZE
        self._run = [0.0] * self.SIZE
        self._count = 0
        self._wait_buckets: Buckets | None = None
        self._run_buckets: Buckets | None = None

    def record(self, wait: float, run: float) -> None:
        """Record one message's wait and run time, in seconds."""
        i = self._count
        self._wait[i & 8191] = wait
        self._run[i & 8191] = run
        self._count = i + 1
        waits = self._wait_buckets
        if waits is not None:
            waits.add(wait)
            self._run_buckets.add(run)  # type: ignore[union-attr]

    def count_buckets(self) -> None:
        """Count every later record in histogram buckets too (idempotent)."""
        if self._wait_buckets is None:
            self._wait_buckets = Buckets()
            self._run_buckets = Buckets()

    def buckets(self) -> tuple[tuple[list[int], float], tuple[list[int], float]] | None:
        """The (wait, run) bucket counts and sums since `count_buckets()`, else None."""
        waits, runs = self._wait_buckets, self._run_buckets
        if waits is None or runs is None:
            return None
        return waits.copy(), runs.copy()

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
