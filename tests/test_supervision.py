"""G7 supervision: deciders, directives, restart budget, backoff, retries, timeouts, hooks.

Every test runs on virtual time (`FakeClock`, `jitter=0` unless jitter is the
point) and asserts exact virtual times. Lifecycle events are checked as data
with `structlog.testing.capture_logs()`; the runtime is created inside the
capture block so that its DEBUG events are enabled.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import OrderedDict
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

from actors import Context, Dropped, HandlerTimeout, UserActor
from actors.testing import FakeClock
from supervisors import Directive, Runtime
from tests.helpers import policy

EPS = 0.25  # exactly representable, so virtual times compare exactly


class Boom(Exception):
    """The injected handler failure."""


class StopBoom(Exception):
    """The injected `on_stop` failure."""


@dataclass
class Journal:
    """What every incarnation did, with the virtual time it happened at."""

    clock: FakeClock
    events: list[tuple[Any, ...]] = field(default_factory=list)
    serials: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    fail_starts: int = 0  # the next N on_start calls raise Boom
    fail_stops: set[str] = field(default_factory=set)  # on_stop raises StopBoom for these reasons
    release: asyncio.Event | None = None  # "hang" waits on it (None: forever)

    def add(self, *event: Any) -> None:
        self.events.append((*event, self.clock.now()))

    def kinds(self, kind: str) -> list[tuple[Any, ...]]:
        return [e for e in self.events if e[0] == kind]

    def handled(self) -> list[Any]:
        return [e[2] for e in self.events if e[0] == "msg"]


class Probe(UserActor):
    """Records its lifecycle; fails, hangs or echoes depending on the message."""

    def __init__(self, key: str | int, journal: Journal) -> None:
        super().__init__(key)
        self.journal = journal
        self.serial = next(journal.serials)

    async def on_start(self) -> None:
        self.journal.add("start", self.serial)
        if self.journal.fail_starts > 0:
            self.journal.fail_starts -= 1
            raise Boom("on_start")

    async def on_message(self, message: Any, ctx: Context) -> Any:
        self.journal.add("msg", self.serial, message, ctx.attempt)
        if message == "boom":
            raise Boom(message)
        if isinstance(message, tuple) and message[0] == "fail_until":
            if ctx.attempt < message[1]:
                raise Boom(message)
            return ("ok", ctx.attempt)
        if message == "hang":
            try:
                if self.journal.release is None:
                    await asyncio.get_running_loop().create_future()
                else:
                    await self.journal.release.wait()
            except asyncio.CancelledError:
                self.journal.add("cancelled", self.serial)
                raise
        return message

    async def on_stop(self, reason: str) -> None:
        self.journal.add("stop", self.serial, reason)
        if reason in self.journal.fail_stops:
            raise StopBoom(reason)


def probes(journal: Journal, cls: type[Probe] = Probe) -> Callable[[str | int], UserActor]:
    return lambda key: cls(key, journal)


def named(logs: Sequence[MutableMapping[str, Any]], event: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


async def expect_raises(awaitable: Any, error: type[BaseException]) -> BaseException:
    with pytest.raises(error) as info:
        await awaitable
    return info.value


# -- directives ---------------------------------------------------------------------------


async def test_default_decider_restarts_new_instance_mailbox_and_order_kept(
    clock: FakeClock,
) -> None:
    """A failure restarts: the failing ask raises, a new instance runs `on_start`, the waiting
    messages (and those sent during the backoff) are handled by it in order."""
    journal = Journal(clock)
    async with Runtime(probes(journal), clock=clock, idle_timeout=None, restart=policy()) as rt:
        failing = rt.ask("u", "boom")
        rt.tell("u", "a")
        rt.tell("u", "b")
        await expect_raises(failing, Boom)
        await rt.wait_idle()
        assert rt.pending("u") == 2
        rt.tell("u", "c")  # during the backoff
        await clock.advance(1.0 - EPS)
        assert journal.handled() == ["boom"]
        assert len(journal.kinds("start")) == 1
        await clock.advance(EPS)
        assert journal.events == [
            ("start", 1, 0.0),
            ("msg", 1, "boom", 1, 0.0),
            ("stop", 1, "restart", 0.0),
            ("start", 2, 1.0),
            ("msg", 2, "a", 1, 1.0),
            ("msg", 2, "b", 1, 1.0),
            ("msg", 2, "c", 1, 1.0),
        ]
        stats = rt.stats()
        assert (stats["restarts"], stats["failed"], stats["handled"], stats["live_actors"]) == (
            1,
            1,
            2 + 1,
            1,
        )
        assert [(d.message, d.reason) for d in rt.dead_letters()] == [("boom", "failed")]


async def test_resume_keeps_the_instance(clock: FakeClock) -> None:
    """RESUME: the failing message fails, the same instance handles the next one, no
    `on_stop`/`on_start`, no restart counted."""
    journal = Journal(clock)
    restart = policy(decider=lambda _: Directive.RESUME)
    async with Runtime(probes(journal), clock=clock, idle_timeout=None, restart=restart) as rt:
        failing = rt.ask("u", "boom")
        after = rt.ask("u", "x")
        await expect_raises(failing, Boom)
        assert await after == "x"
        assert journal.events == [
            ("start", 1, 0.0),
            ("msg", 1, "boom", 1, 0.0),
            ("msg", 1, "x", 1, 0.0),
        ]
        assert rt.stats()["restarts"] == 0


async def test_stop_dead_letters_waiting_and_next_message_starts_fresh(clock: FakeClock) -> None:
    """STOP: waiting messages are dropped("stopped"), `on_stop("stopped")` runs, the entry is
    released; the next message starts a fresh incarnation."""
    journal = Journal(clock)
    restart = policy(decider=lambda _: Directive.STOP)
    async with Runtime(probes(journal), clock=clock, idle_timeout=None, restart=restart) as rt:
        failing = rt.ask("u", "boom")
        waiting = [rt.ask("u", m) for m in ("x", "y")]
        await expect_raises(failing, Boom)
        for future in waiting:
            error = await expect_raises(future, Dropped)
            assert error.reason == "stopped"  # type: ignore[attr-defined]
        await rt.wait_idle()
        assert [(d.message, d.reason) for d in rt.dead_letters()] == [
            ("boom", "failed"),
            ("x", "stopped"),
            ("y", "stopped"),
        ]
        assert (rt.stats()["live_actors"], rt.stats()["known_keys"]) == (0, 0)
        assert await rt.ask("u", "z") == "z"
        assert journal.events == [
            ("start", 1, 0.0),
            ("msg", 1, "boom", 1, 0.0),
            ("stop", 1, "stopped", 0.0),
            ("start", 2, 0.0),
            ("msg", 2, "z", 1, 0.0),
        ]


async def test_escalate_goes_to_default_root_which_stops_and_logs(clock: FakeClock) -> None:
    """ESCALATE with no `on_escalate`: the root stops the key (waiting dropped "stopped") and
    logs `supervisor_escalated` at ERROR with the directive it chose."""
    journal = Journal(clock)
    with capture_logs() as logs:
        restart = policy(decider=lambda _: Directive.ESCALATE)
        async with Runtime(probes(journal), clock=clock, idle_timeout=None, restart=restart) as rt:
            failing = rt.ask("u", "boom")
            waiting = rt.ask("u", "x")
            await expect_raises(failing, Boom)
            assert (await expect_raises(waiting, Dropped)).reason == "stopped"  # type: ignore[attr-defined]
            await rt.wait_idle()
            assert rt.stats()["live_actors"] == 0
    escalated = named(logs, "supervisor_escalated")
    assert len(escalated) == 1
    assert escalated[0]["log_level"] == "error"
    assert escalated[0]["key"] == "u"
    assert escalated[0]["directive"] == "stop"
    assert ("stop", 1, "stopped", 0.0) in journal.events


@pytest.mark.parametrize(
    ("root", "expected_starts", "expected_stops"),
    [
        (Directive.RESUME, 1, []),
        (Directive.RESTART, 2, ["restart"]),
        (Directive.STOP, 1, ["stopped"]),
        (Directive.ESCALATE, 1, ["stopped"]),  # escalating from the root stops
    ],
)
async def test_escalate_goes_to_on_escalate(
    clock: FakeClock, root: Directive, expected_starts: int, expected_stops: list[str]
) -> None:
    """ESCALATE hands the failure to `on_escalate`, whose directive is applied."""
    journal = Journal(clock)
    seen: list[BaseException] = []

    def on_escalate(error: BaseException) -> Directive:
        seen.append(error)
        return root

    restart = policy(decider=lambda _: Directive.ESCALATE)
    async with Runtime(
        probes(journal), clock=clock, idle_timeout=None, restart=restart, on_escalate=on_escalate
    ) as rt:
        await expect_raises(rt.ask("u", "boom"), Boom)
        await clock.advance(1.0)
        if root in (Directive.RESUME, Directive.RESTART):
            assert await rt.ask("u", "x") == "x"
            assert len(journal.kinds("start")) == expected_starts
        assert [e[2] for e in journal.kinds("stop")] == expected_stops
        assert len(seen) == 1
        assert isinstance(seen[0], Boom)


async def test_per_class_decider_overrides_the_policy(clock: FakeClock) -> None:
    """A `decider` class attribute wins over the policy's decider."""

    class Resumer(Probe):
        decider = staticmethod(lambda _: Directive.RESUME)

    journal = Journal(clock)
    restart = policy(decider=lambda _: Directive.STOP)
    async with Runtime(
        probes(journal, Resumer), clock=clock, idle_timeout=None, restart=restart
    ) as rt:
        await expect_raises(rt.ask("u", "boom"), Boom)
        assert await rt.ask("u", "x") == "x"
        assert [e[0] for e in journal.events] == ["start", "msg", "msg"]


