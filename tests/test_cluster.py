"""Cluster mode on a real Redis (the embedded server of supervisors.testing), in one process.

Several `Runtime`s with `cluster=` on one event loop are several nodes: they share the
server and split the shards. Crashes of real processes are in test_cluster_chaos.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from actors import Context, FutureTimeout, RecordedError, UserActor
from supervisors import Directive, RedisCluster, RestartPolicy, Runtime
from tests.helpers import until

pytestmark = pytest.mark.timeout(60)

SEEN: list[tuple[str, Any, Any, int, bool]] = []  # (node, key, message, attempt, redelivered)
GATE: dict[str, asyncio.Event] = {}


class Bot(UserActor):
    decider = staticmethod(lambda error: Directive.RESUME)

    async def on_message(self, message: Any, ctx: Context) -> Any:
        SEEN.append(
            (NODE.get(id(ctx._cell.host), "?"), ctx.key, message, ctx.attempt, ctx.redelivered)
        )
        if message == "boom":
            raise ValueError("boom")
        if message == "block":
            await GATE["open"].wait()
        if message == "block, then fail once":
            await GATE["open"].wait()
            if ctx.attempt == 1:
                raise ValueError("once")
        return message


NODE: dict[int, str] = {}


@pytest.fixture(autouse=True)
def _fresh() -> None:
    SEEN.clear()
    GATE.clear()
    GATE["open"] = asyncio.Event()


def config(url: str, **overrides: Any) -> RedisCluster:
    options: dict[str, Any] = {
        "n_shards": 8,
        "lease_ttl": 1.0,
        "tick": 0.1,
        "member_ttl": 0.5,
        "join_grace": 0.0,
        "ask_timeout": 5.0,
        "handoff_timeout": 2.0,
    }
    options.update(overrides)
    return RedisCluster(url, **options)


@contextlib.asynccontextmanager
async def node(url: str, name: str, **overrides: Any) -> AsyncIterator[Runtime]:
    rt = Runtime(
        Bot,
        cluster=config(url, **overrides),
        idle_timeout=None,
        restart=RestartPolicy(max_retries=0),
    )
    await rt.start()
    NODE[id(rt._core)] = name
    try:
        yield rt
    finally:
        if rt.stats()["state"] == "running":
            await rt.stop()


def owned(rt: Runtime) -> list[int]:
    return list(rt.stats()["cluster"]["shards_owned"])


def handled(key: Any) -> list[Any]:
    return [m for _, k, m, _, _ in SEEN if k == key]


async def test_one_node_owns_every_shard_and_keeps_order(redis_url: str) -> None:
    async with node(redis_url, "a") as rt:
        await until(lambda: len(owned(rt)) == 8)
        for n in range(300):
            rt.tell(f"user:{n % 10}", n)
        assert await rt.ask("user:3", "q") == "q"
        await until(lambda: len(SEEN) == 301)
    for k in range(10):
        assert handled(f"user:{k}")[:30] == list(range(k, 300, 10))


async def test_two_nodes_split_the_shards_and_route_to_the_owner(redis_url: str) -> None:
    async with node(redis_url, "a") as a, node(redis_url, "b") as b:
        await until(lambda: settled(a, b))  # the rendezvous assignment, handoffs done
        assert not set(owned(a)) & set(owned(b))
        keys = [next(f"u{n}" for n in range(1000) if _shard(f"u{n}") == s) for s in range(8)]
        for n in range(200):
            (a if n % 2 else b).tell(keys[n % 8], n)
        answers = await asyncio.gather(*(a.ask(keys[k], f"ask{k}") for k in range(8)))
        assert answers == [f"ask{k}" for k in range(8)]
        await until(lambda: len(SEEN) == 208)
        nodes_per_key = {
            k: {n for n, kk, _, _, _ in SEEN if kk == k} for k in {k for _, k, _, _, _ in SEEN}
        }
        assert all(len(v) == 1 for v in nodes_per_key.values())  # one live actor per key
        assert {n for v in nodes_per_key.values() for n in v} == {"a", "b"}
        for key in keys:
            mine = [m for m in handled(key) if isinstance(m, int)]
            assert mine == sorted(mine)


def settled(*nodes: Runtime, n: int = 8) -> bool:
    """Every shard owned by the node rendezvous hashing gives it, none in a handoff."""
    from supervisors.cluster._shards import owner_of

    ids = [rt.stats()["cluster"]["node"] for rt in nodes]
    holder = {s: node_id for rt, node_id in zip(nodes, ids, strict=True) for s in owned(rt)}
    return all(holder.get(s) == owner_of(s, ids) for s in range(n))


async def test_a_failed_ask_raises_a_clear_error_in_the_caller(redis_url: str) -> None:
    async with node(redis_url, "a") as rt:
        await until(lambda: len(owned(rt)) == 8)
        with pytest.raises(RecordedError, match="ValueError: boom"):
            await rt.ask("k", "boom")


async def test_an_ask_nobody_answers_fails_with_a_timeout(redis_url: str) -> None:
    async with node(redis_url, "sender", role="sender", ask_timeout=0.3) as rt:
        with pytest.raises(FutureTimeout, match="no reply"):
            await rt.ask("k", "nobody owns this shard")
        assert isinstance(FutureTimeout("x"), TimeoutError)


async def test_a_sender_only_process_reaches_the_nodes(redis_url: str) -> None:
    async with node(redis_url, "a") as a, node(redis_url, "front", role="sender") as front:
        await until(lambda: len(owned(a)) == 8)
        await front.send("k", 1)
        assert await front.ask("k", 2) == 2
        await until(lambda: handled("k") == [1, 2])
        assert owned(front) == []


async def test_msg_id_makes_a_duplicate_a_no_op(redis_url: str) -> None:
    # A lease that cannot lapse under a loaded machine: a lapse hands the shard to a new
    # epoch that reruns the in-flight original (at-least-once across a lost lease), which
    # this test is not about.
    async with node(redis_url, "a", lease_ttl=5.0, member_ttl=2.0) as rt:
        await until(lambda: len(owned(rt)) == 8)
        for _ in range(3):
            await rt.send("k", "update-1", msg_id="tg-1")
        await rt.send("k", "update-2", msg_id="tg-2")
        await until(lambda: "update-2" in handled("k"))
        await asyncio.sleep(0.2)
        assert handled("k").count("update-1") == 1
        assert rt.stats()["cluster"]["duplicates"] >= 1


async def test_graceful_stop_hands_shards_over_without_redelivery(redis_url: str) -> None:
    async with node(redis_url, "a") as a:
        await until(lambda: len(owned(a)) == 8)
        async with node(redis_url, "b") as b:
            await until(lambda: len(owned(b)) > 0)
            for n in range(400):
                a.tell(f"u{n % 16}", n)
            await b.stop()  # drains what it holds, releases; "a" takes over
            await until(lambda: len(owned(a)) == 8)
            await until(lambda: len([s for s in SEEN if isinstance(s[2], int)]) >= 400)
            await asyncio.sleep(0.2)
    ints = [s for s in SEEN if isinstance(s[2], int)]
    assert sorted(m for _, _, m, _, _ in ints) == list(range(400))  # each exactly once
    assert not any(r for _, _, _, _, r in ints)
    for k in range(16):
        mine = handled(f"u{k}")
        assert mine == sorted(mine)


async def test_a_dead_node_s_shards_are_taken_over_and_its_pending_replayed(redis_url: str) -> None:
    """A node that stops renewing (its tasks die, as in a crash) loses its shards after the
    lease; the survivor replays what it held, in order, as redeliveries."""
    async with node(redis_url, "a") as a:
        await until(lambda: len(owned(a)) == 8)
        b = Runtime(Bot, cluster=config(redis_url), idle_timeout=None)
        await b.start()
        NODE[id(b._core)] = "b"
        await until(lambda: len(owned(b)) > 0)
        victim = next(k for k in (f"v{n}" for n in range(100)) if _shard(k) in owned(b))
        a.tell(victim, "block")
        for n in range(5):
            a.tell(victim, n)
        await until(lambda: handled(victim) == ["block"])
        # "b" dies: its tasks end without releasing anything (the flag, because a
        # cancellation landing inside the Redis client can come out as another error).
        b._node._closing = True  # type: ignore[union-attr]
        for task in list(b._node._tasks):  # type: ignore[union-attr]
            task.cancel()
        await until(lambda: len(owned(a)) == 8, seconds=10)
        GATE["open"].set()
        await until(lambda: handled(victim)[-5:] == [0, 1, 2, 3, 4], seconds=10)
        await b.stop(drain=False)
        on_a = [(m, att, r) for n, k, m, att, r in SEEN if k == victim and n == "a"]
        assert on_a[0][0] == "block"
        assert on_a[0][2]
        assert [m for m, _, _ in on_a] == ["block", 0, 1, 2, 3, 4]
        assert a.stats()["cluster"]["takeovers"] >= 1


def _shard(key: str) -> int:
    from supervisors.cluster._shards import shard_of

    return shard_of(key, 8)


async def test_a_node_that_lost_its_lease_is_fenced(redis_url: str) -> None:
    """A paused node (its renewals stopped) whose lease another node took: its commits
    are refused (FENCED, counted) and it drops the shard."""
    async with node(redis_url, "a", lease_ttl=0.6, tick=0.1) as a:
        await until(lambda: len(owned(a)) == 8)
        victim = "fence-me"
        a.tell(victim, "block")
        await until(lambda: handled(victim) == ["block"])
        # "a" pauses its membership tick (no more renewals), as a stopped process would.
        a._node._tick = lambda began: asyncio.sleep(0)  # type: ignore[method-assign,union-attr]
        async with node(redis_url, "b", lease_ttl=0.6, tick=0.1) as b:
            await until(lambda: _shard(victim) in owned(b), seconds=10)
            GATE["open"].set()  # "a" finishes its handler late: its commit is fenced
            await until(lambda: a.stats()["cluster"]["fenced"] >= 1, seconds=10)
            assert _shard(victim) not in owned(a)
            await until(
                lambda: [n for n, k, m, _, _ in SEEN if k == victim] == ["a", "b"], seconds=10
            )


async def test_an_owner_that_lost_its_lease_unaware_reads_nothing_once_taken_over(
    redis_url: str,
) -> None:
    """The next owner's acquisition destroys the earlier owner's consumer group: a node
    that believes it still holds the lease (its renewals, as far as it saw, went through;
    the lease was lost in Redis, as to a failover onto a lagging replica) gets `NOGROUP` on
    its next read, counts it as fenced and drops the shard; the new message runs once, on
    the new owner."""
    async with node(redis_url, "a", lease_ttl=0.6, tick=0.1) as a:
        await until(lambda: len(owned(a)) == 8)
        victim = "read-fence"
        state: Any = a._node

        async def believes_it_renewed(began: float) -> None:
            state._last_renew = began  # no renewal reaches Redis

        state._tick = believes_it_renewed
        async with node(redis_url, "b", lease_ttl=0.6, tick=0.1) as b:
            await until(lambda: _shard(victim) in owned(b), seconds=10)
            # ("a" may have found its group gone already, on a read of an idle pass.)
            await b.ask(victim, "after")
            await until(lambda: _shard(victim) not in owned(a))
            assert a.stats()["cluster"]["fenced"] >= 1
            assert [n for n, k, m, _, _ in SEEN if k == victim] == ["b"]


async def test_a_node_past_its_fence_point_starts_nothing_that_waits_here(
    redis_url: str,
) -> None:
    """Found by a SIGSTOP past the lease: a node that wakes up with messages waiting here
    fenced itself (its renewals had stopped for 0.8 x lease_ttl) as its next handler began,
    dropping what waited, but ran the message it had just taken, beside the shard's next
    owner. That message must not start here; it is dropped ("fenced", no dead letter) and
    the shard's next owner runs it: an ask of it is answered from there."""
    async with node(redis_url, "a") as a:
        await until(lambda: len(owned(a)) == 8)
        victim = "fence-point"
        a.tell(victim, "block")
        answer = a.ask(victim, "next")
        cells = a._core.cells  # type: ignore[union-attr]
        await until(lambda: handled(victim) == ["block"] and len(cells[victim].mailbox) == 1)
        # "a" is paused: no tick renews anything any more (one stubbed tick has begun, so
        # no real one is still on its way), and its last renewal began a lease time ago.
        cluster: Any = a._node
        ticks: list[float] = []
        cluster._tick = lambda began: ticks.append(began) or asyncio.sleep(0)
        await until(lambda: bool(ticks))
        cluster._last_renew -= cluster.config.lease_ttl
        GATE["open"].set()  # "block" returns; "next" is the next to take, past the fence point
        await until(lambda: a.stats()["cluster"]["lost"] == 8)
        assert handled(victim) == ["block"]  # "next" did not start on "a"
        async with node(redis_url, "b") as b:  # the next owner, once a's leases expired
            assert await asyncio.wait_for(answer, 10) == "next"
            await until(lambda: len(owned(b)) == 8)
        on_b = [(m, r) for n, k, m, _, r in SEEN if k == victim and n == "b"]
        assert on_b[-1] == ("next", True)
        assert [m for n, k, m, _, _ in SEEN if k == victim and n == "a"] == ["block"]
        assert a.dead_letters() == []


