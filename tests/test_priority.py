"""G3: priority order, interrupts and clears, one behaviour per test.

Interleavings are controlled with `asyncio.Event`s (and a `threading.Event`
for the blocking handler): a handler announces that it has started and then
waits on a gate the test opens, so every message below is sent while a known
message is in flight. Nothing here sleeps to make something happen.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from actors import Context, Dropped, Interrupted, UserActor
from supervisors import Runtime

KEY = "telegram:1"


@dataclass
class Script:
    """Shared state of the scripted actors of one test: what ran, and the gates."""

    log: list[str] = field(default_factory=list)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    _entered: dict[str, asyncio.Event] = field(default_factory=dict)

    def entered(self, message: str) -> asyncio.Event:
        """The event set when the handler of `message` starts."""
        return self._entered.setdefault(message, asyncio.Event())

    def gate(self, message: str) -> asyncio.Event:
        """Make the handler of `message` wait until the returned event is set."""
        return self.gates.setdefault(message, asyncio.Event())


class Scripted(UserActor):
    """Logs each message, then waits on its gate if the script has one."""

    def __init__(self, key: str | int, script: Script) -> None:
        super().__init__(key)
        self.script = script

    async def on_message(self, message: str, ctx: Context) -> Any:
        script = self.script
        script.log.append(message)
        script.entered(message).set()
        gate = script.gates.get(message)
        if gate is not None:
            try:
                await gate.wait()
            except asyncio.CancelledError:
                script.log.append(f"{message}:cancelled")
                raise
            script.log.append(f"{message}:after")
        return message


def runtime(script: Script, **options: Any) -> Runtime:
    """A runtime of `Scripted` actors sharing `script`."""
    return Runtime(lambda key: Scripted(key, script), idle_timeout=None, **options)


async def test_next_message_is_the_oldest_of_the_highest_priority() -> None:
    """While one message is in flight, waiting messages come out highest priority first,
    oldest first within a priority."""
    script = Script()
    release = script.gate("block")
    async with runtime(script) as rt:
        first = rt.ask(KEY, "block")
        await script.entered("block").wait()
        sent = [("a", 0), ("b", 2), ("c", 1), ("d", 2), ("e", 0), ("f", 1), ("g", 2)]
        for name, priority in sent:
            rt.tell(KEY, name, priority=priority)
        release.set()
        assert await first == "block"
        await rt.wait_idle()
    assert script.log == ["block", "block:after", "b", "d", "g", "c", "f", "a", "e"]


async def test_equal_priorities_are_fifo_across_producers() -> None:
    """Messages of one priority are handled in acceptance order, whichever task sent them."""
    script = Script()
    release = script.gate("block")
    async with runtime(script) as rt:
        rt.tell(KEY, "block", priority=1)
        await script.entered("block").wait()
        accepted: list[str] = []

        async def producer(name: str, turn: asyncio.Event, done: asyncio.Event) -> None:
            for i in range(3):
                await turn.wait()
                turn.clear()
                message = f"{name}{i}"
                rt.tell(KEY, message, priority=1)
                accepted.append(message)
                done.set()

        turns = [asyncio.Event(), asyncio.Event()]
        dones = [asyncio.Event(), asyncio.Event()]
        tasks = [asyncio.create_task(producer(n, turns[i], dones[i])) for i, n in enumerate("xy")]
        for who in (0, 1, 1, 0, 1, 0):  # a fixed interleaving of the two producers
            turns[who].set()
            await dones[who].wait()
            dones[who].clear()
        await asyncio.gather(*tasks)
        release.set()
        await rt.wait_idle()
    assert accepted == ["x0", "y0", "y1", "x1", "y2", "x2"]
    assert script.log == ["block", "block:after", *accepted]


async def test_interrupt_cancels_async_handler_at_its_next_await() -> None:
    """`interrupt=True` above the in-flight priority: the handler gets CancelledError at the
    await it is parked on, its ask raises Interrupted("interrupt"), and the interrupting message
    runs next, before older waiting messages of lower priority."""
    script = Script()
    script.gate("generate")  # never opened
    async with runtime(script) as rt:
        generating = rt.ask(KEY, "generate")
        await script.entered("generate").wait()
        older = [rt.ask(KEY, f"low{i}") for i in range(3)]
        urgent = rt.ask(KEY, "urgent", priority=1, interrupt=True)
        with pytest.raises(Interrupted) as info:
            await generating
        assert info.value.reason == "interrupt"
        assert info.value.key == KEY
        assert await urgent == "urgent"
        assert [await f for f in older] == ["low0", "low1", "low2"]
        await rt.wait_idle()
        stats = rt.stats()
    assert script.log == ["generate", "generate:cancelled", "urgent", "low0", "low1", "low2"]
    counts = (stats["interrupted"], stats["handled"], stats["failed"], stats["dropped"])
    assert counts == (1, 4, 0, 0)
    assert rt.dead_letters() == []  # an interrupted message is not a dead letter


async def test_interrupt_not_above_in_flight_priority_does_not_cancel() -> None:
    """An interrupt with a priority equal to or below the in-flight one cancels nothing: it is
    queued like a plain message, and the in-flight handler completes normally."""
    script = Script()
    release = script.gate("work")
    async with runtime(script) as rt:
        working = rt.ask(KEY, "work", priority=2)
        await script.entered("work").wait()
        same = rt.ask(KEY, "same", priority=2, interrupt=True)
        lower = rt.ask(KEY, "lower", priority=1, interrupt=True)
        await asyncio.sleep(0)  # give a (wrong) cancellation every chance to land
        assert not working.done()
        release.set()
        assert await working == "work"
        assert await same == "same"
        assert await lower == "lower"
        stats = rt.stats()
    assert script.log == ["work", "work:after", "same", "lower"]
    assert stats["interrupted"] == 0


async def test_interrupt_with_nothing_in_flight_only_queues() -> None:
    """An interrupt that finds no handler running interrupts nothing, even a later one."""
    script = Script()
    async with runtime(script) as rt:
        assert await rt.ask(KEY, "alone", priority=2, interrupt=True) == "alone"
        assert await rt.ask(KEY, "next") == "next"
        stats = rt.stats()
    assert stats["interrupted"] == 0
    assert script.log == ["alone", "next"]


async def test_older_higher_priority_message_runs_before_the_interrupter() -> None:
    """The interrupting message takes its place in the priority order: an older waiting message
    of a still higher priority runs before it (next = oldest of the highest priority)."""
    script = Script()
    script.gate("low")
    async with runtime(script) as rt:
        low = rt.ask(KEY, "low", priority=0)
        await script.entered("low").wait()
        top = rt.ask(KEY, "top", priority=2)  # no interrupt: waits
        mid = rt.ask(KEY, "mid", priority=1, interrupt=True)
        with pytest.raises(Interrupted):
            await low
        assert (await top, await mid) == ("top", "mid")
    assert script.log == ["low", "low:cancelled", "top", "mid"]


async def test_second_interrupt_for_the_same_handler_counts_once() -> None:
    """Two interrupts hitting one in-flight handler end it once: one Interrupted outcome, and
    both interrupting messages then run in priority order."""
    script = Script()
    script.gate("long")
    async with runtime(script) as rt:
        long = rt.ask(KEY, "long")
        await script.entered("long").wait()
        one = rt.ask(KEY, "one", priority=1, interrupt=True)
        two = rt.ask(KEY, "two", priority=2, interrupt=True)
        with pytest.raises(Interrupted):
            await long
        assert (await one, await two) == ("one", "two")
        await rt.wait_idle()
        stats = rt.stats()
    assert script.log == ["long", "long:cancelled", "two", "one"]
    assert stats["interrupted"] == 1
    assert stats["accepted"] == stats["handled"] + stats["interrupted"] == 3


class Polling(UserActor):
    """A blocking (thread-pool) handler that polls `ctx.interrupted`."""

    blocking = True
    log: list[str]
    started: threading.Event
    seen: list[bool]

    def on_message(self, message: str, ctx: Context) -> Any:
        self.log.append(message)
        if message != "long":
            self.seen.append(ctx.interrupted)
            return message
        self.started.set()
        deadline = time.monotonic() + 10.0  # a safety net only: the interrupt ends it
        while not ctx.interrupted and time.monotonic() < deadline:
            time.sleep(0.001)
        self.seen.append(ctx.interrupted)
        return "finished"


async def test_blocking_handler_sees_ctx_interrupted_and_ends_interrupted() -> None:
    """A blocking handler is not cancelled: `ctx.interrupted` turns true, the handler returns,
    its message still ends Interrupted, and the interrupting message runs next (and sees
    `ctx.interrupted` false again)."""
    log: list[str] = []
    seen: list[bool] = []
    started = threading.Event()

    def factory(key: str | int) -> Polling:
        actor = Polling(key)
        actor.log, actor.seen, actor.started = log, seen, started
        return actor

    async with Runtime(factory, idle_timeout=None) as rt:
        long = rt.ask(KEY, "long")
        assert await asyncio.to_thread(started.wait, 10.0)
        low = rt.ask(KEY, "low")
        urgent = rt.ask(KEY, "urgent", priority=1, interrupt=True)
        with pytest.raises(Interrupted) as info:
            await long
        assert info.value.reason == "interrupt"
        assert await urgent == "urgent"
        assert await low == "low"
        await rt.wait_idle()
        stats = rt.stats()
    assert seen == [True, False, False]  # the flag is per message: the next ones start clear
    assert log == ["long", "urgent", "low"]
    assert (stats["interrupted"], stats["handled"]) == (1, 2)


async def test_clear_drops_waiting_lower_priority_messages_only() -> None:
    """`clear=True` drops the waiting messages of lower priority (ask raises Dropped("cleared"),
    dead letters record them), keeps equal and higher ones in order, and does not touch the
    handler in flight."""
    script = Script()
    release = script.gate("block")
    async with runtime(script) as rt:
        block = rt.ask(KEY, "block", priority=1)
        await script.entered("block").wait()
        waiting = {
            name: rt.ask(KEY, name, priority=p)
            for name, p in [("a", 0), ("b", 1), ("c", 2), ("d", 0), ("e", 1)]
        }
        rt.tell(KEY, "z", priority=0)  # a tell is cleared too (no future to see it)
        clearing = rt.ask(KEY, "clear", priority=1, clear=True)
        for name in ("a", "d"):
            with pytest.raises(Dropped) as info:
                await waiting[name]
            assert info.value.reason == "cleared"
        assert not block.done()
        release.set()
        assert await block == "block"
        assert [await waiting[n] for n in "cbe"] == ["c", "b", "e"]
        assert await clearing == "clear"
        await rt.wait_idle()
        stats = rt.stats()
        letters = rt.dead_letters()
    assert script.log == ["block", "block:after", "c", "b", "e", "clear"]
    assert [(d.key, d.message, d.reason, d.priority) for d in letters] == [
        (KEY, "a", "cleared", 0),
        (KEY, "d", "cleared", 0),
        (KEY, "z", "cleared", 0),
    ]
    assert all(isinstance(d.error, Dropped) and d.attempts == 0 for d in letters)
    assert (stats["dropped"], stats["interrupted"], stats["handled"]) == (3, 0, 5)
    assert stats["accepted"] == 8
    assert stats["pending"] == 0


async def test_clear_only_affects_its_own_key() -> None:
    """A clear for one key leaves every other key's waiting messages alone."""
    script = Script()
    release = script.gate("block")
    async with runtime(script) as rt:
        rt.tell("a", "block")
        rt.tell("b", "block")
        await script.entered("block").wait()
        other = rt.ask("b", "keep")
        mine = rt.ask("a", "gone")
        rt.tell("a", "reset", priority=1, clear=True)
        with pytest.raises(Dropped):
            await mine
        release.set()
        assert await other == "keep"
        await rt.wait_idle()
        assert [d.message for d in rt.dead_letters()] == ["gone"]