async def test_a_decider_that_raises_escalates(clock: FakeClock) -> None:
    """A decider that raises counts as ESCALATE (then the default root stops the key)."""

    def broken(_: BaseException) -> Directive:
        raise RuntimeError("decider bug")

    journal = Journal(clock)
    with capture_logs() as logs:
        restart = policy(decider=broken)
        async with Runtime(probes(journal), clock=clock, idle_timeout=None, restart=restart) as rt:
            failing = rt.ask("u", "boom")
            waiting = rt.ask("u", "x")
            await expect_raises(failing, Boom)
            assert (await expect_raises(waiting, Dropped)).reason == "stopped"  # type: ignore[attr-defined]
    assert [e["directive"] for e in named(logs, "actor_failed")] == ["escalate"]
    assert len(named(logs, "supervisor_escalated")) == 1


# -- restart budget -----------------------------------------------------------------------


async def test_restart_budget_gives_up_then_next_message_starts_fresh(clock: FakeClock) -> None:
    """More than `max_restarts` within `within`: gave up (waiting dropped "gave_up",
    `on_stop("gave_up")`, stats and log); the next message starts a fresh actor with a
    fresh budget."""
    journal = Journal(clock)
    with capture_logs() as logs:
        restart = policy(max_restarts=2, within=10.0, backoff_factor=1.0)
        async with Runtime(probes(journal), clock=clock, idle_timeout=None, restart=restart) as rt:
            for _ in range(2):  # two restarts: within budget
                await expect_raises(rt.ask("u", "boom"), Boom)
                await clock.advance(1.0)
            assert rt.stats()["restarts"] == 2
            failing = rt.ask("u", "boom")  # third failure at t=2: over budget
            waiting = [rt.ask("u", m) for m in ("w1", "w2")]
            await expect_raises(failing, Boom)
            for future in waiting:
                assert (await expect_raises(future, Dropped)).reason == "gave_up"  # type: ignore[attr-defined]
            await rt.wait_idle()
            stats = rt.stats()
            assert (stats["gave_up"], stats["restarts"], stats["live_actors"]) == (1, 2, 0)
            assert journal.events[-1] == ("stop", 3, "gave_up", 2.0)
            # Fresh actor, fresh budget: the next failure restarts again.
            assert await rt.ask("u", "ok") == "ok"
            assert journal.events[-2:] == [("start", 4, 2.0), ("msg", 4, "ok", 1, 2.0)]
            await expect_raises(rt.ask("u", "boom"), Boom)
            await clock.advance(1.0)
            assert journal.events[-1:] == [("start", 5, 3.0)]
            assert rt.stats()["gave_up"] == 1
    gave_up = named(logs, "supervisor_gave_up")
    assert len(gave_up) == 1
    assert gave_up[0]["log_level"] == "error"
    assert gave_up[0]["key"] == "u"
    assert [e["reason"] for e in named(logs, "message_dead_lettered")] == ["failed"] * 4
    # The mailbox dropped on giving up: one aggregated line, not one per message.
    bulk = named(logs, "messages_dead_lettered")
    assert [(e["reason"], e["count"], e["log_level"]) for e in bulk] == [("gave_up", 2, "warning")]


