"""A `Runtime`'s options, checked once at construction (G9: bad input fails at the call)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

from actors._knobs import Knobs, Rate, check_busy, check_interval, check_overflow, check_rate
from actors._user_actor import UserActor
from supervisors._policy import RestartPolicy

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["RuntimeOptions"]


@final
@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """The sizes and bounds of one runtime; `Runtime`'s docstring says what each means."""

    actor_factory: Callable[[str | int], UserActor]
    max_pending: int
    max_total_pending: int | None
    idle_timeout: float | None
    max_active: int | None
    restart: RestartPolicy | None
    dead_letter_limit: int
    max_workers: int | None
    batch: int
    max_deliveries: int = 5
    slow_handler: float | None = 60.0
    busy: str = "queue"
    overflow: str = "reject"
    rate: Rate | None = None
    min_interval: float | None = None
    limits: dict[str, Rate] | None = None
    dedup_window: float = 3600.0
    dedup_max: int = 100_000

    def knobs(self) -> Knobs:
        """The runtime's busy, overflow and rate settings (a class may override each)."""
        return Knobs(self.busy, self.overflow, self.rate, self.min_interval)

    def __post_init__(self) -> None:
        factory: Any = self.actor_factory
        if not callable(factory):
            msg = f"actor_factory must be a UserActor subclass or a callable, got {factory!r}"
            raise TypeError(msg)
        if (
            isinstance(factory, type)
            and issubclass(factory, UserActor)
            and factory.on_message is UserActor.on_message
        ):
            msg = f"{factory.__name__} must implement on_message(message, ctx)"
            raise TypeError(msg)
        _positive_int("max_pending", self.max_pending)
        _positive_int("batch", self.batch)
        _positive_int("dead_letter_limit", self.dead_letter_limit)
        _positive_int("max_deliveries", self.max_deliveries)
        for name in ("max_total_pending", "max_active", "max_workers"):
            value = getattr(self, name)
            if value is not None:
                _positive_int(name, value)
        idle = self.idle_timeout
        if idle is not None and (
            isinstance(idle, bool) or not isinstance(idle, int | float) or not idle > 0
        ):
            msg = f"idle_timeout must be a number > 0 or None, got {idle!r}"
            raise ValueError(msg)
        slow = self.slow_handler
        if slow is not None and (
            isinstance(slow, bool) or not isinstance(slow, int | float) or not 0 < slow < math.inf
        ):
            msg = f"slow_handler must be a number of seconds > 0 or None, got {slow!r}"
            raise ValueError(msg)
        check_busy(self.busy)
        check_overflow(self.overflow)
        check_rate(self.rate)
        object.__setattr__(self, "min_interval", check_interval(self.min_interval))
        limits = self.limits
        if limits is not None:
            if not isinstance(limits, dict) or not all(
                isinstance(name, str) and name and isinstance(rate, Rate)
                for name, rate in limits.items()
            ):
                msg = f"limits must be a dict of names (str) to Rate, got {limits!r}"
                raise TypeError(msg)
            object.__setattr__(self, "limits", dict(limits))
        window = self.dedup_window
        if (
            isinstance(window, bool)
            or not isinstance(window, int | float)
            or not 0 < window < math.inf
        ):
            msg = f"dedup_window must be a number of seconds > 0, got {window!r}"
            raise ValueError(msg)
        _positive_int("dedup_max", self.dedup_max)
        if self.restart is not None and not isinstance(self.restart, RestartPolicy):
            msg = f"restart must be a RestartPolicy, got {self.restart!r}"
            raise TypeError(msg)


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"{name} must be an int >= 1, got {value!r}"
        raise ValueError(msg)