async def test_interrupt_and_clear_together_is_the_stop_command() -> None:
    """`/stop` sent with interrupt and clear: the in-flight answer ends Interrupted, the queued
    lower-priority messages are Dropped("cleared"), `/stop` runs next, and the key then works
    normally again."""
    script = Script()
    script.gate("generate")
    async with runtime(script) as rt:
        generating = rt.ask(KEY, "generate")
        await script.entered("generate").wait()
        queued = [rt.ask(KEY, f"msg{i}") for i in range(3)]
        stop = rt.ask(KEY, "/stop", priority=1, interrupt=True, clear=True)
        with pytest.raises(Interrupted):
            await generating
        for future in queued:
            with pytest.raises(Dropped) as info:
                await future
            assert info.value.reason == "cleared"
        assert await stop == "/stop"
        assert await rt.ask(KEY, "hello again") == "hello again"
        await rt.wait_idle()
        stats = rt.stats()
        letters = rt.dead_letters()
    assert script.log == ["generate", "generate:cancelled", "/stop", "hello again"]
    assert [(d.message, d.reason) for d in letters] == [(f"msg{i}", "cleared") for i in range(3)]
    assert (stats["interrupted"], stats["dropped"], stats["handled"]) == (1, 3, 2)
    assert stats["handled"] + stats["failed"] + stats["interrupted"] + stats["dropped"] == 6
    assert stats["accepted"] == 6