async def test_idle_passivation_does_not_reset_the_restart_budget(clock: FakeClock) -> None:
    """The budget is "at most `max_restarts` within `within` seconds" per key, whether or not
    the actor was passivated in between: a key that crashes on every message gives up.

    Known failure: an idle stop releases the key's cell, and its restart history with it, so
    with `idle_timeout` + backoff < `within` a crash-looping key restarts forever
    (here 3 restarts in 20 s with max_restarts=1 within 100 s, never "gave up").
    """
    journal = Journal(clock)
    restart = policy(max_restarts=1, within=100.0)
    async with Runtime(probes(journal), clock=clock, idle_timeout=2.0, restart=restart) as rt:
        for _ in range(3):
            await expect_raises(rt.ask("u", "boom"), Boom)
            await clock.advance(10.0)  # restart after 1 s, idle stop 2 s later
        # t=0 restart; t=10 over budget: gave up; t=20 fresh budget: restart.
        assert (rt.stats()["restarts"], rt.stats()["gave_up"]) == (2, 1)


@pytest.mark.parametrize(("second_failure_at", "gives_up"), [(5.0 - EPS, True), (5.0, False)])
async def test_budget_window_is_within_seconds(
    clock: FakeClock, second_failure_at: float, gives_up: bool
) -> None:
    """A restart exactly `within` seconds old no longer counts; one younger still does."""
    journal = Journal(clock)
    restart = policy(max_restarts=1, within=5.0, backoff_min=EPS, backoff_factor=1.0)
    async with Runtime(probes(journal), clock=clock, idle_timeout=None, restart=restart) as rt:
        await expect_raises(rt.ask("u", "boom"), Boom)
        await clock.advance(second_failure_at)
        await expect_raises(rt.ask("u", "boom"), Boom)
        await rt.wait_idle()
        assert rt.stats()["gave_up"] == int(gives_up)
        assert rt.stats()["restarts"] == 1 + int(not gives_up)


