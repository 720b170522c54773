"""The chat features in every mode: on the real SQLite journal and on the embedded Redis.

Same bot, same meaning: collect, steering, Retry-After, rate limits, debounce,
overflow, busy refusal and deduplication, with what each mode adds (a journal that
acknowledges a turn's riders with it and keeps the dedup window through a restart;
a cluster that decides on the key's owner what the call site cannot).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from actors import (
    Batch,
    Context,
    Debounce,
    Dropped,
    KeyBusy,
    Rate,
    RetryAfter,
    SQLiteJournal,
    UserActor,
)
from supervisors import RedisCluster, RestartPolicy, Runtime
from tests.helpers import until

pytestmark = pytest.mark.timeout(60)

LOG: list[tuple[Any, Any]] = []
GATE: dict[str, asyncio.Event] = {}


class Agent(UserActor):
    """ "wait" holds its turn until GATE["go"]; then it takes what came meanwhile."""

    async def on_message(self, message: Any, ctx: Context) -> Any:
        got = message.messages if isinstance(message, Batch) else message
        if got == "wait" or got == ["wait"]:
            GATE["started"].set()
            await GATE["go"].wait()
            got = [got, *(i.message for i in ctx.take_new())]
        if got == "flood" and ctx.attempt == 1 and not any(m == "flood" for _, m in LOG):
            LOG.append((ctx.key, "flood"))
            raise RetryAfter(0.2)
        LOG.append((ctx.key, got))
        return got


@pytest.fixture(autouse=True)
def _fresh() -> None:
    LOG.clear()
    GATE.clear()
    GATE["go"] = asyncio.Event()
    GATE["started"] = asyncio.Event()


def cluster(url: str) -> RedisCluster:
    return RedisCluster(url, n_shards=4, lease_ttl=1.0, tick=0.05, member_ttl=0.5, join_grace=0.0)


@contextlib.asynccontextmanager
async def running(
    mode: str, where: Any, cls: type[UserActor] = Agent, **options: Any
) -> AsyncIterator[Runtime]:
    if mode == "durable":
        options["store"] = str(where / "journal.db")
    else:
        options["cluster"] = cluster(where)
    rt = Runtime(cls, restart=RestartPolicy(max_retries=0), idle_timeout=None, **options)
    await rt.start()
    try:
        if mode == "cluster":
            for _ in range(1000):  # until this node owns every shard
                if len(rt.stats()["cluster"]["shards_owned"]) == 4:
                    break
                await asyncio.sleep(0.01)
        yield rt
    finally:
        if rt.stats()["state"] == "running":
            await rt.stop()


@pytest.fixture(params=["durable", "cluster"])
def mode(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Any]:
    if request.param == "durable":
        return "durable", tmp_path
    return "cluster", request.getfixturevalue("redis_url")


def pending_in_journal(path: Path) -> int:
    journal = SQLiteJournal(path / "journal.db")
    try:
        return journal.pending_count()
    finally:
        journal.close()


async def test_steering_takes_follow_ups_and_acknowledges_them_with_the_turn(
    mode: tuple[str, Any],
) -> None:
    kind, where = mode
    async with running(kind, where) as rt:
        first = rt.ask("u", "wait")
        await GATE["started"].wait()
        follow = rt.ask("u", "actually, make it short")
        await until(lambda: rt.pending("u") == 1 or kind == "cluster")
        await asyncio.sleep(0.1 if kind == "cluster" else 0)  # read from the stream
        GATE["go"].set()
        expected = ["wait", "actually, make it short"]
        assert await first == expected
        assert await follow == expected
    assert [("u", expected)] == LOG
    if kind == "durable":
        assert pending_in_journal(where) == 0


async def test_collect_in_every_mode(mode: tuple[str, Any]) -> None:
    kind, where = mode

    class Collector(UserActor):
        busy = "collect"

        async def on_message(self, batch: Batch, ctx: Context) -> Any:
            if batch.messages == ["wait"]:
                GATE["started"].set()
                await GATE["go"].wait()
            LOG.append((ctx.key, batch.messages))
            return batch.messages

    async with running(kind, where, Collector) as rt:
        rt.tell("u", "wait")
        await GATE["started"].wait()
        asks = [rt.ask("u", i) for i in range(3)]
        await asyncio.sleep(0.1 if kind == "cluster" else 0)
        await until(lambda: rt.pending("u") == 3)
        GATE["go"].set()
        assert [await a for a in asks] == [[0, 1, 2]] * 3
    assert LOG[-1] == ("u", [0, 1, 2])
    if kind == "durable":
        assert pending_in_journal(where) == 0


async def test_retry_after_in_every_mode(mode: tuple[str, Any]) -> None:
    kind, where = mode
    async with running(kind, where) as rt:
        assert await rt.ask("u", "flood") == "flood"
        assert rt.stats()["retry_afters"] == 1
        assert rt.stats()["failed"] == 0
    assert LOG == [("u", "flood"), ("u", "flood")]


async def test_rate_and_debounce_in_every_mode(mode: tuple[str, Any]) -> None:
    kind, where = mode

    class Paced(Agent):
        rate = Rate(1, per=0.2)
        debounce = Debounce(window=0.1)

    async with running(kind, where, Paced) as rt:
        for i in range(3):
            rt.tell("u", i)
        await until(lambda: sum(len(m) for _, m in LOG if isinstance(m, list)) == 3)
        batches = [m for _, m in LOG]
    assert [m for b in batches for m in b] == [0, 1, 2]  # in order, each once
    assert len(batches) <= 2  # coalesced


async def test_overflow_in_every_mode(mode: tuple[str, Any]) -> None:
    kind, where = mode

    class Drops(UserActor):
        overflow = "drop_oldest"

        async def on_message(self, message: Any, ctx: Context) -> None:
            if message == "wait":
                GATE["started"].set()
                await GATE["go"].wait()
            LOG.append((ctx.key, message))

    async with running(kind, where, Drops, max_pending=2) as rt:
        rt.tell("u", "wait")
        await GATE["started"].wait()
        oldest = rt.ask("u", 1)
        rt.tell("u", 2)
        rt.tell("u", 3)
        with pytest.raises(Dropped) as dropped:
            await oldest
        assert dropped.value.reason == "overflow"
        GATE["go"].set()
        await until(lambda: len(LOG) == 3)
        letters = [(d.message, d.reason) for d in rt.dead_letters()]
    assert LOG == [("u", "wait"), ("u", 2), ("u", 3)]
    assert letters == [(1, "overflow")]
    if kind == "durable":
        assert pending_in_journal(where) == 0


async def test_reject_in_every_mode(mode: tuple[str, Any]) -> None:
    kind, where = mode

    class Refuses(Agent):
        busy = "reject"

    async with running(kind, where, Refuses) as rt:
        busy = rt.ask("r", "wait")
        await GATE["started"].wait()
        # In one process the refusal is at the call site; in a cluster the key lives on
        # its owner, which drops it ("busy") and the ask hears it.
        if kind == "durable":
            with pytest.raises(KeyBusy):
                rt.ask("r", "again")
        else:
            with pytest.raises(Dropped) as dropped:
                await rt.ask("r", "again")
            assert dropped.value.reason == "busy"
        GATE["go"].set()
        assert await busy == ["wait"]


async def test_dedup_window_in_every_mode(mode: tuple[str, Any]) -> None:
    kind, where = mode
    async with running(kind, where) as rt:
        assert await rt.ask("u", "hi", msg_id="update-7") == "hi"
        rt.tell("u", "hi", msg_id="update-7")
        await asyncio.sleep(0.1)
        await until(lambda: rt.stats()["pending"] == 0)
    async with running(kind, where) as rt:  # a restart: the window is still there
        with pytest.raises(Dropped) as dropped:
            await rt.ask("u", "hi", msg_id="update-7")
        assert dropped.value.reason == "duplicate"
        rt.tell("u", "new", msg_id="update-8")
        await until(lambda: ("u", "new") in LOG)
    assert LOG == [("u", "hi"), ("u", "new")]


class Steerer(UserActor):
    """Takes the next message into its turn, then holds the turn until GATE["go"]."""

    async def on_message(self, message: Any, ctx: Context) -> Any:
        if message == "wait":
            taken = await ctx.next_message(timeout=5.0)
            GATE["started"].set()
            await GATE["go"].wait()
            message = [message, None if taken is None else taken.message]
        LOG.append((ctx.key, message))
        return message


async def test_durable_a_stop_mid_turn_replays_the_taken_messages_in_order(
    tmp_path: Path,
) -> None:
    async with running("durable", tmp_path, Steerer) as rt:
        rt.tell("u", "wait")
        rt.tell("u", "taken")
        await GATE["started"].wait()  # the turn holds "taken"
        summary = await rt.stop(timeout=0.05)  # and the stop cuts it short
    assert summary.interrupted_on_stop == 2
    assert pending_in_journal(tmp_path) == 2  # both stay, for the next start
    GATE["go"].set()
    GATE["started"] = asyncio.Event()
    async with running("durable", tmp_path, Steerer) as rt:
        rt.tell("u", "newer")
        await until(lambda: ("u", "newer") in LOG)
    assert LOG == [("u", ["wait", "taken"]), ("u", "newer")]
    assert pending_in_journal(tmp_path) == 0