@pytest.mark.parametrize("msg_id", [None, "update-7"])
async def test_a_retry_of_a_message_whose_shard_was_lost_does_not_run_under_the_old_epoch(
    redis_url: str, msg_id: str | None
) -> None:
    """A handler fails after its node lost the shard (a renewal refused: the lease expired)
    and acquired it again: its retry is the old epoch's and must not run; the new epoch's
    replay of the message runs instead, once (a msg_id still in flight under a lost epoch
    does not make the replay a duplicate: nothing of that epoch will run or commit it)."""
    import redis.asyncio as aioredis

    rt = Runtime(
        Bot, cluster=config(redis_url), idle_timeout=None, restart=RestartPolicy(max_retries=1)
    )
    await rt.start()
    NODE[id(rt._core)] = "a"
    try:
        await until(lambda: len(owned(rt)) == 8)
        victim = "retry-me"
        rt.tell(victim, "block, then fail once", msg_id=msg_id)
        await until(lambda: len(handled(victim)) == 1)
        before = rt.stats()["cluster"]
        client = aioredis.Redis.from_url(redis_url)
        try:  # the lease is gone (as if it had expired while this node was paused)
            await client.delete(f"inorder:{{inorder:{_shard(victim)}}}:lease")
        finally:
            await client.aclose()
        # The next tick's renewal is refused (the shard is lost), the shard is acquired
        # again under a new epoch, and its takeover replays the message.
        await until(lambda: rt.stats()["cluster"]["replayed"] > before["replayed"])
        assert rt.stats()["cluster"]["lost"] == before["lost"] + 1
        GATE["open"].set()  # the old epoch's handler fails: a retry is due
        await until(lambda: len(handled(victim)) >= 2 and rt.stats()["cluster"]["in_flight"] == 0)
        await rt.wait_idle()
        runs = [(a, r) for _, k, _, a, r in SEEN if k == victim]
        assert len(runs) == 2, runs
        assert runs[0] == (1, False)
        assert runs[1][1], runs  # the new epoch's replay, not the old epoch's retry
        assert rt.dead_letters() == []
    finally:
        await rt.stop()


