"""Review tests: interleavings of failures, interrupts, timeouts, shutdown and threads.

Every test uses virtual time (`FakeClock`) and checks the G4 ledger:
handled + failed + interrupted + dropped == accepted once nothing is pending.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from actors import Context, Dropped, HandlerTimeout, Interrupted, UserActor
from actors.testing import FakeClock, wait_all_tasks_blocked
from supervisors import Directive, Runtime
from tests.helpers import policy


class Boom(Exception):
    """The injected failure."""


def ledger_ok(stats: dict[str, Any]) -> bool:
    done = stats["handled"] + stats["failed"] + stats["interrupted"] + stats["dropped"]
    return stats["pending"] == 0 and stats["in_flight"] == 0 and done == stats["accepted"]


async def settle(rt: Runtime, seconds: float = 2.0) -> None:
    # A hang detector, not a timing: an ERROR log rendered with its traceback can take
    # tens of milliseconds on a loaded machine.
    await asyncio.wait_for(rt.wait_idle(), seconds)


# -- wait_idle ------------------------------------------------------------------------------


async def test_wait_idle_returns_after_thread_tell_to_key_in_backoff(clock: FakeClock) -> None:
    """A tell from another thread to a key waiting on its restart backoff creates no task and
    no supervisor message; `wait_idle` registered while that tell sat in the ingress must
    still wake up (it hangs: nothing calls `notify` after the ingress drain)."""
    rt_box: list[Runtime] = []
    gate = asyncio.Event()

    class Actor(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            if message == "boom":
                raise Boom(message)
            if message == "poke":
                await gate.wait()
                # Another thread tells "b"; the item waits in the ingress while this returns.
                t = threading.Thread(target=rt_box[0].tell, args=("b", "late"))
                t.start()
                t.join()
            return message

    async with Runtime(
        Actor, clock=clock, idle_timeout=None, restart=policy(backoff_min=10.0, backoff_max=10.0)
    ) as rt:
        rt_box.append(rt)
        rt.tell("b", "boom")
        await settle(rt)  # "b" now waits 10 virtual seconds for its restart
        rt.tell("a", "poke")
        waiter = asyncio.ensure_future(rt.wait_idle())
        await wait_all_tasks_blocked()  # wait_idle is now registered, "a" waits on the gate
        gate.set()
        await asyncio.wait_for(waiter, 0.05)  # hangs: no notify after the ingress drain
        await clock.advance(10.0)
        await settle(rt)
        assert ledger_ok(rt.stats())


# -- factories, shutdown during backoff ---------------------------------------------------


async def test_factory_that_raises_gives_up_and_resolves_every_ask(clock: FakeClock) -> None:
    """A factory that always raises is a failure of the "init" phase: restarts follow the
    budget, then "gave up" drops every waiting message; each ask gets exactly one outcome."""
    calls = 0

    def factory(key: str | int) -> UserActor:
        nonlocal calls
        calls += 1
        raise Boom("factory")

    async with Runtime(
        factory, clock=clock, idle_timeout=None, restart=policy(max_restarts=2)
    ) as rt:
        asks = [rt.ask("k", i) for i in range(3)]
        await settle(rt)
        await clock.advance(10.0)
        await settle(rt)
        for ask in asks:
            with pytest.raises(Dropped) as info:
                await ask
            assert info.value.reason == "gave_up"
        stats = rt.stats()
        assert calls == 3
        assert stats["gave_up"] == 1
        assert ledger_ok(stats)
        # The key starts afresh afterwards (and fails again, but is not stuck).
        again = rt.ask("k", "x")
        await settle(rt)
        await clock.advance(10.0)
        await settle(rt)
        with pytest.raises(Dropped):
            await again


async def test_stop_during_restart_backoff_drops_waiting_once(clock: FakeClock) -> None:
    """stop(drain=False) while a key waits on its restart backoff: the waiting messages end
    dropped("shutdown") exactly once, no new incarnation starts, on_stop is not run again."""
    stops: list[str] = []
    starts = 0

    class Actor(UserActor):
        def on_start(self) -> None:
            nonlocal starts
            starts += 1

        async def on_message(self, message: Any, ctx: Context) -> Any:
            if message == "boom":
                raise Boom(message)
            return message

        def on_stop(self, reason: str) -> None:
            stops.append(reason)

    rt = await Runtime(Actor, clock=clock, idle_timeout=None, restart=policy()).start()
    rt.tell("k", "boom")
    waiting = rt.ask("k", "after")
    await settle(rt)
    assert stops == ["restart"]
    summary = await rt.stop(drain=False)
    with pytest.raises(Dropped) as info:
        await waiting
    assert info.value.reason == "shutdown"
    await clock.advance(5.0)
    assert starts == 1
    assert stops == ["restart"]
    assert summary.accepted == summary.handled + summary.failed + summary.dropped
    assert summary.dropped_on_stop == 1


# -- interrupts, timeouts, blocking handlers ------------------------------------------------


async def test_interrupt_then_handler_timeout_ends_interrupted_once(clock: FakeClock) -> None:
    """An interrupt and then the handler timeout on the same message: one outcome
    (interrupted), the interrupting message is handled, no failure is counted."""

    class Actor(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            if message == "slow":
                try:
                    await asyncio.get_running_loop().create_future()
                except asyncio.CancelledError:
                    await asyncio.sleep(0)  # still "running" a little while the timer is due
                    raise
            return message

    async with Runtime(
        Actor, clock=clock, idle_timeout=None, restart=policy(handler_timeout=1.0)
    ) as rt:
        slow = rt.ask("k", "slow")
        await wait_all_tasks_blocked()
        urgent = rt.ask("k", "urgent", priority=1, interrupt=True)
        await clock.advance(2.0)
        await settle(rt)
        with pytest.raises(Interrupted):
            await slow
        assert await urgent == "urgent"
        stats = rt.stats()
        assert stats["failed"] == 0
        assert stats["actor_failures"] == 0
        assert ledger_ok(stats)


async def test_blocking_handler_interrupt_sets_flag_and_ends_interrupted() -> None:
    """A blocking handler cannot be cancelled: an interrupt sets ctx.interrupted, the
    handler returns, its message ends Interrupted and the urgent one runs after it."""
    started = threading.Event()
    seen: list[Any] = []

    class Actor(UserActor):
        blocking = True

        def on_message(self, message: Any, ctx: Context) -> Any:
            if message == "slow":
                started.set()
                for _ in range(2000):
                    if ctx.interrupted:
                        seen.append("saw_interrupt")
                        return "partial"
                    threading.Event().wait(0.001)
            seen.append(message)
            return message

    async with Runtime(Actor, idle_timeout=None) as rt:
        slow = rt.ask("k", "slow")
        await asyncio.to_thread(started.wait, 5)  # the blocking handler is running
        urgent = rt.ask("k", "urgent", priority=1, interrupt=True)
        with pytest.raises(Interrupted):
            await slow
        assert await urgent == "urgent"
        assert seen == ["saw_interrupt", "urgent"]
        await rt.wait_idle()
        assert ledger_ok(rt.stats())


async def test_blocking_handler_timeout_then_retry_succeeds(clock: FakeClock) -> None:
    """A blocking handler past handler_timeout fails with HandlerTimeout (flag set), is
    retried once (max_retries=1) on the resumed instance, and then succeeds."""
    attempts: list[int] = []

    class Actor(UserActor):
        blocking = True
        decider = staticmethod(lambda e: Directive.RESUME)

        def on_message(self, message: Any, ctx: Context) -> Any:
            attempts.append(ctx.attempt)
            if ctx.attempt == 1:
                for _ in range(2000):
                    if ctx.interrupted:
                        return "late"
                    threading.Event().wait(0.001)
            return ("ok", ctx.attempt)

    async with Runtime(
        Actor,
        clock=clock,
        idle_timeout=None,
        restart=policy(handler_timeout=1.0, max_retries=1),
    ) as rt:
        reply = rt.ask("k", "m")
        await asyncio.sleep(0.01)
        await clock.advance(1.0)
        assert await asyncio.wait_for(reply, 2) == ("ok", 2)
        assert attempts == [1, 2]
        await rt.wait_idle()
        stats = rt.stats()
        assert stats["actor_failures"] == 1
        assert ledger_ok(stats)


async def test_handler_timeout_retry_exhausted_fails_with_timeout(clock: FakeClock) -> None:
    """With max_retries=1 and a handler that always hangs, the ask fails with
    HandlerTimeout after two attempts; one failed outcome, one dead letter."""

    class Actor(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            await asyncio.get_running_loop().create_future()

    async with Runtime(
        Actor,
        clock=clock,
        idle_timeout=None,
        restart=policy(handler_timeout=1.0, max_retries=1),
    ) as rt:
        reply = rt.ask("k", "m")
        await clock.advance(1.0)  # attempt 1 times out -> restart backoff 1 s
        await clock.advance(1.0)  # restart
        await clock.advance(1.0)  # attempt 2 times out
        with pytest.raises(HandlerTimeout):
            await reply
        await clock.advance(10.0)
        await settle(rt)
        stats = rt.stats()
        assert stats["failed"] == 1
        assert ledger_ok(stats)
        assert [d.reason for d in rt.dead_letters()] == ["failed"]
        assert rt.dead_letters()[0].attempts == 2


# -- clear + retry ------------------------------------------------------------------------


async def test_clear_during_backoff_drops_the_message_awaiting_retry(clock: FakeClock) -> None:
    """A failed message waiting for its retry during the restart backoff is a waiting
    message: clear=True with a higher priority drops it ("cleared"), it is not retried."""
    handled: list[tuple[Any, int]] = []

    class Actor(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            handled.append((message, ctx.attempt))
            if message == "boom":
                raise Boom(message)
            return message

    async with Runtime(Actor, clock=clock, idle_timeout=None, restart=policy(max_retries=3)) as rt:
        failing = rt.ask("k", "boom")
        await settle(rt)
        rt.tell("k", "reset", priority=1, clear=True)
        await clock.advance(2.0)
        await settle(rt)
        with pytest.raises(Dropped) as info:
            await failing
        assert info.value.reason == "cleared"
        assert handled == [("boom", 1), ("reset", 1)]
        assert ledger_ok(rt.stats())


async def test_clear_sent_as_the_handler_fails_still_drops_the_retry(clock: FakeClock) -> None:
    """clear=True sent in the same loop turn as the handler fails (before the supervisor
    has put the failed message back for its retry) should drop it like a waiting one; the
    retry is put back after the clear and runs after the clearing message instead."""
    handled: list[tuple[Any, int]] = []
    rt_box: list[Runtime] = []

    class Actor(UserActor):
        decider = staticmethod(lambda e: Directive.RESUME)

        async def on_message(self, message: Any, ctx: Context) -> Any:
            handled.append((message, ctx.attempt))
            if message == "boom":
                asyncio.get_running_loop().call_soon(
                    lambda: rt_box[0].tell("k", "reset", priority=1, clear=True)
                )
                raise Boom(message)
            return message

    async with Runtime(Actor, clock=clock, idle_timeout=None, restart=policy(max_retries=3)) as rt:
        rt_box.append(rt)
        failing = rt.ask("k", "boom")
        await settle(rt)
        assert handled[:2] == [("boom", 1), ("reset", 1)]
        with pytest.raises(Dropped):
            await failing
        assert handled == [("boom", 1), ("reset", 1)]


# -- park_for, redeliver, max_active -----------------------------------------------------


async def test_park_for_asks_dropped_parked_then_unparked(clock: FakeClock) -> None:
    """After "gave up" with park_for, asks are dropped("parked") at once; after the
    cool-down the key starts afresh and handles asks again."""

    class Actor(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            if message == "boom":
                raise Boom(message)
            return message

    async with Runtime(
        Actor,
        clock=clock,
        idle_timeout=None,
        restart=policy(max_restarts=0, park_for=30.0),
    ) as rt:
        with pytest.raises(Boom):
            await rt.ask("k", "boom")
        await settle(rt)
        with pytest.raises(Dropped) as info:
            await rt.ask("k", "x")
        assert info.value.reason == "parked"
        await clock.advance(30.0)
        assert await rt.ask("k", "y") == "y"
        await settle(rt)
        assert ledger_ok(rt.stats())


async def test_redeliver_twice_sends_once(clock: FakeClock) -> None:
    """redeliver() forgets the dead letter; redelivering the same (forgotten) letter again
    is a clear error at the call site and does not send its message a second time."""
    handled: list[Any] = []

    class Actor(UserActor):
        decider = staticmethod(lambda e: Directive.RESUME)

        async def on_message(self, message: Any, ctx: Context) -> Any:
            if message == "boom" and ctx.attempt == 1 and not handled:
                handled.append("failed")
                raise Boom(message)
            handled.append(message)
            return message

    async with Runtime(Actor, clock=clock, idle_timeout=None, restart=policy()) as rt:
        rt.tell("k", "boom")
        await settle(rt)
        (letter,) = rt.dead_letters()
        rt.redeliver(letter)
        with pytest.raises(ValueError, match="already redelivered"):
            rt.redeliver(letter)
        await settle(rt)
        assert handled == ["failed", "boom"]
        assert rt.dead_letters() == []


async def test_max_active_with_failing_key_keeps_cap_and_ledger(clock: FakeClock) -> None:
    """max_active=1 while one key crash-loops in backoff: the other keys are still handled
    in turn (LRU stops), and every message has one outcome."""

    class Actor(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            if message == "boom":
                raise Boom(message)
            return message

    async with Runtime(Actor, clock=clock, idle_timeout=None, max_active=1, restart=policy()) as rt:
        rt.tell("bad", "boom")
        rt.tell("bad", "after")
        replies = [rt.ask(f"u{i}", i) for i in range(5)]
        await settle(rt)
        assert [await r for r in replies] == list(range(5))
        await clock.advance(2.0)
        await settle(rt)
        stats = rt.stats()
        assert stats["live_actors"] <= 1
        assert ledger_ok(stats)


# -- threads racing stop ------------------------------------------------------------------


async def test_threads_telling_while_stop_every_message_has_one_outcome() -> None:
    """Threads tell in a loop while the runtime stops: each tell either raises
    RuntimeStopped at the call site or its message gets exactly one outcome."""
    from actors import RuntimeStopped

    class Actor(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> Any:
            await asyncio.sleep(0)
            return message

    rt = await Runtime(Actor, idle_timeout=None).start()
    sent = [0] * 4
    go = threading.Event()

    def spam(i: int) -> None:
        go.wait()
        while sent[i] < 3000:
            try:
                rt.tell(f"k{i}", sent[i])
            except RuntimeStopped:
                return
            sent[i] += 1

    threads = [threading.Thread(target=spam, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    go.set()
    await asyncio.sleep(0.01)
    summary = await rt.stop(drain=False, timeout=1.0)
    for t in threads:
        t.join()
    await asyncio.sleep(0.01)
    stats = rt.stats()
    assert stats["accepted"] == sum(sent)
    done = stats["handled"] + stats["failed"] + stats["interrupted"] + stats["dropped"]
    assert done == stats["accepted"]
    assert summary.accepted <= stats["accepted"]
