"""Deduplication by `msg_id` in one process, and the overflow policies (G8), in memory.

A Telegram update delivered twice (a webhook retried) must not cause a second turn.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from actors import Context, Dropped, MailboxFull, UserActor
from actors.testing import FakeClock
from supervisors import Runtime

from .helpers import in_flight, settle


class Echo(UserActor):
    runs: list[Any]
    gate: asyncio.Event | None = None

    async def on_message(self, message: Any, ctx: Context) -> Any:
        type(self).runs.append(message)
        if type(self).gate is not None and message == "wait":
            await type(self).gate.wait()  # type: ignore[union-attr]
        if message == "boom":
            raise ValueError("bad update")
        return f"answer to {message}"


def echo(gate: bool = False, **attrs: Any) -> type[Echo]:
    cls = type("Bot", (Echo,), dict(attrs))
    cls.runs = []
    cls.gate = asyncio.Event() if gate else None
    return cls


async def test_a_redelivered_update_is_handled_once() -> None:
    bot = echo()
    async with Runtime(bot) as rt:
        rt.tell("telegram:42", "hi", msg_id="update-1")
        rt.tell("telegram:42", "hi", msg_id="update-1")  # the webhook, retried
        await settle(rt)
        rt.tell("telegram:42", "hi", msg_id="update-1")  # later, within the window
        await asyncio.to_thread(rt.tell, "telegram:42", "hi", msg_id="update-1")  # a thread
        rt.tell("telegram:42", "hi", msg_id="update-2")
        await settle(rt)
        stats = rt.stats()
    assert bot.runs == ["hi", "hi"]
    assert (stats["accepted"], stats["handled"], stats["duplicates"]) == (2, 2, 3)


async def test_an_ask_of_a_duplicate_gets_the_original_outcome() -> None:
    bot = echo(gate=True)
    async with Runtime(bot) as rt:
        original = rt.ask("u", "wait", msg_id="m1")
        while_pending = rt.ask("u", "wait", msg_id="m1")
        bot.gate.set()  # type: ignore[union-attr]
        assert await original == "answer to wait"
        assert await while_pending == "answer to wait"
        assert await rt.ask("u", "ignored", msg_id="m1") == "answer to wait"  # done already
        failing = rt.ask("u", "boom", msg_id="m2")
        with pytest.raises(ValueError, match="bad update"):
            await failing
        with pytest.raises(ValueError, match="bad update"):
            await rt.ask("u", "boom", msg_id="m2")
        await rt.send("u", "wait", msg_id="m1")  # an awaited send of a duplicate returns
    assert bot.runs == ["wait", "boom"]


async def test_the_window_forgets_by_time_and_by_count() -> None:
    bot = echo()
    clock = FakeClock()
    async with Runtime(bot, clock=clock, dedup_window=60.0, dedup_max=2) as rt:
        rt.tell("u", "a", msg_id="a")
        await clock.advance(30.0)
        rt.tell("u", "a", msg_id="a")  # remembered
        await clock.advance(31.0)
        rt.tell("u", "a", msg_id="a")  # forgotten after 60 s
        await clock.advance(1.0)
        for name in ("b", "c", "d"):  # only the 2 newest are kept
            rt.tell("u", name, msg_id=name)
            await clock.advance(0.0)
        rt.tell("u", "b", msg_id="b")  # forgotten: the oldest of three
        rt.tell("u", "d", msg_id="d")  # remembered
        await settle(rt)
    assert bot.runs == ["a", "a", "b", "c", "d", "b"]


async def test_messages_without_an_id_are_never_deduplicated() -> None:
    bot = echo()
    async with Runtime(bot) as rt:
        for _ in range(3):
            rt.tell("u", "same")
        await settle(rt)
        assert rt.stats()["duplicates"] == 0
    assert bot.runs == ["same"] * 3


def test_bad_window_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="dedup_window"):
        Runtime(echo(), dedup_window=0)
    with pytest.raises(ValueError, match="dedup_max"):
        Runtime(echo(), dedup_max=0)


async def test_a_bad_msg_id_is_refused_at_the_call_site() -> None:
    async with Runtime(echo()) as rt:
        with pytest.raises(TypeError, match="msg_id"):
            rt.tell("u", 1, msg_id=5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="msg_id"):
            rt.tell("u", 1, msg_id="")
        assert rt.stats()["accepted"] == 0


# -- overflow --------------------------------------------------------------------------------


async def test_drop_oldest_makes_room_and_dead_letters_the_oldest() -> None:
    bot = echo(gate=True, overflow="drop_oldest")
    async with Runtime(bot, max_pending=2) as rt:
        rt.tell("u", "wait")
        await in_flight(rt, 1)
        oldest = rt.ask("u", 1)
        rt.tell("u", 2)
        rt.tell("u", 3)  # full: 1 goes
        with pytest.raises(Dropped) as dropped:
            await oldest
        assert dropped.value.reason == "overflow"
        assert rt.pending("u") == 2
        bot.gate.set()  # type: ignore[union-attr]
        await settle(rt)
        letters = rt.dead_letters()
        stats = rt.stats()
    assert bot.runs == ["wait", 2, 3]
    assert [(d.message, d.reason) for d in letters] == [(1, "overflow")]
    assert stats["overflowed"] == 1


async def test_drop_newest_drops_the_newcomer() -> None:
    bot = echo(gate=True, overflow="drop_newest")
    async with Runtime(bot, max_pending=1) as rt:
        rt.tell("u", "wait")
        await in_flight(rt, 1)
        rt.tell("u", 1)
        newest = rt.ask("u", 2)
        with pytest.raises(Dropped) as dropped:
            await newest
        assert dropped.value.reason == "overflow"
        bot.gate.set()  # type: ignore[union-attr]
        await settle(rt)
    assert bot.runs == ["wait", 1]


async def test_a_priority_message_is_never_dropped_for_a_normal_one() -> None:
    bot = echo(gate=True, overflow="drop_oldest")
    async with Runtime(bot, max_pending=2) as rt:
        rt.tell("u", "wait")
        await in_flight(rt, 1)
        rt.tell("u", "/a", priority=1)
        rt.tell("u", "/b", priority=1)
        normal = rt.ask("u", "normal")  # nothing it may push out: it is dropped itself
        with pytest.raises(Dropped):
            await normal
        rt.tell("u", "/c", priority=2)  # a higher priority pushes out the oldest /a
        bot.gate.set()  # type: ignore[union-attr]
        await settle(rt)
    assert bot.runs == ["wait", "/c", "/b"]


async def test_the_default_still_refuses_at_the_call_site() -> None:
    bot = echo(gate=True)
    async with Runtime(bot, max_pending=1) as rt:
        rt.tell("u", "wait")
        await in_flight(rt, 1)
        rt.tell("u", 1)
        with pytest.raises(MailboxFull):
            rt.tell("u", 2)
        with pytest.raises(MailboxFull):
            await asyncio.to_thread(rt.tell, "u", 3)
        bot.gate.set()  # type: ignore[union-attr]


async def test_a_thread_under_a_drop_policy_is_not_refused() -> None:
    bot = echo(gate=True, overflow="drop_oldest")
    async with Runtime(bot, max_pending=1) as rt:
        rt.tell("u", "wait")
        await in_flight(rt, 1)
        for i in range(3):
            await asyncio.to_thread(rt.tell, "u", i)
        await asyncio.sleep(0)
        bot.gate.set()  # type: ignore[union-attr]
        await settle(rt)
        assert rt.stats()["overflowed"] == 2
    assert bot.runs == ["wait", 2]


async def test_send_waits_for_room_instead_of_raising() -> None:
    bot = echo(gate=True)
    async with Runtime(bot, max_pending=1) as rt:
        rt.tell("u", "wait")
        await in_flight(rt, 1)
        rt.tell("u", 1)
        sending = asyncio.ensure_future(rt.send("u", 2))  # the producer slows down
        from_thread = asyncio.ensure_future(asyncio.to_thread(_send_in_thread, rt, 3))
        await asyncio.sleep(0)
        assert not sending.done()
        with pytest.raises(MailboxFull):
            await rt.send("u", 4, timeout=0)
        bot.gate.set()  # type: ignore[union-attr]
        await asyncio.wait_for(sending, 5)
        await asyncio.wait_for(from_thread, 5)
        await settle(rt)
    assert sorted(bot.runs[1:]) == [1, 2, 3]


def _send_in_thread(rt: Runtime, message: Any) -> None:
    asyncio.run(rt.send("u", message, timeout=5))


def _tell_from_a_thread(rt: Runtime, message: Any, msg_id: str | None) -> None:
    caller = threading.Thread(target=rt.tell, args=("u", message), kwargs={"msg_id": msg_id})
    caller.start()
    caller.join()  # blocks the loop, so the thread's call waits in transit


@pytest.mark.parametrize(("msg_id", "runs"), [(None, ["wait", 1, 3, 2]), ("m1", ["wait", 1, 2])])
async def test_a_waiting_send_waits_for_room_a_thread_reserved(
    msg_id: str | None, runs: list[Any]
) -> None:
    # The room a thread's call reserved counts for the line as it does for accept: the
    # head, woken when the mailbox emptied, finds it taken and waits again, rather than
    # retry at once without yielding (the loop spun, never draining the thread's call).
    # If the thread's message is not taken in after all (a duplicate), its room comes
    # back to the line when the loop sees it, not at the next message handled.
    bot = echo(gate=True)
    async with Runtime(bot, max_pending=1) as rt:
        rt.tell("u", "wait")
        await in_flight(rt, 1)
        rt.tell("u", 1, msg_id="m1")
        sending = asyncio.ensure_future(rt.send("u", 2))
        await asyncio.sleep(0)
        # White-box, to make the race certain: once the head's turn comes (the mailbox
        # emptied), a thread's tell takes the room before the head's task gets to try.
        (head,) = rt._core.pacing.room_waiters["u"]  # type: ignore[union-attr]
        head.turn.add_done_callback(lambda _: _tell_from_a_thread(rt, 3, msg_id))
        bot.gate.set()  # type: ignore[union-attr]
        await asyncio.wait_for(sending, 5)
        await settle(rt)
    assert bot.runs == runs


async def test_send_gives_up_after_its_timeout() -> None:
    bot = echo(gate=True)
    async with Runtime(bot, max_pending=1) as rt:
        rt.tell("u", "wait")
        await in_flight(rt, 1)
        rt.tell("u", 1)
        with pytest.raises(MailboxFull):
            await rt.send("u", 2, timeout=0.05)
        with pytest.raises(ValueError, match="timeout"):
            await rt.send("u", 2, timeout=-1)
        bot.gate.set()  # type: ignore[union-attr]
        await settle(rt)
    assert bot.runs == ["wait", 1]
