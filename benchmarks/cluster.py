"""Where the cluster mode's time goes: ``python -m benchmarks.cluster``.

Runs one measurement of the ``cluster`` scenario (``benchmarks._cluster``) on an
embedded server of its own and prints every figure: the rate from the first send to
the last message handled, the CPU time per message of the node (or worker) processes,
of the producer (this process) and of the Redis server, the Redis commands per message
by command, and with ``--failover`` the kill -9 phase (the longest wait after the kill,
the time until the survivor held every lease, the takeovers that failed, messages
lost, handled twice or out of order). ``--shards`` and ``--lease`` change the cluster's
settings (default: the scenario's: 64 shards, lease 3 s); ``--msg-id`` makes the runtime's
producer tell every message with a ``msg_id`` (deduplicated in Redis). ``--pin`` puts the
server and the producer on the first CPU and the node processes on the second (as
``taskset`` would), so that the nodes' rate can be read apart from their neighbours.

``--profile`` runs every child process and the producer under cProfile during the
throughput phase and prints the top functions by own and by cumulative time of the first
node and of the producer (compiled functions show as built-ins: profile the pure build,
the development venv's, to see the runtime's own functions).

    python -m benchmarks.cluster --processes 2 --failover
    python -m benchmarks.cluster --processes 1 --profile
    PYTHONPATH=.venv/compiled python -P -m benchmarks.cluster   # the compiled build
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import pstats
import tempfile
from pathlib import Path

from benchmarks._cluster import COLUMNS, Sizes, embedded_server, measure_run
from benchmarks._scenarios import SUBJECT, Params


def _print(figures: dict[str, float]) -> None:
    commands = {k: v for k, v in figures.items() if k.startswith("cmd_")}
    for name, value in figures.items():
        if not name.startswith("cmd_"):
            print(f"  {name:28} {value:12,.3f}")
    print("  Redis commands per message, by command:")
    for name, value in sorted(commands.items(), key=lambda kv: -kv[1]):
        label = name.removeprefix("cmd_").removesuffix("_per_msg")
        print(f"    {label:26} {value:10.4f}")


def _top(path: Path, title: str, limit: int) -> None:
    for order, label in (("tottime", "own"), ("cumulative", "cumulative")):
        print(f"\n== {title}: top {limit} by {label} time")
        pstats.Stats(str(path)).sort_stats(order).print_stats(limit)


async def _main(args: argparse.Namespace) -> None:
    sizes = Sizes.of(Params.for_quick() if args.quick else Params.full())
    changes = {}
    if args.users:
        changes["users"] = args.users
    if args.messages:
        changes["messages"] = args.messages
    if args.shards:
        changes["n_shards"] = args.shards
    if args.msg_id:
        changes["msg_ids"] = True
    if args.lease:
        changes.update(lease_ttl=args.lease, tick=args.lease / 6)
    sizes = dataclasses.replace(sizes, **changes)
    with embedded_server() as server, tempfile.TemporaryDirectory() as tmp:
        profiles = Path(tmp) if args.profile else None
        for _ in range(args.repeat):
            figures = await measure_run(
                args.column,
                args.processes,
                sizes,
                server.url,
                failover=args.failover,
                profiles=profiles,
                pin_server=server.pid if args.pin else None,
            )
            print(f"{args.column}, {args.processes} process(es), {sizes}:")
            _print(figures)
        if profiles is not None:
            role = "node" if args.column == SUBJECT else args.column
            _top(profiles / f"{role}-0.pstats", f"{args.column} process 0", args.limit)
            _top(profiles / "producer.pstats", "producer (this process)", args.limit)


def main(argv: list[str] | None = None) -> None:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--column", choices=COLUMNS, default=SUBJECT)
    parser.add_argument("--processes", type=int, default=1, metavar="N")
    parser.add_argument("--users", type=int, metavar="N")
    parser.add_argument("--messages", type=int, metavar="N")
    parser.add_argument("--shards", type=int, metavar="N")
    parser.add_argument("--lease", type=float, metavar="S", help="lease time (tick: a sixth)")
    parser.add_argument(
        "--msg-id", action="store_true", help="the runtime's producer tells with a msg_id"
    )
    parser.add_argument("--failover", action="store_true", help="also the kill -9 phase")
    parser.add_argument("--profile", action="store_true", help="cProfile of the processes")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the server and the producer on the first CPU, the nodes on the second",
    )
    parser.add_argument("--limit", type=int, default=25, help="functions per profile")
    parser.add_argument("--repeat", type=int, default=1, metavar="N")
    parser.add_argument("--quick", action="store_true", help="the scenario's quick sizes")
    args = parser.parse_args(argv)
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        parser.error("--pin needs 2 CPUs")
    if args.failover and args.processes < 2:
        parser.error("--failover needs --processes 2 or more")
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
