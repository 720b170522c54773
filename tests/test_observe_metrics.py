"""The Prometheus exporter: the real exposition, scraped over HTTP and parsed by
prometheus_client's own parser, in each mode."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from actors import Context, UserActor
from actors._latency import BOUNDS, Latencies
from supervisors import RedisCluster, RestartPolicy, Runtime
from supervisors.observe import Metrics, RuntimeCollector, _optional


class Echo(UserActor):
    async def on_message(self, message: Any, ctx: Context) -> Any:
        if message == "boom":
            raise ValueError("boom")
        return message


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=False)


@pytest.fixture
def scrape(registry: CollectorRegistry) -> Iterator[Any]:
    """Scrape `registry` over HTTP on 127.0.0.1, as a Prometheus server would."""
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    url = f"http://127.0.0.1:{server.server_port}/metrics"

    async def read() -> dict[str, Any]:
        def get() -> str:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.read().decode()

        text = await asyncio.get_running_loop().run_in_executor(None, get)
        return {family.name: family for family in text_string_to_metric_families(text)}

    yield read
    server.shutdown()
    server.server_close()
    thread.join(10)


def value(families: dict[str, Any], name: str, **labels: str) -> float:
    family = families[name]
    for sample in family.samples:
        if sample.name in (name, f"{name}_total") and all(
            sample.labels.get(k) == v for k, v in labels.items()
        ):
            return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")


def histogram(families: dict[str, Any], name: str) -> tuple[list[tuple[float, float]], float]:
    """(le, cumulative count) pairs and the count of a histogram family."""
    samples = families[name].samples
    buckets = [
        (float(s.labels["le"]), float(s.value)) for s in samples if s.name == f"{name}_bucket"
    ]
    (count,) = [s.value for s in samples if s.name == f"{name}_count"]
    return buckets, float(count)


async def test_a_scrape_shows_outcomes_gauges_and_histograms(
    registry: CollectorRegistry, scrape: Any
) -> None:
    rt = Runtime(Echo, observe=[Metrics(registry)], restart=RestartPolicy(max_retries=0))
    families = await scrape()
    assert families == {}  # nothing registered before the start
    async with rt:
        for i in range(30):
            rt.tell(f"user:{i % 3}", i)
        rt.tell("user:9", "boom")
        await rt.wait_idle()
        families = await scrape()
        assert value(families, "inorder_messages", outcome="handled") == 30
        assert value(families, "inorder_messages", outcome="failed") == 1
        assert value(families, "inorder_accepted") == 31
        assert value(families, "inorder_actors_live") == 3  # the failed key restarts lazily
        assert value(families, "inorder_pending") == 0
        assert value(families, "inorder_dead_letters") == 1
        assert value(families, "inorder_dead_letters_added") == 1
        assert value(families, "inorder_running") == 1
        assert families["inorder_messages"].type == "counter"
        assert families["inorder_actors_live"].type == "gauge"
        for name in ("inorder_wait_seconds", "inorder_run_seconds"):
            assert families[name].type == "histogram"
            buckets, count = histogram(families, name)
            assert count == 30  # every handled message, from the first one on
            assert buckets[-1] == (math.inf, count)
            assert [c for _, c in buckets] == sorted(c for _, c in buckets)  # cumulative
        # Never a label per user key: its number has no bound.
        labels = {k for f in families.values() for s in f.samples for k in s.labels}
        assert labels <= {"outcome", "le", "shard"}
    families = await scrape()
    assert families == {}  # unregistered once the runtime has stopped


async def test_a_collector_registered_by_hand_reads_before_and_after_the_run(
    registry: CollectorRegistry, scrape: Any
) -> None:
    rt = Runtime(Echo)
    registry.register(RuntimeCollector(rt))
    families = await scrape()
    assert value(families, "inorder_running") == 0
    assert value(families, "inorder_accepted") == 0
    assert "inorder_wait_seconds" not in families  # nothing has run: no histogram yet
    async with rt:
        await scrape()  # the first scrape turns the histograms on
        await rt.ask("k", 1)
        families = await scrape()
        assert histogram(families, "inorder_run_seconds")[1] == 1
    families = await scrape()
    assert value(families, "inorder_running") == 0
    assert value(families, "inorder_messages", outcome="handled") == 1


async def test_the_journal_shows_its_commits(
    registry: CollectorRegistry, scrape: Any, tmp_path: Path
) -> None:
    async with Runtime(Echo, store=tmp_path / "bot.db", observe=[Metrics(registry)]) as rt:
        for i in range(50):
            await rt.send("k", i)
        await rt.wait_idle()
        families = await scrape()
    commits = value(families, "inorder_journal_commits")
    assert commits >= 1
    assert value(families, "inorder_journal_ops") >= 50
    assert value(families, "inorder_journal_queued") >= 0
    _, count = histogram(families, "inorder_journal_commit_seconds")
    assert count == commits
    buckets, count = histogram(families, "inorder_journal_batch_size")
    assert count == commits
    assert buckets[-1] == (math.inf, count)
    assert value(families, "inorder_replayed") == 0


async def test_a_cluster_node_shows_its_shards(
    registry: CollectorRegistry, scrape: Any, redis_url: str
) -> None:
    cluster = RedisCluster(redis_url, n_shards=4, lease_ttl=1.0, tick=0.1, member_ttl=0.5,
                           join_grace=0.0)  # fmt: skip
    async with Runtime(Echo, cluster=cluster, observe=[Metrics(registry)]) as rt:
        for _ in range(500):
            if len(rt.stats()["cluster"]["shards_owned"]) == 4:
                break
            await asyncio.sleep(0.01)
        assert await rt.ask("k", 7) == 7
        families = await scrape()
    assert value(families, "inorder_shards_owned") == 4
    lags = {s.labels["shard"] for s in families["inorder_shard_lag"].samples}
    assert lags <= {"0", "1", "2", "3"}
    assert value(families, "inorder_takeovers") >= 0
    assert value(families, "inorder_fenced") == 0
    assert value(families, "inorder_acquired") >= 4
    assert value(families, "inorder_messages", outcome="handled") == 1


def test_bad_arguments_fail_at_the_call(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="namespace"):
        RuntimeCollector(Runtime(Echo), namespace="my-bot")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        _optional.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "prometheus_client" else real(name, *a),
    )
    with pytest.raises(ImportError, match=r"inorder\[metrics\]"):
        Metrics(registry)


async def test_two_runtimes_share_a_registry_under_two_namespaces(
    registry: CollectorRegistry, scrape: Any
) -> None:
    a = Runtime(Echo, observe=[Metrics(registry, namespace="bot_a")])
    b = Runtime(Echo, observe=[Metrics(registry, namespace="bot_b")])
    async with a, b:
        await a.ask("k", 1)
        families = await scrape()
    assert value(families, "bot_a_messages", outcome="handled") == 1
    assert value(families, "bot_b_messages", outcome="handled") == 0


@given(st.lists(st.floats(min_value=0.0, max_value=500.0), max_size=200))
def test_buckets_count_each_value_once_under_its_le(values: list[float]) -> None:
    """Prometheus' `le`: a bucket counts the values at most its bound, cumulatively."""
    latencies = Latencies()
    latencies.record(1.0, 1.0)  # before count_buckets(): not counted
    latencies.count_buckets()
    for v in values:
        latencies.record(v, v / 2)
    found = latencies.buckets()
    assert found is not None
    (waits, wait_sum), (runs, run_sum) = found
    assert sum(waits) == sum(runs) == len(values)
    running = 0
    for bound, count in zip((*BOUNDS, math.inf), waits, strict=True):
        running += count
        assert running == sum(1 for v in values if v <= bound)
    assert wait_sum == pytest.approx(sum(values))
    assert run_sum == pytest.approx(sum(values) / 2)


def test_a_value_on_a_bound_is_in_that_bucket() -> None:
    latencies = Latencies()
    assert latencies.buckets() is None
    latencies.count_buckets()
    latencies.count_buckets()  # idempotent: counts kept
    latencies.record(BOUNDS[0], BOUNDS[-1] + 1)
    found = latencies.buckets()
    assert found is not None
    assert found[0][0][0] == 1
    assert found[1][0][-1] == 1  # past the last bound: +Inf
