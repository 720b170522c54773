"""Throughput scenarios: P1 tell, P2 ask, thread producers, logging overhead.

All of them use a no-op handler and the same shape: every user is first
activated with one message (so activation, measured by P3, is not counted),
then ``messages`` messages are sent round-robin over the users as fast as
the producer can, and the clock stops when the handler has seen the last
one. The figure is messages per second.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from typing import Any

import structlog

from benchmarks._measure import Tracker, now, progress
from benchmarks._peers import Handler, Peer, SyncHandler
from benchmarks._runtime_peer import InorderPeer
from benchmarks._scenarios import (
    SUBJECT,
    Aggregate,
    Cell,
    Check,
    Params,
    Scenario,
    at_least,
    error_cell,
    for_each_peer,
    size_label,
)

#: Seconds a single measurement may take before it is reported as an error.
TIMEOUT = 600.0
#: The runtime's documented default idle timeout; the peers run without one.
RUNTIME_IDLE = 300.0


def make_peer(
    cls: type[Peer],
    handler: Handler,
    sync_handler: SyncHandler | None = None,
    *,
    idle_timeout: float | None = None,
    runtime_idle: float | None = RUNTIME_IDLE,
) -> Peer:
    """Build ``cls`` for a scenario. The runtime keeps idle shutdown on, as
    deployed (``runtime_idle``); peers get ``idle_timeout``."""
    if cls is InorderPeer:
        return cls(handler, idle_timeout=runtime_idle)
    return cls(handler, sync_handler=sync_handler, idle_timeout=idle_timeout)


def keys_for(users: int, prefix: str = "user") -> list[str]:
    return [f"{prefix}:{i}" for i in range(users)]


async def warm_up(peer: Peer, tracker: Tracker, keys: list[str]) -> None:
    """Activate every user with one message and wait until all are handled."""
    tracker.expect(len(keys))
    for key in keys:
        peer.tell(key, -1)
    await tracker.wait(TIMEOUT)


async def tell_throughput(
    cls: type[Peer], users: int, messages: int, threads: int = 0
) -> tuple[float, dict[str, float]]:
    """Messages/s of ``tell`` with a no-op handler; from ``threads`` threads if > 0.

    Single producer: one loop tells every message, then waits. Thread
    producers: ``threads`` threads split the messages and call the peer's
    thread-safe tell (``call_soon_threadsafe`` per message for the asyncio
    peers, pykka's own ``tell``, the runtime's batched ingress).
    """
    tracker = Tracker()

    async def handler(key: Any, message: Any) -> None:
        tracker.hit()

    def sync_handler(key: Any, message: Any) -> None:
        tracker.hit()

    keys = keys_for(users)
    n = max(users, messages // users * users)
    async with make_peer(cls, handler, sync_handler) as peer:
        await warm_up(peer, tracker, keys)
        tracker.expect(n)
        if threads:

            def produce(first: int) -> None:
                tell = peer.tell_threadsafe
                for i in range(first, n, threads):
                    tell(keys[i % users], i)

            workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
            t0 = now()
            for w in workers:
                w.start()
            await tracker.wait(TIMEOUT)
            for w in workers:
                w.join()
        else:
            tell = peer.tell
            t0 = now()
            for i in range(n):
                tell(keys[i % users], i)
            await tracker.wait(TIMEOUT)
        elapsed = tracker.finished_at - t0
    return n / elapsed, {"messages": n, "seconds": elapsed}


async def ask_throughput(
    cls: type[Peer], users: int, messages: int
) -> tuple[float, dict[str, float]]:
    """Asks/s: every ask is issued at once (round-robin over users), then each
    result is awaited; the handler returns its message."""

    async def handler(key: Any, message: Any) -> Any:
        return message

    def sync_handler(key: Any, message: Any) -> Any:
        return message

    keys = keys_for(users)
    n = max(users, messages // users * users)
    async with make_peer(cls, handler, sync_handler) as peer:
        for fut in [peer.ask(key, -1) for key in keys]:
            await fut
        ask = peer.ask
        t0 = now()
        futures = [ask(keys[i % users], i) for i in range(n)]
        for fut in futures:
            await fut
        elapsed = now() - t0
        last = await futures[-1]
        if last != n - 1:
            raise AssertionError(f"ask returned {last!r}, expected {n - 1}")
    return n / elapsed, {"messages": n, "seconds": elapsed}


async def run_p1(params: Params) -> list[Cell]:
    cells: list[Cell] = []
    for users in params.users:
        cells += await for_each_peer(
            params,
            f"{size_label(users)} users",
            functools.partial(tell_throughput, users=users, messages=params.messages),
            users=users,
        )
    return cells


async def run_p2(params: Params) -> list[Cell]:
    cells: list[Cell] = []
    for users in params.users:
        cells += await for_each_peer(
            params,
            f"{size_label(users)} users",
            functools.partial(ask_throughput, users=users, messages=params.messages),
            users=users,
        )
    return cells


def threads_users(params: Params) -> int:
    return min(1_000, max(params.users))


async def run_threads(params: Params) -> list[Cell]:
    users = threads_users(params)
    return await for_each_peer(
        params,
        f"{params.threads} threads, {size_label(users)} users",
        lambda cls: tell_throughput(cls, users, params.messages, threads=params.threads),
        users=users,
    )


class _LineCounter:
    """A file-like sink that counts the lines structlog writes to it."""

    def __init__(self) -> None:
        self.lines = 0

    def write(self, text: str) -> int:
        self.lines += text.count("\n")
        return len(text)

    def flush(self) -> None:
        pass


#: Column of the logging scenario that emits nothing (the baseline).
DROPPED = "logging dropped"


async def _logging_variant(variant: str, users: int, messages: int) -> tuple[float, float]:
    """Runtime tell throughput under one structlog configuration; (msg/s, lines)."""
    sink = _LineCounter()
    redirect: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if variant == "info":
        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            logger_factory=structlog.PrintLoggerFactory(sink),  # type: ignore[arg-type]
        )
    elif variant == "dropped":
        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
            logger_factory=structlog.PrintLoggerFactory(sink),  # type: ignore[arg-type]
        )
    else:  # unconfigured: structlog's defaults, whatever the library does about them
        structlog.reset_defaults()
        redirect = contextlib.redirect_stdout(sink)  # type: ignore[type-var,unused-ignore]
    try:
        with redirect:
            rate, _ = await tell_throughput(InorderPeer, users, messages)
    finally:
        structlog.reset_defaults()
    return rate, float(sink.lines)


async def run_logging(params: Params) -> list[Cell]:
    """Each variant is paired with its own baseline run, back to back."""
    users = threads_users(params)
    cells: list[Cell] = []
    for variant, case in (("info", "filtering logger at INFO"), ("default", "unconfigured")):
        reason = InorderPeer.missing()
        if reason is not None:
            cells += [Cell(case, SUBJECT, na=reason), Cell(case, DROPPED, na=reason)]
            continue
        for column, which in ((DROPPED, "dropped"), (SUBJECT, variant)):
            progress(f"logging, {case}: {column}")
            try:
                rate, lines = await _logging_variant(which, users, params.messages)
            except Exception as exc:
                cells.append(error_cell(case, column, exc))
            else:
                cells.append(Cell(case, column, rate, extra={"lines_emitted": lines}))
    return cells


def _largest(params: Params, at_most: int | None = None) -> int:
    sizes = [u for u in params.users if at_most is None or u <= at_most]
    return max(sizes) if sizes else max(params.users)


def check_p1(agg: Aggregate, params: Params) -> list[Check]:
    big, small = _largest(params), _largest(params, 1_000)
    return [
        at_least(
            f"≥ 0.5x asyncio-queue at {size_label(big)} users",
            agg.ratio(f"{size_label(big)} users", "asyncio-queue"),
            0.5,
        ),
        at_least(
            f"≥ 30x pykka-thread at {size_label(small)} users",
            agg.ratio(f"{size_label(small)} users", "pykka-thread"),
            30.0,
        ),
    ]


def check_p2(agg: Aggregate, params: Params) -> list[Check]:
    return [
        at_least(
            f"≥ 2x promise-queue at {size_label(u)} users",
            agg.ratio(f"{size_label(u)} users", "promise-queue"),
            2.0,
        )
        for u in params.users
    ]


def check_threads(agg: Aggregate, params: Params) -> list[Check]:
    case = f"{params.threads} threads, {size_label(threads_users(params))} users"
    return [
        at_least("≥ 1x asyncio-queue (call_soon_threadsafe)", agg.ratio(case, "asyncio-queue"), 1.0)
    ]


def check_logging(agg: Aggregate, params: Params) -> list[Check]:
    return [
        at_least(f"{case}: ≥ 0.9x no logging", agg.ratio(case, DROPPED), 0.9)
        for case in ("filtering logger at INFO", "unconfigured")
    ]


SCENARIOS = [
    Scenario(
        "p1_tell",
        "P1 tell throughput",
        "P1: ≥ 0.5x asyncio-queue peer at 10k users; ≥ 30x pykka-thread at 1k users",
        "msg/s",
        True,
        run_p1,
        check_p1,
        "no-op handler, messages told round-robin to already active users",
    ),
    Scenario(
        "p2_ask",
        "P2 ask throughput",
        "P2: ≥ 2x promise-queue peer",
        "asks/s",
        True,
        run_p2,
        check_p2,
        "all asks issued at once, then every result awaited; handler echoes",
    ),
    Scenario(
        "threads",
        "Thread producers",
        "no P target; expected ≥ 1x asyncio-queue with call_soon_threadsafe per message",
        "msg/s",
        True,
        run_threads,
        check_threads,
        "tell from 4 threads to 1k active users, no-op handler",
    ),
    Scenario(
        "logging",
        "Logging overhead",
        "§5: filtered-out events cost next to nothing; expected ≥ 0.9x no logging",
        "msg/s",
        True,
        run_logging,
        check_logging,
        "P1 workload at 1k users; structlog at INFO or unconfigured vs everything dropped",
    ),
]
