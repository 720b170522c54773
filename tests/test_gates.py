"""Per-key rate limits, spacing and debounce windows, and the shared limiters, in virtual time.

A key whose gate says "not yet" is held, and woken on one timer shared by every held
key: the tests check the exact virtual times turns start at, that a limited key
never delays another, and that no timer is left per waiting key.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors import Batch, Context, Debounce, Dropped, Rate, UserActor
from actors.testing import FakeClock
from supervisors import Runtime

from .helpers import settle


class Clocked(UserActor):
    """Records (key, what it got, when)."""

    log: list[tuple[Any, Any, float]]

    async def on_message(self, message: Any, ctx: Context) -> None:
        got = message.messages if isinstance(message, Batch) else message
        type(self).log.append((ctx.key, got, ctx.now()))


def clocked(**attrs: Any) -> type[Clocked]:
    cls = type("Bot", (Clocked,), dict(attrs))
    cls.log = []
    return cls


async def test_a_rate_limited_key_waits_for_its_tokens() -> None:
    bot = clocked(rate=Rate(2, per=10.0))  # 2 turns per 10 s, in a burst of up to 2
    clock = FakeClock()
    async with Runtime(bot, clock=clock) as rt:
        for i in range(5):
            rt.tell("slow", i)
        rt.tell("other", "x")  # another key is never delayed
        await clock.advance(0.0)
        assert rt.stats()["held"] == 1
        await clock.advance(30.0)
        await settle(rt)
    starts = [t for key, _, t in bot.log if key == "slow"]
    assert starts == [0.0, 0.0, 5.0, 10.0, 15.0]
    assert ("other", "x", 0.0) in bot.log


async def test_min_interval_spaces_a_keys_turns() -> None:
    bot = clocked(min_interval=1.5)
    clock = FakeClock()
    async with Runtime(bot, clock=clock) as rt:
        for i in range(3):
            rt.tell("u", i)
        await clock.advance(10.0)
        await settle(rt)
    assert [t for _, _, t in bot.log] == [0.0, 1.5, 3.0]


async def test_the_runtime_rate_applies_to_every_class_that_sets_none() -> None:
    bot = clocked()
    clock = FakeClock()
    async with Runtime(bot, clock=clock, rate=Rate(1, per=2.0)) as rt:
        rt.tell("u", 0)
        rt.tell("u", 1)
        await clock.advance(5.0)
    assert [t for _, _, t in bot.log] == [0.0, 2.0]


async def test_priority_messages_are_not_rate_limited() -> None:
    bot = clocked(rate=Rate(1, per=60.0))
    clock = FakeClock()
    async with Runtime(bot, clock=clock) as rt:
        rt.tell("u", "a")
        rt.tell("u", "b")
        await clock.advance(1.0)
        rt.tell("u", "/help", priority=1)
        await clock.advance(1.0)
        assert [m for _, m, _ in bot.log] == ["a", "/help"]
        await clock.advance(60.0)
    assert bot.log[-1] == ("u", "b", 60.0)


async def test_held_keys_share_one_timer() -> None:
    bot = clocked(min_interval=5.0)
    clock = FakeClock()
    async with Runtime(bot, clock=clock, idle_timeout=None) as rt:
        for key in range(50):
            rt.tell(key, 1)
            rt.tell(key, 2)
        await clock.advance(0.0)
        assert rt.stats()["held"] == 50
        assert len(clock.pending_timers()) == 1  # not one per key
        await clock.advance(5.0)
        await settle(rt)
        assert rt.stats()["held"] == 0
    assert sorted(t for _, m, t in bot.log if m == 2) == [5.0] * 50


async def test_a_restart_does_not_refill_the_bucket() -> None:
    class Bot(Clocked):
        rate = Rate(1, per=10.0)

        async def on_message(self, message: Any, ctx: Context) -> None:
            await super().on_message(message, ctx)
            if message == "crash":
                raise RuntimeError("crash")

    Bot.log = []
    clock = FakeClock()
    async with Runtime(Bot, clock=clock, idle_timeout=1.0) as rt:
        rt.tell("u", "crash")
        await clock.advance(3.0)  # restarted (and idle-stopped) meanwhile
        rt.tell("u", "next")
        await clock.advance(20.0)
    assert [t for _, _, t in Bot.log] == [0.0, 10.0]


# -- debounce --------------------------------------------------------------------------------


async def test_debounce_delivers_a_burst_as_one_batch() -> None:
    bot = clocked(debounce=Debounce(window=1.5))
    clock = FakeClock()
    async with Runtime(bot, clock=clock) as rt:
        rt.tell("u", "hel")
        await clock.advance(1.0)
        rt.tell("u", "lo")  # restarts the window
        await clock.advance(1.0)
        rt.tell("u", "world")
        await clock.advance(1.4)
        assert bot.log == []
        await clock.advance(0.1)  # 1.5 s after the last arrival
        rt.tell("u", "later")
        await clock.advance(2.0)
    assert bot.log == [("u", ["hel", "lo", "world"], 3.5), ("u", ["later"], 5.0)]


async def test_debounce_max_wait_and_max_batch() -> None:
    waits = clocked(debounce=Debounce(window=1.0, max_wait=2.5))
    fills = clocked(debounce=Debounce(window=1.0, max_batch=3))
    fills.log = waits.log
    clock = FakeClock()
    # A factory may give keys different classes: each class's own window applies.
    async with Runtime(lambda key: waits(key) if key == "a" else fills(key), clock=clock) as rt:
        for _ in range(4):  # a message every 0.75 s never lets the window close
            rt.tell("a", "x")
            await clock.advance(0.75)
        await clock.advance(5.0)
        for i in range(4):  # three at once fill a batch
            rt.tell("b", i)
        await clock.advance(0.0)
        await clock.advance(5.0)
    a = [(m, t) for k, m, t in waits.log if k == "a"]
    assert a == [(["x"] * 4, 2.5)]  # capped at max_wait after the first
    b = [(m, t) for k, m, t in fills.log if k == "b"]
    assert b == [([0, 1, 2], 8.0), ([3], 9.0)]


async def test_a_priority_message_bypasses_the_window() -> None:
    bot = clocked(debounce=Debounce(window=2.0))
    clock = FakeClock()
    async with Runtime(bot, clock=clock) as rt:
        rt.tell("u", "typing")
        await clock.advance(0.5)
        rt.tell("u", "/stop", priority=1)
        await clock.advance(0.0)
        assert bot.log == [("u", ["/stop"], 0.5)]  # the window stays open
        await clock.advance(2.0)
    assert bot.log[-1] == ("u", ["typing"], 2.0)


async def test_a_priority_message_may_close_the_window() -> None:
    bot = clocked(debounce=Debounce(window=2.0, flush_on_priority=True))
    clock = FakeClock()
    async with Runtime(bot, clock=clock) as rt:
        rt.tell("u", "draft")
        await clock.advance(0.5)
        rt.tell("u", "/send", priority=1)  # "send it now"
        await clock.advance(0.0)
    assert bot.log == [("u", ["/send"], 0.5), ("u", ["draft"], 0.5)]
    with pytest.raises(TypeError, match="flush_on_priority"):
        Debounce(window=1.0, flush_on_priority=1)  # type: ignore[arg-type]


async def test_the_stop_flushes_an_open_window() -> None:
    bot = clocked(debounce=Debounce(window=60.0))
    async with Runtime(bot) as rt:
        asks = [rt.ask("u", i) for i in range(3)]
        await asyncio.sleep(0)
        summary = await rt.stop()
    assert summary.drained
    assert [m for _, m, _ in bot.log] == [[0, 1, 2]]
    assert [a.get(timeout=0) for a in asks] == [None] * 3


async def test_without_drain_an_open_window_ends_dropped() -> None:
    bot = clocked(debounce=Debounce(window=60.0))
    async with Runtime(bot) as rt:
        ask = rt.ask("u", 1)
        await asyncio.sleep(0)
        summary = await rt.stop(drain=False)
    assert summary.dropped_on_stop == 1
    assert bot.log == []
    with pytest.raises(Dropped):
        ask.get(timeout=0)


def test_bad_gate_settings_are_refused_where_written() -> None:
    with pytest.raises(ValueError, match="Rate count"):
        Rate(0)
    with pytest.raises(ValueError, match="Rate per"):
        Rate(1, per=0)
    with pytest.raises(ValueError, match="max_wait"):
        Debounce(window=2.0, max_wait=1.0)
    with pytest.raises(ValueError, match="max_batch"):
        Debounce(window=1.0, max_batch=0)
    with pytest.raises(TypeError, match=r"Bot\.rate must be a Rate"):
        type("Bot", (Clocked,), {"rate": 30})
    with pytest.raises(TypeError, match=r"Bot\.debounce must be a Debounce"):
        type("Bot", (Clocked,), {"debounce": 1.5})
    with pytest.raises(ValueError, match="min_interval"):
        Runtime(clocked(), min_interval=-1)
    with pytest.raises(TypeError, match="limits"):
        Runtime(clocked(), limits={"telegram": 30})  # type: ignore[dict-item]


# -- shared limiters -------------------------------------------------------------------------


async def test_a_shared_limit_serves_every_key_in_arrival_order() -> None:
    sent: list[tuple[Any, float]] = []

    class Bot(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> None:
            await ctx.limit("telegram")  # before calling the platform's API
            sent.append((ctx.key, ctx.now()))

    clock = FakeClock()
    async with Runtime(Bot, clock=clock, limits={"telegram": Rate(2, per=1.0)}) as rt:
        for key in ("a", "b", "c", "d", "e"):
            rt.tell(key, "reply")
        await clock.advance(0.0)
        await clock.advance(3.0)
        await settle(rt)
    assert sent == [("a", 0.0), ("b", 0.0), ("c", 0.5), ("d", 1.0), ("e", 1.5)]


async def test_an_unknown_limit_name_is_a_clear_error() -> None:
    class Bot(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> None:
            await ctx.limit("discrod")

    async with Runtime(Bot, limits={"discord": Rate(5)}) as rt:
        with pytest.raises(KeyError, match=r"discrod.*'discord'"):
            await rt.ask("u", 1)
