"""Where the journal's time goes: ``python -m benchmarks.durable``.

Runs the ``durable`` scenario's tell workload (``benchmarks._durable``) with
the runtime in memory and with an ``SQLiteJournal``, alternately,
``--repeat`` times, and prints for each run the rate, the wall time, the CPU
time of the event loop's thread and of every other thread together (the
journal's writer, mostly), and the journal's commits. A loop thread busy for
about the whole wall time means the loop is the limit, not the disk or the
writer. ``--peer`` adds the hand-written ``sqlite-per-message`` peer,
``--stub`` the runtime with a journal that writes nothing (``StubJournal``:
what the durable path costs on the loop thread alone).
``--profile`` then runs the durable case once more under cProfile and prints
the top functions by own time (the loop's thread only: the writer thread is
not profiled; compiled functions show as built-ins, so profile the pure
build to see the runtime's own functions).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import statistics
import time
from typing import Any

from benchmarks._durable import IN_MEMORY, PEER, STUB, tell_throughput
from benchmarks._scenarios import SUBJECT

DURABLE = SUBJECT  # the column name of the runtime with a journal


def _measure(column: str, users: int, messages: int) -> tuple[float, dict[str, Any]]:
    gc.collect()
    cpu0, loop0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
    rate, extra = asyncio.run(tell_throughput(column, users, messages))
    loop_cpu = time.thread_time() - loop0
    other_cpu = time.process_time() - cpu0 - loop_cpu
    wall = time.perf_counter() - t0
    label = "durable" if column == DURABLE else column
    commits = ""
    if "commits" in extra:
        commits = f", {extra['commits']:.0f} commits ({extra['messages_per_commit']:.0f} msg each)"
    print(
        f"{label:18} {rate / 1e3:7.1f}k msg/s | whole run {wall:5.2f} s wall: loop thread "
        f"{loop_cpu:5.2f} s CPU, other threads {other_cpu:5.2f} s CPU{commits}"
    )
    return rate, extra


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000, metavar="N")
    parser.add_argument("--messages", type=int, default=200_000, metavar="N")
    parser.add_argument("--repeat", type=int, default=3, metavar="N")
    parser.add_argument("--peer", action="store_true", help="also the sqlite-per-message peer")
    parser.add_argument("--stub", action="store_true", help="also a journal that writes nothing")
    parser.add_argument("--profile", action="store_true", help="cProfile, top 25 by own time")
    args = parser.parse_args(argv)
    columns = [IN_MEMORY, DURABLE] + ([STUB] if args.stub else []) + ([PEER] if args.peer else [])
    rates: dict[str, list[float]] = {c: [] for c in columns}
    for r in range(args.repeat):
        for column in columns[r % len(columns) :] + columns[: r % len(columns)]:
            rates[column].append(_measure(column, args.users, args.messages)[0])
    medians = {c: statistics.median(v) for c, v in rates.items()}
    line = f"median durable / in memory: {medians[DURABLE] / medians[IN_MEMORY]:.2f}x"
    if args.stub:
        line += f"; {STUB} / in memory: {medians[STUB] / medians[IN_MEMORY]:.2f}x"
    if args.peer:
        line += f"; durable / {PEER}: {medians[DURABLE] / medians[PEER]:.1f}x"
    print(line)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(asyncio.run, tell_throughput(DURABLE, args.users, args.messages))
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