async def test_bad_arguments_fail_at_the_call(redis_url: str) -> None:
    with pytest.raises(ValueError, match="url"):
        RedisCluster("http://x")
    with pytest.raises(ValueError, match="namespace"):
        RedisCluster(redis_url, namespace="a b")
    with pytest.raises(ValueError, match="tick"):
        RedisCluster(redis_url, tick=5, lease_ttl=6)
    with pytest.raises(ValueError, match="combined"):
        Runtime(Bot, cluster=RedisCluster(redis_url), store="x.db")
    assert "secret" not in repr(RedisCluster("redis://user:secret@127.0.0.1:1/0"))
    async with node(redis_url, "a") as rt:
        with pytest.raises(TypeError, match="msg_id"):
            rt.tell("k", 1, msg_id=5)  # type: ignore[arg-type]
        with pytest.raises(Exception, match="encode"):
            rt.tell("k", object())


async def test_a_node_with_another_shard_count_refuses_to_start(redis_url: str) -> None:
    async with node(redis_url, "a"):
        rt = Runtime(Bot, cluster=config(redis_url, n_shards=16))
        with pytest.raises(ValueError, match="shards"):
            await rt.start()


class Stamped(UserActor):
    async def on_message(self, message: Any, ctx: Context) -> Any:
        return (ctx.message_id, ctx.epoch)


