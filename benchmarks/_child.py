"""Measurements that run in a child process of their own (P3 and P4).

``python -m benchmarks._child '<json spec>'`` runs one measurement for one
peer and prints its figures as a JSON line prefixed with ``RESULT_MARK``.
A fresh process per measurement means that its peak RSS
(``VmHWM``) is its own and that memory left behind by one
peer cannot be counted against the next.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tracemalloc
from typing import Any

from benchmarks._measure import Tracker, now, peak_rss_bytes, rss_bytes, settle_memory
from benchmarks._scenarios import PEERS_BY_NAME
from benchmarks._throughput import TIMEOUT, keys_for, make_peer

RESULT_MARK = "BENCH-RESULT "
MB = 1024.0 * 1024.0
BATCH = 1_000


async def _tell_batches(peer: Any, keys: list[str]) -> None:
    """One message per key, yielding to the loop after every ``BATCH`` keys."""
    for start in range(0, len(keys), BATCH):
        for key in keys[start : start + BATCH]:
            peer.tell(key, None)
        await asyncio.sleep(0)


async def activation(peer_name: str, users: int) -> dict[str, float]:
    """New user actors per second: one message to each of ``users`` new keys,
    sent in batches of 1,000; the clock stops when the last one is handled."""
    tracker = Tracker()

    async def handler(key: Any, message: Any) -> None:
        tracker.hit()

    keys = keys_for(users)
    async with make_peer(PEERS_BY_NAME[peer_name], handler, runtime_idle=None) as peer:
        tracker.expect(users)
        t0 = now()
        await _tell_batches(peer, keys)
        await tracker.wait(TIMEOUT)
        elapsed = tracker.finished_at - t0
        live = peer.live()
    return {"actors_per_s": users / elapsed, "seconds": elapsed, "live": float(live)}


async def churn(peer_name: str, users: int, idle_timeout: float) -> dict[str, float]:
    """``users`` distinct users, one message each, with idle shutdown.

    Keys are made as messages arrive (as they would come from updates), in
    batches of 1,000 with a yield between batches. Reports the process's
    peak RSS, the rate, the most actors seen alive at once, and how many are
    still alive ``3 x idle_timeout + 2 s`` after the last message.
    """
    tracker = Tracker()

    async def handler(key: Any, message: Any) -> None:
        tracker.hit()

    cls = PEERS_BY_NAME[peer_name]
    peak_live = 0
    async with make_peer(
        cls, handler, idle_timeout=idle_timeout, runtime_idle=idle_timeout
    ) as peer:
        tracker.expect(users)
        t0 = now()
        for start in range(0, users, BATCH):
            for i in range(start, min(users, start + BATCH)):
                peer.tell(f"user:{i}", None)
            if start % (100 * BATCH) == 0:
                peak_live = max(peak_live, peer.live())
            await asyncio.sleep(0)
        await tracker.wait(TIMEOUT)
        elapsed = tracker.finished_at - t0
        peak_live = max(peak_live, peer.live())
        deadline = now() + 3 * idle_timeout + 2.0
        while peer.live() and now() < deadline:  # noqa: ASYNC110 - polling a count
            await asyncio.sleep(0.05)
        released = now() - tracker.finished_at
        live_after = peer.live()
    return {
        "peak_rss_mb": peak_rss_bytes() / MB,
        "users_per_s": users / elapsed,
        "seconds": elapsed,
        "peak_live": float(peak_live),
        "live_after": float(live_after),
        "release_s": released,
    }


async def memory(peer_name: str, actors: int, traced: bool) -> dict[str, float]:
    """Memory per live idle actor, from the RSS delta (or tracemalloc's).

    1,000 users are activated first so that pools and caches exist; keys are
    made before the baseline reading. Then ``actors`` more users get one
    message each; once all are handled and garbage is collected, the growth
    divided by ``actors`` is the cost of one idle actor.
    """
    tracker = Tracker()

    async def handler(key: Any, message: Any) -> None:
        tracker.hit()

    warm, keys = keys_for(1_000, "warm"), keys_for(actors)
    async with make_peer(PEERS_BY_NAME[peer_name], handler, runtime_idle=None) as peer:
        tracker.expect(len(warm))
        await _tell_batches(peer, warm)
        await tracker.wait(TIMEOUT)
        await asyncio.sleep(0.05)
        settle_memory()
        if traced:
            tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0] if traced else rss_bytes()
        tracker.expect(actors)
        await _tell_batches(peer, keys)
        await tracker.wait(TIMEOUT)
        await asyncio.sleep(0.1)  # let post-message bookkeeping settle
        settle_memory()
        after = tracemalloc.get_traced_memory()[0] if traced else rss_bytes()
        live = peer.live()
    return {
        "bytes_per_actor": (after - before) / actors,
        "live": float(live),
        "rss_mb": rss_bytes() / MB,
    }


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    kind, peer = spec["kind"], spec["peer"]
    if kind == "activation":
        result = asyncio.run(activation(peer, spec["users"]))
    elif kind == "churn":
        result = asyncio.run(churn(peer, spec["users"], spec["idle_timeout"]))
    elif kind in ("memory", "memory_traced"):
        result = asyncio.run(memory(peer, spec["users"], traced=kind == "memory_traced"))
    else:
        raise SystemExit(f"unknown measurement {kind!r}")
    sys.stdout.write(RESULT_MARK + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
