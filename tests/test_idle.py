"""G6 idle shutdown: exact timing, in-flight handlers, the stop race, max_active, one timer.

Virtual time only (`FakeClock`): every expected time below is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from structlog.testing import capture_logs

from actors import Context, UserActor
from actors.testing import FakeClock
from supervisors import Runtime

EPS = 0.25  # exactly representable, so virtual times compare exactly
TIMEOUT = 30.0


@dataclass
class Journal:
    """What every incarnation did, with the virtual time it happened at."""

    clock: FakeClock
    events: list[tuple[Any, ...]] = field(default_factory=list)
    serials: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    release: asyncio.Event = field(default_factory=asyncio.Event)  # "hang" waits for it
    stop_gate: asyncio.Event | None = None  # on_stop("idle") waits for it when set

    def add(self, *event: Any) -> None:
        self.events.append((*event, self.clock.now()))

    def kinds(self, kind: str) -> list[tuple[Any, ...]]:
        return [e for e in self.events if e[0] == kind]


class Probe(UserActor):
    """Records its lifecycle; "hang" waits for the journal's `release`."""

    def __init__(self, key: str | int, journal: Journal) -> None:
        super().__init__(key)
        self.journal = journal
        self.serial = next(journal.serials)

    async def on_start(self) -> None:
        self.journal.add("start", self.key, self.serial)

    async def on_message(self, message: Any, ctx: Context) -> Any:
        self.journal.add("msg", self.key, self.serial, message)
        if message == "hang":
            await self.journal.release.wait()
            self.journal.add("released", self.key, self.serial)
        return message

    async def on_stop(self, reason: str) -> None:
        self.journal.add("stop_begin", self.key, self.serial, reason)
        if reason == "idle" and self.journal.stop_gate is not None:
            await self.journal.stop_gate.wait()
        self.journal.add("stop_end", self.key, self.serial, reason)


def probes(journal: Journal) -> Callable[[str | int], UserActor]:
    return lambda key: Probe(key, journal)


async def spin(turns: int = 100) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


def live_and_known(rt: Runtime) -> tuple[int, int]:
    stats = rt.stats()
    return stats["live_actors"], stats["known_keys"]


async def test_idle_actor_stops_exactly_at_idle_timeout(clock: FakeClock) -> None:
    """Idle for `idle_timeout`: live at timeout - ε, stopped at timeout with `on_stop("idle")`,
    the registry entry released; logged as `actor_idle_stopped`."""
    journal = Journal(clock)
    with capture_logs() as logs:
        async with Runtime(probes(journal), clock=clock, idle_timeout=TIMEOUT) as rt:
            await clock.advance(5.0)
            assert await rt.ask("u", "x") == "x"  # idle since t=5
            await clock.advance(TIMEOUT - EPS)
            assert live_and_known(rt) == (1, 1)
            assert journal.kinds("stop_begin") == []
            await clock.advance(EPS)
            assert journal.kinds("stop_end") == [("stop_end", "u", 1, "idle", 35.0)]
            assert live_and_known(rt) == (0, 0)
            assert rt.stats()["idle_stops"] == 1
    [stopped] = [e for e in logs if e["event"] == "actor_idle_stopped"]
    assert (stopped["key"], stopped["log_level"]) == ("u", "debug")


async def test_activity_resets_the_idle_clock(clock: FakeClock) -> None:
    """Each handled message restarts the idle countdown from the moment the mailbox empties."""
    journal = Journal(clock)
    async with Runtime(probes(journal), clock=clock, idle_timeout=TIMEOUT) as rt:
        await rt.ask("u", "a")
        await clock.advance(20.0)
        await rt.ask("u", "b")  # idle again since t=20
        await clock.advance(TIMEOUT - EPS)
        assert live_and_known(rt) == (1, 1)
        await clock.advance(EPS)
        assert live_and_known(rt) == (0, 0)
        assert journal.kinds("stop_begin") == [("stop_begin", "u", 1, "idle", 50.0)]


