"""`Runtime.send` into a full mailbox: the senders wait in a line and get in in order.

A framework runs one task per update (aiogram's polling, discord.py's events, Bolt's
requests), so several `send`s to one key can wait for its room at once; each must get
in in the order it was called, and a sender that gives up (its timeout, its task
cancelled) must not hold up the ones behind it, even when its turn came as it left.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import Context, MailboxFull, UserActor
from supervisors import Runtime

from .helpers import in_flight, settle

pytestmark = pytest.mark.timeout(60)


class Gated(UserActor):
    runs: list[Any]
    gate: asyncio.Event

    async def on_message(self, message: Any, ctx: Context) -> None:
        type(self).runs.append(message)
        if message == "wait":
            await type(self).gate.wait()


def gated() -> type[Gated]:
    cls = type("Bot", (Gated,), {})
    cls.runs = []
    cls.gate = asyncio.Event()
    return cls


async def until_waiting(rt: Runtime, key: Any, n: int) -> None:
    """Until `n` senders wait in `key`'s line: a hang detector, not a timing (a sender
    on another thread may take a while to start under load)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 10
    while loop.time() < give_up:
        core = rt._core
        assert core is not None
        line = core.pacing.room_waiters.get(key) or ()
        if len(line) >= n:  # every place in a line is a sender still waiting
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never saw {n} senders waiting")


async def test_concurrent_sends_get_in_in_the_order_they_were_called() -> None:
    bot = gated()
    async with Runtime(bot, max_pending=1) as rt:
        rt.tell("u", "wait")
        await in_flight(rt, 1)
        rt.tell("u", "queued")
        sends = [asyncio.ensure_future(rt.send("u", n)) for n in range(10)]
        await until_waiting(rt, "u", 10)
        bot.gate.set()
        late = asyncio.ensure_future(rt.send("u", "late"))  # behind the line, not before it
        await asyncio.wait_for(asyncio.gather(*sends, late), 5)
        await settle(rt)
    assert bot.runs == ["wait", "queued", *range(10), "late"]


async def test_a_sender_that_gives_up_does_not_hold_up_the_line() -> None:
    bot = gated()
    async with Runtime(bot, max_pending=1) as rt:
        rt.tell("u", "wait")
        await in_flight(rt, 1)
        rt.tell("u", "queued")
        first = asyncio.ensure_future(rt.send("u", 1))
        impatient = asyncio.ensure_future(rt.send("u", 2, timeout=0))
        third = asyncio.ensure_future(rt.send("u", 3))
        with pytest.raises(MailboxFull):
            await impatient
        await until_waiting(rt, "u", 2)
        first.cancel()
        bot.gate.set()
        await asyncio.wait_for(third, 5)
        await settle(rt)
        assert first.cancelled()
    assert bot.runs == ["wait", "queued", 3]


async def test_a_priority_send_does_not_queue_behind_normal_ones() -> None:
    bot = gated()
    async with Runtime(bot, max_pending=2) as rt:
        rt.tell("u", "wait")
        await in_flight(rt, 1)
        rt.tell("u", "a")
        rt.tell("u", "b")
        normal = asyncio.ensure_future(rt.send("u", "normal"))
        await until_waiting(rt, "u", 1)
        with pytest.raises(MailboxFull):  # no room for it either; but it did not queue
            await rt.send("u", "urgent", priority=5, timeout=0)
        bot.gate.set()
        await asyncio.wait_for(normal, 5)
        await settle(rt)
    assert bot.runs == ["wait", "a", "b", "normal"]


async def test_a_send_from_a_thread_waits_and_passes_the_turn_on() -> None:
    bot = gated()
    async with Runtime(bot, max_pending=1) as rt:
        rt.tell("u", "wait")
        await in_flight(rt, 1)
        rt.tell("u", "queued")
        from_thread = asyncio.ensure_future(
            asyncio.to_thread(lambda: asyncio.run(rt.send("u", "thread", timeout=10)))
        )
        await until_waiting(rt, "u", 1)
        on_loop = asyncio.ensure_future(rt.send("u", "loop"))
        await until_waiting(rt, "u", 2)
        bot.gate.set()
        await asyncio.wait_for(asyncio.gather(from_thread, on_loop), 10)
        await settle(rt)
    assert bot.runs == ["wait", "queued", "thread", "loop"]


@settings(max_examples=60, deadline=None)
@given(
    max_pending=st.integers(1, 3),
    n=st.integers(1, 10),
    gives_up=st.sets(st.integers(0, 9)),
    late=st.integers(0, 3),
)
def test_the_line_keeps_call_order_whoever_gives_up(
    max_pending: int, n: int, gives_up: set[int], late: int
) -> None:
    """Any senders, any of them cancelled while they wait: the others get in in the
    order they were called, and sends made as the line moves queue behind it."""

    async def scenario() -> list[Any]:
        bot = gated()
        async with Runtime(bot, max_pending=max_pending) as rt:
            rt.tell("u", "wait")
            await in_flight(rt, 1)
            for f in range(max_pending):
                rt.tell("u", f"f{f}")
            sends = [asyncio.ensure_future(rt.send("u", i)) for i in range(n)]
            await until_waiting(rt, "u", n)
            for i in gives_up:
                if i < n:
                    sends[i].cancel()
            bot.gate.set()
            lates = [asyncio.ensure_future(rt.send("u", f"late{j}")) for j in range(late)]
            await asyncio.wait_for(asyncio.gather(*sends, *lates, return_exceptions=True), 5)
            await settle(rt)
        return bot.runs

    runs = asyncio.run(scenario())
    kept = [i for i in range(n) if i not in gives_up]
    assert runs == [
        "wait",
        *(f"f{f}" for f in range(max_pending)),
        *kept,
        *(f"late{j}" for j in range(late)),
    ]


async def test_senders_waiting_in_line_when_the_runtime_stops_hear_runtime_stopped() -> None:
    """A stop lets the whole line go, on the loop and from a thread: each sender raises
    `RuntimeStopped` (its message was never accepted), none waits on."""
    from actors import RuntimeStopped

    bot = gated()
    rt = Runtime(bot, max_pending=1)
    await rt.start()
    rt.tell("u", "wait")
    await in_flight(rt, 1)
    rt.tell("u", "queued")
    on_loop = [asyncio.ensure_future(rt.send("u", n)) for n in range(3)]
    from_thread = asyncio.ensure_future(
        asyncio.to_thread(lambda: asyncio.run(rt.send("u", "thread", timeout=30)))
    )
    await until_waiting(rt, "u", 4)
    stopping = asyncio.ensure_future(rt.stop(drain=False, timeout=1.0))
    bot.gate.set()
    outcomes = await asyncio.wait_for(
        asyncio.gather(*on_loop, from_thread, return_exceptions=True), 10
    )
    await asyncio.wait_for(stopping, 10)
    assert all(isinstance(o, RuntimeStopped) for o in outcomes), outcomes
    assert "thread" not in bot.runs
