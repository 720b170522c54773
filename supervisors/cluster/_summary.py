"""A node's summary in Redis: what `ClusterInspector.status()` reads of each node.

Live actors, pending and the deepest keys, outcome counters and rates are only
in a node's memory, so every node publishes them: its tick (`_leases.py`) calls
`SummaryPublisher.maybe_publish`, which, once per `SUMMARY_EVERY` seconds (or
ten ticks if that is shorter, never more than once a tick), writes a msgpack
map to `{ns}:node:{node_id}` with a TTL of three periods (at least 10 s), so
that a dead node's summary goes soon after it. That is one `SET` per node per
period, whatever the load; the figures are read on the loop, where the node
runs, in time linear in its keys.

Rates (per second, of `RATES`) are the counters' change since the node's
previous summary, over Redis's clock, so a single read shows them. A failure to
publish is logged once (`cluster_summary_failed`, and `cluster_summary_recovered`
after it) and never breaks the tick; a stopping node deletes its key.
"""

from __future__ import annotations

import heapq
import time
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgpack

if TYPE_CHECKING:
    from supervisors._core import _Core

__all__ = ["RATES", "SUMMARY_EVERY", "SummaryPublisher", "summary_key"]

#: Seconds between two summaries of a node (at least; a longer tick sets the pace).
SUMMARY_EVERY: Final = 2.0

#: The counters a summary gives a rate of.
RATES: Final = ("accepted", "handled", "failed", "interrupted", "dropped")


class _Node(Protocol):
    """What a summary reads of a node (`NodeState`, which holds the publisher)."""

    core: _Core | None
    client: Any
    log: Any
    node_id: str
    owned: dict[int, Any]
    counts: dict[str, int]


def summary_key(namespace: str, node_id: str) -> str:
    return f"{namespace}:node:{node_id}"


class SummaryPublisher:
    """Writes a node's summary now and then (see the module documentation)."""

    __slots__ = ("_failing", "_last", "_next", "every", "key", "ttl_ms")

    def __init__(self, namespace: str, node_id: str, tick: float) -> None:
        self.key = summary_key(namespace, node_id)
        # Ten ticks, within [tick, SUMMARY_EVERY]: a fast-ticking cluster (tests) reports
        # sooner, the default tick of 1 s gives one summary per 2 s.
        self.every = max(tick, min(SUMMARY_EVERY, 10 * tick))
        self.ttl_ms = int(max(3 * self.every, 10.0) * 1000)  # gone soon after its node
        self._next = 0.0
        self._last: tuple[int, dict[str, int]] | None = None
        self._failing = False

    async def maybe_publish(self, node: _Node, now_ms: int) -> None:
        """Publish if one is due (`now_ms`: Redis's clock); never raises but cancellation."""
        began = time.monotonic()
        if began < self._next or node.core is None:
            return
        self._next = began + self.every
        try:
            blob = msgpack.packb(self.summary(node, now_ms))
            await node.client.set(self.key, blob, px=self.ttl_ms)
        except Exception as exc:
            if not self._failing:
                node.log.warning("cluster_summary_failed", error=repr(exc))
            self._failing = True
            return
        if self._failing:
            node.log.info("cluster_summary_recovered")
        self._failing = False

    def summary(self, node: _Node, now_ms: int) -> dict[str, Any]:
        core = node.core
        assert core is not None
        out = core.outcomes
        cells = core.cells.values()
        counts = {
            "accepted": core.accepted,
            "handled": out.handled,
            "failed": out.failed,
            "interrupted": out.interrupted,
            "dropped": out.dropped,
            "live_actors": core.live,
            "known_keys": len(core.cells),
            "pending": core.pending + core.ingress_size(),
            "in_flight": sum(1 for c in cells if c.current is not None),
            "dead_letters": out.dead_letter_count,
            "restarts": core.restarts,
        }
        rates = dict.fromkeys(RATES, 0.0)
        if self._last is not None and now_ms > self._last[0]:
            seconds = (now_ms - self._last[0]) / 1000
            rates = {n: round((counts[n] - self._last[1][n]) / seconds, 3) for n in RATES}
        self._last = (now_ms, {n: counts[n] for n in RATES})
        deepest = heapq.nlargest(
            10, ((len(c.mailbox), c.key) for c in cells if len(c.mailbox)), key=lambda pair: pair[0]
        )
        wait_ms, run_ms = out.latency.summary()
        return {
            "node": node.node_id,
            "at": now_ms,
            **counts,
            "rates": rates,
            "deepest": [[key, depth] for depth, key in deepest],
            "wait_ms": wait_ms,
            "run_ms": run_ms,
            "shards_owned": sorted(node.owned),
            "cluster": dict(node.counts),
        }