async def test_handlers_see_the_message_id_and_the_fencing_epoch(redis_url: str) -> None:
    rt = Runtime(Stamped, cluster=config(redis_url), idle_timeout=None)
    async with rt:
        await until(lambda: len(owned(rt)) == 8)
        msg_id, epoch = await rt.ask("k", 1, msg_id="update-77")
        assert msg_id == "update-77"
        assert isinstance(epoch, int)
        assert epoch >= 1
        assert (await rt.ask("k", 2))[0] is None


async def test_a_message_over_max_payload_is_refused_at_the_call(redis_url: str) -> None:
    async with node(redis_url, "a", max_payload=100) as rt:
        with pytest.raises(Exception, match="max_payload"):
            rt.tell("k", "x" * 200)
        rt.tell("k", "small")


async def test_an_unreachable_redis_fails_start_and_leaves_nothing_running() -> None:
    rt = Runtime(Bot, cluster=RedisCluster("redis://127.0.0.1:1/0"))
    before = set(asyncio.all_tasks())
    with pytest.raises(Exception, match=r"(?i)connect"):
        await rt.start()
    assert set(asyncio.all_tasks()) == before
    assert rt.stats()["state"] == "new"


async def test_messages_sent_while_redis_restarts_are_not_lost() -> None:
    """Redis restarts (append-only file): tells made while it is down wait in the outbox
    and are written once it is back; nothing accepted before is lost."""
    from supervisors.testing import EmbeddedRedis

    server = await asyncio.to_thread(EmbeddedRedis, appendonly=True)
    try:
        async with node(server.url, "a") as rt:
            await until(lambda: len(owned(rt)) == 8)
            for n in range(50):
                rt.tell(f"r{n % 5}", n)
            await until(lambda: len(SEEN) == 50)
            await asyncio.to_thread(server.stop)
            for n in range(50, 100):
                rt.tell(f"r{n % 5}", n)  # Redis is down: queued, retried
            await asyncio.to_thread(server.start)
            await until(lambda: len(SEEN) >= 100, seconds=20)
            for k in range(5):
                mine = handled(f"r{k}")
                assert sorted(set(mine)) == list(range(k, 100, 5))
                firsts = list(dict.fromkeys(mine))
                assert firsts == sorted(firsts)
    finally:
        await asyncio.to_thread(server.stop)


