"""Chat features: what they cost when they are on (``busy="collect"``, ``msg_id``, rates).

Three workloads, each run two ways in the same run, starting with a different
one in every repeat:

* ``inorder``: the runtime with the feature on;
* ``feature off``: the same runtime, the same workload, without it.

**collect, bursts** (msg/s): ``burst_users`` users are activated first. Then
each gets one message, which starts a turn, and once every user's turn has
started, a burst of ``BURST`` more: a chat user who keeps typing while the bot
is thinking. Every turn awaits ``TURN_COST`` seconds (``asyncio.sleep``: the
fixed overhead of a turn, such as an LLM call's, not its length). With
``busy="collect"`` the burst is the next turn's ``Batch``: two turns per user.
With ``"queue"`` (the default) every message is a turn of its own. The round
runs twice, the first as a warm-up; the clock of the second stops when its last
message is handled, and the runtime's ``stats()`` must then count every one of
them handled, none failed or dropped. The JSON has the turns.

**dedup** (msg/s): P1's tell workload (every user activated first, then
``messages`` no-op messages told round-robin; the clock stops at the last
handler) with a unique ``msg_id`` on every message, against none. The ids are
made before the clock starts, and ``dedup_max`` holds all of them. Afterwards
the oldest and the newest id are told again and must be refused as duplicates
(``duplicates_refused``). Then the window's memory is measured in the same
process, the way ``_memory.py``'s ``tracemalloc`` figure is: with
``tracemalloc`` on, as many fresh ids again are made (the window is what keeps
their strings alive), then told and handled ``CHUNK`` at a time, as updates
come in; the traced growth after a garbage collection, divided by their
number, is ``bytes_per_id``, of which ``id_str_bytes`` is the id string itself.

**rate-limited keys beside unlimited ones** (ms p99): ``FREE_KEYS`` keys get
asks at a steady ``ASK_RATE`` per second, each scheduled at its time on the
loop (``call_at``) and awaited by a task of its own, as in the durable
scenario's send case. Meanwhile ``LIMITED_KEYS`` other keys, of another
``UserActor`` class with ``rate = Rate(1, per=LIMIT_PER)``, each get a burst of
``LIMITED_BURST`` messages once every ``PERIOD`` seconds, the keys' bursts
spread evenly over the period. A limited key's next turn waits for its bucket
(the key is *held*; held keys share one timer), so a burst takes about half a
second to drain. ``feature off`` runs the same keys and bursts with the same
class without a rate: each burst runs as it arrives. The figure is the p99 of
the unlimited asks' latency, from the call to the awaited result; the JSON has
the smallest gap seen between two turns of a limited key (``limited_min_gap_ms``:
the limit at work), how late the loop started the asks (``lag_p99_ms``) and the
loop thread's CPU time from the first ask to the last message (``loop_cpu_s``).
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks._measure import Tracker, now, percentile, settle_memory
from benchmarks._runtime_peer import MAX_PENDING, InorderPeer
from benchmarks._scenarios import (
    SUBJECT,
    Aggregate,
    Cell,
    Check,
    Params,
    Scenario,
    at_least,
    at_most,
    for_each_column,
    size_label,
)
from benchmarks._throughput import RUNTIME_IDLE, TIMEOUT, keys_for, threads_users, warm_up

#: Column of the same workload with the feature off.
OFF = "feature off"
COLUMNS = (SUBJECT, OFF)

BURST = 20  # collect: messages per user arriving while its first turn runs
TURN_COST = 0.001  # collect: seconds every turn awaits

ASK_RATE = 1_000  # rate-limited neighbours: asks/s to the unlimited keys
FREE_KEYS = 1_000
LIMITED_KEYS = 1_000
LIMITED_BURST = 10  # messages per limited key's burst
LIMIT_PER = 0.05  # the limited keys' Rate(1, per=LIMIT_PER)
PERIOD = 1.0  # seconds between two bursts of a limited key
SECONDS = 5.0  # full run; quick: QUICK_SECONDS
QUICK_SECONDS = 1.0

# Targets: what the first measurements justify (BENCHMARKS.md, "Chat features"), with a
# margin for the machine. The dedup path is interpreted Python even in the compiled
# build, and a limited key's burst is one turn per message instead of one drain.
COLLECT_RATIO = 2.0  # collect ≥ this x queue
DEDUP_RATIO = 0.2  # msg_id on every message ≥ this x none
LIMITED_P99_RATIO = 4.0  # unlimited keys' p99 ≤ this x feature off
BYTES_PER_ID = 512.0  # memory per remembered id ≤ this
CHUNK = 1_000  # dedup memory: ids told, then handled, this many at a time


class _Counter:
    """Messages handled and turns run; an event once ``target`` messages are handled."""

    def __init__(self) -> None:
        self.handled = 0
        self.turns = 0
        self.target = -1
        self.finished_at = 0.0
        self.event = asyncio.Event()

    def expect(self, n: int) -> None:
        self.handled = self.turns = 0
        self.target = n
        self.finished_at = 0.0
        self.event = asyncio.Event()

    def turn(self, messages: int) -> None:
        self.turns += 1
        self.handled += messages
        if self.handled == self.target:
            self.finished_at = now()
            self.event.set()

    async def wait(self, limit: float = TIMEOUT) -> None:
        async with asyncio.timeout(limit):
            await self.event.wait()


def _outcomes(stats: dict[str, Any]) -> tuple[int, int]:
    """(handled, anything else: failed, interrupted or dropped) from ``stats()``."""
    other = stats["failed"] + stats["interrupted"] + stats["dropped"]
    return int(stats["handled"]), int(other)


# -- collect ------------------------------------------------------------------------------


async def collect_bursts(
    column: str, users: int, burst: int = BURST, turn_cost: float = TURN_COST
) -> tuple[float, dict[str, float]]:
    """Messages/s: one message per user, then a burst of ``burst`` while its turn runs.

    The round runs twice, the first untimed (a warm-up: the first run of a process
    pays for code paths and memory the second finds ready); the second is measured.
    """
    from actors import Batch

    counter = _Counter()
    first_turns = asyncio.Event()
    started = 0

    async def handler(key: Any, message: Any) -> None:
        nonlocal started
        messages = message.messages if isinstance(message, Batch) else [message]
        if messages[0] == 0:  # the first turn of a round
            started += 1
            if started == users:
                first_turns.set()
        await asyncio.sleep(turn_cost)
        counter.turn(len(messages))

    busy = "collect" if column == SUBJECT else "queue"
    keys = keys_for(users)
    total = users * (1 + burst)
    peer = InorderPeer(handler, idle_timeout=RUNTIME_IDLE, runtime_options={"busy": busy})

    async def one_round() -> float:
        nonlocal started, first_turns
        started, first_turns = 0, asyncio.Event()
        counter.expect(total)
        t0 = now()
        for key in keys:
            tell(key, 0)
        async with asyncio.timeout(TIMEOUT):
            await first_turns.wait()
        for i in range(1, burst + 1):
            for key in keys:
                tell(key, i)
        await counter.wait()
        await rt.wait_idle()
        return counter.finished_at - t0

    async with peer:
        rt = peer.runtime
        tell = rt.tell
        counter.expect(users)
        for key in keys:
            tell(key, -1)
        await counter.wait()
        await one_round()
        settle_memory()
        handled_before, other_before = _outcomes(rt.stats())
        elapsed = await one_round()
        handled, other = _outcomes(rt.stats())
    if handled - handled_before != total or other != other_before:
        msg = (
            f"{busy}: {handled - handled_before} of {total} messages handled, "
            f"{other - other_before} other outcomes"
        )
        raise AssertionError(msg)
    return total / elapsed, {
        "users": float(users),
        "messages": float(total),
        "turns": float(counter.turns),
        "turns_per_user": counter.turns / users,
        "seconds": elapsed,
    }


# -- dedup --------------------------------------------------------------------------------


async def dedup_tell(
    column: str, users: int, messages: int, memory: bool = True
) -> tuple[float, dict[str, float]]:
    """P1's tell workload, with a unique ``msg_id`` on every message (``inorder``) or none;
    then, with ids (and ``memory``), the memory the window holds per id."""
    tracker = Tracker()

    async def handler(key: Any, message: Any) -> None:
        tracker.hit()

    keys = keys_for(users)
    n = max(users, messages // users * users)
    with_ids = column == SUBJECT
    ids = [f"update:{i}" for i in range(n)] if with_ids else []
    options = {"dedup_max": 2 * n + 2}  # every id of both phases stays in the window
    peer = InorderPeer(handler, idle_timeout=RUNTIME_IDLE, runtime_options=options)
    async with peer:
        rt = peer.runtime
        await warm_up(peer, tracker, keys)
        tracker.expect(n)
        tell = rt.tell
        if with_ids:
            t0 = now()
            for i in range(n):
                tell(keys[i % users], i, msg_id=ids[i])
        else:
            t0 = now()
            for i in range(n):
                tell(keys[i % users], i)
        await tracker.wait(TIMEOUT)
        elapsed = tracker.finished_at - t0
        extra = {"messages": float(n), "seconds": elapsed}
        if with_ids:
            extra.update(await _refused(rt, keys, ids))
            if memory:
                extra.update(await _window_memory(rt, tracker, keys, n))
    return n / elapsed, extra


async def _refused(rt: Any, keys: list[str], ids: list[str]) -> dict[str, float]:
    """The oldest and the newest id, told again: both must be refused."""
    await rt.wait_idle()  # every message has its outcome: its id is in the window
    stats = rt.stats()
    handled, duplicates = stats["handled"], stats["duplicates"]
    rt.tell(keys[0], "again", msg_id=ids[0])
    rt.tell(keys[-1], "again", msg_id=ids[-1])
    await rt.wait_idle()
    stats = rt.stats()
    refused = stats["duplicates"] - duplicates
    if refused != 2 or stats["handled"] != handled:
        msg = f"{refused} of 2 remembered ids refused, {stats['handled'] - handled} handled"
        raise AssertionError(msg)
    return {"duplicates_refused": float(refused)}


async def _window_memory(rt: Any, tracker: Tracker, keys: list[str], n: int) -> dict[str, float]:
    """``tracemalloc``'s growth over ``n`` more ids, told and handled ``CHUNK`` at a time
    (so that few are pending at once, as when updates come in), per id."""
    users = len(keys)
    settle_memory()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fresh = [f"update:{n + i}" for i in range(n)]  # made while tracing: the window keeps them
        id_bytes = sum(sys.getsizeof(s) for s in fresh) / n
        tell = rt.tell
        for first in range(0, n, CHUNK):  # as updates come: few pending at once
            chunk = fresh[first : first + CHUNK]
            tracker.expect(len(chunk))
            for i, msg_id in enumerate(chunk, first):
                tell(keys[i % users], i, msg_id=msg_id)
            await tracker.wait(TIMEOUT)
        del fresh, chunk, msg_id
        await rt.wait_idle()
        await asyncio.sleep(0.05)  # let post-message bookkeeping settle, as _child.memory does
        settle_memory()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    return {
        "bytes_per_id": grown / n,
        "id_str_bytes": id_bytes,
        "ids_remembered": float(2 * n),
    }


# -- rate-limited neighbours --------------------------------------------------------------


async def limited_neighbours(
    column: str,
    seconds: float,
    free: int = FREE_KEYS,
    limited: int = LIMITED_KEYS,
    rate: int = ASK_RATE,
) -> tuple[float, dict[str, float]]:
    """p99 (ms) of asks to ``free`` unlimited keys at ``rate``/s, beside ``limited`` keys
    that get a burst every ``PERIOD`` s, with ``Rate(1, per=LIMIT_PER)`` (``inorder``) or none."""
    from actors import Rate, UserActor
    from supervisors import Runtime

    loop = asyncio.get_running_loop()
    counter = _Counter()
    last_turn: dict[Any, float] = {}
    gaps = [float("inf")]

    class Free(UserActor):
        async def on_message(self, message: Any, ctx: Any) -> Any:
            return message

    class Limited(UserActor):
        rate = Rate(1, per=LIMIT_PER) if column == SUBJECT else None

        async def on_message(self, message: Any, ctx: Any) -> None:
            t = loop.time()
            previous = last_turn.get(self.key)
            if previous is not None and t - previous < gaps[0]:
                gaps[0] = t - previous
            last_turn[self.key] = t
            counter.turn(1)

    def factory(key: str | int) -> UserActor:
        return Limited(key) if str(key).startswith("limited:") else Free(key)

    free_keys, limited_keys = keys_for(free, "free"), keys_for(limited, "limited")
    n = max(2, int(rate * seconds))
    periods = max(1, round(seconds / PERIOD))
    limited_total = limited * LIMITED_BURST * periods
    latencies: list[float] = []
    lags: list[float] = []
    calls: list[float] = []
    finished = loop.create_future()
    tasks: set[asyncio.Task[None]] = set()
    timers: list[asyncio.TimerHandle] = []

    rt = Runtime(factory, idle_timeout=RUNTIME_IDLE, max_pending=MAX_PENDING)
    await rt.__aenter__()
    try:
        ask, tell = rt.ask, rt.tell

        async def one(i: int, due: float) -> None:
            lags.append(loop.time() - due)
            t = now()
            calls.append(t)
            try:
                result = await ask(free_keys[i % free], i)
            except Exception as exc:
                if not finished.done():
                    finished.set_exception(exc)
                return
            latencies.append(now() - t)
            if result != i and not finished.done():
                finished.set_exception(AssertionError(f"ask {i} returned {result!r}"))
            if len(latencies) == n and not finished.done():
                finished.set_result(None)

        def spawn(i: int, due: float) -> None:
            task = loop.create_task(one(i, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        def burst(key: str) -> None:
            for m in range(LIMITED_BURST):
                tell(key, m)

        for fut in [ask(key, -1) for key in free_keys]:
            await fut
        counter.expect(limited)
        for key in limited_keys:
            tell(key, -1)
        await counter.wait()
        last_turn.clear()
        counter.expect(limited_total)
        cpu = time.thread_time()
        start = loop.time() + 0.01
        perf_start = now() + 0.01
        timers += [loop.call_at(start + i / rate, spawn, i, start + i / rate) for i in range(n)]
        timers += [
            loop.call_at(start + p * PERIOD + j * PERIOD / limited, burst, key)
            for p in range(periods)
            for j, key in enumerate(limited_keys)
        ]
        try:
            async with asyncio.timeout(seconds + TIMEOUT):
                await finished
                await counter.wait()
        finally:
            for timer in timers:
                timer.cancel()
            for task in list(tasks):
                task.cancel()
        cpu = time.thread_time() - cpu
        drained = counter.finished_at - perf_start
    finally:
        try:
            await rt.stop(drain=False, timeout=10.0)
        finally:
            await rt.__aexit__(None, None, None)
    return percentile(latencies, 99) * 1e3, {
        "p50_ms": percentile(latencies, 50) * 1e3,
        "max_ms": max(latencies) * 1e3,
        "samples": float(len(latencies)),
        "achieved_asks_per_s": (n - 1) / (max(calls) - min(calls)),
        "lag_p99_ms": max(0.0, percentile(lags, 99) * 1e3),
        "limited_messages": float(counter.handled),
        "limited_min_gap_ms": gaps[0] * 1e3,
        "limited_done_s": max(0.0, drained),
        "loop_cpu_s": cpu,
    }


# -- the scenario -------------------------------------------------------------------------


def collect_case(params: Params) -> str:
    return f"collect, {size_label(params.burst_users)} users x {BURST}-message bursts (msg/s)"


def dedup_case(params: Params) -> str:
    return f"dedup, msg_id on every tell, {size_label(threads_users(params))} users (msg/s)"


def limited_case() -> str:
    return (
        f"{size_label(FREE_KEYS)} unlimited keys beside {size_label(LIMITED_KEYS)} "
        "rate-limited (ms p99)"
    )


Measure = Callable[[str], Awaitable[tuple[float, dict[str, float]]]]


async def _columns(
    params: Params, case: str, measure: Measure, higher_is_better: bool | None = None
) -> list[Cell]:
    """Both columns, starting with a different one in every repeat."""
    return await for_each_column(
        params, case, COLUMNS, measure, lambda _: InorderPeer.missing(), higher_is_better
    )


async def run_features(params: Params) -> list[Cell]:
    cells = await _columns(
        params, collect_case(params), functools.partial(collect_bursts, users=params.burst_users)
    )
    cells += await _columns(
        params,
        dedup_case(params),
        functools.partial(dedup_tell, users=threads_users(params), messages=params.messages),
    )
    seconds = QUICK_SECONDS if params.quick else SECONDS
    cells += await _columns(
        params,
        limited_case(),
        functools.partial(limited_neighbours, seconds=seconds),
        higher_is_better=False,
    )
    return cells


def check_features(agg: Aggregate, params: Params) -> list[Check]:
    limited = agg.ratio(limited_case(), OFF)  # feature off / on: the p99's inverse ratio
    bytes_per_id = agg.extra(dedup_case(params)).get("bytes_per_id")
    return [
        at_least(
            f"collect ≥ {COLLECT_RATIO:g}x queue at {TURN_COST * 1e3:g} ms per turn",
            agg.ratio(collect_case(params), OFF),
            COLLECT_RATIO,
        ),
        at_least(
            f"msg_id on every tell ≥ {DEDUP_RATIO:g}x none",
            agg.ratio(dedup_case(params), OFF),
            DEDUP_RATIO,
        ),
        at_most(
            f"≤ {BYTES_PER_ID:g} B per remembered id (tracemalloc)", bytes_per_id, BYTES_PER_ID
        ),
        at_most(
            f"unlimited keys' ask p99 ≤ {LIMITED_P99_RATIO:g}x without the neighbours' limit",
            None if limited is None else 1.0 / limited,
            LIMITED_P99_RATIO,
        ),
    ]


SCENARIOS = [
    Scenario(
        "features",
        "What the chat features cost when on",
        f"collect ≥ {COLLECT_RATIO:g}x queue at {TURN_COST * 1e3:g} ms per turn; a msg_id on "
        f"every tell ≥ {DEDUP_RATIO:g}x none, ≤ {BYTES_PER_ID:g} B per remembered id; "
        f"unlimited keys' ask p99 beside rate-limited keys ≤ {LIMITED_P99_RATIO:g}x "
        "without the limit",
        "msg/s; rate-limited: ms p99",
        True,
        run_features,
        check_features,
        f"busy='collect' vs 'queue' with {BURST}-message bursts; P1's tell workload with a "
        f"unique msg_id per message vs none; asks at {size_label(ASK_RATE)}/s beside keys with "
        f"Rate(1, per={LIMIT_PER:g}) vs no rate",
    ),
]
