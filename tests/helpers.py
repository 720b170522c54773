"""Helpers shared by the test modules."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, MutableMapping, Sequence
from typing import Any

from supervisors import RestartPolicy, Runtime


def policy(**overrides: Any) -> RestartPolicy:
    """A deterministic policy: 1 s, 2 s, 4 s, 5 s (cap) backoff, no jitter."""
    options: dict[str, Any] = {
        "max_restarts": 100,
        "within": 1000.0,
        "backoff_min": 1.0,
        "backoff_factor": 2.0,
        "backoff_max": 5.0,
        "jitter": 0.0,
        "reset_after": 1000.0,
    }
    options.update(overrides)
    return RestartPolicy(**options)


# -- shared by the black-box tests (test_hardening*.py) --------------------------------


def ledger_ok(stats: dict[str, Any]) -> bool:
    done = stats["handled"] + stats["failed"] + stats["interrupted"] + stats["dropped"]
    return stats["pending"] == 0 and stats["in_flight"] == 0 and done == stats["accepted"]


def outcomes(stats: dict[str, Any]) -> tuple[int, int, int, int, int]:
    """(accepted, handled, failed, interrupted, dropped)"""
    return (
        stats["accepted"],
        stats["handled"],
        stats["failed"],
        stats["interrupted"],
        stats["dropped"],
    )


async def settle(rt: Runtime, seconds: float = 2.0) -> None:
    # A hang detector, not a timing.
    await asyncio.wait_for(rt.wait_idle(), seconds)


async def in_flight(rt: Runtime, n: int) -> None:
    """Yield to the loop until `n` handlers are running (bounded, never a timed sleep)."""
    for _ in range(1000):
        if rt.stats()["in_flight"] >= n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never saw {n} handlers in flight")


@contextlib.asynccontextmanager
async def running(*args: Any, **options: Any) -> AsyncIterator[Runtime]:
    """`async with Runtime(...)`, whose stop has a short drain timeout: a key wedged by a
    regression (or a message left waiting by a failed assertion) fails the test instead of
    holding the exit for 10 s."""
    rt = await Runtime(*args, **options).start()
    try:
        yield rt
    finally:
        await asyncio.wait_for(rt.stop(timeout=1.0), 5)


def named(logs: Sequence[MutableMapping[str, Any]], event: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


async def until(predicate: Callable[[], Any], seconds: float = 10.0) -> None:
    """Poll `predicate` every 10 ms until it holds (a hang detector, not a timing): for
    what the runtime's own loops move, a cluster's ticks, reads and commits."""
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")