async def test_park_for_drops_messages_until_the_cool_down_passes(clock: FakeClock) -> None:
    """After "gave up" with `park_for`, messages are dropped("parked") until exactly
    gave-up time + park_for; then a fresh actor handles them."""
    journal = Journal(clock)
    restart = policy(max_restarts=0, park_for=10.0)
    async with Runtime(probes(journal), clock=clock, idle_timeout=None, restart=restart) as rt:
        await clock.advance(3.0)
        await expect_raises(rt.ask("u", "boom"), Boom)  # gave up at t=3
        await rt.wait_idle()
        await clock.advance(10.0 - EPS)
        assert (await expect_raises(rt.ask("u", "early"), Dropped)).reason == "parked"  # type: ignore[attr-defined]
        rt.tell("u", "early tell")
        await clock.advance(EPS)
        assert await rt.ask("u", "late") == "late"
        assert journal.events[-2:] == [("start", 2, 13.0), ("msg", 2, "late", 1, 13.0)]
        assert [(d.message, d.reason) for d in rt.dead_letters()] == [
            ("boom", "failed"),
            ("early", "parked"),
            ("early tell", "parked"),
        ]


# -- backoff ------------------------------------------------------------------------------


async def crash_loop(rt: Runtime, clock: FakeClock, journal: Journal, n: int) -> list[float]:
    """Fail `n` times, each right after the previous restart; return the restart delays."""
    delays = []
    for _ in range(n):
        failed_at = clock.now()
        await expect_raises(rt.ask("u", "boom"), Boom)
        await rt.wait_idle()
        starts = len(journal.kinds("start"))
        deadline = min(clock.pending_timers())
        await clock.advance(deadline - failed_at - EPS / 4)
        assert len(journal.kinds("start")) == starts, "restarted before its backoff"
        await clock.advance(EPS / 4)
        assert journal.kinds("start")[-1][-1] == deadline
        delays.append(deadline - failed_at)
    return delays


async def test_backoff_is_exponential_and_capped_at_exact_times(clock: FakeClock) -> None:
    """With jitter=0, restart n happens at exactly failure time + min(min * factor**n, max)."""
    journal = Journal(clock)
    with capture_logs() as logs:
        async with Runtime(probes(journal), clock=clock, idle_timeout=None, restart=policy()) as rt:
            assert await crash_loop(rt, clock, journal, 5) == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert [e["delay_s"] for e in named(logs, "actor_restart_scheduled")] == [1, 2, 4, 5, 5]