class Slow(UserActor):
    async def on_message(self, message: Any, ctx: Context) -> Any:
        await asyncio.sleep(0.5)
        return message


async def test_a_stopping_node_acquires_nothing_and_releases_every_lease(redis_url: str) -> None:
    """Found by the cluster demo: a node still the rightful owner re-acquired the shards it
    had just released while its stop waited for a handler, and kept their leases."""
    import redis.asyncio as aioredis

    rt = Runtime(Slow, cluster=config(redis_url), idle_timeout=None)
    await rt.start()
    await until(lambda: len(owned(rt)) == 8)
    pending = rt.ask("someone", "slow")
    await until(lambda: rt.stats()["in_flight"] == 1)  # read and running: the stop drains it
    await asyncio.wait_for(rt.stop(timeout=5), 4)  # a hang detector: it used to take 5 s
    assert await pending == "slow"
    stats = rt.stats()["cluster"]
    assert stats["acquired"] == stats["released"] == 8
    client = aioredis.Redis.from_url(redis_url)
    try:
        leases = [await client.get(f"inorder:{{inorder:{s}}}:lease") for s in range(8)]
    finally:
        await client.aclose()
    assert leases == [None] * 8


async def test_a_message_that_keeps_killing_its_owner_is_dead_lettered(redis_url: str) -> None:
    """Past `max_deliveries` deliveries without an outcome (its owners died running it),
    a message is skipped as a dead letter ("poison") and the key's next messages run."""
    import redis.asyncio as aioredis

    async with node(redis_url, "a", max_deliveries=1) as a:
        await until(lambda: len(owned(a)) == 8)
        b = Runtime(Bot, cluster=config(redis_url, max_deliveries=1), idle_timeout=None)
        await b.start()
        NODE[id(b._core)] = "b"
        await until(lambda: len(owned(b)) > 0)
        victim = next(k for k in (f"p{n}" for n in range(100)) if _shard(k) in owned(b))
        a.tell(victim, "block")
        a.tell(victim, "after")
        await until(lambda: handled(victim) == ["block"])
        b._node._closing = True  # type: ignore[union-attr]  # "b" dies running it
        for task in list(b._node._tasks):  # type: ignore[union-attr]
            task.cancel()
        await until(lambda: "after" in handled(victim), seconds=10)
        await b.stop(drain=False)
        assert handled(victim) == ["block", "after"]  # "block" did not run again
        client = aioredis.Redis.from_url(redis_url)
        try:
            dead = await client.hlen(f"inorder:{{inorder:{_shard(victim)}}}:dlq")
        finally:
            await client.aclose()
        assert dead == 1