async def test_interrupt_and_clear_from_a_foreign_thread() -> None:
    """Interrupt and clear sent from another thread (through the batched ingress) act as on the
    loop: the in-flight handler is cancelled, lower waiting messages are dropped, and the
    thread's blocking `.get(timeout=...)` sees each outcome."""
    script = Script()
    script.gate("generate")
    async with runtime(script) as rt:
        generating = rt.ask(KEY, "generate")
        await script.entered("generate").wait()
        queued = rt.ask(KEY, "queued")

        def from_thread() -> Any:
            return rt.ask(KEY, "/stop", priority=1, interrupt=True, clear=True).get(timeout=10)

        assert await asyncio.to_thread(from_thread) == "/stop"
        with pytest.raises(Interrupted):
            await generating
        with pytest.raises(Dropped):
            await queued
        await rt.wait_idle()
        stats = rt.stats()
    assert script.log == ["generate", "generate:cancelled", "/stop"]
    assert (stats["accepted"], stats["interrupted"], stats["dropped"], stats["handled"]) == (
        3,
        1,
        1,
        1,
    )


class Swallowing(UserActor):
    """Catches the CancelledError of an interrupt, cleans up (awaiting) and returns."""

    log: list[str]
    entered: asyncio.Event

    async def on_message(self, message: str, ctx: Context) -> Any:
        self.log.append(message)
        if message != "long":
            return message
        self.entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.log.append("swallowed")
            await asyncio.sleep(0)  # cleanup that awaits must still work
            self.log.append(f"cleanup interrupted={ctx.interrupted}")
        return "finished anyway"