@pytest.mark.parametrize(("quiet", "expected"), [(20.0 - EPS, 5.0), (20.0, 1.0)])
async def test_backoff_resets_after_reset_after_quiet_seconds(
    clock: FakeClock, quiet: float, expected: float
) -> None:
    """The exponent goes back to 0 after `reset_after` seconds without a failure."""
    journal = Journal(clock)
    restart = policy(reset_after=20.0)
    async with Runtime(probes(journal), clock=clock, idle_timeout=None, restart=restart) as rt:
        await crash_loop(rt, clock, journal, 4)  # 1, 2, 4, 5: last failure at t=7
        await clock.advance(quiet - 5.0)
        assert await crash_loop(rt, clock, journal, 1) == [expected]


async def test_jittered_delays_stay_within_bounds(clock: FakeClock) -> None:
    """With jitter j, each delay is in [base*(1-j), min(base*(1+j), max)] and the restart
    happens at failure + that delay; a seeded rng makes it reproducible."""
    runs: list[list[float]] = []
    for _ in range(2):
        journal = Journal(clock)
        restart = policy(
            jitter=0.5, backoff_max=6.0, rng=random.Random(1234), max_restarts=1000, within=1.0
        )
        async with Runtime(probes(journal), clock=clock, idle_timeout=None, restart=restart) as rt:
            runs.append(await crash_loop(rt, clock, journal, 8))
    delays = runs[0]
    for n, delay in enumerate(delays):
        base = min(1.0 * 2.0**n, 6.0)
        assert base * 0.5 - 1e-9 <= delay <= min(base * 1.5, 6.0) + 1e-9, (n, delay)
    assert runs[1] == pytest.approx(delays)
    assert len({round(d / min(2.0**n, 6.0), 6) for n, d in enumerate(delays)}) > 1


async def test_messages_queue_during_backoff_and_are_handled_in_order(clock: FakeClock) -> None:
    """Messages sent during the backoff wait (highest priority first, FIFO within one)."""
    journal = Journal(clock)
    async with Runtime(probes(journal), clock=clock, idle_timeout=None, restart=policy()) as rt:
        await expect_raises(rt.ask("u", "boom"), Boom)
        for i, priority in enumerate([0, 1, 0, 2, 1, 0]):
            rt.tell("u", (priority, i), priority=priority)
        await clock.advance(0.5)
        assert rt.pending("u") == 6
        await clock.advance(0.5)
        assert journal.handled()[1:] == [(2, 3), (1, 1), (1, 4), (0, 0), (0, 2), (0, 5)]
        assert {e[1] for e in journal.kinds("msg")[1:]} == {2}


# -- retries and timeouts -----------------------------------------------------------------


async def test_max_retries_reruns_the_failed_message_on_the_restarted_instance(
    clock: FakeClock,
) -> None:
    """With `max_retries=2`, a failing message is run again (ctx.attempt 2, 3) before the
    messages behind it, each time on the instance restarted after the backoff."""
    journal = Journal(clock)
    restart = policy(max_retries=2)
    async with Runtime(probes(journal), clock=clock, idle_timeout=None, restart=restart) as rt:
        flaky = rt.ask("u", ("fail_until", 3))
        behind = rt.ask("u", "behind")
        await clock.advance(3.0)
        assert await flaky == ("ok", 3)
        assert await behind == "behind"
        assert journal.kinds("msg") == [
            ("msg", 1, ("fail_until", 3), 1, 0.0),
            ("msg", 2, ("fail_until", 3), 2, 1.0),
            ("msg", 3, ("fail_until", 3), 3, 3.0),
            ("msg", 3, "behind", 1, 3.0),
        ]
        assert (rt.stats()["failed"], rt.stats()["restarts"]) == (0, 2)


async def test_max_retries_exhausted_then_the_message_fails(clock: FakeClock) -> None:
    """A message that fails on every attempt fails after 1 + max_retries runs (RESUME:
    the retries run at once on the same instance); the dead letter says how many."""
    journal = Journal(clock)
    restart = policy(max_retries=2, decider=lambda _: Directive.RESUME)
    async with Runtime(probes(journal), clock=clock, idle_timeout=None, restart=restart) as rt:
        await expect_raises(rt.ask("u", "boom"), Boom)
        assert [(e[1], e[3]) for e in journal.kinds("msg")] == [(1, 1), (1, 2), (1, 3)]
        [letter] = rt.dead_letters()
        assert (letter.reason, letter.attempts) == ("failed", 3)