async def test_taking_over_many_shards_at_once_loses_none_to_the_connection_pool(
    redis_url: str,
) -> None:
    """Found by the cluster benchmark: 32+ takeovers at once exhausted the client's pool, and
    each failed takeover left its shard for a second lease time."""
    import structlog

    with structlog.testing.capture_logs() as logs:
        async with node(redis_url, "a", n_shards=96) as a:
            b = Runtime(Bot, cluster=config(redis_url, n_shards=96), idle_timeout=None)
            await b.start()
            await until(lambda: settled(a, b, n=96))
            for n in range(300):
                a.tell(f"m{n}", n)  # some pending on "b"'s shards when it dies
            b._node._closing = True  # type: ignore[union-attr]
            for task in list(b._node._tasks):  # type: ignore[union-attr]
                task.cancel()
            await until(lambda: len(owned(a)) == 96, seconds=10)
            await until(lambda: {m for _, _, m, _, _ in SEEN} >= set(range(300)), seconds=10)
            await b.stop(drain=False)
    assert not [e for e in logs if e["event"] == "cluster_takeover_failed"]


async def test_dead_letters_are_kept_in_redis_and_redeliver_from_another_node(
    redis_url: str,
) -> None:
    """A failed message's dead letter outlives its node: the shard's next owner lists it
    (`journal_id` is its id in Redis) and `redeliver()` runs it again and forgets it."""
    import redis.asyncio as aioredis

    async with node(redis_url, "a") as a:
        await until(lambda: len(owned(a)) == 8)
        with pytest.raises(RecordedError):
            await a.ask("k", "boom")
        (letter,) = a.dead_letters()
        assert isinstance(letter.journal_id, str)
    async with node(redis_url, "b") as b:
        await until(lambda: len(owned(b)) == 8)
        await until(lambda: len(b.dead_letters()) == 1)
        (kept,) = b.dead_letters()
        assert (kept.key, kept.message, kept.reason) == ("k", "boom", "failed")
        assert isinstance(kept.error, RecordedError)
        assert str(kept.error) == "ValueError: boom"
        assert kept.journal_id == letter.journal_id
        with pytest.raises(RecordedError):  # it fails again: a new letter
            await b.redeliver(kept)
        await asyncio.sleep(0.3)
        client = aioredis.Redis.from_url(redis_url)
        try:
            shard = _shard("k")
            ids = await client.zrange(f"inorder:{{inorder:{shard}}}:dlqx", 0, -1)
        finally:
            await client.aclose()
        assert [i.decode() for i in ids] != [letter.journal_id]
        assert len(ids) == 1  # the old letter went, the new one is kept


