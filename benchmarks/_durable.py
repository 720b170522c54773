"""Durable mode: what the journal costs (issue 9).

Two workloads, each run three ways in the same run:

* ``inorder``: the runtime with ``store=`` an ``SQLiteJournal`` (default
  settings: WAL, ``synchronous=NORMAL``, group commit on its writer thread)
  in a temporary directory;
* ``in memory``: the same runtime without a store (the P1 configuration);
* ``sqlite-per-message``: the hand-written peer of
  :mod:`benchmarks._sqlite_peer`, which commits one SQLite transaction per
  received message and another per handled one.

**Tell throughput** is P1's workload (every user activated first, then
``messages`` no-op messages told round-robin; the clock stops at the last
handler), at every ``--users`` size. The journal may still be committing the
last acknowledgements when the last handler has run: the JSON has the time
until everything was committed too (``settled_s``), the journal's commits
and, checked after the runtime stopped, the messages left unacknowledged in
the journal (``left_in_journal``, 0 when all is well).

**Awaitable send latency**: a steady offered load of ``SEND_RATE``
messages/s over ``SEND_USERS`` active users, each message scheduled at its
fixed time on the loop (``call_at``) and sent by a task of its own that
awaits ``send(key, message)``; the figure is the p99 of the time from the
call to its return (the message is durable then). Without a store the
runtime's ``send`` returns once the message is accepted; the peer's returns
once its transaction committed. The JSON has p50, the maximum, the achieved
rate and how late the loop started the sends (``lag_p99_ms``).

Ratios are the journal's: ``inorder`` (durable) over ``in memory`` and over
the peer for throughput, the inverse for latency. Every journal and database
lives in a temporary directory that is removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks._measure import Tracker, now, percentile
from benchmarks._peers import Handler, Peer
from benchmarks._runtime_peer import InorderPeer
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
from benchmarks._sqlite_peer import SQLitePerMessagePeer
from benchmarks._throughput import RUNTIME_IDLE, TIMEOUT, keys_for, warm_up

#: Column of the runtime without a store.
IN_MEMORY = "in memory"
#: Column of the hand-written peer.
PEER = SQLitePerMessagePeer.name
COLUMNS = (SUBJECT, IN_MEMORY, PEER)
#: Not a column of the scenario: the runtime with a journal that writes nothing
#: (``python -m benchmarks.durable --stub``), the bound the loop thread sets.
STUB = "stub journal"
#: The journal's file name inside its temporary directory.
JOURNAL_NAME = "bench.journal"

SEND_RATE = 1_000  # offered load of the latency run, messages/s
SEND_USERS = 1_000
SEND_SECONDS = 5.0  # full run; quick: QUICK_SEND_SECONDS
QUICK_SEND_SECONDS = 1.0

THROUGHPUT_RATIO = 0.3  # ≥ this x in memory
PEER_RATIO = 10.0  # ≥ this x sqlite-per-message
SEND_P99_MS = 10.0  # ≤ this at SEND_RATE


class _Accepted(NamedTuple):
    seqs: list[int]
    committed: Future[None]


class StubJournal:
    """A journal that writes nothing: ``append`` hands out sequence numbers and a
    resolved future, everything else is a no-op. What the runtime's durable path
    costs on the loop thread when storage costs nothing."""

    def __init__(self) -> None:
        self._next = 1
        self._done: Future[None] = Future()
        self._done.set_running_or_notify_cancel()
        self._done.set_result(None)

    def append(self, records: Sequence[tuple[Any, bytes]]) -> _Accepted:
        first, self._next = self._next, self._next + len(records)
        return _Accepted(list(range(first, self._next)), self._done)

    def _write(self, *args: Any, **kwargs: Any) -> Future[None]:
        return self._done

    ack = mark_started = save_snapshot = drop_snapshot = remove_dead_letters = _write

    def add_dead_letter(self, *args: Any, **kwargs: Any) -> tuple[int, Future[None]]:
        return 0, self._done

    def pending(self) -> Iterator[Any]:
        return iter(())

    def load_snapshot(self, key: Any) -> bytes | None:
        return None

    def dead_letters(self) -> list[Any]:
        return []

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return {"commits": 0}


@dataclasses.dataclass
class Running:
    """One implementation, started: the peer interface, its awaitable send and,
    for the durable runtime, its journal."""

    peer: Peer
    send: Callable[[Any, Any], Awaitable[None]]
    journal: Any = None
    #: Set once stopped (durable runtime only): whether the runtime closed its
    #: journal, and how many messages a restart would replay from it.
    closed_by_runtime: bool = False
    left_in_journal: int = 0

    async def settle(self) -> None:
        """Wait until every outcome is committed (only the journal lags behind)."""
        if self.journal is None:
            return
        await self.peer.runtime.wait_idle()  # type: ignore[attr-defined]
        await asyncio.sleep(0)  # acknowledgements queued at the end of a loop pass
        await asyncio.to_thread(self.journal.flush)

    def journal_extra(self, messages: int) -> dict[str, float]:
        if self.journal is None:
            return {}
        stats = self.journal.stats()
        commits = float(stats["commits"])
        return {"commits": commits, "messages_per_commit": messages / max(commits, 1.0)}

    def stopped_extra(self) -> dict[str, float]:
        if self.journal is None:
            return {}
        return {
            "left_in_journal": float(self.left_in_journal),
            "closed_by_runtime": float(self.closed_by_runtime),
        }


@contextlib.asynccontextmanager
async def running(
    column: str, handler: Handler, directory: str | None = None
) -> AsyncIterator[Running]:
    """Start ``column``'s implementation with ``handler``; stop it and remove its files.

    ``directory``: where the temporary directory of the journal or database is
    made (default: the system's).
    """
    if column == PEER:
        peer = SQLitePerMessagePeer(handler, directory=directory)
        async with peer:
            yield Running(peer, peer.send)
        return
    if column == IN_MEMORY:
        inorder = InorderPeer(handler, idle_timeout=RUNTIME_IDLE)
        async with inorder:
            yield Running(inorder, lambda key, message: inorder.runtime.send(key, message))
        return
    if column == STUB:
        stub = InorderPeer(
            handler, idle_timeout=RUNTIME_IDLE, runtime_options={"store": StubJournal()}
        )
        async with stub:
            yield Running(stub, lambda key, message: stub.runtime.send(key, message))
        return
    from actors import JournalClosed, SQLiteJournal

    with tempfile.TemporaryDirectory(prefix="bench-journal-", dir=directory) as tmp:
        path = Path(tmp) / JOURNAL_NAME
        journal = SQLiteJournal(path)
        options = {"store": journal}
        durable = InorderPeer(handler, idle_timeout=RUNTIME_IDLE, runtime_options=options)
        run = Running(durable, lambda key, message: durable.runtime.send(key, message), journal)
        try:
            async with durable:
                yield run
            try:
                journal.flush(0)
            except JournalClosed:
                run.closed_by_runtime = True
        finally:
            journal.close()  # idempotent: the runtime owns it, and closed it when it stopped
        with SQLiteJournal(path) as reopened:  # what a restart would replay
            run.left_in_journal = reopened.pending_count()


async def tell_throughput(
    column: str, users: int, messages: int, directory: str | None = None
) -> tuple[float, dict[str, float]]:
    """P1's tell workload; msg/s from the first tell to the last handler."""
    tracker = Tracker()

    async def handler(key: Any, message: Any) -> None:
        tracker.hit()

    keys = keys_for(users)
    n = max(users, messages // users * users)
    async with running(column, handler, directory) as run:
        await warm_up(run.peer, tracker, keys)
        tracker.expect(n)
        tell = run.peer.tell
        t0 = now()
        for i in range(n):
            tell(keys[i % users], i)
        told = now() - t0
        await tracker.wait(TIMEOUT)
        elapsed = tracker.finished_at - t0
        await run.settle()
        settled = now() - t0
        extra = run.journal_extra(n + users)
    extra.update(messages=n, seconds=elapsed, tell_s=told, settled_s=settled)
    return n / elapsed, {**extra, **run.stopped_extra()}


async def send_latency(
    column: str, rate: int, users: int, seconds: float, directory: str | None = None
) -> tuple[float, dict[str, float]]:
    """p99 (ms) of ``await send(...)`` at a steady ``rate`` over ``users`` users."""
    tracker = Tracker()

    async def handler(key: Any, message: Any) -> None:
        tracker.hit()

    keys = keys_for(users, "sender")
    n = max(2, int(rate * seconds))
    latencies: list[float] = []
    lags: list[float] = []
    calls: list[float] = []
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    tasks: set[asyncio.Task[None]] = set()
    timers: list[asyncio.TimerHandle] = []

    async with running(column, handler, directory) as run:
        send = run.send

        async def one(i: int, due: float) -> None:
            lags.append(loop.time() - due)
            t = now()
            calls.append(t)
            try:
                await send(keys[i % users], i)
            except Exception as exc:
                if not finished.done():
                    finished.set_exception(exc)
                return
            latencies.append(now() - t)
            if len(latencies) == n and not finished.done():
                finished.set_result(None)

        def spawn(i: int, due: float) -> None:
            task = loop.create_task(one(i, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        await warm_up(run.peer, tracker, keys)
        tracker.expect(n)
        start = loop.time() + 0.01
        timers += [loop.call_at(start + i / rate, spawn, i, start + i / rate) for i in range(n)]
        try:
            async with asyncio.timeout(seconds + TIMEOUT):
                await finished
            await tracker.wait(TIMEOUT)
            await run.settle()
        finally:  # after a failed send: nothing more is sent to a stopped runtime
            for timer in timers:
                timer.cancel()
            for task in list(tasks):
                task.cancel()
    return percentile(latencies, 99) * 1e3, {
        "p50_ms": percentile(latencies, 50) * 1e3,
        "max_ms": max(latencies) * 1e3,
        "samples": float(len(latencies)),
        "achieved_msg_per_s": (n - 1) / (max(calls) - min(calls)),
        "lag_p99_ms": max(0.0, percentile(lags, 99) * 1e3),
        **run.stopped_extra(),
    }


def throughput_case(users: int) -> str:
    return f"tell, {size_label(users)} users (msg/s)"


def send_case() -> str:
    return f"send at {size_label(SEND_RATE)} msg/s (ms p99)"


Measure = Callable[[str], Awaitable[tuple[float, dict[str, float]]]]


async def _columns(
    params: Params, case: str, measure: Measure, higher_is_better: bool | None = None
) -> list[Cell]:
    """Every column, starting with a different one in every repeat."""

    def missing(column: str) -> str | None:
        return InorderPeer.missing() if column != PEER else None

    return await for_each_column(params, case, COLUMNS, measure, missing, higher_is_better)


async def run_durable(params: Params) -> list[Cell]:
    cells: list[Cell] = []
    for users in params.users:
        cells += await _columns(
            params,
            throughput_case(users),
            functools.partial(tell_throughput, users=users, messages=params.messages),
        )
    seconds = QUICK_SEND_SECONDS if params.quick else SEND_SECONDS
    cells += await _columns(
        params,
        send_case(),
        functools.partial(send_latency, rate=SEND_RATE, users=SEND_USERS, seconds=seconds),
        higher_is_better=False,
    )
    return cells


def check_durable(agg: Aggregate, params: Params) -> list[Check]:
    big = max(params.users)
    case = throughput_case(big)
    return [
        at_least(
            f"≥ {THROUGHPUT_RATIO:g}x in memory at {size_label(big)} users",
            agg.ratio(case, IN_MEMORY),
            THROUGHPUT_RATIO,
        ),
        at_least(
            f"≥ {PEER_RATIO:g}x {PEER} at {size_label(big)} users",
            agg.ratio(case, PEER),
            PEER_RATIO,
        ),
        at_most(
            f"send p99 ≤ {SEND_P99_MS:g} ms at {size_label(SEND_RATE)} msg/s",
            agg.value(send_case()),
            SEND_P99_MS,
        ),
    ]


SCENARIOS = [
    Scenario(
        "durable",
        "Durable mode (journal)",
        f"issue 9: tell ≥ {THROUGHPUT_RATIO:g}x in memory and ≥ {PEER_RATIO:g}x one SQLite "
        f"transaction per message at 10k users; await send p99 ≤ {SEND_P99_MS:g} ms at "
        f"{size_label(SEND_RATE)} msg/s",
        "msg/s; send: ms p99",
        True,
        run_durable,
        check_durable,
        "P1's tell workload with an SQLiteJournal (default settings) against the runtime in "
        f"memory and a per-message-transaction peer; await send at a steady "
        f"{size_label(SEND_RATE)} msg/s over {size_label(SEND_USERS)} users",
    ),
]