async def test_handler_timeout_fails_at_exactly_started_plus_timeout(clock: FakeClock) -> None:
    """A handler that hangs is cancelled at exactly started + handler_timeout and fails with
    `HandlerTimeout`; the policy then applies (here: restart after 1 s)."""
    journal = Journal(clock)
    restart = policy(handler_timeout=5.0)
    with capture_logs() as logs:
        async with Runtime(probes(journal), clock=clock, idle_timeout=None, restart=restart) as rt:
            await clock.advance(2.0)
            hung = rt.ask("u", "hang")
            behind = rt.ask("u", "behind")
            await clock.advance(5.0 - EPS)
            assert not hung.done()
            assert journal.kinds("cancelled") == []
            await clock.advance(EPS)
            error = await expect_raises(hung, HandlerTimeout)
            assert error.timeout == 5.0  # type: ignore[attr-defined]
            assert journal.kinds("cancelled") == [("cancelled", 1, 7.0)]
            await clock.advance(1.0)
            assert await behind == "behind"
            assert journal.events[-3:] == [
                ("stop", 1, "restart", 7.0),
                ("start", 2, 8.0),
                ("msg", 2, "behind", 1, 8.0),
            ]
    [failed] = named(logs, "actor_failed")
    assert "HandlerTimeout" in failed["error"]
    assert failed["directive"] == "restart"


async def test_virtual_time_passes_a_hung_handler_up_to_its_timeout(clock: FakeClock) -> None:
    """`clock.advance()` fires other timers (an idle sweep) while a handler hangs, and cuts
    the hang at its exact deadline (regression: advance() used to stall at the first timer
    behind a hung handler)."""
    journal = Journal(clock)
    restart = policy(handler_timeout=5.0)
    async with Runtime(probes(journal), clock=clock, idle_timeout=1.0, restart=restart) as rt:
        await rt.ask("idle-key", "x")  # idle sweep due at t=1
        hung = rt.ask("u", "hang")  # cut at t=5
        step = asyncio.ensure_future(clock.advance(10.0))
        for _ in range(10_000):  # bounded, so a regression fails instead of hanging
            if step.done():
                break
            await asyncio.sleep(0)
        assert step.done(), f"clock.advance(10) stalled at t={clock.now()}"
        await step
        await expect_raises(hung, HandlerTimeout)
        assert journal.kinds("cancelled") == [("cancelled", 2, 5.0)]
        assert ("stop", 1, "idle", 1.0) in journal.events


# -- failures of the hooks ----------------------------------------------------------------


async def test_on_start_failure_is_retried_by_restart_and_messages_are_kept(
    clock: FakeClock,
) -> None:
    """`on_start` raising is a failure: restart after the backoff; the messages wait and are
    handled in order by the first instance whose `on_start` succeeds."""
    journal = Journal(clock, fail_starts=2)
    with capture_logs() as logs:
        async with Runtime(probes(journal), clock=clock, idle_timeout=None, restart=policy()) as rt:
            futures = [rt.ask("u", m) for m in ("a", "b")]
            await rt.wait_idle()
            assert rt.pending("u") == 2
            await clock.advance(1.0)  # second on_start fails at t=1
            assert rt.pending("u") == 2
            await clock.advance(2.0)
            assert [await f for f in futures] == ["a", "b"]
            assert [e[1:] for e in journal.kinds("start")] == [(1, 0.0), (2, 1.0), (3, 3.0)]
            assert [e[1:] for e in journal.kinds("msg")] == [(3, "a", 1, 3.0), (3, "b", 1, 3.0)]
            assert rt.stats()["failed"] == 0
    assert [(e["phase"], e["directive"]) for e in named(logs, "actor_failed")] == [
        ("on_start", "restart"),
        ("on_start", "restart"),
    ]