async def test_entries_whose_read_answer_was_lost_are_dispatched(redis_url: str) -> None:
    """Found by the chaos test's Redis restart: a read that moved entries into this owner's
    consumer but whose answer never arrived (the connection dropped) left them pending for
    good. The next read first dispatches what the consumer holds and nobody runs."""
    import redis.exceptions

    async with node(redis_url, "a") as a:
        await until(lambda: len(owned(a)) == 8)
        reader: Any = a._node
        real = reader._take_reads
        lost: list[bool] = []

        async def take_reads(*args: Any, **kwargs: Any) -> Any:
            if not lost:  # the READ ran in Redis; its answer is "lost" here
                lost.append(True)
                raise redis.exceptions.ConnectionError("Connection closed by server.")
            return await real(*args, **kwargs)

        reader._take_reads = take_reads
        GATE["open"].set()
        for n in range(20):
            a.tell("lost", n)
        await until(lambda: handled("lost") == list(range(20)))
        await asyncio.sleep(0.2)
        assert handled("lost") == list(range(20))  # each exactly once


class Keeper(UserActor):
    """Counts its messages in a state kept between incarnations."""

    def __init__(self, key: Any) -> None:
        super().__init__(key)
        self.count = 0

    async def on_message(self, message: Any, ctx: Context) -> Any:
        self.count += 1
        return self.count

    def snapshot(self) -> Any:
        return self.count

    def restore(self, state: Any) -> None:
        self.count = state


async def test_a_state_kept_here_is_forgotten_when_its_shard_is_acquired_again(
    redis_url: str,
) -> None:
    """A key's state kept in a node's memory survives passivation there; once the node
    has lost the key's shard and acquires it again, the key may have run elsewhere
    meanwhile, so the state kept from before is stale and is not restored."""
    import redis.asyncio as aioredis

    rt = Runtime(Keeper, cluster=config(redis_url, lease_ttl=1.0), idle_timeout=0.05)
    await rt.start()
    try:
        await until(lambda: len(owned(rt)) == 8)
        key = "kept"
        assert [await rt.ask(key, "n") for _ in range(3)] == [1, 2, 3]
        core = rt._core
        await until(lambda: key not in core.cells and len(core.snapshots) == 1)  # passivated
        assert await rt.ask(key, "n") == 4  # restored: passivation keeps the state
        await until(lambda: key not in core.cells and len(core.snapshots) == 1)
        acquired = rt.stats()["cluster"]["acquired"]
        client = aioredis.Redis.from_url(redis_url)
        try:  # the lease is gone (as if it had expired while this node was paused)
            await client.delete(f"inorder:{{inorder:{_shard(key)}}}:lease")
        finally:
            await client.aclose()
        await until(lambda: rt.stats()["cluster"]["acquired"] > acquired)
        await until(lambda: len(owned(rt)) == 8)
        assert len(core.snapshots) == 0
        assert await rt.ask(key, "n") == 1  # a clean slate, not the stale 4
    finally:
        await rt.stop()


