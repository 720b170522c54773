"""``python -m benchmarks``: run the scenarios, print a table, write JSON.

Examples::

    python -m benchmarks                      # every scenario, full sizes
    python -m benchmarks --quick              # smoke test, well under a minute
    python -m benchmarks --scenario p1_tell --users 1000,10000 --repeat 3
    python -m benchmarks --list               # scenario names and targets

Missed targets are reported, not turned into a failing exit status: the
exit status is non-zero only for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import gc
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._measure import machine_info, set_progress
from benchmarks._report import (
    Progress,
    markdown,
    plot,
    print_table,
    scenario_result,
    write_json,
)
from benchmarks._runtime_peer import import_error
from benchmarks._scenarios import PEERS, Aggregate, Cell, Params, all_scenarios

#: Command-line option -> Params field, for the integer sizes.
SIZES = {
    "messages": "total messages per throughput run (P1, P2, threads, logging)",
    "activation_users": "new users in the P3 activation run",
    "churn_users": "distinct users in the P3 churn run",
    "memory_actors": "live idle actors in P4",
    "hot_messages": "backlog of the hot user in P5",
    "light_users": "light users in P5",
    "interrupts": "interrupt samples in P6",
    "load_rate": "background messages/s in P6",
    "llm_users": "users in P7",
    "llm_messages": "messages per user in P7",
    "threads": "producer threads",
}


def _user_sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.replace("_", "").split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("expected positive integers, e.g. 100,1000,10000")
    return sizes


def parser() -> argparse.ArgumentParser:
    names = [s.name for s in all_scenarios()]
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmarks of inorder against hand-written per-user peers (DESIGN.md §6).",
    )
    p.add_argument(
        "--scenario",
        action="append",
        choices=names,
        metavar="NAME",
        help="run only this scenario (repeatable); one of: " + ", ".join(names),
    )
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument(
        "--quick", action="store_true", help="small sizes: the whole run takes well under a minute"
    )
    p.add_argument(
        "--peer",
        action="append",
        choices=[c.name for c in PEERS],
        metavar="PEER",
        help="run only these implementations (repeatable)",
    )
    p.add_argument(
        "--users",
        type=_user_sizes,
        metavar="N,N,...",
        help="user counts for P1 and P2 (default 100,1000,10000; quick 100,1000)",
    )
    p.add_argument(
        "--failing-keys",
        type=_user_sizes,
        metavar="N,N,...",
        help="key counts of the failing-keys run (default 2000,6000,18000; quick 1000,4000)",
    )
    for field, text in SIZES.items():
        p.add_argument("--" + field.replace("_", "-"), type=int, metavar="N", help=text)
    p.add_argument(
        "--idle-timeout",
        type=float,
        metavar="S",
        help="idle timeout of the P3 churn run in seconds (default 1.0)",
    )
    p.add_argument("--seed", type=int, help="random seed (P6 gaps, P7 delays)")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run every scenario N times and report medians (default 1)",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=Path("bench-results.json"),
        metavar="PATH",
        help="where to write the results (default bench-results.json)",
    )
    p.add_argument(
        "--plot",
        action="store_true",
        help="also write bench-<scenario>.png next to the JSON (needs matplotlib)",
    )
    p.add_argument(
        "--markdown", action="store_true", help="print the tables as Markdown (for BENCHMARKS.md)"
    )
    p.add_argument("--plain", action="store_true", help="plain text output even if rich is there")
    return p


def params_from(args: argparse.Namespace) -> Params:
    params = Params.for_quick() if args.quick else Params.full()
    if args.users:
        params.users = args.users
    if args.failing_keys:
        params.failing_keys = args.failing_keys
    for field in [*SIZES, "idle_timeout", "seed"]:
        value = getattr(args, field)
        if value is not None:
            if value <= 0 and field != "seed":
                raise SystemExit(f"--{field.replace('_', '-')} must be positive")
            setattr(params, field, value)
    if args.peer:
        params.peers = args.peer
    return params


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    scenarios = all_scenarios()
    if args.list:
        for s in scenarios:
            print(f"{s.name:15} {s.title}: {s.target}")
        return 0
    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    if args.scenario:
        scenarios = [s for s in scenarios if s.name in args.scenario]
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SystemExit(
                "--plot needs matplotlib, which is not installed: pip install -e '.[plot]'"
            ) from None
    params = params_from(args)
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **machine_info(),
        "mode": "quick" if params.quick else "custom" if _customised(args) else "full",
        "repeat": args.repeat,
        "scenarios": [s.name for s in scenarios],
        "params": dict(vars(params)),
        "runtime_import_error": import_error(),
        "peers": {c.name: c.description for c in PEERS if c.name in params.peers},
    }
    progress = Progress(plain=args.plain)
    set_progress(progress.step)
    results = []
    try:
        for scenario in scenarios:
            t0 = time.perf_counter()
            runs: list[list[Cell]] = []
            for r in range(args.repeat):
                progress.scenario(scenario.title, r, args.repeat)
                run_params = dataclasses.replace(params, rotation=r)
                runs.append(asyncio.run(scenario.run(run_params)))
                gc.collect()
            agg = Aggregate(runs, scenario.higher_is_better)
            checks = scenario.check(agg, params)
            seconds = time.perf_counter() - t0
            result = scenario_result(scenario, agg, checks, seconds, args.repeat)
            results.append(result)
            progress.done(scenario.title, seconds, result["met"])
            write_json(args.json, meta, results)  # keep what is done if a later one dies
    finally:
        progress.close()
    if args.markdown:
        print(markdown(results, meta), end="")
    else:
        print_table(results, plain=args.plain)
    print(f"\nresults written to {args.json}", file=sys.stderr)
    if args.plot:
        directory = args.json.parent
        for path in plot(results, directory):
            print(f"chart written to {path}", file=sys.stderr)
    return 0


def _customised(args: argparse.Namespace) -> bool:
    return bool(args.users or args.failing_keys) or any(
        getattr(args, f) is not None for f in [*SIZES, "idle_timeout"]
    )


if __name__ == "__main__":
    raise SystemExit(main())
