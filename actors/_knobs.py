"""What a key does with messages beyond ordering: busy policy, overflow, rate, debounce.

`Rate` and `Debounce` are the values users write (`rate = Rate(30, per=60)` on a
`UserActor` subclass, or `Runtime(rate=...)`). `Knobs` is those settings resolved
for one actor class against the runtime's defaults, once per class: a cell holds a
reference to its class's knobs, so a message pays one attribute read to learn that
everything is off (`plain`).

Pure decisions only (no clock, no I/O): `Bucket.wait` says how long a key must
wait for its next turn; the cell (actors/_gate.py) keeps the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, final

__all__ = [
    "BUSY_POLICIES",
    "COLLECT",
    "INTERRUPT",
    "OVERFLOW_POLICIES",
    "QUEUE",
    "REJECT",
    "Bucket",
    "Debounce",
    "Knobs",
    "Rate",
    "check_busy",
    "check_interval",
    "check_overflow",
]

# A token counts as whole within float error: waiting exactly the computed time must
# be enough, or a key would wake a hair early, again and again.
_WHOLE = 1.0 - 1e-9

QUEUE = "queue"
COLLECT = "collect"
INTERRUPT = "interrupt"
REJECT = "reject"
BUSY_POLICIES = (QUEUE, COLLECT, INTERRUPT, REJECT)
OVERFLOW_POLICIES = ("reject", "drop_oldest", "drop_newest")


def _seconds(name: str, value: object, *, zero: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (value >= 0 if zero else value > 0)
        or not math.isfinite(value)
    ):
        bound = ">= 0" if zero else "> 0"
        msg = f"{name} must be a finite number of seconds {bound}, got {value!r}"
        raise ValueError(msg)
    return float(value)


@final
@dataclass(frozen=True, slots=True)
class Rate:
    """A token bucket: at most `count` turns per `per` seconds, in bursts of up to `count`.

    `Rate(30, per=60)`: 30 turns a minute. As a per-key limit (`rate=`) a limited
    key's next turn waits for a token; as a shared limit (`limits={"telegram":
    Rate(30, per=1)}`) `await ctx.limit("telegram")` waits for one.
    """

    count: int
    per: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            msg = f"Rate count must be an int >= 1, got {self.count!r}"
            raise ValueError(msg)
        object.__setattr__(self, "per", _seconds("Rate per", self.per))


@final
@dataclass(frozen=True, slots=True)
class Debounce:
    """Coalesce a burst: normal messages arriving within `window` seconds of each other
    are delivered as one `Batch`.

    Each arrival restarts the window; `max_wait` (seconds from the first) caps how long
    the first one waits, and `max_batch` how many one batch holds (reached, it is
    delivered at once). Priority messages never wait for the window; with
    `flush_on_priority=True` one also closes it (what waited runs right after it).
    """

    window: float
    max_wait: float | None = None
    max_batch: int | None = None
    flush_on_priority: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", _seconds("Debounce window", self.window))
        if self.max_wait is not None:
            wait = _seconds("Debounce max_wait", self.max_wait)
            if wait < self.window:
                msg = f"Debounce max_wait ({wait}) must be >= its window ({self.window})"
                raise ValueError(msg)
            object.__setattr__(self, "max_wait", wait)
        batch = self.max_batch
        if batch is not None and (
            isinstance(batch, bool) or not isinstance(batch, int) or batch < 1
        ):
            msg = f"Debounce max_batch must be an int >= 1 or None, got {batch!r}"
            raise ValueError(msg)
        if not isinstance(self.flush_on_priority, bool):
            msg = f"Debounce flush_on_priority must be a bool, got {self.flush_on_priority!r}"
            raise TypeError(msg)


def check_busy(value: object, where: str = "busy") -> str:
    if value not in BUSY_POLICIES:
        msg = f"{where} must be one of {', '.join(map(repr, BUSY_POLICIES))}, got {value!r}"
        raise ValueError(msg)
    # The constant itself: the cell compares by identity, and a str built at run time
    # (read from a configuration) is equal to it but not the same object.
    return BUSY_POLICIES[BUSY_POLICIES.index(value)]


def check_overflow(value: object, where: str = "overflow") -> str:
    if value not in OVERFLOW_POLICIES:
        choices = ", ".join(map(repr, OVERFLOW_POLICIES))
        msg = f"{where} must be one of {choices}, got {value!r}"
        raise ValueError(msg)
    return OVERFLOW_POLICIES[OVERFLOW_POLICIES.index(value)]


def check_rate(value: object, where: str = "rate") -> Rate | None:
    if value is not None and not isinstance(value, Rate):
        msg = f"{where} must be a Rate (e.g. Rate(30, per=60)) or None, got {value!r}"
        raise TypeError(msg)
    return value


def check_interval(value: object, where: str = "min_interval") -> float | None:
    return None if value is None else _seconds(where, value)


def check_debounce(value: object, where: str = "debounce") -> Debounce | None:
    if value is not None and not isinstance(value, Debounce):
        msg = f"{where} must be a Debounce (e.g. Debounce(window=1.5)) or None, got {value!r}"
        raise TypeError(msg)
    return value


class Knobs:
    """One actor class's settings, resolved against the runtime's (shared, read-only).

    `plain` is True when every one is off: the cell's per-message path reads only it.
    """

    __slots__ = (
        "batches",
        "busy",
        "debounce",
        "gated",
        "interval",
        "overflow",
        "plain",
        "rate",
    )

    def __init__(
        self,
        busy: str = QUEUE,
        overflow: str = "reject",
        rate: Rate | None = None,
        interval: float | None = None,
        debounce: Debounce | None = None,
    ) -> None:
        self.busy = check_busy(busy)
        self.overflow = check_overflow(overflow)
        self.rate = rate
        self.interval = interval
        self.debounce = debounce
        # Turns take a Batch: a collect policy, or a debounce window.
        self.batches = busy == COLLECT or debounce is not None
        # A key's turns may have to wait for time to pass.
        self.gated = rate is not None or interval is not None or debounce is not None
        self.plain = busy == QUEUE and overflow == "reject" and not self.gated

    def over(self, attrs: Any) -> Knobs:
        """These knobs with an actor class's own settings (`None`: keep this one's)."""
        busy = getattr(attrs, "busy", None)
        overflow = getattr(attrs, "overflow", None)
        rate = getattr(attrs, "rate", None)
        interval = getattr(attrs, "min_interval", None)
        debounce = getattr(attrs, "debounce", None)
        if busy is overflow is rate is interval is debounce is None:
            return self
        return Knobs(
            busy if busy is not None else self.busy,
            overflow if overflow is not None else self.overflow,
            rate if rate is not None else self.rate,
            interval if interval is not None else self.interval,
            debounce if debounce is not None else self.debounce,
        )

    def __repr__(self) -> str:
        return (
            f"Knobs(busy={self.busy!r}, overflow={self.overflow!r}, rate={self.rate!r}, "
            f"min_interval={self.interval!r}, debounce={self.debounce!r})"
        )


class Bucket:
    """A key's token bucket and spacing: when may its next turn start? (pure arithmetic)

    `tokens` refill at `rate.count / rate.per` per second up to `rate.count`; a turn
    takes one. `last` is when the last turn started (for `min_interval`).
    """

    __slots__ = ("last", "stamp", "tokens")

    def __init__(self, rate: Rate | None, now: float) -> None:
        self.tokens = float(rate.count) if rate is not None else 0.0
        self.stamp = now
        self.last = -math.inf

    def wait(self, rate: Rate | None, interval: float | None, now: float) -> float:
        """Seconds until a turn may start at `now` (0: it may now; then call `spend`)."""
        wait = 0.0
        if interval is not None:
            wait = max(wait, self.last + interval - now)
        if rate is not None:
            self._refill(rate, now)
            if self.tokens < _WHOLE:
                wait = max(wait, (1.0 - self.tokens) * rate.per / rate.count)
        return wait

    def spend(self, rate: Rate | None, now: float) -> None:
        """A turn starts at `now`."""
        self.last = now
        if rate is not None:
            self._refill(rate, now)
            self.tokens -= 1.0

    def _refill(self, rate: Rate, now: float) -> None:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(float(rate.count), self.tokens + elapsed * rate.count / rate.per)
            self.stamp = now

    def full(self, rate: Rate | None, interval: float | None, now: float) -> bool:
        """Whether forgetting this bucket changes nothing (an idle key's may go)."""
        if interval is not None and now < self.last + interval:
            return False
        if rate is not None:
            self._refill(rate, now)
            return self.tokens >= rate.count
        return True
