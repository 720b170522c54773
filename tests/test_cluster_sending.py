"""Cluster mode: what the sender writes to Redis and how the reader takes it (issue 19).

The sender batches a loop pass's messages per shard; the reader drops duplicates by
`msg_id`. These tests look at the streams in Redis directly, beside the runtimes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from actors import Context, UserActor
from supervisors import RedisCluster, Runtime
from supervisors.cluster._shards import shard_of

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


async def until(predicate: Any, seconds: float = 10.0) -> None:
    """Poll (a hang detector, not a timing): the cluster's own tasks move things."""
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


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
