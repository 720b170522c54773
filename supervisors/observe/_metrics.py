"""Prometheus metrics: a custom collector that reads a runtime when it is scraped.

Nothing is counted twice: the runtime keeps its counters anyway (`stats()`), and
`RuntimeCollector.collect()` reads them, on the runtime's loop thread, at each
scrape. The one thing a scrape cannot rebuild from the runtime's own figures is
a histogram, so once the collector is attached (or first scraped) the runtime
also counts every handled message's wait and run time in cumulative buckets
(`actors._latency.BOUNDS`); the journal counts its commits that way always.

Names follow Prometheus' conventions: `inorder_` prefix (`namespace=`),
seconds, `_total` for counters. No metric is labelled by user key, whose
number has no bound; the deepest keys are on the dashboard and in
`python -m supervisors status` instead. Two runtimes in one process need two
registries, or a `namespace` each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors._latency import BOUNDS
from supervisors.observe._optional import need

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.registry import CollectorRegistry

    from supervisors._runtime import Runtime

__all__ = ["Metrics", "RuntimeCollector"]

# stats() key -> (metric, help); counters get `_total` from prometheus_client.
_COUNTERS = {
    "accepted": ("accepted", "Messages accepted (journaled first, with a store)."),
    "restarts": ("restarts", "Actor restarts after a failure."),
    "gave_up": ("restarts_gave_up", "Keys whose restart budget ran out."),
    "actor_failures": ("actor_failures", "Failures of an actor itself (not of a message)."),
    "overruns": ("handler_overruns", "Handlers that ran past their handler_timeout."),
    "activations": ("activations", "User actors started (first message, or after idling)."),
    "idle_stops": ("idle_stops", "User actors stopped for being idle."),
    "dead_letters": ("dead_letters_added", "Messages that ended as dead letters."),
    "duplicates": ("duplicates", "Messages not accepted: their msg_id was seen before."),
    "overflowed": ("overflowed", "Messages dropped for room (overflow policies)."),
    "retry_afters": ("retry_afters", "Handlers that raised RetryAfter."),
    "replayed": ("replayed", "Messages replayed from the journal at start."),
}
_GAUGES = {
    "live_actors": ("actors_live", "User actors alive now."),
    "known_keys": ("keys_known", "Keys the runtime holds a mailbox or state for."),
    "pending": ("pending", "Messages accepted and waiting, all keys together."),
    "in_flight": ("in_flight", "Handlers running now."),
    "overrunning": ("overrunning", "Handlers still running past their handler_timeout."),
    "held": ("keys_held", "Keys whose next turn is held (rate, debounce, Retry-After)."),
    "dead_letters_kept": ("dead_letters", "Dead letters retained now."),
}
_OUTCOMES = ("handled", "failed", "interrupted", "dropped")


class RuntimeCollector:
    """A `prometheus_client` collector of one runtime's figures (register it yourself,
    or let `Metrics` do it). A scrape before `start()` or after the stop reads the
    same names, with the runtime's figures then (zeros before the start)."""

    def __init__(self, runtime: Runtime, *, namespace: str = "inorder") -> None:
        need("prometheus_client", "metrics")
        if not namespace or not namespace.replace("_", "a").isalnum():
            msg = f"namespace must be letters, digits and '_', got {namespace!r}"
            raise ValueError(msg)
        self.runtime = runtime
        self.namespace = namespace

    def __repr__(self) -> str:
        return f"<RuntimeCollector {self.namespace}>"

    def describe(self) -> list[Any]:
        # Empty: registering must not scrape a runtime that has not started.
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        stats, latency, journal = _read(self.runtime)
        ns = self.namespace
        messages = CounterMetricFamily(
            f"{ns}_messages", "Messages that got their outcome, by outcome.", labels=["outcome"]
        )
        for outcome in _OUTCOMES:
            messages.add_metric([outcome], stats[outcome])
        yield messages
        for stat, (name, doc) in _COUNTERS.items():
            yield CounterMetricFamily(f"{ns}_{name}", doc, value=stats[stat])
        for stat, (name, doc) in _GAUGES.items():
            yield GaugeMetricFamily(f"{ns}_{name}", doc, value=stats[stat])
        yield GaugeMetricFamily(
            f"{ns}_running", "1 while the runtime runs, else 0.", value=stats["state"] == "running"
        )
        if latency is not None:
            waits, runs = latency
            for name, (counts, total), doc in (
                ("wait_seconds", waits, "Handled messages: from acceptance to the handler start."),
                ("run_seconds", runs, "Handled messages: the handler running time."),
            ):
                yield HistogramMetricFamily(
                    f"{ns}_{name}", doc, buckets=_cumulative(BOUNDS, counts), sum_value=total
                )
        cluster = stats.get("cluster")
        if cluster is not None:
            yield from _cluster(ns, cluster, CounterMetricFamily, GaugeMetricFamily)
        if "journal" in stats:
            yield from _journal(ns, stats["journal"], CounterMetricFamily)
            yield GaugeMetricFamily(
                f"{ns}_journal_queued",
                "Journal writes queued, not yet committed.",
                value=stats["journal"].get("queued", 0),
            )
            for name, (bounds, counts, total) in (journal or {}).items():
                unit = "Seconds each commit took." if name == "commit_seconds" else "Operations."
                yield HistogramMetricFamily(
                    f"{ns}_journal_{name}",
                    f"Per journal commit (group commit). {unit}",
                    buckets=_cumulative(bounds, counts),
                    sum_value=total,
                )


