"""Busy policies (queue, collect, interrupt, reject), steering and Retry-After, in memory.

Written as a bot author writes them: a handler that waits on an event stands for an
LLM turn in flight. Virtual time (`FakeClock`) wherever time matters.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from actors import (
    Batch,
    Context,
    Debounce,
    Dropped,
    Interrupted,
    Item,
    KeyBusy,
    Rate,
    RetryAfter,
    UserActor,
)
from actors.testing import FakeClock
from supervisors import Runtime

from .helpers import policy, settle


class Turns(UserActor):
    """Records what each turn got; a message "wait" holds its turn until `gate` is set."""

    log: list[Any]
    gate: asyncio.Event
    started: asyncio.Event

    async def on_message(self, message: Any, ctx: Context) -> Any:
        got = message.messages if isinstance(message, Batch) else message
        type(self).log.append(got)
        if (isinstance(message, Batch) and "wait" in got) or message == "wait":
            type(self).started.set()
            await type(self).gate.wait()
        return got


def turns(busy: str | None = None, **attrs: Any) -> type[Turns]:
    cls = type("Bot", (Turns,), {"busy": busy, **attrs})
    cls.log = []
    cls.gate = asyncio.Event()
    cls.started = asyncio.Event()
    return cls


async def test_collect_hands_the_next_turn_everything_that_waited() -> None:
    bot = turns("collect")
    async with Runtime(bot) as rt:
        first = rt.ask("u", "wait")
        await bot.started.wait()
        asks = [rt.ask("u", f"m{i}") for i in range(3)]
        bot.gate.set()
        assert await first == ["wait"]
        assert [await a for a in asks] == [["m0", "m1", "m2"]] * 3  # one turn, one result
        await settle(rt)
        assert bot.log == [["wait"], ["m0", "m1", "m2"]]
        stats = rt.stats()
        assert (stats["accepted"], stats["handled"]) == (4, 4)


async def test_a_batch_carries_each_message_with_its_id_time_and_priority() -> None:
    seen: list[Batch] = []
    gate = asyncio.Event()

    class Bot(UserActor):
        busy = "collect"

        async def on_message(self, batch: Batch, ctx: Context) -> None:
            seen.append(batch)
            if batch.messages == ["first"]:
                await gate.wait()

    clock = FakeClock(10.0)
    async with Runtime(Bot, clock=clock) as rt:
        rt.tell("u", "first")
        await clock.advance(1.0)
        rt.tell("u", "a", msg_id="upd-1")
        await clock.advance(1.0)
        rt.tell("u", "b")
        rt.tell("u", "cmd", priority=3)  # a priority message is a batch of its own
        gate.set()
        await settle(rt)
    assert seen[1] == Batch([Item("cmd", None, 12.0, 3)])
    assert seen[2] == Batch([Item("a", "upd-1", 11.0, 0), Item("b", None, 12.0, 0)])
    assert seen[2][0].msg_id == "upd-1"
    assert len(seen[2]) == 2


async def test_collect_a_failing_batch_fails_every_message_in_it() -> None:
    class Bot(UserActor):
        busy = "collect"
        gate = asyncio.Event()
        started = asyncio.Event()

        async def on_message(self, batch: Batch, ctx: Context) -> None:
            if batch.messages == ["wait"]:
                Bot.started.set()
                await Bot.gate.wait()
                return
            raise ValueError("the LLM call failed")

    async with Runtime(Bot, restart=policy(max_retries=0)) as rt:
        rt.tell("u", "wait")
        await Bot.started.wait()
        asks = [rt.ask("u", i) for i in range(3)]
        Bot.gate.set()
        for ask in asks:
            with pytest.raises(ValueError, match="LLM"):
                await ask
        await settle(rt)
        assert [d.message for d in rt.dead_letters()] == [0, 1, 2]
        assert rt.stats()["failed"] == 3


async def test_collect_a_retried_batch_runs_again_whole() -> None:
    runs: list[list[Any]] = []

    class Bot(UserActor):
        busy = "collect"
        gate = asyncio.Event()
        started = asyncio.Event()

        async def on_message(self, batch: Batch, ctx: Context) -> int:
            runs.append(batch.messages)
            if batch.messages == ["wait"]:
                Bot.started.set()
                await Bot.gate.wait()
            elif ctx.attempt == 1:
                raise ValueError("flaky")
            return ctx.attempt

    async with Runtime(Bot, restart=policy(max_retries=1, backoff_min=0.0)) as rt:
        rt.tell("u", "wait")
        await Bot.started.wait()
        asks = [rt.ask("u", i) for i in range(2)]
        Bot.gate.set()
        assert [await a for a in asks] == [2, 2]
    assert runs == [["wait"], [0, 1], [0, 1]]


async def test_interrupt_cuts_the_turn_and_the_newest_message_runs() -> None:
    bot = turns("interrupt")
    async with Runtime(bot) as rt:
        first = rt.ask("u", "wait")
        await bot.started.wait()
        second = rt.ask("u", "second")
        third = rt.ask("u", "third")
        with pytest.raises(Interrupted):
            await first
        with pytest.raises(Dropped) as dropped:
            await second
        assert dropped.value.reason == "superseded"
        assert await third == "third"
        await settle(rt)
        assert bot.log == ["wait", "third"]


async def test_interrupt_leaves_priority_messages_alone() -> None:
    bot = turns("interrupt")
    async with Runtime(bot) as rt:
        rt.tell("u", "wait", priority=2)
        await bot.started.wait()
        normal = rt.ask("u", "normal")  # does not cut a priority turn short
        await asyncio.sleep(0)
        bot.gate.set()
        assert await normal == "normal"
    assert bot.log == ["wait", "normal"]


async def test_reject_refuses_a_busy_key_at_the_call_site() -> None:
    bot = turns("reject")
    async with Runtime(bot) as rt:
        first = rt.ask("u", "wait")
        await bot.started.wait()
        with pytest.raises(KeyBusy) as busy:
            rt.tell("u", "again")
        assert busy.value.key == "u"
        with pytest.raises(KeyBusy):
            await asyncio.to_thread(rt.tell, "u", "from a thread")
        rt.tell("other", "x")  # another key is not busy
        stop = rt.ask("u", "/stop", priority=5)  # the control lane always gets in
        bot.gate.set()
        assert await first == "wait"
        assert await stop == "/stop"
        await settle(rt)
        rt.tell("u", "free again")
        await settle(rt)
        stats = rt.stats()
    assert bot.log.count("again") == 0
    assert "free again" in bot.log
    assert stats["accepted"] == 4  # the refused ones were never accepted


async def test_a_class_attribute_overrides_the_runtime_policy() -> None:
    bot = turns("queue")
    async with Runtime(bot, busy="reject") as rt:
        rt.tell("u", "wait")
        await bot.started.wait()
        rt.tell("u", "queued")  # the class says queue
        bot.gate.set()
        await settle(rt)
    assert bot.log == ["wait", "queued"]


# -- steering ------------------------------------------------------------------------------


async def test_take_new_folds_follow_ups_into_the_turn_in_flight() -> None:
    folded: list[list[Item]] = []
    go, started = asyncio.Event(), asyncio.Event()

    class Agent(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> str:
            started.set()
            await go.wait()  # the LLM streams its answer...
            taken = ctx.take_new()  # ...and reads what the user added meanwhile
            folded.append(taken)
            return "+".join([message, *(i.message for i in taken)])

    async with Runtime(Agent) as rt:
        first = rt.ask("u", "write a poem")
        await started.wait()
        follow = rt.ask("u", "make it a haiku")
        urgent = rt.ask("u", "/status", priority=2)  # of a higher priority: not taken
        go.set()
        answer = "write a poem+make it a haiku"
        assert await first == answer
        assert await follow == answer  # the taken message's outcome is its turn's
        assert await urgent == "/status"
        await settle(rt)
        stats = rt.stats()
    assert [[i.message for i in t] for t in folded] == [["make it a haiku"], []]
    assert (stats["accepted"], stats["handled"]) == (3, 3)


async def test_taken_messages_fail_and_are_interrupted_with_their_turn() -> None:
    go, started = asyncio.Event(), asyncio.Event()

    class Agent(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> None:
            started.set()
            if message == "/cancel":
                return
            if message == "fail":
                await go.wait()
                ctx.take_new()
                raise RuntimeError("boom")
            await ctx.next_message()  # takes the rider
            await asyncio.Event().wait()  # until interrupted

    async with Runtime(Agent, restart=policy(max_retries=0)) as rt:
        failing = rt.ask("a", "fail")
        await started.wait()
        rider = rt.ask("a", "rider")
        go.set()
        for ask in (failing, rider):
            with pytest.raises(RuntimeError, match="boom"):
                await ask
        started.clear()
        hanging = rt.ask("b", "hang")
        await started.wait()
        rider_b = rt.ask("b", "rider")
        for _ in range(100):  # until the turn has taken the rider (bounded, no sleep)
            if rt.pending("b") == 0:
                break
            await asyncio.sleep(0)
        rt.tell("b", "/cancel", priority=1, interrupt=True)
        for ask in (hanging, rider_b):
            with pytest.raises(Interrupted):
                await ask
        await settle(rt)
        stats = rt.stats()
    assert (stats["failed"], stats["interrupted"], stats["handled"]) == (2, 2, 1)


async def test_a_retried_turn_gets_back_what_it_had_taken() -> None:
    takes: list[list[Any]] = []
    go, started = asyncio.Event(), asyncio.Event()

    class Agent(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> int:
            started.set()
            await go.wait()
            takes.append([i.message for i in ctx.take_new()])
            if ctx.attempt == 1:
                raise ValueError("retry me")
            return ctx.attempt

    async with Runtime(Agent, restart=policy(max_retries=1, backoff_min=0.0)) as rt:
        first = rt.ask("u", "q")
        await started.wait()
        rider = rt.ask("u", "more")
        go.set()
        assert (await first, await rider) == (2, 2)
    assert takes == [["more"], ["more"]]


async def test_next_message_waits_for_the_next_one_in_virtual_time() -> None:
    got: list[Any] = []

    class Agent(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> None:
            item = await ctx.next_message(timeout=5.0)
            got.append((message, None if item is None else item.message, ctx.now()))

    clock = FakeClock()
    async with Runtime(Agent, clock=clock) as rt:
        rt.tell("u", "first")
        await clock.advance(2.0)
        rt.tell("u", "second")  # wakes the waiting turn at t=2
        await clock.advance(0.0)
        rt.tell("u", "alone")
        await clock.advance(5.0)  # nobody comes: None at t=7
        await settle(rt)
    assert got == [("first", "second", 2.0), ("alone", None, 7.0)]


async def test_take_new_from_a_blocking_handler_thread() -> None:
    go, started = threading.Event(), threading.Event()

    class Agent(UserActor):
        blocking = True

        def on_message(self, message: Any, ctx: Context) -> list[Any]:
            started.set()
            go.wait(5)
            return [message, *(i.message for i in ctx.take_new())]

    async with Runtime(Agent) as rt:
        first = rt.ask("u", "a")
        await asyncio.to_thread(started.wait, 5)
        second = rt.ask("u", "b")
        go.set()
        assert await first == ["a", "b"]
        assert await second == ["a", "b"]


async def test_take_new_outside_a_turn_takes_nothing() -> None:
    got: list[Any] = []

    class Bot(UserActor):
        def on_message(self, message: Any, ctx: Context) -> None:
            got.append(ctx)

    async with Runtime(Bot) as rt:
        rt.tell("u", 1)
        await settle(rt)
        assert got[0].take_new() == []


# -- Retry-After -----------------------------------------------------------------------------


async def test_retry_after_pauses_the_key_and_runs_the_same_message_again() -> None:
    runs: list[tuple[Any, float, int]] = []

    class Sender(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> str:
            runs.append((message, ctx.now(), ctx.attempt))
            if message == "flood" and len([r for r in runs if r[0] == "flood"]) == 1:
                raise RetryAfter(3.0)  # Telegram said: retry after 3 s
            return message

    clock = FakeClock()
    restart = policy(max_retries=0, max_restarts=1)
    async with Runtime(Sender, clock=clock, restart=restart) as rt:
        flood = rt.ask("u", "flood")
        later = rt.ask("u", "later")
        other = rt.ask("v", "other")  # another key is not paused
        await clock.advance(0.0)
        assert await other == "other"
        assert rt.stats()["held"] == 1
        await clock.advance(2.5)
        assert not flood.done()
        await clock.advance(0.5)
        assert (await flood, await later) == ("flood", "later")
        stats = rt.stats()
    assert [r[:2] for r in runs if r[0] != "other"] == [
        ("flood", 0.0),
        ("flood", 3.0),
        ("later", 3.0),
    ]
    assert stats["failed"] == 0
    assert stats["restarts"] == 0
    assert stats["retry_afters"] == 1


async def test_ctx_retry_after_and_a_priority_message_during_the_pause() -> None:
    runs: list[Any] = []

    class Sender(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> None:
            runs.append((message, ctx.now()))
            if message == "send" and len(runs) == 1:
                ctx.retry_after(10)

    clock = FakeClock()
    async with Runtime(Sender, clock=clock) as rt:
        rt.tell("u", "send")
        await clock.advance(1.0)
        rt.tell("u", "/help", priority=1)  # the control lane is not paused
        await clock.advance(1.0)
        assert runs == [("send", 0.0), ("/help", 1.0)]
        await clock.advance(8.0)
        await settle(rt)
    assert runs[-1] == ("send", 10.0)


def test_retry_after_refuses_a_bad_number() -> None:
    for bad in (-1, float("inf"), "3", True, None):
        with pytest.raises(ValueError, match="RetryAfter"):
            RetryAfter(bad)  # type: ignore[arg-type]


def test_bad_policies_are_refused_where_they_are_written() -> None:
    with pytest.raises(ValueError, match="busy must be one of"):
        Runtime(turns(), busy="later")
    with pytest.raises(ValueError, match=r"Bot\.busy must be one of"):
        type("Bot", (Turns,), {"busy": "sometimes"})
    with pytest.raises(ValueError, match="overflow must be one of"):
        Runtime(turns(), overflow="spill")


async def test_a_policy_read_from_configuration_works_like_the_literal() -> None:
    bot = turns("".join(["col", "lect"]))  # equal to "collect", not the same object
    async with Runtime(bot, busy="".join(["que", "ue"])) as rt:
        rt.tell("u", "wait")
        await bot.started.wait()
        rt.tell("u", 1)
        rt.tell("u", 2)
        bot.gate.set()
        await settle(rt)
    assert bot.log == [["wait"], [1, 2]]


@pytest.mark.parametrize(
    "attrs",
    [
        {"busy": "queue"},
        {"busy": "collect"},
        {"busy": "interrupt"},
        {"busy": "reject"},
        {"debounce": Debounce(window=0.5)},
        {"rate": Rate(1, per=60.0)},
        {"min_interval": 30.0},
        {"overflow": "drop_oldest"},
    ],
    ids=lambda a: next(iter(a)) + "=" + str(next(iter(a.values()))),
)
async def test_the_control_lane_cuts_a_turn_short_under_every_policy(
    attrs: dict[str, Any],
) -> None:
    started = asyncio.Event()

    class Base(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> str:
            text = message[0].message if isinstance(message, Batch) else message
            if text == "long answer":
                started.set()
                await asyncio.Event().wait()  # an LLM that never finishes
            return text

    Bot = type("Bot", (Base,), attrs)
    clock = FakeClock()
    async with Runtime(Bot, clock=clock) as rt:
        turn = rt.ask("u", "long answer")
        await clock.advance(1.0)  # past a debounce window
        await started.wait()
        stop = rt.ask("u", "/stop", priority=5, interrupt=True)
        with pytest.raises(Interrupted):
            await turn
        assert await stop == "/stop"
