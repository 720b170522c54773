"""Issue 8, item 9 and the smaller defects: thread backpressure, ttl, withdrawing an ask,
`FutureTimeout`, the cause of a drop, `on_stop` failure logs, option and argument
checks, `stats()` before start, stderr, `redeliver`'s future, `interrupt_ignored`.

Black-box tests through the public API. Logs are checked as data with
`structlog.testing.capture_logs()`, the runtime created inside the capture block.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from typing import Any

import pykka
import pytest
import structlog
from structlog.testing import capture_logs

import actors
from actors import (
    Context,
    Dropped,
    InorderError,
    Interrupted,
    LoopFuture,
    MailboxFull,
    RuntimeStopped,
    UserActor,
)
from actors.testing import FakeClock, wait_all_tasks_blocked
from supervisors import Directive, RestartPolicy, Runtime
from tests.helpers import in_flight, ledger_ok, named, policy, running, settle

EPS = 0.25  # exactly representable, so virtual times compare exactly


class Boom(Exception):
    """An ordinary handler failure."""


class Held(UserActor):
    """Records what it handles; "hold" waits on the class's gate (reset per test) and is
    not recorded."""

    gate: asyncio.Event
    handled: list[tuple[Any, Any]]

    async def on_message(self, message: Any, ctx: Context) -> Any:
        if message == "hold":
            await Held.gate.wait()
            return message
        if message == "boom":
            raise Boom(message)
        Held.handled.append((ctx.key, message))
        return message


@pytest.fixture(autouse=True)
def _reset_held() -> None:
    Held.gate = asyncio.Event()
    Held.handled = []


def raised_by(call: Any, *args: Any, **kwargs: Any) -> BaseException | None:
    """What `call(*args, **kwargs)` raised (None if it returned): run it in a thread."""
    try:
        call(*args, **kwargs)
    except BaseException as exc:  # the test inspects it
        return exc
    return None


# -- 9. backpressure from threads ---------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_a_thread_burst_to_a_held_key_gets_mailbox_full_at_the_call_site() -> None:
    """Item 9: a thread tells 1,000 messages to one key (max_pending=100, its handler busy):
    exactly 100 are accepted, the other 900 calls raise MailboxFull in the thread (and an ask
    too), every accepted message is handled, none is Dropped("mailbox_full"), and the log
    gets a handful of warnings at most, not one per message."""
    with capture_logs() as logs:
        async with running(Held, max_pending=100) as rt:
            hold = rt.ask("k", "hold")
            await in_flight(rt, 1)  # the message in flight does not count

            def burst() -> tuple[int, list[MailboxFull], BaseException | None]:
                accepted, full = 0, []
                for i in range(1000):
                    try:
                        rt.tell("k", i)
                    except MailboxFull as exc:
                        full.append(exc)
                    else:
                        accepted += 1
                return accepted, full, raised_by(rt.ask, "k", "one more")

            accepted, full, ask_error = await asyncio.to_thread(burst)
            assert (accepted, len(full)) == (100, 900)
            assert all(exc.key == "k" and exc.scope == "key" for exc in full)
            assert isinstance(ask_error, MailboxFull)
            Held.gate.set()
            assert await hold == "hold"
            await settle(rt, 5)
            stats = rt.stats()
            assert Held.handled == [("k", i) for i in range(100)]
            assert (stats["accepted"], stats["handled"], stats["dropped"]) == (101, 101, 0)
            assert [d for d in rt.dead_letters() if d.reason == "mailbox_full"] == []
            assert ledger_ok(stats)
    assert len([e for e in logs if e["log_level"] == "warning"]) <= 5


@pytest.mark.timeout(30)
async def test_a_thread_burst_to_a_busy_key_never_drops_what_it_accepted() -> None:
    """Item 9: the same burst while the key drains its mailbox concurrently: each call either
    raises MailboxFull or its message is handled; no Dropped("mailbox_full")."""

    class Slowish(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            await asyncio.sleep(0)
            Held.handled.append((ctx.key, message))

    async with running(Slowish, max_pending=100) as rt:

        def burst() -> tuple[list[int], int]:
            accepted, full = [], 0
            for i in range(1000):
                try:
                    rt.tell("k", i)
                except MailboxFull:
                    full += 1
                else:
                    accepted.append(i)
            return accepted, full

        accepted, full = await asyncio.to_thread(burst)
        await settle(rt, 10)
        stats = rt.stats()
        assert len(accepted) + full == 1000
        assert [m for _, m in Held.handled] == accepted
        assert (stats["accepted"], stats["handled"], stats["dropped"]) == (len(accepted),) * 2 + (
            0,
        )
        assert ledger_ok(stats)


@pytest.mark.timeout(30)
async def test_threads_respect_max_total_pending_at_the_call_site() -> None:
    """Item 9: two threads telling round-robin to five busy keys with max_total_pending=50:
    exactly 50 are accepted, the rest raise MailboxFull (scope "runtime") in the threads,
    and every accepted message is handled."""
    keys = [f"k{i}" for i in range(5)]
    async with running(Held, max_total_pending=50) as rt:
        for key in keys:
            rt.tell(key, "hold")
        await in_flight(rt, len(keys))

        def burst(offset: int) -> tuple[int, list[MailboxFull]]:
            accepted, full = 0, []
            for i in range(250):
                try:
                    rt.tell(keys[i % len(keys)], offset + i)
                except MailboxFull as exc:
                    full.append(exc)
                else:
                    accepted += 1
            return accepted, full

        results = await asyncio.gather(asyncio.to_thread(burst, 0), asyncio.to_thread(burst, 1000))
        accepted = sum(n for n, _ in results)
        full = [exc for _, errors in results for exc in errors]
        assert (accepted, len(full)) == (50, 450)
        assert all(exc.scope == "runtime" for exc in full)
        Held.gate.set()
        await settle(rt, 5)
        stats = rt.stats()
        assert (stats["accepted"], stats["handled"], stats["dropped"]) == (55, 55, 0)
        assert ledger_ok(stats)


@pytest.mark.parametrize(
    ("reason", "restart"),
    [
        ("stopped", policy(decider=lambda _: Directive.STOP)),
        ("gave_up", policy(max_restarts=0)),
    ],
)
async def test_a_bulk_drop_logs_one_aggregated_warning(
    clock: FakeClock, reason: str, restart: RestartPolicy
) -> None:
    """Item 9: a key stopped (or given up on) with 50 messages waiting logs one WARNING
    `messages_dead_lettered` with the count, not one line per message."""
    with capture_logs() as logs:
        async with running(Held, clock=clock, idle_timeout=None, restart=restart) as rt:
            rt.tell("k", "boom")
            for i in range(50):
                rt.tell("k", i)
            await settle(rt)
            assert [d.reason for d in rt.dead_letters()] == ["failed"] + [reason] * 50
            assert ledger_ok(rt.stats())
    assert [e for e in named(logs, "message_dead_lettered") if e["reason"] == reason] == []
    [bulk] = named(logs, "messages_dead_lettered")
    assert (bulk["key"], bulk["reason"], bulk["count"], bulk["log_level"]) == (
        "k",
        reason,
        50,
        "warning",
    )


# -- ttl: a deadline for starting ---------------------------------------------------------------


@pytest.mark.timeout(10)
async def test_ttl_drops_a_message_not_started_by_its_deadline(clock: FakeClock) -> None:
    """A message that has not started `ttl` seconds after acceptance ends Dropped("expired")
    at exactly that time: the ask raises it, it is dead-lettered and counted as dropped, and
    logged at DEBUG only (like "cleared"); messages without a ttl are kept."""
    with capture_logs() as logs:
        async with running(Held, clock=clock, idle_timeout=None, restart=policy()) as rt:
            hold = rt.ask("k", "hold")
            await in_flight(rt, 1)
            rt.tell("k", "told", ttl=5)
            asked = rt.ask("k", "asked", ttl=5.0)
            rt.tell("k", "kept")
            await clock.advance(5.0 - EPS)
            assert not asked.done()
            assert rt.pending("k") == 3
            await clock.advance(EPS)
            assert asked.done()
            with pytest.raises(Dropped) as info:
                await asked
            assert info.value.reason == "expired"
            assert rt.pending("k") == 1
            Held.gate.set()
            assert await hold == "hold"
            await settle(rt)
            assert Held.handled == [("k", "kept")]
            assert [(d.message, d.reason) for d in rt.dead_letters()] == [
                ("told", "expired"),
                ("asked", "expired"),
            ]
            stats = rt.stats()
            assert (stats["accepted"], stats["handled"], stats["dropped"]) == (4, 2, 2)
            assert ledger_ok(stats)
    expired = [e for e in logs if e.get("reason") == "expired"]
    assert expired != []
    assert {e["log_level"] for e in expired} == {"debug"}
    assert [e for e in logs if e["log_level"] in ("warning", "error")] == []


@pytest.mark.timeout(10)
async def test_ttl_does_not_cut_short_a_message_that_started(clock: FakeClock) -> None:
    """The ttl is a deadline for starting: a handler that started in time finishes."""
    release = asyncio.Event()

    class Slow(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            await release.wait()
            return message

    async with running(Slow, clock=clock, idle_timeout=None) as rt:
        reply = rt.ask("k", "m", ttl=1.0)
        await in_flight(rt, 1)
        await clock.advance(10.0)
        assert not reply.done()
        release.set()
        assert await asyncio.wait_for(reply, 2) == "m"
        assert rt.dead_letters() == []


@pytest.mark.parametrize("ttl", [0, -1, math.nan, "5", True])
async def test_ttl_must_be_a_positive_number(ttl: Any) -> None:
    """A bad ttl is an error at the call site; nothing is accepted."""
    async with running(Held) as rt:
        assert await rt.ask("k", "ok", ttl=30) == "ok"
        with pytest.raises((ValueError, TypeError)):
            rt.tell("k", "x", ttl=ttl)
        with pytest.raises((ValueError, TypeError)):
            rt.ask("k", "x", ttl=ttl)
        assert isinstance(
            await asyncio.to_thread(raised_by, rt.tell, "k", "x", ttl=ttl),
            (
                ValueError,
                TypeError,
            ),
        )
        assert rt.stats()["accepted"] == 1


# -- withdrawing an ask -------------------------------------------------------------------------


async def test_cancel_withdraws_a_waiting_ask_but_not_a_started_one() -> None:
    """future.cancel() on an ask still waiting: True, the message ends Dropped("withdrawn")
    and never runs. On an ask in flight or finished: False, nothing changes."""
    async with running(Held) as rt:
        hold = rt.ask("k", "hold")
        await in_flight(rt, 1)
        waiting = rt.ask("k", "withdrawn")
        after = rt.ask("k", "after")
        assert waiting.cancel() is True
        assert hold.cancel() is False  # started
        with pytest.raises(Dropped) as info:
            await waiting
        assert info.value.reason == "withdrawn"
        assert waiting.cancel() is False  # already has its outcome
        Held.gate.set()
        assert await hold == "hold"
        assert await after == "after"
        assert after.cancel() is False  # finished
        await settle(rt)
        assert Held.handled == [("k", "after")]
        assert [(d.message, d.reason) for d in rt.dead_letters()] == [("withdrawn", "withdrawn")]
        stats = rt.stats()
        assert (stats["accepted"], stats["handled"], stats["dropped"]) == (3, 2, 1)
        assert ledger_ok(stats)


async def test_giving_up_on_an_ask_with_wait_for_withdraws_the_message() -> None:
    """`asyncio.wait_for(rt.ask(...), t)` timing out cancels the awaiting task: the waiting
    message is withdrawn and never handled."""
    async with running(Held) as rt:
        hold = rt.ask("k", "hold")
        await in_flight(rt, 1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(rt.ask("k", "late"), 0.05)
        Held.gate.set()
        assert await hold == "hold"
        await settle(rt)
        assert Held.handled == []
        assert [(d.message, d.reason) for d in rt.dead_letters()] == [("late", "withdrawn")]
        assert ledger_ok(rt.stats())


async def test_cancelling_a_task_that_awaits_a_waiting_ask_withdraws_it() -> None:
    """Cancelling the task awaiting an ask withdraws the message (the same as wait_for)."""
    async with running(Held) as rt:
        hold = rt.ask("k", "hold")
        await in_flight(rt, 1)

        async def caller() -> Any:
            return await rt.ask("k", "abandoned")

        task = asyncio.ensure_future(caller())
        await wait_all_tasks_blocked()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        Held.gate.set()
        assert await hold == "hold"
        await settle(rt)
        assert Held.handled == []
        assert [(d.message, d.reason) for d in rt.dead_letters()] == [("abandoned", "withdrawn")]
        assert ledger_ok(rt.stats())


# -- FutureTimeout ------------------------------------------------------------------------------


async def test_get_with_a_timeout_raises_future_timeout() -> None:
    """`LoopFuture.get(timeout=)` from a thread raises actors.FutureTimeout: an InorderError,
    a TimeoutError, and still a pykka.Timeout for pykka-style code."""
    assert issubclass(actors.FutureTimeout, InorderError)
    assert issubclass(actors.FutureTimeout, TimeoutError)
    assert issubclass(actors.FutureTimeout, pykka.Timeout)
    async with running(Held) as rt:
        hold = rt.ask("k", "hold")
        error = await asyncio.to_thread(raised_by, hold.get, timeout=0.05)
        assert isinstance(error, actors.FutureTimeout)
        Held.gate.set()
        assert await hold == "hold"


# -- the cause of a drop --------------------------------------------------------------------------


async def test_messages_dropped_because_the_key_stopped_keep_the_failure(
    clock: FakeClock,
) -> None:
    """Dropped("stopped") carries the failure that stopped the key: `.cause` and `__cause__`
    on the raised error, `DeadLetter.cause` on the dead letter."""
    restart = policy(decider=lambda _: Directive.STOP)
    async with running(Held, clock=clock, idle_timeout=None, restart=restart) as rt:
        failing = rt.ask("k", "boom")
        waiting = rt.ask("k", "w")
        with pytest.raises(Boom):
            await failing
        with pytest.raises(Dropped) as info:
            await waiting
        assert info.value.reason == "stopped"
        assert isinstance(info.value.cause, Boom)
        assert info.value.__cause__ is info.value.cause
        failed, dropped = rt.dead_letters()
        assert isinstance(failed.cause, Boom)
        assert (dropped.reason, type(dropped.cause)) == ("stopped", Boom)
        assert isinstance(dropped.error, Dropped)


@pytest.mark.timeout(10)
async def test_messages_dropped_because_restarts_gave_up_keep_the_failure(
    clock: FakeClock,
) -> None:
    """A factory that always fails: Dropped("gave_up") carries the factory's exception."""

    def factory(key: str | int) -> UserActor:
        raise Boom(f"no actor for {key}")

    async with running(
        factory, clock=clock, idle_timeout=None, restart=policy(max_restarts=1)
    ) as rt:
        asks = [rt.ask("k", i) for i in range(2)]
        await settle(rt)
        await clock.advance(10.0)
        await settle(rt)
        for ask in asks:
            with pytest.raises(Dropped) as info:
                await ask
            assert info.value.reason == "gave_up"
            assert isinstance(info.value.cause, Boom)
            assert info.value.__cause__ is info.value.cause
        letters = rt.dead_letters()
        assert [d.reason for d in letters] == ["gave_up", "gave_up"]
        assert all(isinstance(d.cause, Boom) for d in letters)