async def test_acquire_keeps_the_earlier_groups_deliveries_and_destroys_them(
    redis_url: str,
) -> None:
    """`ACQUIRE` on a shard whose earlier owner left entries delivered and uncommitted:
    their delivery counts go to `tries` (an entry no longer in the stream has none), the
    earlier group goes, and the new owner's group starts at the start of the streams."""
    import redis.asyncio

    from supervisors.cluster._scripts import ACQUIRE

    client = redis.asyncio.Redis.from_url(redis_url)
    names = ("lease", "epoch", "log", "q", "qp", "tries")
    keys = [f"t:{{t:0}}:{n}" for n in names]
    lease, q, qp, tries = keys[0], keys[3], keys[4], keys[5]
    acquire = client.register_script(ACQUIRE)
    try:
        ids = [await client.xadd(q, {"e": str(n)}) for n in range(4)]
        p_id = await client.xadd(qp, {"e": "p"})
        for stream in (q, qp):
            await client.xgroup_create(stream, "old|1", "0")
        await client.xreadgroup("old|1", "old|1", {q: ">", qp: ">"}, count=3)  # q 0-2, qp
        await client.xreadgroup("old|1", "old|1", {q: "0"}, count=1)  # q 0 delivered twice
        await client.xdel(q, ids[2])  # committed, say: no longer in the stream
        await client.set(lease, "held")
        assert await acquire(keys=keys, args=["b", 1000]) is None
        await client.delete(lease)
        token = (await acquire(keys=keys, args=["b", 1000])).decode()
        assert token == "b|1"
        assert await client.hgetall(tries) == {
            b"1:" + ids[0]: b"2",
            b"1:" + ids[1]: b"1",
            b"0:" + p_id: b"1",
        }
        for stream in (q, qp):
            groups = await client.xinfo_groups(stream)
            assert [(g["name"], g["last-delivered-id"]) for g in groups] == [
                (token.encode(), b"0-0")
            ]
    finally:
        await client.aclose()


async def test_a_node_whose_renewals_are_late_reads_nothing(redis_url: str) -> None:
    """A paused node whose leases lapsed, nobody else taking them: it reads nothing while
    its renewals are late (a read would put the entry in its group, and its next owner,
    itself, would count it as delivered), so once its tick renews again and it acquires
    the shard anew, the message runs once, as a first attempt."""
    import redis.asyncio

    async def until_async(value: Any, expected: Any) -> None:
        for _ in range(500):
            if await value() == expected:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"never {expected!r}")

    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        async with node(redis_url, "a", lease_ttl=0.6, tick=0.1) as a:
            await until(lambda: len(owned(a)) == 8)
            victim = "late-renewals"
            lease = a._node.key(_shard(victim), "lease")  # type: ignore[union-attr]
            a._node._tick = lambda began: asyncio.sleep(0)  # type: ignore[method-assign,union-attr]
            for _ in range(500):  # the lease lapses in Redis
                if await client.get(lease) is None:
                    break
                await asyncio.sleep(0.01)
            assert await client.get(lease) is None
            a.tell(victim, "after the pause")
            stream = a._node.key(_shard(victim), "q")  # type: ignore[union-attr]
            await until_async(lambda: client.xlen(stream), 1)
            await asyncio.sleep(0.2)  # the reader's turns: it must leave the entry unread
            groups = await client.xinfo_groups(stream)
            assert sum(g["pending"] for g in groups) == 0
            del a._node._tick  # type: ignore[union-attr]
            await until(lambda: handled(victim) == ["after the pause"], seconds=10)
            assert [(att, red) for _, k, _, att, red in SEEN if k == victim] == [(1, False)]
    finally:
        await client.aclose()