async def test_a_handler_in_flight_is_never_passivated(clock: FakeClock) -> None:
    """A handler still awaiting keeps its actor alive far past the timeout (the idle sweep
    fires meanwhile); the idle countdown starts when it returns."""
    journal = Journal(clock)
    async with Runtime(probes(journal), clock=clock, idle_timeout=TIMEOUT) as rt:
        await rt.ask("u", "x")  # idle since t=0: a sweep is due at t=30
        await clock.advance(10.0)
        hung = rt.ask("u", "hang")
        await clock.advance(1000.0)
        assert clock.now() == 1010.0
        assert rt.stats()["in_flight"] == 1
        assert live_and_known(rt) == (1, 1)
        assert journal.kinds("stop_begin") == []
        journal.release.set()
        assert await hung == "hang"
        await clock.advance(TIMEOUT - EPS)
        assert live_and_known(rt) == (1, 1)
        await clock.advance(EPS)
        assert journal.kinds("stop_begin") == [("stop_begin", "u", 1, "idle", 1040.0)]
        assert live_and_known(rt) == (0, 0)


async def test_a_message_racing_the_idle_stop_goes_to_a_new_incarnation(
    clock: FakeClock,
) -> None:
    """Messages that arrive while `on_stop("idle")` runs wait; once it returns, a NEW
    incarnation starts and handles them in order; nothing is lost, nothing overlaps."""
    journal = Journal(clock, stop_gate=asyncio.Event())
    async with Runtime(probes(journal), clock=clock, idle_timeout=TIMEOUT) as rt:
        await rt.ask("u", "a")
        step = asyncio.ensure_future(clock.advance(TIMEOUT))
        for _ in range(1000):
            if journal.kinds("stop_begin"):
                break
            await asyncio.sleep(0)
        assert journal.kinds("stop_begin") == [("stop_begin", "u", 1, "idle", 30.0)]
        rt.tell("u", "b")
        c = rt.ask("u", "c")
        await spin()
        assert not c.done()
        assert rt.pending("u") == 2
        assert len(journal.kinds("start")) == 1  # nothing starts while on_stop runs
        journal.stop_gate.set()  # type: ignore[union-attr]
        await step
        assert await c == "c"
        assert journal.events == [
            ("start", "u", 1, 0.0),
            ("msg", "u", 1, "a", 0.0),
            ("stop_begin", "u", 1, "idle", 30.0),
            ("stop_end", "u", 1, "idle", 30.0),
            ("start", "u", 2, 30.0),
            ("msg", "u", 2, "b", 30.0),
            ("msg", "u", 2, "c", 30.0),
        ]
        stats = rt.stats()
        assert (stats["live_actors"], stats["activations"], stats["idle_stops"]) == (1, 2, 1)
        assert stats["handled"] == stats["accepted"] == 3


async def test_max_active_passivates_the_least_recently_used_idle_actors_first(
    clock: FakeClock,
) -> None:
    """With `max_active`, activating one more actor stops the least recently used idle one."""
    journal = Journal(clock)
    with capture_logs() as logs:
        async with Runtime(probes(journal), clock=clock, idle_timeout=None, max_active=2) as rt:
            await rt.ask("a", 1)
            await rt.ask("b", 1)
            await rt.ask("a", 2)  # now b is the least recently used
            await rt.ask("c", 1)
            await rt.wait_idle()
            assert [e[1] for e in journal.kinds("stop_end")] == ["b"]
            await rt.ask("d", 1)
            await rt.wait_idle()
            assert [(e[1], e[3]) for e in journal.kinds("stop_end")] == [
                ("b", "idle"),
                ("a", "idle"),
            ]
            assert live_and_known(rt) == (2, 2)
            assert rt.stats()["idle_stops"] == 2
    assert [(e["key"], e["cause"]) for e in logs if e["event"] == "actor_idle_stopped"] == [
        ("b", "lru"),
        ("a", "lru"),
    ]