async def test_handler_that_swallows_cancellation_still_ends_interrupted() -> None:
    """A handler that catches the CancelledError and returns normally still ends Interrupted
    (its return value is discarded), and the key goes on with the interrupter and the rest."""
    log: list[str] = []
    entered = asyncio.Event()

    def factory(key: str | int) -> Swallowing:
        actor = Swallowing(key)
        actor.log, actor.entered = log, entered
        return actor

    async with Runtime(factory, idle_timeout=None) as rt:
        long = rt.ask(KEY, "long")
        await entered.wait()
        urgent = rt.ask(KEY, "urgent", priority=1, interrupt=True)
        with pytest.raises(Interrupted):
            await long
        assert await urgent == "urgent"
        # The burst task is not left with a pending cancellation: later awaits work.
        assert await rt.ask(KEY, "after") == "after"
        await rt.wait_idle()
        stats = rt.stats()
    assert log == ["long", "swallowed", "cleanup interrupted=True", "urgent", "after"]
    assert (stats["interrupted"], stats["handled"]) == (1, 2)


class SelfInterrupting(UserActor):
    """On "work", sends its own key an interrupting message, then keeps awaiting."""

    log: list[str]

    async def on_message(self, message: str, ctx: Context) -> Any:
        self.log.append(message)
        if message != "work":
            return message
        ctx.tell(ctx.key, "urgent", priority=1, interrupt=True)
        self.log.append(f"interrupted={ctx.interrupted}")
        try:
            for _ in range(3):
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.log.append("cancelled")
            raise
        self.log.append("work done")
        return "work"


