"""The cost of idle tracking with 100k live actors (issue 3): ``python -m benchmarks.idle_cost``.

Idle actors are tracked in one insertion-ordered map with one timer for the whole
runtime. The per-burst cost is the supervisor's ``cell_idle`` (a clock read and an
``OrderedDict`` move-to-end); this script times it over ``CALLS`` calls on cells
picked at random among ``ACTORS`` live idle actors (the cache-unfriendly case) and
measures the map's memory per actor with ``tracemalloc``.
"""

from __future__ import annotations

import asyncio
import random
import time
import tracemalloc
from collections import OrderedDict
from typing import Any

from actors import Context, UserActor
from supervisors import Runtime

ACTORS = 100_000
CALLS = 1_000_000


class _Noop(UserActor):
    async def on_message(self, message: Any, ctx: Context) -> None:
        return None


async def measure(actors: int = ACTORS, calls: int = CALLS) -> dict[str, float]:
    """Return ns per ``cell_idle`` call, map bytes per actor, live actors and sweep timers."""
    async with Runtime(_Noop, idle_timeout=300.0) as rt:
        for i in range(actors):
            rt.tell(i, 0)
            if i % 5000 == 4999:
                await asyncio.sleep(0)
        await rt.wait_idle()
        core = rt._core  # measuring the internals is the point
        assert core is not None
        supervisor = core.supervisor
        cells = list(core.cells.values())
        rng = random.Random(1)
        picks = [rng.choice(cells) for _ in range(calls)]
        started = time.perf_counter()
        for cell in picks:
            supervisor.cell_idle(cell)
        per_call = (time.perf_counter() - started) / calls
        tracemalloc.start()
        copy = OrderedDict((cell.key, cell) for cell in cells)
        size = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del copy
        return {
            "live_actors": float(rt.stats()["live_actors"]),
            "cell_idle_ns": per_call * 1e9,
            "map_bytes_per_actor": size / len(cells),
            "sweep_timers": 1.0 if supervisor._sweep_timer is not None else 0.0,
        }


def main() -> None:
    result = asyncio.run(measure())
    print(
        f"{result['live_actors']:.0f} live idle actors: cell_idle {result['cell_idle_ns']:.0f} ns "
        f"per burst, idle map {result['map_bytes_per_actor']:.0f} B per actor, "
        f"{result['sweep_timers']:.0f} sweep timer for the whole runtime"
    )


if __name__ == "__main__":
    main()