async def test_max_active_never_passivates_busy_actors(clock: FakeClock) -> None:
    """Over `max_active` with every actor busy, nothing stops until one is idle."""
    journal = Journal(clock)
    async with Runtime(probes(journal), clock=clock, idle_timeout=None, max_active=1) as rt:
        hung = [rt.ask(key, "hang") for key in ("a", "b")]
        await spin()
        assert rt.stats()["live_actors"] == 2
        assert journal.kinds("stop_begin") == []
        journal.release.set()
        assert [await f for f in hung] == ["hang", "hang"]
        await rt.wait_idle()
        assert rt.stats()["live_actors"] == 1
        assert [e[1] for e in journal.kinds("stop_end")] == ["a"]


async def test_idle_timeout_none_never_stops(clock: FakeClock) -> None:
    """`idle_timeout=None`: no idle timer at all, actors live forever."""
    journal = Journal(clock)
    async with Runtime(probes(journal), clock=clock, idle_timeout=None) as rt:
        await rt.ask("u", "x")
        await rt.wait_idle()
        assert clock.pending_timers() == []
        await clock.advance(10.0**9)
        assert live_and_known(rt) == (1, 1)
        assert journal.kinds("stop_begin") == []


async def test_idle_tracking_uses_one_timer_for_the_whole_runtime(clock: FakeClock) -> None:
    """1,000 idle actors, idle since 10 different times: at most one pending timer (the
    sweep), and each group stops exactly `idle_timeout` after it went idle."""
    journal = Journal(clock)
    async with Runtime(probes(journal), clock=clock, idle_timeout=TIMEOUT) as rt:
        for group in range(10):
            for i in range(100):
                rt.tell(f"user:{group}:{i}", "x")
            await rt.wait_idle()
            assert clock.pending_timers() == [TIMEOUT]
            await clock.advance(1.0)
        assert rt.stats()["live_actors"] == 1000
        await clock.advance(TIMEOUT - 10.0)  # t=30: group 0 went idle at 0
        for group in range(10):
            assert rt.stats()["live_actors"] == 1000 - 100 * (group + 1)
            assert len(clock.pending_timers()) <= 1
            assert clock.pending_timers() == ([TIMEOUT + group + 1] if group < 9 else [])
            await clock.advance(1.0)
        assert live_and_known(rt) == (0, 0)
        stop_times = sorted({e[-1] for e in journal.kinds("stop_end")})
        assert stop_times == [TIMEOUT + g for g in range(10)]


async def test_fake_clock_advance_runs_pending_work_at_the_current_time(
    clock: FakeClock,
) -> None:
    """Work that is runnable when `advance()` is called runs at the current virtual time:
    a message told at t=0 is handled at t=0, so its actor stops at exactly t=timeout
    (regression: advance() moved the clock first, so it was handled at t=30)."""
    journal = Journal(clock)
    async with Runtime(probes(journal), clock=clock, idle_timeout=TIMEOUT) as rt:
        rt.tell("u", "x")
        await clock.advance(TIMEOUT)
        assert journal.kinds("msg") == [("msg", "u", 1, "x", 0.0)]
        assert live_and_known(rt) == (0, 0)


class AsyncStop(UserActor):
    async def on_message(self, message: Any, ctx: Context) -> Any:
        return message

    async def on_stop(self, reason: str) -> None:
        pass


async def test_wait_idle_wakes_up_when_the_registry_finishes_last(clock: FakeClock) -> None:
    """`wait_idle()` returns once the runtime is quiet, whatever the last step was
    (regression: when the registry's `Release` was the last step, nothing woke the waiter;
    here: `max_active=1` and an async `on_stop`)."""
    async with Runtime(AsyncStop, clock=clock, idle_timeout=None, max_active=1) as rt:

        async def scenario() -> None:
            await rt.ask("a", 1)
            await rt.ask("b", 1)  # passivates "a": async on_stop, then Release
            await rt.wait_idle()

        task = asyncio.ensure_future(scenario())
        for _ in range(1000):  # bounded, so a regression fails instead of hanging
            if task.done():
                break
            await asyncio.sleep(0)
        done = task.done()
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert done, "wait_idle() never returned although the runtime is quiet"
        assert rt.stats()["live_actors"] == 1