class Metrics:
    """An observer (`Runtime(..., observe=[Metrics()])`) that registers a
    `RuntimeCollector` in `registry` (default: prometheus_client's global one,
    which `start_http_server` and the admin endpoint's `/metrics` serve) when
    the runtime starts, and unregisters it once the runtime has stopped."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, namespace: str = "inorder"
    ) -> None:
        need("prometheus_client", "metrics")
        from prometheus_client import REGISTRY

        self.registry = registry if registry is not None else REGISTRY
        self.namespace = namespace
        self.collector: RuntimeCollector | None = None

    def __repr__(self) -> str:
        return f"<Metrics {self.namespace}>"

    async def open(self, runtime: Runtime) -> None:
        self.collector = RuntimeCollector(runtime, namespace=self.namespace)
        self.registry.register(self.collector)

    def attached(self, runtime: Runtime) -> None:
        core = runtime._core
        if core is not None:  # histograms from the first message on
            core.outcomes.latency.count_buckets()

    async def close(self) -> None:
        collector, self.collector = self.collector, None
        if collector is not None:
            self.registry.unregister(collector)


def _read(runtime: Runtime) -> tuple[dict[str, Any], Any, Any]:
    """stats(), the latency buckets and the journal's histograms, read on the loop."""

    def read() -> tuple[dict[str, Any], Any, Any]:
        core = runtime._core
        latency = None
        if core is not None:
            core.outcomes.latency.count_buckets()  # a collector registered by hand
            latency = core.outcomes.latency.buckets()
        durable = runtime._durable
        histograms = getattr(durable.journal, "histograms", None) if durable else None
        journal = histograms() if callable(histograms) and not durable.closed else None  # type: ignore[union-attr]
        return runtime._stats(), latency, journal

    return runtime._on_loop(read)


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        running += count
        out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
    return out


def _cluster(ns: str, cluster: dict[str, Any], counter: Any, gauge: Any) -> Iterator[Any]:
    yield gauge(f"{ns}_shards_owned", "Shards this node holds the lease of.",
                value=len(cluster.get("shards_owned", ())))  # fmt: skip
    lag = gauge(f"{ns}_shard_lag", "Entries of an owned shard not read yet.", labels=["shard"])
    for shard, entries in sorted(cluster.get("lag", {}).items()):
        lag.add_metric([str(shard)], entries)
    yield lag
    yield gauge(f"{ns}_cluster_in_flight", "Messages read from Redis, outcome not committed.",
                value=cluster.get("in_flight", 0))  # fmt: skip
    for name, doc in (
        ("takeovers", "Shards taken over from a node whose lease lapsed."),
        ("fenced", "Commits refused: the shard's lease had moved on (fencing)."),
        ("acquired", "Shard leases acquired."),
        ("released", "Shard leases handed off."),
        ("lost", "Shard leases lost."),
        ("sent", "Messages this node sent to shard streams."),
    ):
        if name in cluster:
            yield counter(f"{ns}_{name}", doc, value=cluster[name])


def _journal(ns: str, journal: dict[str, Any], counter: Any) -> Iterator[Any]:
    for name, doc in (
        ("commits", "Journal transactions committed."),
        ("ops", "Journal operations committed (appends, acks, ...)."),
    ):
        if name in journal:
            yield counter(f"{ns}_journal_{name}", doc, value=journal[name])
