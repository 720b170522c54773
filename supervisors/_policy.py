"""Pure supervision decisions: directives, restart budget, backoff, retries.

Nothing here reads a clock, sleeps or does I/O: every function takes `now`
and returns a new value, so the whole policy is property-tested with
hypothesis (tests/test_policy.py) and the supervisor applies it with the
runtime's injected clock.
"""

from __future__ import annotations

import asyncio
import enum
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeAlias, final

__all__ = [
    "Decider",
    "Directive",
    "RestartPlan",
    "RestartPolicy",
    "RestartState",
    "backoff_delay",
    "decide",
    "default_decider",
    "plan_restart",
    "should_retry",
]


class Directive(enum.Enum):
    """What the supervisor does with a failed actor."""

    RESUME = "resume"
    """Keep the instance and go on with the next message."""
    RESTART = "restart"
    """Replace the instance with a new one from the factory (`on_start` again); keep the mailbox."""
    STOP = "stop"
    """Stop the actor; dead-letter what waits in its mailbox."""
    ESCALATE = "escalate"
    """Hand the failure to the root supervisor (`Runtime(on_escalate=...)`; default: stop)."""


Decider: TypeAlias = Callable[[BaseException], Directive]
"""Maps a failure to a directive."""


def default_decider(error: BaseException) -> Directive:
    """Restart on any `Exception` and on a stray `CancelledError`; escalate anything else.

    A `CancelledError` reaches a decider only when the runtime did not ask for
    it (an inner task the handler cancelled and then awaited): a bug of the
    handler like any exception, so the key is restarted and goes on. Other
    `BaseException`s (`SystemExit`, `KeyboardInterrupt`, your own) escalate; the
    root's default then stops that key.
    """
    if isinstance(error, Exception | asyncio.CancelledError):
        return Directive.RESTART
    return Directive.ESCALATE


def decide(decider: Decider, error: BaseException) -> Directive:
    """Apply a decider; a decider that raises (anything) or answers nonsense escalates."""
    try:
        directive = decider(error)
    except BaseException:  # the application's code must not derail the supervisor
        return Directive.ESCALATE
    return directive if isinstance(directive, Directive) else Directive.ESCALATE


@final
@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How failures of user actors are handled (G7).

    A failure is an exception escaping `on_message`, `on_start` or `on_stop`,
    or a handler running past `handler_timeout`. The `decider` turns it into a
    `Directive`. For RESTART, the budget allows at most `max_restarts` within
    `within` seconds (OTP's intensity and period); one more is "gave up": the
    key's actor is stopped and its mailbox dead-lettered. Restarts wait an
    exponential backoff: `backoff_min * backoff_factor**n`, capped at
    `backoff_max`, times a jitter factor in `[1 - jitter, 1 + jitter]` drawn
    from `rng`; `n` goes back to 0 after `reset_after` quiet seconds.
    """

    max_restarts: int = 10
    within: float = 60.0
    backoff_min: float = 0.05
    backoff_max: float = 30.0
    backoff_factor: float = 2.0
    jitter: float = 0.1
    reset_after: float = 30.0
    max_retries: int = 0
    """How many times a failed message is run again (on the resumed or restarted instance)."""
    handler_timeout: float | None = None
    """Seconds a handler may run; past that it fails with `HandlerTimeout`."""
    park_for: float | None = None
    """After "gave up": None (the next message starts a fresh actor with a fresh budget) or
    a cool-down in seconds during which messages to the key are dropped("parked")."""
    decider: Decider = default_decider
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_int("max_restarts", self.max_restarts, 0)
        _check_int("max_retries", self.max_retries, 0)
        _check_number("within", self.within, positive=True)
        _check_number("backoff_min", self.backoff_min)
        _check_number("backoff_max", self.backoff_max)
        _check_number("reset_after", self.reset_after)
        if self.backoff_max < self.backoff_min:
            msg = f"backoff_max ({self.backoff_max}) must be >= backoff_min ({self.backoff_min})"
            raise ValueError(msg)
        _check_number("backoff_factor", self.backoff_factor)
        if self.backoff_factor < 1:
            msg = f"backoff_factor must be >= 1, got {self.backoff_factor!r}"
            raise ValueError(msg)
        _check_number("jitter", self.jitter)
        if self.jitter > 1:
            msg = f"jitter must be in [0, 1], got {self.jitter!r}"
            raise ValueError(msg)
        for name in ("handler_timeout", "park_for"):
            value = getattr(self, name)
            if value is not None:
                _check_number(name, value, positive=True)
        if not callable(self.decider):
            msg = f"decider must be callable, got {self.decider!r}"
            raise TypeError(msg)


def _check_int(name: str, value: object, minimum: int) -> None:
    if type(value) is not int or value < minimum:
        msg = f"{name} must be an int >= {minimum}, got {value!r}"
        raise ValueError(msg)


def _check_number(name: str, value: object, *, positive: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (positive and value == 0)
    ):
        what = "> 0" if positive else ">= 0"
        msg = f"{name} must be a finite number {what}, got {value!r}"
        raise ValueError(msg)


@final
@dataclass(frozen=True, slots=True)
class RestartState:
    """One key's restart history, as the policy needs it."""

    restarts: tuple[float, ...] = ()
    """Times of the restarts still inside the budget window."""
    consecutive: int = 0
    """Restarts since the last quiet period: the backoff exponent."""
    last_failure: float | None = None


@final
@dataclass(frozen=True, slots=True)
class RestartPlan:
    """The decision for one failure that asks for a restart."""

    state: RestartState
    gave_up: bool
    delay: float
    """Seconds to wait before the new instance starts (0 when gave_up)."""


def backoff_delay(policy: RestartPolicy, consecutive: int, unit: float) -> float:
    """The delay before restart number `consecutive` (0-based), for a jitter draw in [0, 1)."""
    try:
        base = min(policy.backoff_min * policy.backoff_factor**consecutive, policy.backoff_max)
    except OverflowError:  # factor**n past float range: long since capped
        base = policy.backoff_max
    jittered = base * (1.0 + policy.jitter * (2.0 * unit - 1.0))
    return max(0.0, min(jittered, policy.backoff_max))


def plan_restart(
    policy: RestartPolicy, state: RestartState, now: float, unit: float
) -> RestartPlan:
    """Charge one restart at time `now` to the budget and pick its backoff delay.

    The budget window is `(now - within, now]`: a restart exactly `within`
    seconds old no longer counts.
    """
    quiet = state.last_failure is None or now - state.last_failure >= policy.reset_after
    consecutive = 0 if quiet else state.consecutive
    recent = tuple(t for t in state.restarts if t > now - policy.within)
    if len(recent) >= policy.max_restarts:
        return RestartPlan(replace(state, restarts=recent, last_failure=now), True, 0.0)
    delay = backoff_delay(policy, consecutive, unit)
    new_state = RestartState((*recent, now), consecutive + 1, now)
    return RestartPlan(new_state, False, delay)


def should_retry(policy: RestartPolicy, attempt: int, directive: Directive) -> bool:
    """Whether a message whose `attempt`-th run failed is run again."""
    return directive in (Directive.RESUME, Directive.RESTART) and attempt <= policy.max_retries