async def test_on_stop_failure_is_logged_counted_and_the_stop_completes(clock: FakeClock) -> None:
    """`on_stop` raising (here on an idle stop) is logged and counted in
    `actor_failures`; the incarnation ends and the entry is released anyway."""
    journal = Journal(clock, fail_stops={"idle"})
    with capture_logs() as logs:
        async with Runtime(probes(journal), clock=clock, idle_timeout=10.0, restart=policy()) as rt:
            await rt.ask("u", "x")
            await clock.advance(10.0)
            stats = rt.stats()
            assert (stats["live_actors"], stats["known_keys"]) == (0, 0)
            assert stats["actor_failures"] == 1
            assert stats["restarts"] == 0
            assert await rt.ask("u", "y") == "y"
    [failed] = named(logs, "actor_failed")
    assert (failed["phase"], failed["key"]) == ("on_stop", "u")
    assert "StopBoom" in failed["error"]


async def test_on_stop_failure_during_restart_does_not_prevent_the_restart(
    clock: FakeClock,
) -> None:
    """`on_stop("restart")` raising is logged; the restart happens on schedule, no extra
    restart is charged."""
    journal = Journal(clock, fail_stops={"restart"})
    async with Runtime(probes(journal), clock=clock, idle_timeout=None, restart=policy()) as rt:
        await expect_raises(rt.ask("u", "boom"), Boom)
        waiting = rt.ask("u", "x")
        await clock.advance(1.0)
        assert await waiting == "x"
        stats = rt.stats()
        assert (stats["restarts"], stats["actor_failures"]) == (1, 2)


async def test_class_decider_applies_to_on_stop_failures(clock: FakeClock) -> None:
    """The actor class's decider also judges its `on_stop` failures (regression: the
    policy's decider was used, the instance being gone when the failure was handled)."""

    class Stopper(Probe):
        decider = staticmethod(lambda _: Directive.STOP)

    journal = Journal(clock, fail_stops={"idle"})
    with capture_logs() as logs:
        async with Runtime(
            probes(journal, Stopper), clock=clock, idle_timeout=10.0, restart=policy()
        ) as rt:
            await rt.ask("u", "x")
            await clock.advance(10.0)
    assert [(e["phase"], e["directive"]) for e in named(logs, "actor_failed")] == [
        ("on_stop", "stop")
    ]


async def test_escalated_on_stop_failure_stops_the_key(clock: FakeClock) -> None:
    """An ESCALATE of an `on_stop("restart")` failure stops the key (module docstring: "only
    an ESCALATE changes anything (the key is then stopped)"): no new incarnation starts
    (regression: the restart scheduled before `on_stop` ran still happened)."""

    def decider(error: BaseException) -> Directive:
        return Directive.ESCALATE if isinstance(error, StopBoom) else Directive.RESTART

    journal = Journal(clock, fail_stops={"restart"})
    restart = policy(decider=decider)
    async with Runtime(probes(journal), clock=clock, idle_timeout=None, restart=restart) as rt:
        await expect_raises(rt.ask("u", "boom"), Boom)
        await clock.advance(1.0)
        assert [e[0] for e in journal.events] == ["start", "msg", "stop"]
        assert rt.stats()["live_actors"] == 0


async def test_on_stop_restart_runs_on_the_crashed_instance_before_the_new_one_starts(
    clock: FakeClock,
) -> None:
    """The order of a restart: the crashed instance's `on_stop("restart")` at failure time,
    then (after the backoff) the new instance's `on_start`, then its messages."""
    journal = Journal(clock)
    stopped = asyncio.Event()

    class SlowStop(Probe):
        async def on_stop(self, reason: str) -> None:
            self.journal.add("stop_begin", self.serial, reason)
            await stopped.wait()
            self.journal.add("stop_end", self.serial, reason)

    restart = policy(backoff_min=EPS)
    async with Runtime(
        probes(journal, SlowStop), clock=clock, idle_timeout=None, restart=restart
    ) as rt:
        failing = rt.ask("u", "boom")
        rt.tell("u", "next")
        await expect_raises(failing, Boom)
        await clock.advance(2.0)  # the backoff passes while on_stop is still running
        assert [e[0] for e in journal.events] == ["start", "msg", "stop_begin"]
        stopped.set()
        await rt.wait_idle()
        await clock.advance(0)
        assert journal.events == [
            ("start", 1, 0.0),
            ("msg", 1, "boom", 1, 0.0),
            ("stop_begin", 1, "restart", 0.0),
            ("stop_end", 1, "restart", 2.0),
            ("start", 2, 2.0),
            ("msg", 2, "next", 1, 2.0),
        ]


