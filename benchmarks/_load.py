"""Scenarios under load: P5 fairness, P6 interrupt latency, P7 LLM-like load."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from benchmarks._measure import Tracker, now, percentile
from benchmarks._peers import INTERRUPT, Peer
from benchmarks._scenarios import (
    Aggregate,
    Cell,
    Check,
    Params,
    Scenario,
    at_most,
    for_each_peer,
    size_label,
)
from benchmarks._throughput import TIMEOUT, keys_for, make_peer, warm_up

# -- P5 -----------------------------------------------------------------------


async def fairness(
    cls: type[Peer], hot_messages: int, light_users: int, waves: int
) -> tuple[float, dict[str, float]]:
    """p99 wait (ms) of light users while one hot user has a deep backlog.

    The hot user and the light users are activated first. Then the hot user
    gets ``hot_messages`` messages at once, and ``waves`` waves of one
    message per light user follow, 10 ms apart. Every handler is a no-op that
    never awaits (the worst case for a worker that drains its queue without
    yielding). A light message's wait is from its ``tell`` to its handler.
    """
    tracker = Tracker()
    waits: list[float] = []

    async def handler(key: Any, message: Any) -> None:
        if message is not None:
            waits.append(now() - message)
        tracker.hit()

    def sync_handler(key: Any, message: Any) -> None:
        if message is not None:
            waits.append(now() - message)
        tracker.hit()

    hot, light = "hot", keys_for(light_users, "light")
    async with make_peer(cls, handler, sync_handler) as peer:
        await warm_up(peer, tracker, [hot, *light])
        waits.clear()
        tracker.expect(hot_messages + light_users * waves)
        t0 = now()
        for _ in range(hot_messages):
            peer.tell(hot, None)
        for _ in range(waves):
            for key in light:
                peer.tell(key, now())
            await asyncio.sleep(0.010)
        await tracker.wait(TIMEOUT)
        elapsed = tracker.finished_at - t0
    return percentile(waits, 99) * 1e3, {
        "p50_ms": percentile(waits, 50) * 1e3,
        "max_ms": max(waits) * 1e3,
        "samples": float(len(waits)),
        "seconds": elapsed,
    }


async def run_p5(params: Params) -> list[Cell]:
    case = f"{size_label(params.hot_messages)} hot, {size_label(params.light_users)} light"
    return await for_each_peer(
        params,
        case,
        lambda cls: fairness(cls, params.hot_messages, params.light_users, params.light_waves),
        users=params.light_users + 1,
    )


def check_p5(agg: Aggregate, params: Params) -> list[Check]:
    case = f"{size_label(params.hot_messages)} hot, {size_label(params.light_users)} light"
    return [at_most("light users' p99 wait ≤ 20 ms", agg.value(case), 20.0)]


# -- P6 -----------------------------------------------------------------------

LONG, STOP = "long", "stop"
P6_TIMEOUT = 120.0


async def interrupt_latency(
    cls: type[Peer], samples: int, load_users: int, load_rate: int, seed: int
) -> tuple[float, dict[str, float]]:
    """p99 (ms) from ``tell(interrupt=True)`` to the handler's CancelledError.

    ``samples`` busy users each run a long handler (it awaits an hour). A
    background producer sends no-op messages to ``load_users`` other users
    at about ``load_rate`` per second. Then every busy user, one after the
    other at 2-6 ms random gaps, gets a priority-1 message with
    ``interrupt=True``; the time to the CancelledError inside the handler is
    recorded.
    """
    tracker = Tracker()
    started = Tracker()
    cancelled_at: dict[Any, float] = {}

    async def handler(key: Any, message: Any) -> None:
        if message == LONG:  # STOP and the load are no-ops
            started.hit()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled_at[key] = now()
                tracker.hit()
                raise

    rng = random.Random(seed)
    busy, load = keys_for(samples, "busy"), keys_for(load_users, "load")
    sent_at: dict[Any, float] = {}
    stop_load = asyncio.Event()
    offered = 0

    async def produce_load() -> None:
        """Every ~2 ms, tell what is due for ``load_rate`` messages/s since the start.

        At most 10 ms worth per turn: an implementation that cannot keep up
        gets less load (``load_msg_per_s`` says how much), not a death spiral.
        """
        nonlocal offered
        start, i = now(), 0
        most = max(1, load_rate // 100)
        while not stop_load.is_set():
            due = min(int((now() - start) * load_rate), i + most)
            while i < due:
                peer.tell(load[i % load_users], i)
                i += 1
            offered = i
            await asyncio.sleep(0.002)

    async with make_peer(cls, handler) as peer:
        started.expect(samples)
        for key in busy:
            peer.tell(key, LONG)
        await started.wait(P6_TIMEOUT)
        tracker.expect(samples)
        t_load = now()
        loader = asyncio.create_task(produce_load())
        await asyncio.sleep(0.05)  # load reaches steady state
        for key in busy:
            sent_at[key] = now()
            peer.tell(key, STOP, priority=1, interrupt=True)
            await asyncio.sleep(rng.uniform(0.002, 0.006))
        await tracker.wait(P6_TIMEOUT)  # a lost interrupt must not cost 10 minutes
        stop_load.set()
        await loader
        load_seconds = now() - t_load
    latencies = [cancelled_at[k] - sent_at[k] for k in busy]
    return percentile(latencies, 99) * 1e3, {
        "p50_ms": percentile(latencies, 50) * 1e3,
        "max_ms": max(latencies) * 1e3,
        "samples": float(len(latencies)),
        "load_msg_per_s": offered / load_seconds,
    }


def _p6_case(params: Params) -> str:
    return f"{params.interrupts} interrupts, {size_label(params.load_rate)} msg/s load"


async def run_p6(params: Params) -> list[Cell]:
    return await for_each_peer(
        params,
        _p6_case(params),
        lambda cls: interrupt_latency(cls, params.interrupts, 1_000, params.load_rate, params.seed),
        needs=(INTERRUPT,),
        users=params.interrupts + 1_000,
    )


def check_p6(agg: Aggregate, params: Params) -> list[Check]:
    return [at_most("interrupt p99 ≤ 5 ms", agg.value(_p6_case(params)), 5.0)]


# -- P7 -----------------------------------------------------------------------


def llm_delays(
    users: int, per_user: int, delay: tuple[float, float], seed: int
) -> dict[str, list[float]]:
    """P7's workload: each user's handler delays, seeded, in arrival order."""
    rng = random.Random(seed)
    return {key: [rng.uniform(*delay) for _ in range(per_user)] for key in keys_for(users)}


async def llm_load(
    cls: type[Peer], users: int, per_user: int, delay: tuple[float, float], seed: int
) -> tuple[float, dict[str, float]]:
    """Makespan / ideal for ``users`` x ``per_user`` messages awaiting 100-500 ms.

    Every handler awaits a seeded random delay (uniform in ``delay``), like
    an LLM call. All messages are told at once (message-major order) to
    users that are not yet active; the ideal makespan is the longest user's
    total delay, since each user's messages run one after the other and
    users run concurrently. Nothing runs while the producer tells, so the
    extras also give ``tell_s`` (the tell loop), ``makespan / (ideal +
    tell_s)`` and when each user's first handler started (after ``t0``).
    """
    delays = llm_delays(users, per_user, delay, seed)
    ideal = max(sum(d) for d in delays.values())
    tracker = Tracker()
    first_start: dict[Any, float] = {}

    async def handler(key: Any, message: Any) -> None:
        first_start.setdefault(key, now())
        await asyncio.sleep(message)
        tracker.hit()

    def sync_handler(key: Any, message: Any) -> None:  # a thread actor blocks instead
        first_start.setdefault(key, now())
        time.sleep(message)
        tracker.hit()

    async with make_peer(cls, handler, sync_handler) as peer:
        tracker.expect(users * per_user)
        t0 = now()
        for j in range(per_user):
            for key, d in delays.items():
                peer.tell(key, d[j])
        told = now() - t0
        await tracker.wait(TIMEOUT)
        makespan = tracker.finished_at - t0
    delays_ms = [(t - t0) * 1e3 for t in first_start.values()]
    return makespan / ideal, {
        "makespan_s": makespan,
        "ideal_s": ideal,
        "tell_s": told,
        "x_ideal_plus_tell": makespan / (ideal + told),
        "first_start_p50_ms": percentile(delays_ms, 50),
        "first_start_p99_ms": percentile(delays_ms, 99),
        "first_start_max_ms": max(delays_ms),
    }


def _p7_case(params: Params) -> str:
    return f"{size_label(params.llm_users)} users x {params.llm_messages}"


async def run_p7(params: Params) -> list[Cell]:
    return await for_each_peer(
        params,
        _p7_case(params),
        lambda cls: llm_load(
            cls, params.llm_users, params.llm_messages, params.llm_delay, params.seed
        ),
        users=params.llm_users,
    )


def check_p7(agg: Aggregate, params: Params) -> list[Check]:
    return [at_most("makespan ≤ 1.10x ideal", agg.value(_p7_case(params)), 1.10)]


SCENARIOS = [
    Scenario(
        "p5_fairness",
        "P5 fairness",
        "P5: p99 wait of the light users ≤ 20 ms",
        "ms p99",
        False,
        run_p5,
        check_p5,
        "one user with a deep backlog, light users sending waves; no-op handlers",
    ),
    Scenario(
        "p6_interrupt",
        "P6 interrupt latency",
        "P6: p99 ≤ 5 ms from tell(interrupt=True) to CancelledError, under load",
        "ms p99",
        False,
        run_p6,
        check_p6,
        "busy users in a long handler, background no-op load, one interrupt each",
    ),
    Scenario(
        "p7_llm",
        "P7 LLM-like load",
        "P7: makespan within 10% of the ideal (the longest user's total)",
        "x ideal",
        False,
        run_p7,
        check_p7,
        "handlers await a seeded random 100-500 ms; all messages told at once",
    ),
]
