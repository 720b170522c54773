"""A cluster inspected and operated straight from Redis: `ClusterInspector`, the nodes'
published summaries, and the command line (`status --redis`, `dead-letters ... --redis`)
as a subprocess, against a node running on the embedded Valkey in this process.

The subprocesses run through asyncio, so that the node's loop (its ticks and leases)
keeps running meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from actors import Context, RecordedError, UserActor
from supervisors import Directive, RedisCluster, RestartPolicy, Runtime
from supervisors.cluster import ClusterInspector
from supervisors.cluster._summary import SummaryPublisher
from supervisors.testing import EmbeddedRedis
from tests.helpers import until

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
SEEN: list[tuple[Any, Any, int]] = []  # (key, message, attempt)
GATE: dict[str, asyncio.Event] = {}


class Bot(UserActor):
    decider = staticmethod(lambda error: Directive.RESUME)

    async def on_message(self, message: Any, ctx: Context) -> Any:
        SEEN.append((ctx.key, message, ctx.attempt))
        if message == "boom":
            raise ValueError("boom")
        if message == "flaky" and sum(1 for _, m, _ in SEEN if m == "flaky") == 1:
            raise ValueError("once")  # the first time only: its redelivery succeeds
        if message == "block":
            await GATE["open"].wait()
        return message


@pytest.fixture(autouse=True)
def _fresh() -> None:
    SEEN.clear()
    GATE["open"] = asyncio.Event()


@contextlib.asynccontextmanager
async def node(url: str) -> AsyncIterator[Runtime]:
    cluster = RedisCluster(
        url, n_shards=4, lease_ttl=2.0, tick=0.1, member_ttl=1.0, join_grace=0.0, ask_timeout=5.0
    )
    rt = Runtime(Bot, cluster=cluster, idle_timeout=None, restart=RestartPolicy(max_retries=0))
    await rt.start()
    try:
        await until(lambda: len(rt.stats()["cluster"]["shards_owned"]) == 4)
        yield rt
    finally:
        GATE["open"].set()
        await rt.stop(timeout=2.0)


async def read_until(
    read: Callable[[], Awaitable[Any]], good: Callable[[Any], bool], seconds: float = 10.0
) -> Any:
    """Read until `good(value)` (bounded): the nodes publish their summaries every second."""
    for _ in range(int(seconds / 0.05)):
        value = await read()
        if good(value):
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"never good: {value!r}")


async def cli(*args: str) -> tuple[int, str, str]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "supervisors",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )
    out, err = await asyncio.wait_for(child.communicate(), 30)
    assert b"Traceback" not in err, err
    assert child.returncode is not None
    return child.returncode, out.decode(), err.decode()


def one_line(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("inorder: ")
    for word in words:
        assert word in lines[0], (word, lines[0])


async def test_status_shows_shards_owners_lag_and_the_nodes_summaries(redis_url: str) -> None:
    async with node(redis_url) as rt, ClusterInspector(redis_url) as inspector:
        me = rt.stats()["cluster"]["node"]
        rt.tell("slow", "block")
        for n in range(3):
            rt.tell("slow", n)
        await until(lambda: rt.pending("slow") == 3)
        status = await read_until(inspector.status, lambda s: s["pending_by_key"] == {"slow": 3})
        cluster = status["cluster"]
        assert [n["node"] for n in cluster["nodes"]] == [me]
        assert cluster["nodes"][0]["alive"] is True
        assert cluster["nodes"][0]["summary"]["shards_owned"] == [0, 1, 2, 3]
        assert {s["owner"] for s in cluster["shards"]} == {me}
        assert all(s["epoch"] >= 1 and 0 < s["lease_ms"] <= 2000 for s in cluster["shards"])
        # Read, not acknowledged: the one running and the three waiting, in one shard.
        assert sorted(s["lag"] for s in cluster["shards"]) == [0, 0, 0, 4]
        assert cluster["total_lag"] == cluster["stream_pending"] == 4
        assert cluster["lag"] == {str(s): n for s, n in rt.stats()["cluster"]["lag"].items()}
        assert (status["live_actors"], status["pending"], status["in_flight"]) == (1, 3, 1)
        assert status["accepted"] == 4

        code, out, err = await cli("status", "--redis", redis_url, "--json")
        assert code == 0, err
        assert json.loads(out)["cluster"]["shards"][0]["owner"] == me
        code, out, err = await cli("status", "--redis", redis_url)
        assert code == 0, err
        for shown in (me, "shards", "lease left", "0-3", "slow", "4 of 4"):
            assert shown in out, shown
        GATE["open"].set()
        status = await read_until(
            inspector.status, lambda s: s["handled"] == 4 and s["cluster"]["total_lag"] == 0
        )
        assert status["wait_ms"]["count"] == 4


async def test_dead_letters_list_redeliver_and_purge(redis_url: str) -> None:
    async with node(redis_url) as rt, ClusterInspector(redis_url) as inspector:
        with pytest.raises(RecordedError, match="ValueError: once"):
            await rt.ask("k", "flaky")
        (letter,) = await read_until(inspector.dead_letters, lambda letters: len(letters) == 1)
        code, out, err = await cli("dead-letters", "list", "--redis", redis_url, "--json")
        assert code == 0, err
        assert json.loads(out) == [letter]
        assert (letter["key"], letter["reason"], letter["message"]) == ("k", "failed", "'flaky'")
        assert letter["error"] == "ValueError: once"
        code, out, _ = await cli("dead-letters", "list", "--redis", redis_url)
        assert letter["id"] in out
        assert "ValueError: once" in out

        code, out, err = await cli("dead-letters", "redeliver", letter["id"], "--redis", redis_url)
        assert (code, out.strip()) == (0, f"redelivered {letter['id']}"), err
        await until(lambda: [m for _, m, _ in SEEN].count("flaky") == 2)  # run again, by the node
        assert await inspector.dead_letters() == []
        code, _, err = await cli("dead-letters", "redeliver", letter["id"], "--redis", redis_url)
        assert code == 1
        one_line(err, "no dead letter", letter["id"])

        for _ in range(3):
            with pytest.raises(RecordedError, match="boom"):
                await rt.ask("k2", "boom")
        letters = await read_until(inspector.dead_letters, lambda letters: len(letters) == 3)
        code, out, _ = await cli("dead-letters", "purge", letters[0]["id"], "--redis", redis_url)
        assert (code, out.strip()) == (0, "purged 1 dead letter")
        code, _, err = await cli("dead-letters", "purge", "3:nothing", "--redis", redis_url)
        assert code == 1
        code, out, _ = await cli("dead-letters", "purge", "--all", "--redis", redis_url)
        assert (code, out.strip()) == (0, "purged 2 dead letters")
        assert await inspector.dead_letters() == []


async def test_summaries_expire_fail_soft_and_leave_with_the_node(redis_url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        with structlog.testing.capture_logs() as logs:
            async with node(redis_url) as rt:
                publisher = rt._node.summaries  # type: ignore[union-attr]
                await until(lambda: publisher._last is not None)
                ttl = await client.pttl(publisher.key)
                assert 0 < ttl <= publisher.ttl_ms

                def broken(self: SummaryPublisher, *args: Any) -> Any:
                    raise RuntimeError("cannot summarise")

                with pytest.MonkeyPatch.context() as patch:
                    patch.setattr(SummaryPublisher, "summary", broken)
                    for _ in range(3):
                        publisher._next = 0.0
                        await publisher.maybe_publish(rt._node, 0)  # type: ignore[arg-type]
                    assert await rt.ask("k", "still fine") == "still fine"
                publisher._next = 0.0
                await publisher.maybe_publish(rt._node, 10**13)  # type: ignore[arg-type]
        events = [e["event"] for e in logs if e["event"].startswith("cluster_summary")]
        assert events == ["cluster_summary_failed", "cluster_summary_recovered"]
        assert await client.exists(publisher.key) == 0  # the stop deleted it
        async with ClusterInspector(redis_url) as inspector:
            status = await inspector.status()
        assert status["cluster"]["nodes"] == []
        assert {s["owner"] for s in status["cluster"]["shards"]} == {None}
        assert status["cluster"]["owned"] == 0
    finally:
        await client.aclose()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_redis_errors_are_one_line_with_their_exit_code(redis_url: str) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    with EmbeddedRedis(extra_args=["--requirepass", "s3cret"]) as locked:
        host = locked.url.rpartition("@")[2]  # the URL without its password
        wrong = f"redis://:nope@{host}"
        runs = await asyncio.gather(
            cli("status", "--redis", nobody),
            cli("dead-letters", "list", "--redis", nobody),
            cli("status", "--redis", redis_url, "--prefix", "elsewhere"),
            cli("status", "--redis", redis_url, "--prefix", "bad name!"),
            cli("status", "--redis", f"redis://{host}"),
            cli("status", "--redis", wrong),
        )
    expected = [
        (3, "cannot reach Redis"),
        (3, "cannot reach Redis"),
        (3, "no inorder cluster with namespace 'elsewhere'"),
        (2, "namespace"),
        (4, "credentials"),
        (4, "credentials"),
    ]
    for (code, _, err), (want, words) in zip(runs, expected, strict=True):
        assert code == want, err
        one_line(err, words)
    assert "nope" not in runs[-1][2]  # never the password
