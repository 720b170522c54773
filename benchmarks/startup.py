"""Where P7's start-up time goes: ``python -m benchmarks.startup``.

P7 tells 5 messages to each of 10k new users at once; a user's makespan is
its first handler's start plus its handlers' delays. This script replays
that start-up with the runtime alone and prints the timeline, in ms after the
first tell: the end of the tell loop, and the first handlers' starts (first,
median, the ideal user's, last), then the cost per user of what follows the
tell loop (activation and first step). It does so with the cyclic garbage
collector on and off (``gc.disable()`` is never what the runtime does; it
shows how much of the cost is collection), and with ``--profile`` prints the
top functions by own time (cProfile; compiled functions show as built-ins).
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

from actors import Context, UserActor
from benchmarks._load import llm_delays
from supervisors import Runtime

USERS = 10_000
MESSAGES = 5
DELAY = (0.1, 0.5)  # seconds, as in P7
SEED = 1  # the harness's default: the ideal user is user:7997


async def timeline(users: int, messages: int, seed: int) -> dict[str, float]:
    """Milliseconds after the first tell, for one start-up of ``users`` new users."""
    delays = llm_delays(users, messages, DELAY, seed)
    ideal = max(delays, key=lambda key: sum(delays[key]))
    starts: dict[Any, float] = {}
    first_message = asyncio.Event()

    class Llm(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> None:
            starts.setdefault(ctx.key, time.perf_counter())
            if len(starts) == users:
                first_message.set()
            await asyncio.sleep(message)

    async with Runtime(Llm) as rt:
        t0 = time.perf_counter()
        for j in range(messages):
            for key, d in delays.items():
                rt.tell(key, d[j])
        told = time.perf_counter()
        await first_message.wait()
        await rt.stop(drain=False)

    def ms(t: float) -> float:
        return round((t - t0) * 1000, 1)

    ordered = sorted(starts.values())
    return {
        "tell_loop_end": ms(told),
        "first_start": ms(ordered[0]),
        "median_start": ms(statistics.median(ordered)),
        "ideal_user_start": ms(starts[ideal]),
        "last_start": ms(ordered[-1]),
        "us_per_user_after_tells": round((ordered[-1] - told) / users * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=USERS)
    parser.add_argument("--messages", type=int, default=MESSAGES)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--profile", action="store_true", help="cProfile, top 15 by own time")
    args = parser.parse_args()
    for label in ("gc on", "gc off"):
        gc.collect()
        if label == "gc off":
            gc.disable()
        try:
            result = asyncio.run(timeline(args.users, args.messages, args.seed))
        finally:
            gc.enable()
        print(f"{label}: " + ", ".join(f"{k} {v}" for k, v in result.items()))
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(asyncio.run, timeline(args.users, args.messages, args.seed))
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
