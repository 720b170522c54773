"""Cluster mode: what the sender writes to Redis and how the reader takes it (issue 19).

The sender batches a loop pass's messages per shard; the reader drops duplicates by
`msg_id`. These tests look at the streams in Redis directly, beside the runtimes.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from actors import Context, UserActor
from supervisors import RedisCluster, Runtime
from supervisors.cluster._shards import shard_of
from tests.helpers import until

pytestmark = pytest.mark.timeout(60)

N_SHARDS = 8
SEEN: list[tuple[Any, Any]] = []


class Recorder(UserActor):
    async def on_message(self, message: Any, ctx: Context) -> Any:
        SEEN.append((ctx.key, message))
        return message


@pytest.fixture(autouse=True)
def _fresh() -> None:
    SEEN.clear()


def config(url: str, **overrides: Any) -> RedisCluster:
    options: dict[str, Any] = {
        "n_shards": N_SHARDS,
        "lease_ttl": 5.0,  # never lapses under a loaded machine: not what these test
        "tick": 0.1,
        "member_ttl": 2.0,
        "join_grace": 0.0,
    }
    options.update(overrides)
    return RedisCluster(url, **options)


async def test_a_copy_read_with_a_rewritten_committed_original_does_not_run(
    redis_url: str,
) -> None:
    """Found by the chaos test's Redis restart: the original ran and committed; then an
    outbox rewrite of it (its first write's answer was lost) and the producer's own copy
    were read in one batch. The rewrite was a duplicate of the committed original, and the
    copy, looked up only through the rewrite, ran."""
    import redis.asyncio as aioredis

    rt = await Runtime(Recorder, cluster=config(redis_url), idle_timeout=None).start()
    client = aioredis.Redis.from_url(redis_url)
    try:
        node: Any = rt._node
        await until(lambda: len(rt.stats()["cluster"]["shards_owned"]) == N_SHARDS)
        await rt.send("k", "original", msg_id="x")
        done = node.key(shard_of("k", N_SHARDS), "done")
        for _ in range(1000):  # committed: the msg_id is in the shard's dedup set
            if await client.zscore(done, "x") is not None:
                break
            await asyncio.sleep(0.01)
        assert SEEN == [("k", "original")]

        def fields(message: str) -> dict[str, Any]:
            data = node.codec.encode_envelope(
                "k", message, priority=0, accepted_at=time.time(), msg_id="x"
            )
            return {"e": data, "f": b"0", "i": "x"}

        stream = node.key(shard_of("k", N_SHARDS), "q")
        async with client.pipeline(transaction=True) as pipe:  # one read takes both
            pipe.xadd(stream, fields("original"))
            pipe.xadd(stream, fields("copy"))
            await pipe.execute()
        await rt.send("k", "after")  # behind both in the stream: read after them
        await until(lambda: ("k", "after") in SEEN)
        assert SEEN == [("k", "original"), ("k", "after")]
        assert rt.stats()["cluster"]["duplicates"] == 2
    finally:
        await client.aclose()
        await rt.stop()


class Sequenced(UserActor):
    async def on_message(self, message: Any, ctx: Context) -> None:
        SEEN.append((ctx.key, (message, ctx.priority)))


async def test_the_batched_sender_keeps_order_and_priorities_across_a_redis_restart(
    tmp_path: Path,
) -> None:
    """A sender-only process tells 6 users x 300 messages, one in ten of priority 2, each
    with a msg_id, while the server stops (append-only file) and starts again: the
    batches the stop cut off, and those told while it was down, are written (one SEND
    call per shard) in order, before later ones. Every message runs exactly once, with
    its priority, and per user the normal messages run in the order sent, as do the
    priority ones."""
    from supervisors.testing import EmbeddedRedis

    users, per_user = 6, 300
    server = await asyncio.to_thread(EmbeddedRedis, appendonly=True, directory=str(tmp_path))
    with structlog.testing.capture_logs() as logs:
        await _send_through_a_restart(server, users, per_user)
    # The restart did cut the sending off: batches were retried.
    assert any(e["event"] == "cluster_send_retry" for e in logs), "no send met the restart"
    assert any(e["event"] == "cluster_send_recovered" for e in logs)
    assert len(SEEN) == users * per_user, "a message ran twice or never"
    for u in range(users):
        runs = [m for k, m in SEEN if k == f"u{u}"]
        assert sorted(n for n, _ in runs) == list(range(per_user))
        assert all(p == (2 if n % 10 == 0 else 0) for n, p in runs)
        normal = [n for n, p in runs if p == 0]
        urgent = [n for n, p in runs if p == 2]
        assert normal == sorted(normal), f"u{u}'s normal messages out of order"
        assert urgent == sorted(urgent), f"u{u}'s priority messages out of order"


async def _send_through_a_restart(server: Any, users: int, per_user: int) -> None:
    try:
        sender = Runtime(Recorder, cluster=config(server.url, role="sender"))
        node = Runtime(Sequenced, cluster=config(server.url), idle_timeout=None)
        await node.start()
        await sender.start()
        try:
            await until(lambda: len(node.stats()["cluster"]["shards_owned"]) == N_SHARDS)
            stopping: Any = None
            for n in range(per_user):
                for u in range(users):
                    priority = 2 if n % 10 == 0 else 0
                    sender.tell(f"u{u}", n, priority=priority, msg_id=f"u{u}.{n}")
                if n == per_user // 3:  # from here on, tells meet a server going away
                    stopping = asyncio.ensure_future(asyncio.to_thread(server.stop))
                elif n == per_user // 2:  # down: the tells from here wait in the outbox
                    await stopping
                elif n == 2 * per_user // 3:
                    await asyncio.to_thread(server.start)
                await asyncio.sleep(0.002)  # a few outbox passes per user's messages
            await until(lambda: len(SEEN) >= users * per_user, seconds=30)
            await asyncio.sleep(0.2)  # a copy run late would show up now
            assert sender.stats()["cluster"]["sent"] >= users * per_user
        finally:
            await sender.stop()
            await node.stop()
    finally:
        await asyncio.to_thread(server.stop)


class Gated(UserActor):
    gate: asyncio.Event | None = None

    async def on_message(self, message: Any, ctx: Context) -> None:
        if message == "wait" and Gated.gate is not None:
            await Gated.gate.wait()
        SEEN.append((ctx.key, message))


async def test_calls_the_server_refuses_are_retried_not_lost_or_doubled(redis_url: str) -> None:
    """Redis out of memory refuses the sender's SEND calls (`-OOM`): they are retried until
    it takes them, and only those it refused: every message runs once, in order, and once
    committed nothing stays pending (a commit ran while the server was out of memory)."""
    import redis.asyncio as aioredis

    Gated.gate = asyncio.Event()
    client = aioredis.Redis.from_url(redis_url)
    node = await Runtime(Gated, cluster=config(redis_url), idle_timeout=None).start()
    try:
        await until(lambda: len(node.stats()["cluster"]["shards_owned"]) == N_SHARDS)
        with structlog.testing.capture_logs() as logs:
            node.tell("k", "wait", msg_id="w")  # its dedup mark: a write Redis refuses
            await until(lambda: node.stats()["in_flight"] == 1)
            await client.config_set("maxmemory-policy", "noeviction")
            await client.config_set("maxmemory", 1)  # every write refused from here
            try:
                for n in range(20):
                    node.tell("k", n)  # refused by Redis: waits in the outbox
                Gated.gate.set()  # "wait" ends and commits meanwhile
                await until(lambda: any(e["event"] == "cluster_send_retry" for e in logs))
                assert SEEN == [("k", "wait")]
            finally:
                await client.config_set("maxmemory", 0)
            await until(lambda: len(SEEN) == 21)
            await until(lambda: node.stats()["in_flight"] == 0)
        assert [("k", "wait"), *(("k", n) for n in range(20))] == SEEN
        stream = node._node.key(shard_of("k", N_SHARDS), "q")  # type: ignore[union-attr]
        for _ in range(500):  # the last commit lands: nothing left pending
            if await pending(client, stream) == 0:
                break
            await asyncio.sleep(0.01)
        assert await pending(client, stream) == 0
    finally:
        Gated.gate = None
        await client.config_set("maxmemory", 0)
        await client.aclose()
        await node.stop()


async def pending(client: Any, stream: str) -> int:
    """The entries delivered and not acknowledged, in every consumer group of `stream`."""
    return sum(int(group["pending"]) for group in await client.xinfo_groups(stream))


def test_entries_are_read_in_every_form_a_sender_writes() -> None:
    """A reply in RESP3's map or RESP2's list; the envelope alone (flags 0, no `f`), with
    flags, with a msg_id (`f` then always, for readers of earlier versions), in a form no
    sender writes (fields by name), as senders before wrote a plain one (`f` always); a
    deleted entry is skipped. Each lane keeps its entries in order."""
    from supervisors.cluster._state import entries_of

    q = [
        (b"1-0", [b"e", b"A"]),
        (b"2-0", [b"e", b"B", b"i", b"m-1"]),
        (b"3-0", [b"e", b"C", b"f", b"1"]),
        (b"4-0", [b"e", b"D", b"f", b"0", b"i", b"m-2"]),
        (b"4-1", [b"e", b"F", b"f", b"0"]),  # an older sender's
        (b"5-0", None),
        (b"6-0", [b"e", b"E", b"f", b"2", b"t", b"tr", b"r", b"rk", b"c", b"9"]),
    ]
    qp = [(b"7-0", [b"e", b"P", b"f", b"3"])]
    expected = [
        [(b"7-0", b"P", b"3", "", None, "", "")],
        [
            (b"1-0", b"A", b"0", "", None, "", ""),
            (b"2-0", b"B", b"0", "m-1", None, "", ""),
            (b"3-0", b"C", b"1", "", None, "", ""),
            (b"4-0", b"D", b"0", "m-2", None, "", ""),
            (b"4-1", b"F", b"0", "", None, "", ""),
            (b"6-0", b"E", b"2", "", b"tr", "rk", "9"),
        ],
    ]
    assert entries_of({b"ns:{ns:0}:qp": qp, b"ns:{ns:0}:q": q}) == expected
    assert entries_of([[b"ns:{ns:0}:q", q], [b"ns:{ns:0}:qp", qp]]) == expected
    assert entries_of(None) == [[], []]


async def test_a_sender_leaves_out_only_a_flags_field_nothing_follows(redis_url: str) -> None:
    """The entries a sender writes, field by field: the envelope alone for a plain
    message; `f` kept before a msg_id and for flags, as readers of earlier versions read
    4 and 6 fields by position."""
    import redis.asyncio as aioredis

    sender = await Runtime(Recorder, cluster=config(redis_url, role="sender")).start()
    client = aioredis.Redis.from_url(redis_url)
    try:
        node: Any = sender._node
        await sender.send("k", "plain")
        await sender.send("k", "with an id", msg_id="m-1")
        await sender.send("k", "urgent", priority=1, interrupt=True)
        shard = shard_of("k", N_SHARDS)
        q = await client.xrange(node.key(shard, "q"))
        qp = await client.xrange(node.key(shard, "qp"))
        assert [sorted(fields) for _, fields in q] == [[b"e"], [b"e", b"f", b"i"]]
        assert [(sorted(fields), fields[b"f"]) for _, fields in qp] == [([b"e", b"f"], b"1")]
    finally:
        await client.aclose()
        await sender.stop()