# -- what a failing on_stop logs --------------------------------------------------------------


async def test_a_failing_on_stop_at_idle_logs_the_directive_applied(clock: FakeClock) -> None:
    """on_stop("idle") raising an Exception: actor_failed says directive "none" (the
    incarnation ends as it was going to), no restart happens or is counted."""

    class Bot(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            return message

        def on_stop(self, reason: str) -> None:
            if reason == "idle":
                raise Boom("on_stop")

    with capture_logs() as logs:
        async with running(Bot, clock=clock, idle_timeout=10.0, restart=policy()) as rt:
            await rt.ask("k", 1)
            await clock.advance(10.0)
            await clock.advance(10.0)  # a restart backoff, if one were wrongly scheduled
            stats = rt.stats()
            assert (stats["restarts"], stats["live_actors"], stats["activations"]) == (0, 0, 1)
    [failed] = named(logs, "actor_failed")
    assert (failed["phase"], failed["directive"]) == ("on_stop", "none")
    assert named(logs, "actor_restart_scheduled") == []


async def test_a_failing_on_stop_that_stops_the_key_logs_directive_stop(clock: FakeClock) -> None:
    """on_stop("restart") raising, with a decider that answers STOP for it: actor_failed says
    "stop"; the restart it was for does not happen; what waits is dead-lettered "stopped"."""

    class StopBoom(Exception):
        pass

    class Bot(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            if message == "boom":
                raise Boom(message)
            return message

        def on_stop(self, reason: str) -> None:
            if reason == "restart":
                raise StopBoom(reason)

    def decider(error: BaseException) -> Directive:
        return Directive.STOP if isinstance(error, StopBoom) else Directive.RESTART

    with capture_logs() as logs:
        async with running(
            Bot, clock=clock, idle_timeout=None, restart=policy(decider=decider)
        ) as rt:
            failing = rt.ask("k", "boom")
            waiting = rt.ask("k", "w")
            with pytest.raises(Boom):
                await failing
            with pytest.raises(Dropped) as info:
                await waiting
            assert info.value.reason == "stopped"
            await clock.advance(10.0)
            assert rt.stats()["live_actors"] == 0
    assert [(e["phase"], e["directive"]) for e in named(logs, "actor_failed")] == [
        ("on_message", "restart"),
        ("on_stop", "stop"),
    ]
    assert named(logs, "actor_restarted") == []


# -- options and arguments are checked at the call site -----------------------------------------


@pytest.mark.parametrize(
    "level", [25, 99, -1, "LOUD", "25"], ids=["25", "99", "-1", "LOUD", "str25"]
)
def test_a_log_level_that_is_not_a_logging_level_is_rejected_at_construction(level: Any) -> None:
    """Runtime(log_level=25) fails when the Runtime is built, naming the option."""
    with pytest.raises(ValueError, match="log_level"):
        Runtime(Held, log_level=level)


@pytest.mark.parametrize(
    "level",
    [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL, "DEBUG"],
)
async def test_logging_levels_and_their_names_are_accepted(level: Any) -> None:
    """The logging module's levels, as ints or names, are accepted and filter the events."""
    with capture_logs() as logs:
        async with running(Held, log_level=level) as rt:
            assert await rt.ask("k", 1) == 1
    handled = named(logs, "message_handled")
    debug = level in (logging.DEBUG, "DEBUG")
    assert bool(handled) == debug


@pytest.mark.parametrize(("option", "value"), [("interrupt", "yes"), ("clear", 1), ("clear", None)])
async def test_interrupt_and_clear_must_be_bools(option: str, value: Any) -> None:
    """interrupt= and clear= that are not bools raise TypeError at the call site (loop thread
    and other threads alike); nothing is accepted."""
    async with running(Held) as rt:
        with pytest.raises(TypeError, match=option):
            rt.tell("k", "x", **{option: value})
        with pytest.raises(TypeError, match=option):
            rt.ask("k", "x", **{option: value})
        for call in (rt.tell, rt.ask):
            error = await asyncio.to_thread(raised_by, call, "k", "x", **{option: value})
            assert isinstance(error, TypeError)
        assert rt.stats()["accepted"] == 0
        assert await rt.ask("k", "ok", priority=1, **{option: True}) == "ok"


async def test_stats_before_start_has_every_key_with_zeros() -> None:
    """stats() of a runtime not started yet: the same keys as a running one, all zeros."""
    before = Runtime(Held).stats()
    async with running(Held) as rt:
        idle = rt.stats()
    assert before["state"] == "new"
    assert before == {**idle, "state": "new"}
    assert before["accepted"] == 0


@pytest.mark.parametrize("call", ["tell", "ask"])
def test_a_call_before_start_says_how_to_start_the_runtime(call: str) -> None:
    """tell/ask on a runtime that was never started: RuntimeStopped saying how to start it."""
    rt = Runtime(Held)
    with pytest.raises(RuntimeStopped) as info:
        getattr(rt, call)("k", 1)
    assert re.search(r"start\(\)|async with|with Runtime", str(info.value)), str(info.value)
    assert rt.stats()["accepted"] == 0


async def test_without_structlog_configuration_diagnostics_go_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Unconfigured structlog: the library's fallback output (warnings and errors) goes to
    stderr, never stdout."""
    structlog.reset_defaults()
    assert not structlog.is_configured()
    async with running(Held, restart=RestartPolicy(backoff_min=0, jitter=0)) as rt:
        rt.tell("k", "boom")  # message_failed, ERROR
        await settle(rt)
    out, err = capsys.readouterr()
    assert out == ""
    assert "message_failed" in err


async def test_redeliver_returns_the_future_of_the_redelivered_message() -> None:
    """redeliver(letter) returns the LoopFuture of the new delivery."""
    failing = {"on": True}

    class Flaky(UserActor):
        def on_message(self, message: Any, ctx: Context) -> Any:
            if failing["on"]:
                raise Boom("down")
            return f"handled {message}"

    async with running(Flaky, restart=RestartPolicy(backoff_min=0, jitter=0)) as rt:
        rt.tell("k", "important")
        await settle(rt)
        [letter] = rt.dead_letters()
        failing["on"] = False
        future = rt.redeliver(letter)
        assert isinstance(future, LoopFuture)
        assert await asyncio.wait_for(future, 2) == "handled important"
        assert rt.dead_letters() == []


async def test_an_interrupt_not_above_the_priority_in_flight_is_ignored_and_logged() -> None:
    """interrupt=True at a priority not above the one in flight has no effect (the handler
    finishes, the message waits its turn) and logs a DEBUG `interrupt_ignored`; an interrupt
    that does take effect logs nothing of the kind."""
    with capture_logs() as logs:
        async with running(Held) as rt:
            hold = rt.ask("k", "hold", priority=5)
            await in_flight(rt, 1)
            same = rt.ask("k", "same", priority=5, interrupt=True)
            lower = rt.ask("k", "lower", priority=3, interrupt=True)
            await wait_all_tasks_blocked()
            assert not hold.done()
            ignored = named(logs, "interrupt_ignored")
            assert [(e["key"], e["log_level"]) for e in ignored] == [("k", "debug")] * 2
            Held.gate.set()
            assert await hold == "hold"
            assert [await same, await lower] == ["same", "lower"]

            Held.gate.clear()
            slow = rt.ask("k", "hold")
            await in_flight(rt, 1)
            urgent = rt.ask("k", "urgent", priority=1, interrupt=True)
            with pytest.raises(Interrupted):
                await slow
            assert await urgent == "urgent"
            assert len(named(logs, "interrupt_ignored")) == 2