# -- lifecycle events as data -------------------------------------------------------------


async def test_lifecycle_events_are_logged_as_data(clock: FakeClock) -> None:
    """The lifecycle of a key, as structlog events with stable names, levels and fields."""
    journal = Journal(clock)
    with capture_logs() as logs:
        restart = policy(max_restarts=1, within=100.0)
        async with Runtime(probes(journal), clock=clock, idle_timeout=30.0, restart=restart) as rt:
            await expect_raises(rt.ask("u", "boom"), Boom)  # actor_started, actor_failed
            await clock.advance(1.0)  # actor_restarted
            failing = rt.ask("u", "boom")  # over budget: gave up
            rt.tell("u", "dropped")
            await expect_raises(failing, Boom)
            await rt.ask("u", "fresh")
            await clock.advance(30.0)  # actor_idle_stopped
    lifecycle = [
        (e["event"], e["log_level"])
        for e in logs
        if e["event"]
        in {
            "actor_started",
            "actor_failed",
            "actor_restart_scheduled",
            "actor_restarted",
            "supervisor_gave_up",
            "message_dead_lettered",
            "messages_dead_lettered",
            "actor_idle_stopped",
        }
    ]
    assert lifecycle == [
        ("actor_started", "debug"),
        ("actor_failed", "warning"),
        ("message_dead_lettered", "warning"),  # the failed "boom" (an ask)
        ("actor_restart_scheduled", "info"),
        ("actor_restarted", "info"),
        ("actor_failed", "warning"),
        ("message_dead_lettered", "warning"),
        ("supervisor_gave_up", "error"),
        ("messages_dead_lettered", "warning"),  # "dropped", reason gave_up: one line per drop
        ("actor_started", "debug"),
        ("actor_idle_stopped", "debug"),
    ]
    scheduled = named(logs, "actor_restart_scheduled")[0]
    assert (scheduled["key"], scheduled["delay_s"], scheduled["restarts"]) == ("u", 1.0, 1)
    first_failure = named(logs, "actor_failed")[0]
    assert (first_failure["phase"], first_failure["directive"], first_failure["attempt"]) == (
        "on_message",
        "restart",
        1,
    )
    assert [e["reason"] for e in named(logs, "message_dead_lettered")] == ["failed", "failed"]
    assert [e["reason"] for e in named(logs, "messages_dead_lettered")] == ["gave_up"]
    assert named(logs, "actor_idle_stopped")[0]["key"] == "u"


class _CountingHistories(OrderedDict[Any, Any]):
    """The supervisor's kept restart histories, counting how many entries it examines."""

    examined = 0

    def items(self) -> Any:  # type: ignore[override]
        for item in super().items():
            _CountingHistories.examined += 1
            yield item


async def test_keys_that_fail_once_cost_linear_work_to_forget(clock: FakeClock) -> None:
    """Issue 8 #10: N keys that each fail once and go idle. Their restart histories are
    kept (the budget holds across passivation) and forgotten once expired, with work
    linear in N: no rescan of every kept history per release (that was ~N^2/2)."""

    class FailsOnce(UserActor):
        def on_message(self, message: Any, ctx: Context) -> Any:
            if ctx.attempt == 1:
                raise Boom(message)
            return message

    keys = 3000
    restart = policy(
        max_retries=1, backoff_min=0.001, backoff_max=0.001, within=5.0, reset_after=5.0
    )
    with capture_logs():
        async with Runtime(FailsOnce, clock=clock, idle_timeout=1.0, restart=restart) as rt:
            supervisor: Any = rt._core.supervisor  # type: ignore[union-attr]
            supervisor.histories = _CountingHistories()
            _CountingHistories.examined = 0
            for n in range(keys):
                rt.tell(n, n)
                if n % 500 == 499:  # releases and expiries interleave, as in an outage
                    await clock.advance(0.5)
            for _ in range(30):
                await clock.advance(1.0)
            rt.tell("late", "late")  # its release forgets every expired history at once
            for _ in range(3):
                await clock.advance(1.0)
            stats = rt.stats()
            assert (stats["handled"], stats["restarts"]) == (keys + 1, keys + 1)
            assert stats["live_actors"] == 0
            assert list(supervisor.histories) == ["late"]
    assert _CountingHistories.examined <= 3 * keys