async def test_handler_interrupting_its_own_key() -> None:
    """A handler that interrupts its own key is not cancelled (the cancellation would land on an
    unrelated later await): it sees `ctx.interrupted`, finishes, its message ends Interrupted,
    and the interrupting message runs next, before older lower-priority ones."""
    log: list[str] = []

    def factory(key: str | int) -> SelfInterrupting:
        actor = SelfInterrupting(key)
        actor.log = log
        return actor

    async with Runtime(factory, idle_timeout=None) as rt:
        work = rt.ask(KEY, "work")
        later = rt.ask(KEY, "later")
        with pytest.raises(Interrupted):
            await work
        assert await later == "later"
        await rt.wait_idle()
        stats = rt.stats()
    assert log == ["work", "interrupted=True", "work done", "urgent", "later"]
    assert (stats["interrupted"], stats["handled"], stats["accepted"]) == (1, 2, 3)


class BlockingFanOut(UserActor):
    """A blocking handler that tells another (new) key and its own key through `ctx.tell`."""

    blocking = True
    log: list[tuple[str | int, str]]

    def on_message(self, message: str, ctx: Context) -> Any:
        self.log.append((ctx.key, message))
        if message == "fan-out":
            ctx.tell("other", "hello")
            ctx.tell(ctx.key, "urgent", priority=1)
        return message


async def test_ctx_tell_from_a_blocking_handler_is_thread_safe() -> None:
    """`ctx.tell` called by a blocking handler (on a pool thread) reaches the router safely.

    Run with asyncio's debug mode, which rejects loop operations made from another thread:
    the messages must be accepted on the loop (as `Runtime.tell` does from other threads),
    not by the router running on the pool thread."""
    asyncio.get_running_loop().set_debug(True)
    log: list[tuple[str | int, str]] = []

    def factory(key: str | int) -> BlockingFanOut:
        actor = BlockingFanOut(key)
        actor.log = log
        return actor

    async with Runtime(factory, idle_timeout=None) as rt:
        try:
            assert await asyncio.wait_for(rt.ask(KEY, "fan-out"), 2.0) == "fan-out"
            await asyncio.wait_for(rt.wait_idle(), 2.0)
            stats = rt.stats()
        finally:
            await rt.stop(drain=False)  # a wedged runtime would sit out a drain's timeout
    assert sorted(log, key=repr) == sorted(
        [(KEY, "fan-out"), ("other", "hello"), (KEY, "urgent")], key=repr
    )
    assert (stats["accepted"], stats["handled"], stats["failed"]) == (3, 3, 0)


class PlainSelfInterrupting(UserActor):
    """A plain (non-blocking, on the loop) handler that interrupts its own key."""

    log: list[str]

    def on_message(self, message: str, ctx: Context) -> Any:
        self.log.append(message)
        if message == "work":
            ctx.tell(ctx.key, "urgent", priority=2, interrupt=True)
            self.log.append(f"interrupted={ctx.interrupted}")
        return message


async def test_plain_handler_interrupting_its_own_key() -> None:
    """The same for a plain `def` handler on the loop: it sees `ctx.interrupted`, returns, its
    message ends Interrupted, and the interrupter runs before older lower-priority messages."""
    log: list[str] = []

    def factory(key: str | int) -> PlainSelfInterrupting:
        actor = PlainSelfInterrupting(key)
        actor.log = log
        return actor

    async with Runtime(factory, idle_timeout=None) as rt:
        work = rt.ask(KEY, "work", priority=1)
        later = rt.ask(KEY, "later", priority=1)
        with pytest.raises(Interrupted):
            await work
        assert await later == "later"
        await rt.wait_idle()
        stats = rt.stats()
    assert log == ["work", "interrupted=True", "urgent", "later"]
    assert (stats["interrupted"], stats["handled"]) == (1, 2)
