"""Keys that fail once and go idle (issue 8, item 10): ``python -m benchmarks.failing_keys``.

An outage makes every user's handler fail once: each key is restarted, goes
idle, is stopped and released, and the supervisor keeps its restart history
for the policy's window. This script runs that workload with the runtime alone
(``benchmarks._failures.failing_keys``, the ``failing_keys`` scenario's
measurement) at growing numbers of keys and prints, for each, the CPU time per
key, the wall time of the failure phase (first tell to the last restart) and
of the release phase (first idle stop to the last key forgotten), and the same
run with a handler that does not fail. The last line is the per-key cost at the
largest size over the smallest: 1.0 is linear; the quadratic release of the
issue made it 4-7x from 2k to 18k keys. ``--gc-off`` runs with the cyclic
garbage collector disabled (never what the runtime does; it shows how much of
any growth is collection), ``--profile`` prints the top functions by own time
at the largest size (cProfile; compiled functions show as built-ins).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats

from benchmarks._failures import failing_keys

SIZES = [2_000, 6_000, 18_000]


def _sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.replace("_", "").split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("expected positive integers, e.g. 2000,6000,18000")
    return sizes


def _line(keys: int, fail: bool) -> float:
    gc.collect()
    r = asyncio.run(failing_keys(keys, fail=fail))
    per_key = r["cpu_seconds"] / keys * 1e6
    label = "fail once" if fail else "no failure"
    print(
        f"{keys:>7,} keys, {label:10}: {per_key:7.1f} µs CPU/key, "
        f"{r['cpu_seconds']:6.2f} s CPU, {r['seconds']:6.2f} s wall "
        f"(failures {r['fail_seconds']:5.2f} s, releases {r['release_seconds']:5.2f} s)"
    )
    return per_key


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=_sizes, default=SIZES, metavar="N,N,...")
    parser.add_argument("--gc-off", action="store_true", help="disable the cyclic GC")
    parser.add_argument("--profile", action="store_true", help="cProfile, top 15 by own time")
    args = parser.parse_args(argv)
    if args.gc_off:
        gc.disable()
    try:
        _run(args.keys, args.profile)
    finally:
        gc.enable()


def _run(sizes: list[int], profile: bool) -> None:
    per_key = {}
    for keys in sizes:
        per_key[keys] = _line(keys, fail=True)
        _line(keys, fail=False)
    small, big = min(sizes), max(sizes)
    print(
        f"per-key cost at {big:,} keys over {small:,}: {per_key[big] / per_key[small]:.2f}x "
        "(1.0 = linear)"
    )
    if profile:
        profiler = cProfile.Profile()
        profiler.runcall(asyncio.run, failing_keys(big, fail=True))
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
