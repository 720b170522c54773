"""RedisCluster's settings and what a node does with them: how long a membership lasts
(never longer than a lease), secrets kept out of errors, reprs and logs, and the retries
of a node that cannot reach Redis (a backoff, and a few log lines per outage).

On the real embedded server (supervisors.testing); the backoff schedule itself is pure.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
import structlog

from actors import Context, UserActor
from supervisors import RedisCluster, Runtime
from supervisors.cluster._backoff import Backoff
from supervisors.testing import EmbeddedRedis
from tests.helpers import until

pytestmark = pytest.mark.timeout(60)

SECRET = "s3cr3t-Pw"


class Echo(UserActor):
    async def on_message(self, message: Any, ctx: Context) -> Any:
        return message


@contextlib.asynccontextmanager
async def running(url: str, **options: Any) -> AsyncIterator[Runtime]:
    settings: dict[str, Any] = {"n_shards": 8, "lease_ttl": 1.0, "tick": 0.1, "join_grace": 0.0}
    settings.update(options)
    rt = Runtime(Echo, cluster=RedisCluster(url, **settings), idle_timeout=None)
    await rt.start()
    try:
        yield rt
    finally:
        if rt.stats()["state"] == "running":
            await rt.stop()


# -- member_ttl ------------------------------------------------------------------------------


def test_member_ttl_is_derived_from_lease_ttl_unless_given() -> None:
    url = "redis://127.0.0.1:1/0"
    assert RedisCluster(url).member_ttl is None
    assert RedisCluster(url).effective_member_ttl == 5.0  # lease_ttl 10 s
    assert RedisCluster(url, lease_ttl=3).effective_member_ttl == 1.5
    assert RedisCluster(url, lease_ttl=3, member_ttl=3).effective_member_ttl == 3
    assert RedisCluster(url, lease_ttl=3, tick=0.5, member_ttl=0.6).effective_member_ttl == 0.6
    # replace() derives it again from the new lease_ttl (None is what is stored).
    shorter = dataclasses.replace(RedisCluster(url), lease_ttl=4)
    assert shorter.effective_member_ttl == 2.0


def test_a_membership_outliving_the_lease_or_a_tick_is_refused_at_construction() -> None:
    url = "redis://127.0.0.1:1/0"
    with pytest.raises(ValueError, match=r"member_ttl \(5\) must not be more than lease_ttl \(3"):
        RedisCluster(url, lease_ttl=3, member_ttl=5)
    with pytest.raises(ValueError, match=r"member_ttl \(0.5\) must be more than tick \(0.5\)"):
        RedisCluster(url, lease_ttl=3, tick=0.5, member_ttl=0.5)
    with pytest.raises(ValueError, match="member_ttl must be a finite number"):
        RedisCluster(url, member_ttl=0)
    with pytest.raises(TypeError, match="member_ttl must be a number of seconds"):
        RedisCluster(url, member_ttl="5")  # type: ignore[arg-type]


async def test_a_nodes_membership_expires_no_later_than_its_leases(redis_url: str) -> None:
    """A node killed now counts as gone (its shards planned for the others) by the time
    its leases expire: failover waits for lease_ttl, not for a longer membership."""
    async with running(redis_url) as rt:  # lease_ttl 1 s, member_ttl not given
        await until(lambda: len(rt.stats()["cluster"]["shards_owned"]) == 8)
        node_id = rt.stats()["cluster"]["node"]
        client = aioredis.Redis.from_url(redis_url)
        try:
            async with client.pipeline(transaction=True) as pipe:  # one instant
                pipe.time()
                pipe.zscore("inorder:members", node_id)
                for shard in range(8):
                    pipe.pttl(f"inorder:{{inorder:{shard}}}:lease")
                (seconds, micros), expiry, *pttls = await pipe.execute()
        finally:
            await client.aclose()
        member_left_ms = expiry - (seconds * 1000 + micros // 1000)
        assert 0 < member_left_ms <= min(pttls), (member_left_ms, pttls)


# -- secrets ---------------------------------------------------------------------------------


def test_a_bad_url_is_refused_without_its_password() -> None:
    for url in (
        f"http://alice:{SECRET}@host",
        f"http://alice:{SECRET}@host/0?password={SECRET}",
        f"redis//alice:{SECRET}@host",
    ):
        with pytest.raises(ValueError, match="url must be") as caught:
            RedisCluster(url)
        assert SECRET not in str(caught.value)
        assert "***" in str(caught.value)
    with pytest.raises(ValueError, match=r"url must be a .* got bytes") as caught:
        RedisCluster(f"redis://alice:{SECRET}@host".encode())  # type: ignore[arg-type]
    assert SECRET not in str(caught.value)


def test_reprs_leave_out_every_password_form() -> None:
    for url in (
        f"redis://alice:{SECRET}@127.0.0.1:1/0",
        f"redis://:{SECRET}@127.0.0.1:1/0",
        f"redis://alice:p@{SECRET}@127.0.0.1:1/0",  # an '@' in the password, unencoded
        f"redis://127.0.0.1:1/0?password={SECRET}",  # redis-py takes it from the query too
        f"unix://alice:{SECRET}@/tmp/redis.sock?db=0&password={SECRET}",
    ):
        text = repr(RedisCluster(url))
        assert SECRET not in text, text
        assert "127.0.0.1:1/0" in text or "/tmp/redis.sock" in text


def test_a_url_given_as_cluster_is_refused_without_its_password() -> None:
    with pytest.raises(TypeError, match=r"cluster must be a supervisors\.RedisCluster") as caught:
        Runtime(Echo, cluster=f"redis://alice:{SECRET}@127.0.0.1:1/0")  # type: ignore[arg-type]
    assert SECRET not in str(caught.value)


async def test_a_node_connects_with_the_urls_password_and_never_shows_it() -> None:
    server = await asyncio.to_thread(EmbeddedRedis, extra_args=("--requirepass", SECRET))
    try:
        assert SECRET in server.url
        wrong = server.url.replace(SECRET, "Wr0ng-" + SECRET)
        with structlog.testing.capture_logs() as logs:
            rt = Runtime(Echo, cluster=RedisCluster(wrong, n_shards=8))
            with pytest.raises(redis.AuthenticationError) as caught:
                await rt.start()
            assert SECRET not in str(caught.value)
            async with running(server.url) as good:
                assert await good.ask("k", "hello") == "hello"
                assert SECRET not in repr(good.stats())
        assert SECRET not in repr(logs)
    finally:
        await asyncio.to_thread(server.stop)


# -- retries during an outage ----------------------------------------------------------------


def test_the_backoff_doubles_up_to_its_cap_logs_rarely_and_restarts_on_success() -> None:
    backoff = Backoff(0.05, 1.0)
    retries = [backoff.failed() for _ in range(40)]
    assert [r.pause for r in retries[:7]] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert {r.pause for r in retries[6:]} == {1.0}
    assert [r.failures for r in retries if r.log] == [1, 2, 4, 8, 16, 32]
    assert backoff.succeeded() == 40
    assert backoff.succeeded() == 0
    assert backoff.failed() == (0.05, True, 1)  # a new outage: logged again, from the start
    for _ in range(5000):  # no overflow however long the outage
        retry = backoff.failed()
    assert retry.pause == 1.0
    assert Backoff(0.05, 0.01).failed().pause == 0.01  # the first pause is capped too
    with pytest.raises(ValueError, match="cap"):
        Backoff(0.05, 0)


async def test_an_outage_is_retried_with_backoff_and_logged_a_few_times() -> None:
    """Redis stops under a sender: its reply reader and its outbox retry, each logging the
    1st, 2nd, 4th... failure only (once a try it was about ten lines a second), then log
    the recovery once, and what was told during the outage is written."""
    server = await asyncio.to_thread(EmbeddedRedis)
    try:
        with structlog.testing.capture_logs() as logs:
            async with running(server.url, role="sender") as rt:
                node: Any = rt._node
                client = node.client
                tries = {"blpop": 0, "pipeline": 0}
                real_blpop, real_pipeline = client.blpop, client.pipeline

                def blpop(*args: Any, **kwargs: Any) -> Any:
                    tries["blpop"] += 1
                    return real_blpop(*args, **kwargs)

                def pipeline(*args: Any, **kwargs: Any) -> Any:
                    tries["pipeline"] += 1
                    return real_pipeline(*args, **kwargs)

                client.blpop, client.pipeline = blpop, pipeline
                await asyncio.to_thread(server.stop)
                rt.tell("k", "told while Redis was down")
                await until(lambda: min(tries.values()) >= 20, seconds=30)
                for event, name in (
                    ("cluster_reply_read_failed", "blpop"),
                    ("cluster_send_retry", "pipeline"),
                ):
                    lines = len([e for e in logs if e["event"] == event])
                    assert lines <= tries[name].bit_length(), (event, lines, "lines for", tries)
                await asyncio.to_thread(server.start)
                await until(
                    lambda: (
                        {"cluster_reply_read_recovered", "cluster_send_recovered"}
                        <= {e["event"] for e in logs}
                    ),
                    seconds=20,
                )
        with redis.Redis.from_url(server.url) as check:
            assert sum(check.xlen(k) for k in check.scan_iter("inorder:*:q")) == 1
    finally:
        await asyncio.to_thread(server.stop)
    for failed, recovered in (
        ("cluster_reply_read_failed", "cluster_reply_read_recovered"),
        ("cluster_send_retry", "cluster_send_recovered"),
    ):
        (summary,) = [e for e in logs if e["event"] == recovered]
        failures = summary["failures"]
        assert failures >= 20
        logged = [e["failures"] for e in logs if e["event"] == failed]
        assert logged == [2**n for n in range(failures.bit_length())], (failed, logged)


async def test_a_nodes_reads_and_ticks_log_an_outage_a_few_times() -> None:
    """Redis stops under a node that owns shards: its reader backs off, and neither it nor
    the tick loop (which keeps its pace: self-fencing counts on it) logs every try; each
    logs its recovery once Redis is back."""
    server = await asyncio.to_thread(EmbeddedRedis)
    try:
        with structlog.testing.capture_logs() as logs:
            async with running(server.url) as rt:
                await until(lambda: len(rt.stats()["cluster"]["shards_owned"]) == 8)
                await asyncio.to_thread(server.stop)

                def failed(event: str) -> list[int]:
                    return [e["failures"] for e in logs if e["event"] == event]

                await until(lambda: max(failed("cluster_tick_failed"), default=0) >= 16, 30)
                await until(lambda: max(failed("cluster_read_failed"), default=0) >= 8, 30)
                await asyncio.to_thread(server.start)
                await until(
                    lambda: (
                        {"cluster_tick_recovered", "cluster_read_recovered"}
                        <= {e["event"] for e in logs}
                    ),
                    seconds=20,
                )
    finally:
        await asyncio.to_thread(server.stop)
    for failed_event, recovered in (
        ("cluster_tick_failed", "cluster_tick_recovered"),
        ("cluster_read_failed", "cluster_read_recovered"),
    ):
        lines = [e for e in logs if e["event"] == failed_event]
        assert all("failures" in e for e in lines), failed_event  # before: a line a try
        summaries = [e["failures"] for e in logs if e["event"] == recovered]
        assert summaries
        logged = [e["failures"] for e in lines]
        # Every outage logs its 1st, 2nd, 4th... failure only.
        assert all(n & (n - 1) == 0 for n in logged), (failed_event, logged)
        assert len(logged) <= sum(n.bit_length() for n in summaries) + 1, (failed_event, logged)
